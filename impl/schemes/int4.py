"""int4 weight-only, group-wise along K, asymmetric (zero points) or symmetric.

Layout, weight W (N, K) used as y = x @ W.T, group size G in
{32, 64, 128}, K_pad = K rounded up to a multiple of G:

    qweight (N, K_pad // 2)  uint8, two codes u in [0, 15] a byte:
                             byte j holds k = 2j (low nibble) and k = 2j + 1 (high nibble)
    scale   (N, K_pad // G)  float32
    zero    (N, K_pad // G)  float32 holding integers in [0, 15] (symmetric: all 8.0)
    W[n, k] = (u[n, k] - zero[n, k // G]) * scale[n, k // G]      for k < K

Columns K..K_pad-1 are padding: quantize pads W with zeros and stores their codes (u = zero,
which decodes to exactly 0); dequantize slices them off.

Choosing (scale, zero) per group of G values w:

- asymmetric: the range [lo, hi] = [min(min w, 0), max(max w, 0)] (0 stays exactly
  representable, so zero is an integer in [0, 15]); scale = (hi - lo) / 15,
  zero = round(-lo / scale);
- symmetric: zero = 8, codes u - 8 in [-8, 7]; scale = max |w| / 7.5.

With ``search=True`` (default) each group then also tries the range shrunk by the ratios
in ``CLIP_RATIOS`` (clipping a few outliers buys resolution for the rest) and keeps the
candidate with the smallest squared error; finally one least-squares step refits the
scale to the chosen codes, sum(w (u - zero)) / sum((u - zero)^2), kept per group only
where it lowers the error. Both steps only ever lower each group's error.

``dequantize_int4`` is one ``invoke_quant`` region (scheme ``"int4_weight_only"``) whose
operands are ``(qweight, scale, zero)`` in that order. The body closes over ``group_size``
(= 2 * qweight.shape[1] // scale.shape[1]), ``in_features`` (the output's K) and ``dtype``
(the output's dtype): all readable from the graph.
"""

from __future__ import annotations

import dataclasses

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

INT4_WEIGHT_ONLY = "int4_weight_only"  # the region's scheme= keyword: this spelling is the only one
GROUP_SIZES = (32, 64, 128)
QMAX = 15
SYMMETRIC_ZERO = 8.0
CLIP_RATIOS = (1.0, 0.96, 0.92, 0.88, 0.84, 0.8, 0.76)
_REGION = InvokeQuant()


