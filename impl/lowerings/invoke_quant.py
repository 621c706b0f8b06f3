"""Inductor lowering of the unpacked ``impl_invoke_quant``: inline the region, mark its outputs.

The subgraph's nodes are lowered in place, so the dequantization fuses like any other
code. Each output is realized and its producing operation is recorded in

- ``V.graph.invoke_quant_ops``: the scheduler then skips its prologue-fusion heuristics
  for it (the user asked for the region to be treated as a matmul prologue);
- ``V.graph.low_precision_codegen_ops`` when ``codegen_low_precision``: the prologue is
  generated in its observed dtypes, without an upcast to fp32.

Unlike PyTorch's lowering of its own op, outputs may be views (a transpose, a reshape, a
slice of an unpacked tensor: they are recorded through the buffer they view) and there
may be several outputs.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.utils._pytree as pytree
from torch._inductor import ir
from torch._inductor.virtualized import V

from .. import compat
from ..hop import invoke_quant, options_of


def _producing_operation(value: ir.IRNode) -> Optional[str]:
    """Name of the operation that writes the buffer ``value`` reads, seen through views.

    None when the buffer is not computed by this graph (a graph input or a constant):
    such an output carries no code to mark.
    """
    node: Any = value
    while isinstance(node, (ir.MutableBox, ir.BaseView)):
        node = node.data
    if isinstance(node, ir.Operation):
        return node.get_operation_name()
    return None


@compat.register_inductor_lowering(invoke_quant)
def lower_invoke_quant(subgraph: ir.Subgraph, *operands: Any, scheme: Optional[str] = None) -> Any:
    options = options_of(V.graph.current_node)
    graph_module = subgraph.graph_module
    placeholders = graph_module.graph.find_nodes(op="placeholder")
    if len(placeholders) != len(operands):
        raise AssertionError(
            f"invoke_quant(scheme={scheme!r}): subgraph takes {len(placeholders)} inputs, got {len(operands)}"
        )
    result = None
    for node in graph_module.graph.nodes:
        if node.op == "placeholder":
            V.graph.env[node] = operands[placeholders.index(node)]
        elif node.op == "output":
            args, kwargs = V.graph.fetch_args_kwargs_from_env(node)
            for value in pytree.tree_leaves((args, kwargs)):
                if not isinstance(value, ir.IRNode):
                    continue
                value.realize()
                name = _producing_operation(value)
                if name is None:
                    continue
                if options.codegen_low_precision:
                    V.graph.low_precision_codegen_ops.add(name)
                V.graph.invoke_quant_ops.add(name)
            result = torch.fx.Interpreter.output(V.graph, node, args, kwargs)
        elif node.op == "get_attr":
            # A constant the region built (a lookup table, an arange): it lives on the
            # subgraph module, which the outer module holds under the subgraph's name;
            # V.graph.get_attr alone would look for it on the outer module.
            V.graph.env[node] = V.graph.get_attr(f"{subgraph.name}.{node.target}", (), {})
        else:
            V.graph.env[node] = V.graph.run_node(node)
    return result
