"""The fused weight-only matmuls' Inductor lowering, by the device of x.

One lowering is registered per op (``torch.ops.impl.woq_mm_<short>``, one a scheme of
``impl.schemes.registry``, as each registers); it hands the call to
the device's own: ``woq_mm_cpu`` on the CPU, ``woq_mm_cuda`` (our Triton kernels) on CUDA.
Where the device's lowering does not apply (another device, an empty x, a CUDA case the
kernels do not take), the op stays a call of its own implementation (a fallback kernel).
"""

from __future__ import annotations

from typing import Any, Optional

import torch.fx as fx
from torch._inductor.lowering import fallback_handler
from torch._inductor.virtualized import V

from .. import compat, woq_mm
from ..schemes.registry import WeightOnlyScheme, on_register
from . import woq_mm_cpu, woq_mm_cuda


def _register(record: WeightOnlyScheme) -> None:
    scheme = record.name
    op = woq_mm.fused_op(scheme)
    fallback = fallback_handler(op, add_to_fallback_set=False)

    @compat.register_inductor_lowering(op)
    def lower(*args: Any, **kwargs: Any) -> Any:
        node = V.graph.current_node
        x = node.args[0].meta.get("val") if isinstance(node.args[0], fx.Node) else None
        positional, fx_positional = _positional(op, args, kwargs), _positional(op, node.args, node.kwargs)
        if positional is None or fx_positional is None or x is None or x.numel() == 0:
            return fallback(*args, **kwargs)
        # The device lowerings read the node's arguments by position (fake values, ints).
        node.args, node.kwargs = fx_positional, {}
        if x.device.type == "cuda":
            lowered = woq_mm_cuda.lower_through_triton(scheme, positional)
            return fallback(*positional) if lowered is None else lowered
        if x.device.type != "cpu":
            return fallback(*positional)
        return woq_mm_cpu._Lowering(scheme, positional).lower()


def _positional(op: Any, args: tuple, kwargs: dict) -> Optional[tuple]:
    """The call's arguments by position, in the op's schema order, defaults filled in (a graph
    may carry the optional ones as keywords, ``bias=None``, or leave them out); None when a
    keyword is no argument of the op's."""
    names = [a.name for a in op._schema.arguments]
    if any(name not in names[len(args):] for name in kwargs):
        return None
    rest = []
    for argument in op._schema.arguments[len(args):]:
        if argument.name in kwargs:
            rest.append(kwargs[argument.name])
        else:
            rest.append(argument.default_value if argument.has_default_value() else None)
    return (*args, *rest)


on_register(_register)  # every scheme's op, those registered later included
