"""Weight-only quantized matmuls written as InvokeQuant dequantization regions (suites/woq_regions.yaml).

Layouts are impl.schemes' (each scheme module's docstring): y = x @ W.T with x (M, K), W (N, K).

- int8 per channel: qweight (N, K) int8 in [-127, 127], scale (N,) float32.
- int4 group-wise (group G): qweight (N, K_pad // 2) uint8, k = 2j in the low nibble, 2j + 1 in
  the high one; scale, zero (N, K_pad // G) float32; W = (u - zero) * scale.
- nf4 (block B): qweight as int4, nibble u indexes impl's NF4 table; absmax (N, K_pad // B)
  float32; W = NF4[u] * absmax.

The input builders (``kind: suites.programs.woq:int4_weight``) quantize a float weight drawn
from the input's distribution with impl.schemes' quantizers, so the goldens move when a
quantizer does. The regions below are written out by hand, as a user would (the schemes'
own regions are tested in tests/impl/test_schemes_*.py). The NF4 table is read from impl at
trace time, so a changed level in impl shows up against the goldens.
"""

from __future__ import annotations

import torch

from harness.core.inputs import BuildContext, InputSpec
from impl import InvokeQuant
from impl.schemes import quantize_int4, quantize_int8, quantize_nf4
from impl.schemes.nf4 import NF4_LEVELS

dequant_region = InvokeQuant()


# --------------------------------------------------------------------------- input builders
# Each quantizes a float weight drawn from the spec's distribution with impl.schemes' own
# quantizer (defaults: int8 and int4 with their clipping search, nf4 without double quant).


def int8_weight(spec: InputSpec, ctx: BuildContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-channel int8: (qweight (N, K) int8, scale (N,) float32)."""
    weight = quantize_int8(ctx.sample(spec, tuple(spec.shape), torch.float32))
    return tuple(t.to(ctx.device) for t in weight.tensors())


int8_weight.PARAMS = {}


def int4_weight(spec: InputSpec, ctx: BuildContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric group-wise int4: (qweight (N, K_pad // 2) uint8, scale, zero (N, K_pad // G) float32)."""
    group = spec.param_dict.get("group_size", 64)
    weight = quantize_int4(ctx.sample(spec, tuple(spec.shape), torch.float32), group)
    return tuple(t.to(ctx.device) for t in weight.tensors())


int4_weight.PARAMS = {"group_size": int}


def nf4_weight(spec: InputSpec, ctx: BuildContext) -> tuple[torch.Tensor, torch.Tensor]:
    """NF4 with per-block absmax: (qweight (N, K_pad // 2) uint8, absmax (N, K_pad // B) float32)."""
    block = spec.param_dict.get("block_size", 64)
    weight = quantize_nf4(ctx.sample(spec, tuple(spec.shape), torch.float32), block)
    return tuple(t.to(ctx.device) for t in weight.tensors())


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
    table = torch.tensor(NF4_LEVELS, dtype=torch.float32, device=qweight.device)
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
