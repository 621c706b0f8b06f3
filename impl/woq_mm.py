"""The fused weight-only matmuls: one op per scheme, y = x @ dequantize(weight).T [+ bias].

    torch.ops.impl.woq_mm_int8(x, qweight, scale, bias)                          -> (..., N)
    torch.ops.impl.woq_mm_int4(x, qweight, scale, zero, bias, group_size)        -> (..., N)
    torch.ops.impl.woq_mm_nf4(x, qweight, absmax, levels, absmax_scale,
                              absmax_offset, bias, block_size)                   -> (..., N)

One op ``woq_mm_<short>(x, *operands, bias, *ints)`` for each scheme of
``impl.schemes.registry``, defined from its record (schema, the one operand check, the
formula) as the scheme registers. x (..., K) is the activation (float32 / bfloat16 /
float16), K = in_features; the weight tensors are the scheme's layout
(``impl/schemes/<scheme>.py``; NF4's ``absmax_scale`` and ``absmax_offset`` are None without
double quantization); bias (N,) in x's dtype or None. The result has x's dtype and leading dims.

These are what ``impl.passes.woq_fusion`` puts in place of "dequantize region -> matmul".
Eagerly (and as Inductor's fallback) each computes exactly what the unfused program does:
the scheme's formula (its region's body: float32, then cast to x's dtype) followed by
``F.linear``; on CUDA with float16 / bfloat16 activations it calls the scheme's Triton
kernel (``torch.ops.impl.woq_mm_<short>_triton``, ``impl.kernels.ops``) instead.
``impl.lowerings.woq_mm_devices`` lowers them.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from . import kernels
from .schemes.common import ACTIVATION_DTYPES
from .schemes.registry import WeightOnlyScheme, by_short, on_register

NAMESPACE = "impl"
TRITON_ACTIVATION_DTYPES = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------- checks


def check_call(scheme: WeightOnlyScheme, x: torch.Tensor, operands: tuple, bias: Optional[torch.Tensor],
               ints: tuple) -> None:
    """The fused op's arguments: x (..., K) of an activation dtype, the weight operands by the
    scheme's one check, bias (N,) in x's dtype or None; one error naming the argument."""
    op = scheme.op_name
    if x.dim() < 1:
        raise ValueError(f"{op}: x must have a last dimension K; got a 0-d tensor")
    scheme.check(*operands, *ints, x.shape[-1], op)
    if x.dtype not in ACTIVATION_DTYPES:
        allowed = ", ".join(str(d) for d in ACTIVATION_DTYPES)
        raise TypeError(f"{op}: x dtype {x.dtype} is not one of {allowed}")
    n = operands[0].shape[0]
    if bias is not None and (tuple(bias.shape) != (n,) or bias.dtype != x.dtype):
        raise ValueError(f"{op}: bias must be ({n},) {x.dtype}; got {tuple(bias.shape)} {bias.dtype}")


def split_arguments(scheme: WeightOnlyScheme, args: tuple, kwargs: Optional[dict] = None,
                    ) -> tuple[torch.Tensor, tuple, Optional[torch.Tensor], tuple]:
    """(x, operands, bias, ints) of a call of the fused op (arguments by position or keyword;
    one left out is None, the schema's default)."""
    names = ("x", *scheme.operands, "bias", *scheme.ints)
    given = dict(zip(names, args), **(kwargs or {}))
    values = [given.get(name) for name in names]
    at = scheme.bias_index
    return values[0], tuple(values[1:at]), values[at], tuple(values[at + 1:])


# --------------------------------------------------------------------------- CUDA path


def _use_triton(x: torch.Tensor) -> bool:
    """The Triton kernels take float16 / bfloat16 activations on a CUDA device."""
    return x.is_cuda and x.dtype in TRITON_ACTIVATION_DTYPES and x.numel() > 0 and kernels.triton_available()


def _through_triton(scheme: WeightOnlyScheme, x: torch.Tensor, operands: tuple, bias: Optional[torch.Tensor],
                    ints: tuple) -> torch.Tensor:
    """x (..., K) flattened to a unit-stride (M, K), the kernel's triton_op, bias, leading dims restored."""
    from .kernels import ops  # imports triton: only once a CUDA call needs it

    flat = x.reshape(-1, x.shape[-1])
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    y = ops.op_of(scheme.short)(flat, *ops.op_arguments(scheme.short, operands, ints))
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], y.shape[-1])


def double_quant_operands(absmax_scale: Optional[torch.Tensor], absmax_offset: Optional[torch.Tensor]) -> tuple:
    """NF4's (absmax_scale, absmax_offset) as the kernels take them: unit-stride, or None
    without double quantization (the kernels then read absmax as float32)."""
    return tuple(None if t is None else t.contiguous() for t in (absmax_scale, absmax_offset))


# --------------------------------------------------------------------------- the ops


def eager(scheme: WeightOnlyScheme, *args, **kwargs) -> torch.Tensor:
    """The op's formula on its arguments: F.linear(x, formula(operands, ints, K, x.dtype), bias)."""
    x, operands, bias, ints = split_arguments(scheme, args, kwargs)
    return F.linear(x, scheme.formula(*operands, *ints, int(x.shape[-1]), x.dtype), bias)


def _define(scheme: WeightOnlyScheme):
    """``torch.ops.impl.woq_mm_<short>``: its schema from the record, one implementation for all."""

    def woq_mm(*args, **kwargs):
        x, operands, bias, ints = split_arguments(scheme, args, kwargs)
        check_call(scheme, x, operands, bias, ints)
        if _use_triton(x):  # NF4 decodes any levels table on the device (no host sync: CUDA-graph safe)
            return _through_triton(scheme, x, operands, bias, ints)
        return eager(scheme, x, *operands, bias, *ints)

    def fake(*args, **kwargs):
        x, operands, bias, ints = split_arguments(scheme, args, kwargs)
        check_call(scheme, x, operands, bias, ints)
        return x.new_empty((*x.shape[:-1], operands[0].shape[0]))

    woq_mm.__name__ = woq_mm.__qualname__ = scheme.op_name
    woq_mm.__doc__ = f"y (..., N) = x (..., K) @ W.T + bias, W from the {scheme.name} layout."
    op = torch.library.custom_op(f"{NAMESPACE}::{scheme.op_name}", woq_mm, mutates_args=(), schema=scheme.schema())
    op.register_fake(fake)
    return op


_DEFINED: dict[str, object] = {}


def _define_once(scheme: WeightOnlyScheme) -> None:
    if scheme.name not in _DEFINED:
        _DEFINED[scheme.name] = _define(scheme)


def fused_op(scheme_name: str):
    """``torch.ops.impl.woq_mm_<short>.default`` of a registered scheme."""
    return _DEFINED[scheme_name]._opoverload


def __getattr__(name: str):
    """``woq_mm_<short>``: the scheme's op (a ``torch.library.CustomOpDef``, callable)."""
    if name.startswith("woq_mm_"):
        return _DEFINED[by_short(name[len("woq_mm_"):]).name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


on_register(_define_once)  # every scheme, those registered later included, gets its op

__all__ = ["check_call", "eager", "fused_op", "split_arguments"]
