"""``static_quant_<pass>_lower_count``: fused calls of ours that Inductor really lowered.

The qlinear / qconv2d passes leave ``onednn`` calls in the graph; Inductor then lowers
each one to an extern kernel (through its quantization lowering patterns, which count
``qlinear_unary_lower_count`` and friends for every such call, ours or not). To count the
lowering of *our* calls, as an observation rather than a prediction made by the pass,
Inductor's lowering of each fused target is wrapped once: when the node being lowered
reads one of our packed weights, the wrapper bumps the counter, then defers to the
original lowering unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
import torch.fx as fx
from torch._dynamo.utils import counters

from .graph_utils import COUNTER_PREFIX, counter_key

# The constant names our rewrites give packed weights (see graph_utils.add_constant).
PACKED_WEIGHT_PREFIX = f"_{COUNTER_PREFIX}packed_weight_"
_LOWERED = "static_quant_lowered"
_MARK = "_static_quant_lower_counter"


def fused_targets() -> dict[Any, str]:
    """The ops our rewrites emit, each with the pass that emits it."""
    onednn = torch.ops.onednn
    linear = onednn.qlinear_pointwise
    return {
        linear.default: "qlinear",
        linear.tensor: "qlinear",
        linear.binary: "qlinear",
        linear.binary_tensor: "qlinear",
        onednn.qconv_pointwise.default: "qconv2d",
        onednn.qconv2d_pointwise.binary: "qconv2d",
    }


@functools.cache
def install_lower_counters() -> None:
    """Wrap Inductor's lowering of every fused target (once per process; needs oneDNN)."""
    from torch._inductor.lowering import lowerings

    for op, pass_name in fused_targets().items():
        original = lowerings.get(op)
        if original is not None and not getattr(original, _MARK, False):
            lowerings[op] = _counting(original, pass_name)


def _counting(original: Callable[..., Any], pass_name: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def lower(*args: Any, **kwargs: Any) -> Any:
        from torch._inductor.virtualized import V

        node = getattr(V.graph, "current_node", None) if V.graph is not None else None
        if isinstance(node, fx.Node) and not node.meta.get(_LOWERED) and reads_our_packed_weight(node):
            node.meta[_LOWERED] = True  # one count per node, however often its lowering looks the op up
            counters["inductor"][counter_key(pass_name, "lower_count")] += 1
        return original(*args, **kwargs)

    setattr(lower, _MARK, True)
    return lower


def reads_our_packed_weight(node: fx.Node) -> bool:
    return any(
        arg.op == "get_attr" and str(arg.target).startswith(PACKED_WEIGHT_PREFIX) for arg in node.all_input_nodes
    )
