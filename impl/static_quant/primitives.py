"""Static int8 quantize / dequantize, each one ``invoke_quant`` region.

Affine quantization with scale ``s`` and zero point ``z`` (int codes ``q`` in [qmin, qmax]):

    quantize:   q = clamp(round(x / s) + z, qmin, qmax)      (round half to even)
    dequantize: x = (q - z) * s

computed in float32. Per-tensor uses one ``(s, z)``; per-channel uses one per slice of
``axis`` (``scales`` and ``zero_points`` of shape (C,) where C = x.shape[axis]).

Outside ``torch.compile`` each function is exactly that math. Under ``torch.compile`` it is
one ``torch.ops.higher_order.impl_invoke_quant(subgraph, x, scale, zero_point,
scheme=...)`` node (see :mod:`impl.static_quant.schemes` for the names), which the passes
in :mod:`impl.static_quant.passes` fold into oneDNN quantized kernels, and which Inductor
otherwise inlines as ordinary pointwise code.

Operand contract the passes rely on: ``scale`` is a float32 tensor and ``zero_point`` an
int32 tensor, 0-d for per-tensor and shaped (1, .., C, .., 1) (C on ``axis``, as many dims
as ``x``) for per-channel, so that the region body is the same broadcast for both. Python
numbers are turned into such tensors here, outside the region, so that they reach the
graph as operands (constants the passes can read) rather than being baked into the body.
"""

from __future__ import annotations

import math
from typing import Callable, Union

import torch

from ..hop import InvokeQuant

from .schemes import FLOAT_DTYPES, QDTYPE_TAGS, Direction, Granularity, scheme_of

Number = Union[int, float]
ScaleLike = Union[float, torch.Tensor]
ZeroPointLike = Union[int, torch.Tensor]

# Our regions are standalone pointwise code, not matmul prologues: let Inductor generate
# them as it would any pointwise code (float32 compute) when no pass folds them.
_REGION = InvokeQuant(codegen_low_precision=False)
# Floor for chosen scales, so an all-zero tensor still gets a usable (positive) scale.
_MIN_SCALE = float(torch.finfo(torch.float32).eps)


# ------------------------------------------------------------------------------- regions
# Dynamo lifts a region's tensor operands in the order the body first uses them; each body
# below touches (input, scale, zero_point) in that order so the graph's operand order is
# the signature's. The dtype constants are closed over (one function per variant, made
# once) rather than passed as InvokeQuant keyword arguments: those arrive as
# functools.partial, which Dynamo fails to trace through the op's functools.wraps.


def _make_quantize_region(qdtype: torch.dtype) -> Callable[..., torch.Tensor]:
    info = torch.iinfo(qdtype)

    def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        return torch.clamp(torch.round(x / scale) + zero_point, info.min, info.max).to(qdtype)

    quantize.__name__ = quantize.__qualname__ = f"quantize_to_{QDTYPE_TAGS[qdtype]}"
    return quantize


def _make_dequantize_region(out_dtype: torch.dtype) -> Callable[..., torch.Tensor]:
    def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
        values = codes.to(torch.float32)
        scale = scale.to(torch.float32)  # a no-op by contract; uses scale before zero_point
        return ((values - zero_point) * scale).to(out_dtype)

    dequantize.__name__ = dequantize.__qualname__ = f"dequantize_to_{str(out_dtype).removeprefix('torch.')}"
    return dequantize


_QUANTIZE_REGIONS = {qdtype: _make_quantize_region(qdtype) for qdtype in QDTYPE_TAGS}
_DEQUANTIZE_REGIONS = {float_dtype: _make_dequantize_region(float_dtype) for float_dtype in FLOAT_DTYPES}


# ------------------------------------------------------------------------- per-tensor API


def quantize_per_tensor(
    x: torch.Tensor, scale: ScaleLike, zero_point: ZeroPointLike, dtype: torch.dtype = torch.uint8
) -> torch.Tensor:
    """x (any shape, float32 or bfloat16) -> codes of ``dtype`` (same shape).

    ``scale`` / ``zero_point``: Python numbers or one-element tensors.
    """
    scheme = scheme_of(Direction.QUANTIZE, Granularity.PER_TENSOR, dtype, x.dtype)
    scale_t = _per_tensor_scale(scale, x.device)
    zero_point_t = _per_tensor_zero_point(zero_point, dtype, x.device)
    return _REGION(_QUANTIZE_REGIONS[dtype], x, scale_t, zero_point_t, scheme=scheme.name)


