"""NF4 weight-only: 16 normal-float levels, block-wise absmax along K, optional double quant.

Layout, weight W (N, K) used as y = x @ W.T, block size B in ``BLOCK_SIZES``, K_pad = K
rounded up to a multiple of B, nb = K_pad // B blocks a row:

    qweight (N, K_pad // 2)  uint8, two codes u in [0, 15] a byte, int4's nibble order
                             (byte j holds k = 2j in the low nibble, k = 2j + 1 in the high one)
    absmax  (N, nb)          float32, max |w| of each block of B values
    W[n, k] = NF4_LEVELS[u[n, k]] * absmax[n, k // B]                 for k < K

Double quantization (QLoRA's idea, in the linear form ``impl.kernels.woq_mm_nf4`` decodes)
replaces the float32 absmax by

    absmax        (N, nb)                       uint8 codes c
    absmax_scale  (ceil(N * nb / 256),)         float32, one per 256 consecutive blocks
    absmax_offset ()                            float32, shared by the whole weight
    absmax[n, b] = c[n, b] * absmax_scale[(n * nb + b) // 256] + absmax_offset

evaluated in float32 (a multiply, then an add). The quantizer takes the offset = the
smallest absmax and scale = (largest absmax of the 256 - offset) / 255, so every decoded
absmax is positive; bitsandbytes instead centres on the mean with a signed dynamic code
map, which the kernel's layout does not express. Codes u are then chosen against the
*decoded* absmax, so the weight error is the smallest the stored absmax allows.

Choosing u: the nearest level to w / absmax (ties to the lower level), computed in float64;
an all-zero block has absmax 0 and codes 7 (the level 0.0), which decode to exactly 0.
Columns K..K_pad-1 are zero padding (code 7) and are sliced off on dequantization.

``dequantize_nf4`` is ONE ``invoke_quant`` region, scheme ``"nf4"``, with operands, in order:

    (qweight, absmax, levels)                                without double quantization
    (qweight, absmax, levels, absmax_scale, absmax_offset)   with it (absmax then holds codes)

``levels`` is ``NF4_LEVELS`` as a (16,) float32 tensor (``nf4_levels``): an operand rather
than a constant built inside the region, because Inductor cannot inline a region holding a
tensor constant on torch 2.11. The body also closes over ``DOUBLE_QUANT_BLOCK`` (256, a
constant of the format), ``block_size`` (= K_pad // nb, from the operand shapes),
``in_features`` (the output's K) and ``dtype`` (the output's dtype).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..hop import InvokeQuant

from .common import (
    MIN_SCALE,
    check_activation_dtype,
    check_choice,
    check_float_weight,
    check_packed,
    pack_nibbles,
    pad_columns,
    round_up,
    unpack_nibbles,
    unpack_nibbles_reference,
)

NF4 = "nf4"  # the region's scheme= keyword: this spelling is the only one
BLOCK_SIZES = (32, 64, 128, 256)
DOUBLE_QUANT_BLOCK = 256  # absmax values sharing one absmax_scale
ABSMAX_QMAX = 255

# The QLoRA / bitsandbytes NF4 levels: quantiles of N(0, 1) scaled to [-1, 1], each exactly
# a float32. impl.kernels.woq_mm_nf4 decodes with this same tuple.
NF4_LEVELS = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)
ZERO_CODE = NF4_LEVELS.index(0.0)
_REGION = InvokeQuant()


def nf4_levels(device: torch.device | str | None = None) -> torch.Tensor:
    """``NF4_LEVELS`` as a (16,) float32 tensor: the region's ``levels`` operand."""
    return torch.tensor(NF4_LEVELS, dtype=torch.float32, device=device)


