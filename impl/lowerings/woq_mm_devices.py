"""The fused weight-only matmuls' Inductor lowering, by the device of x.

One lowering is registered per op (``torch.ops.impl.woq_mm_<scheme>``); it hands the call to
the device's own: ``woq_mm_cpu`` on the CPU, ``woq_mm_cuda`` (our Triton kernels) on CUDA.
Where the device's lowering does not apply (another device, an empty x, a CUDA case the
kernels do not take), the op stays a call of its own implementation (a fallback kernel).
"""

from __future__ import annotations

from typing import Any

import torch.fx as fx
from torch._inductor.lowering import fallback_handler
from torch._inductor.virtualized import V

from .. import compat, woq_mm
from . import woq_mm_cpu, woq_mm_cuda


def _register(scheme: str) -> None:
    op = woq_mm.OPS[scheme]
    fallback = fallback_handler(op, add_to_fallback_set=False)

    @compat.register_inductor_lowering(op)
    def lower(*args: Any, **kwargs: Any) -> Any:
        node = V.graph.current_node
        x = node.args[0].meta.get("val") if isinstance(node.args[0], fx.Node) else None
        if kwargs or x is None or x.numel() == 0:
            return fallback(*args, **kwargs)
        # A call that leaves the optional bias out (woq_mm_int8(x, q, s)) records fewer args.
        args = (*args, *([None] * (woq_mm_cpu.BIAS_INDEX[scheme] + 1 - len(args))))
        if x.device.type == "cuda":
            lowered = woq_mm_cuda.lower_through_triton(scheme, args)
            return fallback(*args, **kwargs) if lowered is None else lowered
        if x.device.type != "cpu":
            return fallback(*args, **kwargs)
        return woq_mm_cpu._Lowering(scheme, args).lower()


for _scheme in woq_mm.OPS:
    _register(_scheme)
