"""What the fused ops' device lowerings share: FX values, graph constants, the traced
decomposition and the scheme's formula as Inductor's own lowering (dequantize + matmul).

``woq_mm_cpu`` and ``woq_mm_cuda`` both import this module and not each other.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.fx as fx
from torch._inductor import config as inductor_config
from torch._inductor.virtualized import V

from .. import woq_mm
from ..schemes.registry import WeightOnlyScheme


def fake_value(arg: Any) -> Any:
    return arg.meta["val"] if isinstance(arg, fx.Node) else arg


def constant_value(arg: Any) -> Optional[torch.Tensor]:
    """The real tensor behind an FX argument that is a graph constant (frozen), else None."""
    if not (isinstance(arg, fx.Node) and arg.op == "get_attr"):
        return None
    value: Any = V.graph.module
    for part in str(arg.target).split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, torch.Tensor) and not isinstance(value, torch._subclasses.FakeTensor) else None


def max_autotune() -> bool:
    return bool(inductor_config.max_autotune or inductor_config.max_autotune_gemm)


def flat_fake(x: torch.Tensor, k: int) -> torch.Tensor:
    """The fake x (..., K) as (M, K)."""
    with V.fake_mode:
        return x.reshape(-1, k)


def dense(scheme: WeightOnlyScheme, args: tuple, present: list[int]) -> Callable[..., torch.Tensor]:
    """The op's formula without bias as a function of (x (M, K), the operands at ``present``):
    ``args``' other operands (None) and ints stay as they are."""
    bias_at = scheme.bias_index
    template = list(args[:bias_at])
    ints = list(args[bias_at + 1:])

    def call(*tensors: torch.Tensor) -> torch.Tensor:
        operands = list(template)
        for i, t in zip([0, *present], tensors):
            operands[i] = t
        return woq_mm.eager(scheme, *operands, None, *ints)

    return call


def trace_to_aten(fn: Callable[..., torch.Tensor], fakes: list, *, eliminate_dead_code: bool = True) -> fx.GraphModule:
    """``fn`` traced on ``fakes`` to ATen with Inductor's decompositions (pattern_matcher.fwd_only)."""
    from torch._inductor.pattern_matcher import fwd_only

    return fwd_only(fn, fakes, run_functional_passes=eliminate_dead_code)


def inline_decomposition(fn: Callable[..., torch.Tensor], inputs: list, fakes: list, *,
                         eliminate_dead_code: bool = True) -> Any:
    """Trace ``fn(*fakes)`` to ATen (Inductor's decompositions) and lower its nodes here.

    Constants the trace makes (``torch.tensor`` tables, e.g. the Triton kernels' decode
    tables in the CUDA lowering) live on the traced module and are added as graph constants.
    ``eliminate_dead_code=False`` keeps nodes whose results nobody reads: a Triton launch
    (``triton_kernel_wrapper_mutation``) writes its output buffer and returns nothing.
    """
    with V.fake_mode:
        gm = trace_to_aten(fn, fakes, eliminate_dead_code=eliminate_dead_code)
    placeholders = gm.graph.find_nodes(op="placeholder")
    result = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            V.graph.env[node] = inputs[placeholders.index(node)]
        elif node.op == "get_attr":
            V.graph.env[node] = V.graph.add_tensor_constant(getattr(gm, str(node.target)))
        elif node.op == "output":
            (result,) = torch.utils._pytree.tree_leaves(node.args)
            result = V.graph.env[result]
        else:
            V.graph.env[node] = V.graph.run_node(node)
    return result