def check_int4_operands(
    qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int, in_features: int, op: str
) -> None:
    """The layout of the module docstring, or one error naming the argument."""
    check_choice(group_size, GROUP_SIZES, "group_size", op)
    if not isinstance(in_features, (int, torch.SymInt)) or in_features < 1:
        raise ValueError(f"{op}: in_features must be an int >= 1; got {in_features!r}")
    if not isinstance(qweight, torch.Tensor) or qweight.dim() != 2:
        shape = tuple(qweight.shape) if isinstance(qweight, torch.Tensor) else type(qweight).__name__
        raise ValueError(f"{op}: qweight must be a 2-D tensor (N, K_pad // 2); got {shape}")
    n = qweight.shape[0]
    k_pad = round_up(in_features, group_size)
    check_packed(qweight, "qweight", (n, k_pad // 2), torch.uint8, op)
    check_packed(scale, "scale", (n, k_pad // group_size), torch.float32, op)
    check_packed(zero, "zero", (n, k_pad // group_size), torch.float32, op)


@dataclasses.dataclass(frozen=True)
class Int4Weight:
    """A weight (N, K) quantized by ``quantize_int4`` (layout in the module docstring)."""

    qweight: torch.Tensor  # (N, K_pad // 2) uint8
    scale: torch.Tensor  # (N, K_pad // G) float32
    zero: torch.Tensor  # (N, K_pad // G) float32
    group_size: int
    in_features: int  # K

    def __post_init__(self) -> None:
        check_int4_operands(self.qweight, self.scale, self.zero, self.group_size, self.in_features, "Int4Weight")

    @property
    def out_features(self) -> int:
        return self.qweight.shape[0]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The region's operands, in order: (qweight, scale, zero)."""
        return (self.qweight, self.scale, self.zero)


def _grouped(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N, K) -> (N, K_pad // G, G) float32, zero-padded along K."""
    padded = pad_columns(weight, group_size)
    return padded.reshape(padded.shape[0], -1, group_size)


def _codes(groups: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Codes u (N, G_count, G) float32 in [0, 15] of ``groups`` for per-group scale, zero."""
    return torch.round(groups / scale[..., None] + zero[..., None]).clamp(0, QMAX)


def _squared_error(groups, codes, scale, zero) -> torch.Tensor:
    """Per-group sum of squared dequantization errors, (N, G_count)."""
    return ((codes - zero[..., None]) * scale[..., None] - groups).square().sum(dim=-1)


def _range_qparams(lo: torch.Tensor, hi: torch.Tensor, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) mapping [lo, hi] (lo <= 0 <= hi) onto the codes."""
    if symmetric:
        scale = (torch.maximum(-lo, hi) / (QMAX / 2)).clamp(min=MIN_SCALE)
        return scale, torch.full_like(scale, SYMMETRIC_ZERO)
    scale = ((hi - lo) / QMAX).clamp(min=MIN_SCALE)
    return scale, torch.round(-lo / scale).clamp(0, QMAX)


def choose_qparams_int4(
    weight: torch.Tensor, group_size: int = 128, *, symmetric: bool = False, search: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (N, K) float -> (scale, zero), each (N, K_pad // G) float32 (see the module docstring)."""
    check_float_weight(weight, "choose_qparams_int4")
    check_choice(group_size, GROUP_SIZES, "group_size", "choose_qparams_int4")
    groups = _grouped(weight, group_size)
    lo = groups.amin(dim=-1).clamp(max=0)
    hi = groups.amax(dim=-1).clamp(min=0)
    scale, zero = _range_qparams(lo, hi, symmetric)
    if not search:
        return scale, zero
    best_error = _squared_error(groups, _codes(groups, scale, zero), scale, zero)
    for ratio in CLIP_RATIOS[1:]:
        candidate_scale, candidate_zero = _range_qparams(lo * ratio, hi * ratio, symmetric)
        error = _squared_error(groups, _codes(groups, candidate_scale, candidate_zero), candidate_scale, candidate_zero)
        better = error < best_error
        scale = torch.where(better, candidate_scale, scale)
        zero = torch.where(better, candidate_zero, zero)
        best_error = torch.where(better, error, best_error)
    # Least-squares refit of the scale to the chosen codes (zero fixed).
    centered = _codes(groups, scale, zero) - zero[..., None]
    denominator = centered.square().sum(dim=-1)
    fitted = torch.where(denominator > 0, (groups * centered).sum(dim=-1) / denominator.clamp(min=1), scale)
    fitted = fitted.clamp(min=MIN_SCALE)
    error = _squared_error(groups, _codes(groups, fitted, zero), fitted, zero)
    scale = torch.where(error < best_error, fitted, scale)
    return scale, zero


def quantize_int4(
    weight: torch.Tensor, group_size: int = 128, *, symmetric: bool = False, search: bool = True
) -> Int4Weight:
    """weight (N, K) float -> Int4Weight, u = clamp(round(w / scale + zero), 0, 15) packed two a byte."""
    check_float_weight(weight, "quantize_int4")
    check_choice(group_size, GROUP_SIZES, "group_size", "quantize_int4")
    scale, zero = choose_qparams_int4(weight, group_size, symmetric=symmetric, search=search)
    codes = _codes(_grouped(weight, group_size), scale, zero).reshape(weight.shape[0], -1)
    return Int4Weight(pack_nibbles(codes), scale, zero, group_size, weight.shape[1])


def dequantize_int4_packed(
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    *,
    group_size: int,
    in_features: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """(qweight, scale, zero) -> W (N, K = in_features) in ``dtype``, as one invoke_quant region.

    W = (u - zero) * scale per group, in float32, K padding sliced off, then cast.
    """
    check_activation_dtype(dtype, "dequantize_int4")
    check_int4_operands(qweight, scale, zero, group_size, in_features, "dequantize_int4")

    def dequantize(qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        return dequantize_int4_values(qweight, scale, zero, group_size, in_features, dtype)

    return _REGION(dequantize, qweight, scale, zero, scheme=INT4_WEIGHT_ONLY)


def dequantize_int4_values(
    qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int, in_features: int, dtype: torch.dtype
) -> torch.Tensor:
    """The region's body as a plain function (the fused op's formula too): (qweight, scale,
    zero) -> W (N, K = in_features) in ``dtype``, (u - zero) * scale per group in float32.

    Touches (qweight, scale, zero) in that order (Dynamo lifts a region's operands in
    first-touch order). Broadcasting the per-group parameters over a (N, groups, G) view
    (instead of a repeat_interleave) keeps it one pointwise loop under Inductor.
    """
    codes = unpack_nibbles(qweight)
    group_scale = scale[..., None]
    group_zero = zero[..., None]
    n = codes.shape[0]
    grouped = codes.reshape(n, -1, group_size).to(torch.float32)
    values = ((grouped - group_zero) * group_scale).reshape(n, -1)
    return values[:, :in_features].to(dtype)


def dequantize_int4(weight: Int4Weight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Int4Weight -> W (N, K) in ``dtype`` (see ``dequantize_int4_packed``)."""
    return dequantize_int4_packed(
        *weight.tensors(), group_size=weight.group_size, in_features=weight.in_features, dtype=dtype
    )


def dequantize_int4_reference(weight: Int4Weight) -> torch.Tensor:
    """Int4Weight -> W (N, K) float64: the layout's formula, codes by integer division."""
    codes = unpack_nibbles_reference(weight.qweight).to(torch.float64)
    scale = weight.scale.to(torch.float64).repeat_interleave(weight.group_size, dim=1)
    zero = weight.zero.to(torch.float64).repeat_interleave(weight.group_size, dim=1)
    return ((codes - zero) * scale)[:, : weight.in_features]


__all__ = [
    "GROUP_SIZES",
    "Int4Weight",
    "choose_qparams_int4",
    "dequantize_int4",
    "dequantize_int4_packed",
    "dequantize_int4_reference",
    "dequantize_int4_values",
    "quantize_int4",
]
