"""Weight-only quantized matmuls written as InvokeQuant dequantization regions (suites/woq_regions.yaml).

Layouts are the project's contract (shared/layouts.md): y = x @ W.T with x (M, K), W (N, K).

- int8 per channel: qweight (N, K) int8 in [-127, 127], scale (N,) float32.
- int4 group-wise (group G): qweight (N, K_pad // 2) uint8, k = 2j in the low nibble, 2j + 1 in
  the high one; scale, zero (N, K_pad // G) float32; W = (u - zero) * scale.
- nf4 (block B): qweight as int4, nibble u indexes impl's NF4 table; absmax (N, K_pad // B)
  float32; W = NF4[u] * absmax.

The input builders here quantize a float weight drawn from the input's distribution; they
are test-side helpers (``kind: suites.programs.woq:int4_weight``) until the schemes land
and register their own kinds. The NF4 table is read from impl at trace time, so a changed
level in impl shows up against the goldens.
"""

from __future__ import annotations

import math

import torch

from harness.inputs import BuildContext, InputSpec
from impl import InvokeQuant
from impl.kernels import woq_mm_nf4

dequant_region = InvokeQuant()


# --------------------------------------------------------------------------- input builders


def _padded_weight(spec: InputSpec, ctx: BuildContext, multiple: int) -> tuple[torch.Tensor, int]:
    """The float weight (N, K) from the spec, zero-padded along K to a multiple; returns (W_pad, K)."""
    n, k = spec.shape
    weight = ctx.sample(spec, (n, k), torch.float32)
    k_pad = math.ceil(k / multiple) * multiple
    return torch.nn.functional.pad(weight, (0, k_pad - k)), k


def _pack_nibbles(u: torch.Tensor) -> torch.Tensor:
    """(N, K_pad) integers in [0, 15] -> (N, K_pad // 2) uint8, even k low, odd k high."""
    u = u.to(torch.uint8)
    return u[:, 0::2] | (u[:, 1::2] << 4)


def int8_weight(spec: InputSpec, ctx: BuildContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-channel int8: (qweight (N, K) int8, scale (N,) float32)."""
    weight = ctx.sample(spec, tuple(spec.shape), torch.float32)
    scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
    qweight = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return qweight.to(ctx.device), scale.to(ctx.device)


int8_weight.PARAMS = {}


def int4_weight(spec: InputSpec, ctx: BuildContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric group-wise int4: (qweight (N, K_pad // 2) uint8, scale, zero (N, K_pad // G) float32)."""
    group = spec.param_dict.get("group_size", 64)
    padded, _ = _padded_weight(spec, ctx, group)
    n = padded.shape[0]
    groups = padded.reshape(n, -1, group)
    low, high = groups.amin(dim=-1).clamp(max=0), groups.amax(dim=-1).clamp(min=0)
    scale = ((high - low) / 15).clamp(min=1e-12)
    zero = torch.round(-low / scale).clamp(0, 15)
    u = torch.round(groups / scale[..., None] + zero[..., None]).clamp(0, 15).reshape(n, -1)
    return _pack_nibbles(u).to(ctx.device), scale.to(ctx.device), zero.to(ctx.device)


int4_weight.PARAMS = {"group_size": int}


def nf4_weight(spec: InputSpec, ctx: BuildContext) -> tuple[torch.Tensor, torch.Tensor]:
    """NF4 with per-block absmax: (qweight (N, K_pad // 2) uint8, absmax (N, K_pad // B) float32)."""
    block = spec.param_dict.get("block_size", 64)
    padded, _ = _padded_weight(spec, ctx, block)
    n = padded.shape[0]
    blocks = padded.reshape(n, -1, block)
    absmax = blocks.abs().amax(dim=-1).clamp(min=1e-12)
    normalized = (blocks / absmax[..., None]).reshape(n, -1)
    levels = torch.tensor(woq_mm_nf4.NF4_LEVELS, dtype=torch.float32)
    u = (normalized[..., None] - levels).abs().argmin(dim=-1)
    return _pack_nibbles(u).to(ctx.device), absmax.to(ctx.device)


nf4_weight.PARAMS = {"block_size": int}


# --------------------------------------------------------------------------- dequantization regions


def _unpack_nibbles(qweight: torch.Tensor) -> torch.Tensor:
    """(N, K_pad // 2) uint8 -> (N, K_pad) int64, k = 2j from the low nibble."""
    low = qweight & 0xF
    high = qweight >> 4
    return torch.stack((low, high), dim=-1).reshape(qweight.shape[0], -1).to(torch.int64)


def dequantize_int8(qweight: torch.Tensor, scale: torch.Tensor, *, dtype: torch.dtype) -> torch.Tensor:
    """W (N, K) in ``dtype`` = qweight * scale[:, None]."""
    return (qweight.to(torch.float32) * scale[:, None]).to(dtype)


def dequantize_int4(qweight, scale, zero, *, group_size: int, k: int, dtype: torch.dtype) -> torch.Tensor:
    """W (N, K) in ``dtype`` = (u - zero) * scale per group, K padding sliced off."""
    u = _unpack_nibbles(qweight).to(torch.float32)
    scale = scale.repeat_interleave(group_size, dim=1)
    zero = zero.repeat_interleave(group_size, dim=1)
    return ((u - zero) * scale)[:, :k].to(dtype)


def dequantize_nf4(qweight, absmax, *, block_size: int, k: int, dtype: torch.dtype) -> torch.Tensor:
    """W (N, K) in ``dtype`` = NF4[u] * absmax per block; the table is impl's NF4_LEVELS."""
    table = torch.tensor(woq_mm_nf4.NF4_LEVELS, dtype=torch.float32, device=qweight.device)
    values = table[_unpack_nibbles(qweight)]
    return (values * absmax.repeat_interleave(block_size, dim=1))[:, :k].to(dtype)


# --------------------------------------------------------------------------- programs


def int8_weight_only_mm(x: torch.Tensor, weight: tuple) -> torch.Tensor:
    """x (M, K) @ dequant(int8 weight).T -> (M, N) in x.dtype."""
    qweight, scale = weight
    w = dequant_region(dequantize_int8, qweight, scale, scheme="int8", dtype=x.dtype)
    return x @ w.T


def int4_weight_only_mm(x: torch.Tensor, weight: tuple, group_size: int = 64) -> torch.Tensor:
    """x (M, K) @ dequant(int4 weight).T -> (M, N) in x.dtype."""
    qweight, scale, zero = weight
    w = dequant_region(dequantize_int4, qweight, scale, zero, scheme="int4", group_size=group_size, k=x.shape[-1], dtype=x.dtype)
    return x @ w.T


def nf4_weight_only_mm(x: torch.Tensor, weight: tuple, block_size: int = 64) -> torch.Tensor:
    """x (M, K) @ dequant(nf4 weight).T -> (M, N) in x.dtype."""
    qweight, absmax = weight
    w = dequant_region(dequantize_nf4, qweight, absmax, scheme="nf4", block_size=block_size, k=x.shape[-1], dtype=x.dtype)
    return x @ w.T
