"""int8 weight-only, per output channel, symmetric.

Layout, weight W (N, K) used as y = x @ W.T:

    qweight (N, K) int8 in [-127, 127]
    scale   (N,)   float32
    W[n, k] = qweight[n, k] * scale[n]

-128 is never produced, so the grid is symmetric around 0 and negation is exact.

Choosing the scale of a row w: scale = max |w| / 127.5. The largest magnitude then lands on
±127.5 and is clamped to ±127, an error of half a step like any rounding, while every
other value gets a 0.4 % finer grid than with / 127. With ``search=True`` (default) each
row also tries the range shrunk by the ratios in ``CLIP_RATIOS`` and a least-squares refit
of the scale to the chosen codes, keeping whichever has the smallest squared error.

``dequantize_int8`` is one ``invoke_quant`` region (scheme ``"int8_weight_only"``) whose
operands are ``(qweight, scale)`` in that order; ``impl.passes`` fuses it with the matmul
that consumes it. The body closes over nothing but ``dtype`` (the output's dtype).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..hop import InvokeQuant

from .common import MIN_SCALE, check_activation_dtype, check_float_weight, check_packed

INT8_WEIGHT_ONLY = "int8_weight_only"  # the region's scheme= keyword: this spelling is the only one
QMIN, QMAX = -127, 127
RANGE_STEPS = 127.5  # max |w| maps to ±127.5 (see the module docstring)
CLIP_RATIOS = (1.0, 0.99, 0.98, 0.97, 0.96, 0.94, 0.92)
_REGION = InvokeQuant()  # a matmul prologue: low-precision codegen when it stays unfused


def check_int8_operands(qweight: torch.Tensor, scale: torch.Tensor, in_features: Optional[int], op: str) -> None:
    """The layout of the module docstring (K = ``in_features``, None: qweight's own), or one
    error naming the argument."""
    if not isinstance(qweight, torch.Tensor) or qweight.dim() != 2:
        shape = tuple(qweight.shape) if isinstance(qweight, torch.Tensor) else type(qweight).__name__
        raise ValueError(f"{op}: qweight must be a 2-D tensor (N, K); got {shape}")
    if in_features is not None and qweight.shape[1] != in_features:
        raise ValueError(f"{op}: qweight must be (N, K = {in_features}); got shape {tuple(qweight.shape)}")
    check_packed(qweight, "qweight", tuple(qweight.shape), torch.int8, op)
    check_packed(scale, "scale", (qweight.shape[0],), torch.float32, op)


@dataclasses.dataclass(frozen=True)
class Int8Weight:
    """A weight (N, K) quantized by ``quantize_int8``: qweight (N, K) int8, scale (N,) float32."""

    qweight: torch.Tensor
    scale: torch.Tensor

    def __post_init__(self) -> None:
        check_int8_operands(self.qweight, self.scale, None, "Int8Weight")

    @property
    def out_features(self) -> int:
        return self.qweight.shape[0]

    @property
    def in_features(self) -> int:
        return self.qweight.shape[1]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The region's operands, in order: (qweight, scale)."""
        return (self.qweight, self.scale)


def _codes(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Codes (N, K) float32 in [-127, 127] of weight (N, K) float32 for per-row scale (N,)."""
    return torch.round(weight / scale[:, None]).clamp(QMIN, QMAX)


def _squared_error(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-row sum of squared dequantization errors (N,)."""
    return (_codes(weight, scale) * scale[:, None] - weight).square().sum(dim=1)


def choose_qparams_int8(weight: torch.Tensor, *, search: bool = True) -> torch.Tensor:
    """weight (N, K) float -> scale (N,) float32 (at least MIN_SCALE; see the module docstring)."""
    check_float_weight(weight, "choose_qparams_int8")
    weight = weight.to(torch.float32)
    amax = weight.abs().amax(dim=1)
    scale = (amax / RANGE_STEPS).clamp(min=MIN_SCALE)
    if not search:
        return scale
    best_error = _squared_error(weight, scale)
    for ratio in CLIP_RATIOS[1:]:
        candidate = (amax * ratio / RANGE_STEPS).clamp(min=MIN_SCALE)
        error = _squared_error(weight, candidate)
        better = error < best_error
        scale = torch.where(better, candidate, scale)
        best_error = torch.where(better, error, best_error)
    codes = _codes(weight, scale)
    denominator = codes.square().sum(dim=1)
    fitted = torch.where(denominator > 0, (weight * codes).sum(dim=1) / denominator.clamp(min=1), scale)
    fitted = fitted.clamp(min=MIN_SCALE)
    return torch.where(_squared_error(weight, fitted) < best_error, fitted, scale)


def quantize_int8(weight: torch.Tensor, *, search: bool = True) -> Int8Weight:
    """weight (N, K) float -> Int8Weight: qweight = clamp(round(weight / scale[:, None]), -127, 127).

    Rounds half to even.
    """
    check_float_weight(weight, "quantize_int8")
    scale = choose_qparams_int8(weight, search=search)
    return Int8Weight(_codes(weight.to(torch.float32), scale).to(torch.int8), scale)


def dequantize_int8_packed(qweight: torch.Tensor, scale: torch.Tensor, *, dtype: torch.dtype) -> torch.Tensor:
    """qweight (N, K) int8, scale (N,) float32 -> W (N, K) in ``dtype``, as one invoke_quant region.

    W = qweight * scale[:, None] computed in float32, then cast to ``dtype``.
    """
    check_activation_dtype(dtype, "dequantize_int8")
    check_int8_operands(qweight, scale, None, "dequantize_int8")

    def dequantize(qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return dequantize_int8_values(qweight, scale, dtype)

    return _REGION(dequantize, qweight, scale, scheme=INT8_WEIGHT_ONLY)


def dequantize_int8_values(qweight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The region's body as a plain function (the fused op's formula too): qweight (N, K) int8,
    scale (N,) float32 -> W (N, K) in ``dtype``, computed in float32.

    Dynamo lifts a region's operands in the order its body first touches them: this touches
    (qweight, scale) in that order.
    """
    values = qweight.to(torch.float32)
    return (values * scale[:, None]).to(dtype)


def dequantize_int8_formula(qweight: torch.Tensor, scale: torch.Tensor, in_features: int, dtype: torch.dtype) -> torch.Tensor:
    """``dequantize_int8_values`` called as every scheme's formula is (K unused: qweight's own)."""
    return dequantize_int8_values(qweight, scale, dtype)


def dequantize_int8(weight: Int8Weight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Int8Weight -> W (N, K) in ``dtype`` (see ``dequantize_int8_packed``)."""
    return dequantize_int8_packed(weight.qweight, weight.scale, dtype=dtype)


def dequantize_int8_reference(weight: Int8Weight) -> torch.Tensor:
    """Int8Weight -> W (N, K) float64, the layout's formula evaluated in float64."""
    return weight.qweight.to(torch.float64) * weight.scale.to(torch.float64)[:, None]


__all__ = [
    "INT8_WEIGHT_ONLY",
    "Int8Weight",
    "check_int8_operands",
    "choose_qparams_int8",
    "dequantize_int8",
    "dequantize_int8_formula",
    "dequantize_int8_packed",
    "dequantize_int8_reference",
    "dequantize_int8_values",
    "quantize_int8",
]
