"""The fused weight-only matmuls: one op per scheme, y = x @ dequantize(weight).T [+ bias].

    torch.ops.impl.woq_mm_int8(x, qweight, scale, bias)                          -> (..., N)
    torch.ops.impl.woq_mm_int4(x, qweight, scale, zero, bias, group_size)        -> (..., N)
    torch.ops.impl.woq_mm_nf4(x, qweight, absmax, levels, absmax_scale,
                              absmax_offset, bias, block_size)                   -> (..., N)

x (..., K) is the activation (float32 / bfloat16 / float16), K = in_features; the weight
tensors are the scheme's layout (``impl/schemes/<scheme>.py``; NF4's ``absmax_scale`` and
``absmax_offset`` are None without double quantization); bias (N,) in x's dtype or None.
The result has x's dtype and leading dims.

These are what ``impl.passes.woq_fusion`` puts in place of "dequantize region -> matmul".
Eagerly (and as Inductor's fallback) each computes exactly what the unfused program does:
the scheme's dequantization (float32, then cast to x's dtype) followed by ``F.linear``; on
CUDA with float16 / bfloat16 activations it calls the Triton kernels of ``impl.kernels``
(``torch.ops.impl.woq_mm_<scheme>_triton``) instead. ``impl.lowerings.woq_mm_cpu`` lowers
them on the CPU.

``dequantize_<scheme>`` below are the scheme regions' bodies themselves, as plain functions
(the CPU lowering traces and inlines them).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from . import kernels
from .schemes import int4 as int4_scheme
from .schemes import int8 as int8_scheme
from .schemes import nf4 as nf4_scheme
from .schemes.common import ACTIVATION_DTYPES, round_up, unpack_nibbles

NAMESPACE = "impl"
TRITON_ACTIVATION_DTYPES = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------- dequantization


# The scheme regions' bodies, as plain functions: the fused ops compute exactly what the
# unfused program's regions compute, and the CPU lowering traces them.
dequantize_int8 = int8_scheme.dequantize_int8_values
dequantize_int4 = int4_scheme.dequantize_int4_values
dequantize_nf4 = nf4_scheme.dequantize_nf4_values


# --------------------------------------------------------------------------- checks


def _check_common(op: str, x: torch.Tensor, n: int, bias: Optional[torch.Tensor]) -> None:
    if x.dtype not in ACTIVATION_DTYPES:
        allowed = ", ".join(str(d) for d in ACTIVATION_DTYPES)
        raise TypeError(f"{op}: x dtype {x.dtype} is not one of {allowed}")
    if x.dim() < 1:
        raise ValueError(f"{op}: x must have a last dimension K; got a 0-d tensor")
    if bias is not None and (tuple(bias.shape) != (n,) or bias.dtype != x.dtype):
        raise ValueError(f"{op}: bias must be ({n},) {x.dtype}; got {tuple(bias.shape)} {bias.dtype}")


def _check(op: str, name: str, t: torch.Tensor, shape: tuple, dtype: torch.dtype) -> None:
    if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
        raise ValueError(f"{op}: {name} must be {tuple(shape)} {dtype}; got {tuple(t.shape)} {t.dtype}")


def check_int8(x, qweight, scale, bias) -> None:
    op = "woq_mm_int8"
    if qweight.dim() != 2:
        raise ValueError(f"{op}: qweight must be 2-D (N, K); got shape {tuple(qweight.shape)}")
    n, k = qweight.shape
    _check_common(op, x, n, bias)
    _check(op, "qweight", qweight, (n, x.shape[-1]), torch.int8)
    _check(op, "scale", scale, (n,), torch.float32)


def check_int4(x, qweight, scale, zero, bias, group_size: int) -> None:
    op = "woq_mm_int4"
    if group_size not in int4_scheme.GROUP_SIZES:
        raise ValueError(f"{op}: group_size {group_size} is not one of {int4_scheme.GROUP_SIZES}")
    if qweight.dim() != 2:
        raise ValueError(f"{op}: qweight must be 2-D (N, K_pad // 2); got shape {tuple(qweight.shape)}")
    n = qweight.shape[0]
    _check_common(op, x, n, bias)
    k_pad = round_up(x.shape[-1], group_size)
    _check(op, "qweight", qweight, (n, k_pad // 2), torch.uint8)
    _check(op, "scale", scale, (n, k_pad // group_size), torch.float32)
    _check(op, "zero", zero, (n, k_pad // group_size), torch.float32)


def check_nf4(x, qweight, absmax, levels, absmax_scale, absmax_offset, bias, block_size: int) -> None:
    op = "woq_mm_nf4"
    if qweight.dim() != 2:
        raise ValueError(f"{op}: qweight must be 2-D (N, K_pad // 2); got shape {tuple(qweight.shape)}")
    _check_common(op, x, qweight.shape[0], bias)
    nf4_scheme.check_nf4_operands(qweight, absmax, absmax_scale, absmax_offset, block_size, int(x.shape[-1]), op)
    _check(op, "levels", levels, (len(nf4_scheme.NF4_LEVELS),), torch.float32)


# --------------------------------------------------------------------------- CUDA path


def _use_triton(x: torch.Tensor) -> bool:
    """The Triton kernels take float16 / bfloat16 activations on a CUDA device."""
    return x.is_cuda and x.dtype in TRITON_ACTIVATION_DTYPES and x.numel() > 0 and kernels.triton_available()


def _triton_ops():
    """``impl.lowerings.triton``'s ops, registered on first use (importing it imports triton)."""
    from .lowerings import triton as triton_lowerings

    return triton_lowerings.OPS