def dequantize_per_tensor(
    codes: torch.Tensor, scale: ScaleLike, zero_point: ZeroPointLike,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """codes (any shape, uint8 or int8) -> ``out_dtype`` values (same shape).

    ``out_dtype=torch.bfloat16`` is the int8-mixed-bf16 variant (float32 math, then bf16).
    """
    scheme = scheme_of(Direction.DEQUANTIZE, Granularity.PER_TENSOR, codes.dtype, out_dtype)
    scale_t = _per_tensor_scale(scale, codes.device)
    zero_point_t = _per_tensor_zero_point(zero_point, codes.dtype, codes.device)
    return _REGION(_DEQUANTIZE_REGIONS[out_dtype], codes, scale_t, zero_point_t, scheme=scheme.name)


# ------------------------------------------------------------------------ per-channel API


def quantize_per_channel(
    x: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor, axis: int,
    dtype: torch.dtype = torch.int8,
) -> torch.Tensor:
    """x (..., C on ``axis``, ...) with scales, zero_points (C,) -> codes of ``dtype``."""
    scheme = scheme_of(Direction.QUANTIZE, Granularity.PER_CHANNEL, dtype, x.dtype)
    scale_t, zero_point_t = _per_channel_qparams(x, scales, zero_points, axis)
    return _REGION(_QUANTIZE_REGIONS[dtype], x, scale_t, zero_point_t, scheme=scheme.name)


def dequantize_per_channel(
    codes: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor, axis: int,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """codes (..., C on ``axis``, ...) with scales, zero_points (C,) -> ``out_dtype`` values.

    The weight side of a quantized linear (codes (N, K), axis 0) or conv2d (codes
    (O, I/groups, kH, kW), axis 0).
    """
    scheme = scheme_of(Direction.DEQUANTIZE, Granularity.PER_CHANNEL, codes.dtype, out_dtype)
    scale_t, zero_point_t = _per_channel_qparams(codes, scales, zero_points, axis)
    return _REGION(_DEQUANTIZE_REGIONS[out_dtype], codes, scale_t, zero_point_t, scheme=scheme.name)


# ------------------------------------------------------------------------ choose qparams


def choose_qparams_per_tensor(
    x: torch.Tensor, dtype: torch.dtype = torch.uint8, symmetric: bool = False
) -> tuple[float, int]:
    """Scale and zero point covering x's range (and 0), as Python numbers.

    Asymmetric: the range [min(x, 0), max(x, 0)] maps onto [qmin, qmax]. Symmetric: zero
    point 0 and scale = max|x| / qmax (int8), or the asymmetric choice pinned at 0 for uint8.
    """
    scheme = scheme_of(Direction.QUANTIZE, Granularity.PER_TENSOR, dtype, torch.float32)
    x = x.detach().to(torch.float64)
    low = min(float(x.min()), 0.0) if x.numel() else 0.0
    high = max(float(x.max()), 0.0) if x.numel() else 0.0
    if symmetric and dtype == torch.int8:
        return max(max(-low, high) / scheme.qmax, _MIN_SCALE), 0
    scale = max((high - low) / (scheme.qmax - scheme.qmin), _MIN_SCALE)
    zero_point = int(min(max(scheme.qmin - round(low / scale), scheme.qmin), scheme.qmax))
    return scale, zero_point


def choose_qparams_per_channel(
    w: torch.Tensor, axis: int = 0, dtype: torch.dtype = torch.int8, reduce_range: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-channel qparams: scales (C,) float32 = max|w| over the other dims / qmax,
    zero_points (C,) int32 zeros. What the oneDNN weight side expects.

    ``reduce_range``: use half the range (qmax 63 for int8), the codes oneDNN computes
    with exactly on x86 CPUs without VNNI (see :mod:`impl.static_quant.prepack`).
    """
    scheme = scheme_of(Direction.QUANTIZE, Granularity.PER_CHANNEL, dtype, torch.float32)
    axis = _check_axis(axis, w.dim())
    reduce_dims = [d for d in range(w.dim()) if d != axis]
    absmax = w.detach().abs().to(torch.float32).amax(dim=reduce_dims) if reduce_dims else w.detach().abs().float()
    qmax = scheme.qmax // 2 if reduce_range else scheme.qmax
    scales = (absmax / qmax).clamp_min(_MIN_SCALE)
    return scales, torch.zeros_like(scales, dtype=torch.int32)


# ----------------------------------------------------------------------------- operands


def _per_tensor_scale(scale: ScaleLike, device: torch.device) -> torch.Tensor:
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise ValueError(f"per-tensor scale must have one element, got shape {tuple(scale.shape)}")
        return scale.to(device=device, dtype=torch.float32).reshape(())
    if torch.compiler.is_compiling():
        # Not inspected while tracing: Dynamo makes global floats symbolic under
        # dynamic=True, and a Python check of a symbolic value breaks the graph.
        return torch.tensor(scale, dtype=torch.float32, device=device)
    return torch.tensor(_positive_scale(scale), dtype=torch.float32, device=device)


def _per_tensor_zero_point(zero_point: ZeroPointLike, qdtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(zero_point, torch.Tensor):
        if zero_point.numel() != 1:
            raise ValueError(f"per-tensor zero_point must have one element, got shape {tuple(zero_point.shape)}")
        return zero_point.to(device=device, dtype=torch.int32).reshape(())
    if torch.compiler.is_compiling():
        return torch.tensor(zero_point, dtype=torch.int32, device=device)  # see _per_tensor_scale
    if isinstance(zero_point, bool) or not isinstance(zero_point, int):
        raise TypeError(f"zero_point must be an int or a tensor, got {type(zero_point).__name__}")
    info = torch.iinfo(qdtype)
    if not info.min <= zero_point <= info.max:
        raise ValueError(f"zero_point {zero_point} is outside [{info.min}, {info.max}] of {qdtype}")
    return torch.tensor(zero_point, dtype=torch.int32, device=device)


def _per_channel_qparams(
    x: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor, axis: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """scales, zero_points (C,) -> float32 / int32 tensors shaped to broadcast along ``axis``."""
    axis = _check_axis(axis, x.dim())
    channels = x.shape[axis]
    for name, value in (("scales", scales), ("zero_points", zero_points)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"per-channel {name} must be a tensor, got {type(value).__name__}")
        if value.dim() != 1 or value.shape[0] != channels:
            raise ValueError(
                f"per-channel {name} must have shape ({channels},) for axis {axis} of a tensor of shape "
                f"{tuple(x.shape)}, got {tuple(value.shape)}"
            )
    shape = [1] * x.dim()
    shape[axis] = channels
    return (
        scales.to(device=x.device, dtype=torch.float32).reshape(shape),
        zero_points.to(device=x.device, dtype=torch.int32).reshape(shape),
    )


def _positive_scale(scale: Number) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float or a tensor, got {type(scale).__name__}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    return float(scale)


def _check_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a tensor with {ndim} dims")
    return axis % ndim
