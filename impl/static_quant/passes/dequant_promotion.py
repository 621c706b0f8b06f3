"""dequant promotion: give each consumer of a shared dequantize region its own copy.

    codes -> dequant -> { linear, add }      becomes      codes -> dequant -> linear
                                                          codes -> dequant -> add

A fusion pass folds a dequantize into its consumer only when the consumer is its sole
user; duplicating the (cheap, pointwise) region lets every consumer fuse. Copies read the
same codes and qparams, so numerics are unchanged.
"""

from __future__ import annotations

import functools

import torch.fx as fx
from torch._inductor.pattern_matcher import MULTIPLE, Arg, CallFunction, Match, PatternMatcherPass, register_graph_pattern

from impl.hop import invoke_quant

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


@functools.cache
def dequant_promotion_pass() -> PatternMatcherPass:
    matcher = PatternMatcherPass(pass_name="static_quant_dequant_promotion")
    pattern = CallFunction(invoke_quant, Arg(), Arg(), Arg(), Arg(), scheme=Arg(), _users=MULTIPLE)
    register_graph_pattern(pattern, extra_check=_is_shared_dequant, pass_dict=matcher)(_promote)
    return matcher


def _is_shared_dequant(match: Match) -> bool:
    node = match.output_node()
    return as_dequantize(node) is not None and len(node.users) > 1


def _promote(match: Match, *args: object, **kwargs: object) -> None:
    node = match.output_node()
    promote_dequant(node)
    record_match(PASS_NAME, 1)