def _through_triton(op_name: str, x: torch.Tensor, bias: Optional[torch.Tensor], *weight_args) -> torch.Tensor:
    """x (..., K) flattened to a unit-stride (M, K), the kernel, bias, leading dims restored."""
    flat = x.reshape(-1, x.shape[-1])
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    y = _triton_ops()[op_name](flat, *weight_args)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], y.shape[-1])


def double_quant_operands(absmax_scale: Optional[torch.Tensor], absmax_offset: Optional[torch.Tensor]) -> tuple:
    """NF4's (absmax_scale, absmax_offset) as the kernels take them: unit-stride, or None
    without double quantization (the kernels then read absmax as float32)."""
    return tuple(None if t is None else t.contiguous() for t in (absmax_scale, absmax_offset))


# --------------------------------------------------------------------------- the ops


@torch.library.custom_op(f"{NAMESPACE}::woq_mm_int8", mutates_args=())
def woq_mm_int8(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y (..., N) = x (..., K) @ (qweight (N, K) int8 * scale (N,) [:, None]).T + bias."""
    check_int8(x, qweight, scale, bias)
    if _use_triton(x):
        return _through_triton("int8", x, bias, qweight.contiguous(), scale.contiguous())
    return F.linear(x, dequantize_int8(qweight, scale, x.dtype), bias)


@torch.library.custom_op(f"{NAMESPACE}::woq_mm_int4", mutates_args=())
def woq_mm_int4(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bias: Optional[torch.Tensor],
    group_size: int,
) -> torch.Tensor:
    """y (..., N) = x (..., K) @ W.T + bias, W from the int4 group-wise layout."""
    check_int4(x, qweight, scale, zero, bias, group_size)
    if _use_triton(x):
        return _through_triton("int4", x, bias, qweight.contiguous(), scale.contiguous(), zero.contiguous(), group_size)
    weight = dequantize_int4(qweight, scale, zero, group_size, int(x.shape[-1]), x.dtype)
    return F.linear(x, weight, bias)


@torch.library.custom_op(f"{NAMESPACE}::woq_mm_nf4", mutates_args=())
def woq_mm_nf4(
    x: torch.Tensor,
    qweight: torch.Tensor,
    absmax: torch.Tensor,
    levels: torch.Tensor,
    absmax_scale: Optional[torch.Tensor],
    absmax_offset: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    block_size: int,
) -> torch.Tensor:
    """y (..., N) = x (..., K) @ W.T + bias, W from the NF4 layout (optionally double-quantized)."""
    check_nf4(x, qweight, absmax, levels, absmax_scale, absmax_offset, bias, block_size)
    if _use_triton(x):  # the kernel decodes any levels table (no host sync: CUDA-graph safe)
        return _through_triton("nf4", x, bias, qweight.contiguous(), absmax.contiguous(), block_size,
                               levels.contiguous(), *double_quant_operands(absmax_scale, absmax_offset))
    weight = dequantize_nf4(
        qweight, absmax, levels, absmax_scale, absmax_offset, block_size, int(x.shape[-1]), x.dtype
    )
    return F.linear(x, weight, bias)


def _output_like(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], n))


@woq_mm_int8.register_fake
def _(x, qweight, scale, bias=None):
    check_int8(x, qweight, scale, bias)
    return _output_like(x, qweight.shape[0])


@woq_mm_int4.register_fake
def _(x, qweight, scale, zero, bias, group_size):
    check_int4(x, qweight, scale, zero, bias, group_size)
    return _output_like(x, qweight.shape[0])


@woq_mm_nf4.register_fake
def _(x, qweight, absmax, levels, absmax_scale, absmax_offset, bias, block_size):
    check_nf4(x, qweight, absmax, levels, absmax_scale, absmax_offset, bias, block_size)
    return _output_like(x, qweight.shape[0])


OPS = {
    "int8_weight_only": torch.ops.impl.woq_mm_int8.default,
    "int4_weight_only": torch.ops.impl.woq_mm_int4.default,
    "nf4": torch.ops.impl.woq_mm_nf4.default,
}

__all__ = [
    "OPS",
    "dequantize_int4",
    "dequantize_int8",
    "dequantize_nf4",
    "woq_mm_int4",
    "woq_mm_int8",
    "woq_mm_nf4",
]
