"""dequant promotion: give each consumer of a shared dequantize region its own copy.

    codes -> dequant -> { linear, add }      becomes      codes -> dequant -> linear
                                                          codes -> dequant -> add

A fusion pass folds a dequantize into its consumer only when the consumer is its sole
user; duplicating the (cheap, pointwise) region lets every consumer fuse. Copies read the
same codes and qparams, so numerics are unchanged. (A plain loop rather than a pattern:
the anchor is the region node itself, whose operand count varies.)
"""

from __future__ import annotations

import torch.fx as fx

from ...hop import invoke_quant

from .graph_utils import record_match
from .regions import as_dequantize

PASS_NAME = "dequant_promotion"


def promote_dequant(node: fx.Node) -> int:
    """Give every user of ``node`` after the first its own copy; return the copies made."""
    graph = node.graph
    users = sorted(node.users)
    for user in users[1:]:
        with graph.inserting_before(user):
            copy = graph.call_function(node.target, node.args, dict(node.kwargs))
        copy.meta = dict(node.meta)
        user.replace_input_with(node, copy)
    return len(users) - 1


def promote_shared_dequants(graph: fx.Graph) -> None:
    """Promote every dequantize region of ``graph`` that has several users."""
    for node in graph.find_nodes(op="call_function", target=invoke_quant):
        if len(node.users) > 1 and as_dequantize(node) is not None:
            promote_dequant(node)
            record_match(PASS_NAME, 1)