def double_quant_blocks(out_features: int, blocks_per_row: int) -> int:
    """Length of ``absmax_scale``: ceil(N * nb / DOUBLE_QUANT_BLOCK)."""
    return -(-out_features * blocks_per_row // DOUBLE_QUANT_BLOCK)


def check_nf4_operands(
    qweight: torch.Tensor,
    absmax: torch.Tensor,
    levels: Optional[torch.Tensor],
    absmax_scale: Optional[torch.Tensor],
    absmax_offset: Optional[torch.Tensor],
    block_size: int,
    in_features: int,
    op: str,
) -> None:
    """The layout of the module docstring (the region's operand order; ``levels`` None: not
    given, as in ``NF4Weight``), or one error naming the argument."""
    check_choice(block_size, BLOCK_SIZES, "block_size", op)
    if not isinstance(in_features, (int, torch.SymInt)) or in_features < 1:
        raise ValueError(f"{op}: in_features must be an int >= 1; got {in_features!r}")
    if not isinstance(qweight, torch.Tensor) or qweight.dim() != 2:
        shape = tuple(qweight.shape) if isinstance(qweight, torch.Tensor) else type(qweight).__name__
        raise ValueError(f"{op}: qweight must be a 2-D tensor (N, K_pad // 2); got {shape}")
    n = qweight.shape[0]
    k_pad = round_up(in_features, block_size)
    blocks = (n, k_pad // block_size)
    check_packed(qweight, "qweight", (n, k_pad // 2), torch.uint8, op)
    if levels is not None:
        check_packed(levels, "levels", (len(NF4_LEVELS),), torch.float32, op)
    if (absmax_scale is None) != (absmax_offset is None):
        raise ValueError(f"{op}: double quantization needs both absmax_scale and absmax_offset")
    if absmax_scale is None:
        check_packed(absmax, "absmax", blocks, torch.float32, op)
        return
    check_packed(absmax, "absmax (double-quantized codes)", blocks, torch.uint8, op)
    check_packed(absmax_scale, "absmax_scale", (double_quant_blocks(*blocks),), torch.float32, op)
    check_packed(absmax_offset, "absmax_offset", (), torch.float32, op)


@dataclasses.dataclass(frozen=True)
class NF4Weight:
    """A weight (N, K) quantized by ``quantize_nf4`` (layout in the module docstring).

    ``absmax`` is float32, or uint8 codes when ``absmax_scale`` and ``absmax_offset`` are set.
    """

    qweight: torch.Tensor  # (N, K_pad // 2) uint8
    absmax: torch.Tensor  # (N, nb) float32, or uint8 codes
    block_size: int
    in_features: int  # K
    absmax_scale: Optional[torch.Tensor] = None  # (ceil(N * nb / 256),) float32
    absmax_offset: Optional[torch.Tensor] = None  # () float32

    def __post_init__(self) -> None:
        check_nf4_operands(
            self.qweight, self.absmax, None, self.absmax_scale, self.absmax_offset,
            self.block_size, self.in_features, "NF4Weight",
        )

    @property
    def out_features(self) -> int:
        return self.qweight.shape[0]

    @property
    def double_quant(self) -> bool:
        return self.absmax_scale is not None

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The weight's tensors in the region's operand order, ``levels`` left out:
        (qweight, absmax) or (qweight, absmax, absmax_scale, absmax_offset)."""
        if self.double_quant:
            return (self.qweight, self.absmax, self.absmax_scale, self.absmax_offset)
        return (self.qweight, self.absmax)


# ------------------------------------------------------------------------------ quantize


def decode_absmax(
    absmax: torch.Tensor, absmax_scale: Optional[torch.Tensor], absmax_offset: Optional[torch.Tensor]
) -> torch.Tensor:
    """absmax (N, nb) as float32: itself without double quantization, else its codes (uint8,
    or already float32) decoded, code * absmax_scale[block // 256] + absmax_offset."""
    if absmax_scale is None:
        return absmax
    n, blocks_per_row = absmax.shape
    flat_block = torch.arange(n * blocks_per_row, device=absmax.device).reshape(n, blocks_per_row)
    return absmax.to(torch.float32) * absmax_scale[flat_block // DOUBLE_QUANT_BLOCK] + absmax_offset


def quantize_absmax(absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """absmax (N, nb) float32 >= 0 -> (codes (N, nb) uint8, absmax_scale, absmax_offset).

    offset = min absmax; per 256 consecutive blocks (row-major), scale = (max - offset) / 255
    (at least MIN_SCALE); codes = clamp(round((absmax - offset) / scale), 0, 255).
    """
    n, blocks_per_row = absmax.shape
    flat = absmax.reshape(-1)
    offset = flat.amin()
    # Pad with the offset itself: padding then changes no group's maximum.
    padding = double_quant_blocks(n, blocks_per_row) * DOUBLE_QUANT_BLOCK - flat.numel()
    groups = torch.cat((flat, offset.expand(padding))).reshape(-1, DOUBLE_QUANT_BLOCK)
    scale = ((groups.amax(dim=1) - offset) / ABSMAX_QMAX).clamp(min=MIN_SCALE)
    codes = torch.round((groups - offset) / scale[:, None]).clamp(0, ABSMAX_QMAX)
    codes = codes.reshape(-1)[: flat.numel()].reshape(n, blocks_per_row).to(torch.uint8)
    return codes, scale, offset.clone()


def nearest_level(normalized: torch.Tensor) -> torch.Tensor:
    """Index (int64) of the NF4 level nearest to each value; ties go to the lower level."""
    levels = torch.tensor(NF4_LEVELS, dtype=torch.float64, device=normalized.device)
    midpoints = (levels[1:] + levels[:-1]) / 2
    return torch.bucketize(normalized.to(torch.float64), midpoints)


def quantize_nf4(weight: torch.Tensor, block_size: int = 64, *, double_quant: bool = False) -> NF4Weight:
    """weight (N, K) float -> NF4Weight (module docstring: absmax, codes, double quantization)."""
    check_float_weight(weight, "quantize_nf4")
    check_choice(block_size, BLOCK_SIZES, "block_size", "quantize_nf4")
    n, k = weight.shape
    blocks = pad_columns(weight, block_size).reshape(n, -1, block_size)
    absmax = blocks.abs().amax(dim=-1)
    absmax_scale = absmax_offset = None
    decoded = absmax
    if double_quant:
        absmax, absmax_scale, absmax_offset = quantize_absmax(absmax)
        decoded = decode_absmax(absmax, absmax_scale, absmax_offset)
    divisor = torch.where(decoded > 0, decoded, torch.ones_like(decoded)).to(torch.float64)
    codes = nearest_level(blocks.to(torch.float64) / divisor[..., None])
    qweight = pack_nibbles(codes.reshape(n, -1))
    return NF4Weight(qweight, absmax, block_size, k, absmax_scale, absmax_offset)


# ---------------------------------------------------------------------------- dequantize


def dequantize_nf4_packed(
    qweight: torch.Tensor,
    absmax: torch.Tensor,
    absmax_scale: Optional[torch.Tensor] = None,
    absmax_offset: Optional[torch.Tensor] = None,
    *,
    block_size: int,
    in_features: int,
    dtype: torch.dtype,
    levels: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """NF4 tensors -> W (N, K = in_features) in ``dtype``, as one invoke_quant region.

    W = levels[u] * absmax per block in float32 (absmax decoded first when double-quantized),
    K padding sliced off, then cast. ``levels`` defaults to ``nf4_levels(qweight.device)``;
    pass a buffer to avoid building it on every call.
    """
    op = "dequantize_nf4"
    check_activation_dtype(dtype, op)
    if levels is None:
        levels = nf4_levels(qweight.device)
    check_nf4_operands(qweight, absmax, levels, absmax_scale, absmax_offset, block_size, in_features, op)

    if absmax_scale is None:

        def dequantize(qweight: torch.Tensor, absmax: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
            return dequantize_nf4_values(qweight, absmax, levels, None, None, block_size, in_features, dtype)

        return _REGION(dequantize, qweight, absmax, levels, scheme=NF4)

    def dequantize_double(
        qweight: torch.Tensor,
        absmax_codes: torch.Tensor,
        levels: torch.Tensor,
        absmax_scale: torch.Tensor,
        absmax_offset: torch.Tensor,
    ) -> torch.Tensor:
        return dequantize_nf4_values(
            qweight, absmax_codes, levels, absmax_scale, absmax_offset, block_size, in_features, dtype
        )

    return _REGION(dequantize_double, qweight, absmax, levels, absmax_scale, absmax_offset, scheme=NF4)


def dequantize_nf4_values(
    qweight: torch.Tensor,
    absmax: torch.Tensor,
    levels: torch.Tensor,
    absmax_scale: Optional[torch.Tensor],
    absmax_offset: Optional[torch.Tensor],
    block_size: int,
    in_features: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The region's body as a plain function (the fused op's formula too): NF4 tensors ->
    W (N, K = in_features) in ``dtype``, levels[u] * absmax per block in float32.

    Touches its operands in the documented order (qweight, absmax, levels[, absmax_scale,
    absmax_offset]): Dynamo lifts a region's operands in first-touch order
    (tests/impl/test_schemes_nf4.py checks). The block absmax (N, nb, 1) broadcasts over a
    (N, nb, B) view: one pointwise loop under Inductor.
    """
    codes = unpack_nibbles(qweight)
    block_absmax = absmax.to(torch.float32)
    values = levels[codes.to(torch.int64)]
    block_absmax = decode_absmax(block_absmax, absmax_scale, absmax_offset)
    n = values.shape[0]
    scaled = values.reshape(n, -1, block_size) * block_absmax[..., None]
    return scaled.reshape(n, -1)[:, :in_features].to(dtype)


def dequantize_nf4(weight: NF4Weight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """NF4Weight -> W (N, K) in ``dtype`` (see ``dequantize_nf4_packed``)."""
    return dequantize_nf4_packed(
        *weight.tensors(), block_size=weight.block_size, in_features=weight.in_features, dtype=dtype
    )


def decode_absmax_reference(weight: NF4Weight) -> torch.Tensor:
    """The weight's absmax (N, nb) in float64; double-quantized codes decoded in float64."""
    if not weight.double_quant:
        return weight.absmax.to(torch.float64)
    n, blocks_per_row = weight.absmax.shape
    flat_block = torch.arange(n * blocks_per_row, device=weight.absmax.device).reshape(n, blocks_per_row)
    scale = weight.absmax_scale.to(torch.float64)[flat_block // DOUBLE_QUANT_BLOCK]
    return weight.absmax.to(torch.float64) * scale + weight.absmax_offset.to(torch.float64)


def dequantize_nf4_reference(weight: NF4Weight) -> torch.Tensor:
    """NF4Weight -> W (N, K) float64: the layout's formula, codes by integer division."""
    levels = torch.tensor(NF4_LEVELS, dtype=torch.float64, device=weight.qweight.device)
    values = levels[unpack_nibbles_reference(weight.qweight)]
    absmax = decode_absmax_reference(weight).repeat_interleave(weight.block_size, dim=1)
    return (values * absmax)[:, : weight.in_features]


__all__ = [
    "BLOCK_SIZES",
    "DOUBLE_QUANT_BLOCK",
    "NF4Weight",
    "NF4_LEVELS",
    "decode_absmax",
    "decode_absmax_reference",
    "dequantize_nf4",
    "dequantize_nf4_packed",
    "dequantize_nf4_reference",
    "dequantize_nf4_values",
    "nf4_levels",
    "quantize_absmax",
    "quantize_nf4",
]
