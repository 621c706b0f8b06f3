"""Programs of suites/invoke_quant.yaml: PyTorch's invoke_quant tests (seed 000) against our op.

Each program wraps a small region ``gn`` in ``InvokeQuant`` the way the seed does; the
YAML adds the matrix (eager, aot_eager, inductor), the post-grad FileCheck, the
pattern-matcher pass with its counter, and the GPU prologue-fusion check.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch._dynamo.utils import counters
from torch._inductor.pattern_matcher import Arg, CallFunction, Ignored, Match, PatternMatcherPass, register_graph_pattern

from impl import InvokeQuant

invoke_quant_tracer = InvokeQuant()

#: counters[MATCH_COUNTER_GROUP][MATCH_COUNTER_NAME] counts rewrites of nf4_mm_match_pass.
MATCH_COUNTER_GROUP = "quantcheck"
MATCH_COUNTER_NAME = "nf4_mm_matches"


def gn_tuple(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor]:
    """The seed's region, returning a one-tuple: (x * y + y,)."""
    return (torch.mul(x, y) + y,)


def gn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The seed's region returning the tensor itself: x * y + y."""
    return torch.mul(x, y) + y


def gn_prologue(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x * y + (y - 1): with y all ones this is x, so the fused prologue's numerics equal eager's."""
    return torch.mul(x, y) + (y - 1)


def simple(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x, y (8,): the region through a shared InvokeQuant, options passed explicitly."""
    return invoke_quant_tracer(gn_tuple, x, y, scheme="nf4", quant_options=invoke_quant_tracer)[0]


def construct_inline(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The InvokeQuant is constructed inside the compiled function, without low-precision codegen."""
    return InvokeQuant(codegen_low_precision=False)(gn_tuple, x, y, scheme="nf4")[0]


def inline(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The InvokeQuant is constructed inside the compiled function, default options."""
    return InvokeQuant()(gn_tuple, x, y, scheme="nf4")[0]


def multiple(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Two regions (two subgraphs in the post-grad graph), summed."""
    o1 = invoke_quant_tracer(gn, x, y, scheme="nf4")
    o2 = invoke_quant_tracer(gn, y, z, scheme="nf4")
    return o1 + o2


def region_mm(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """x, y, z (64, 64): an nf4 region feeding a matmul: the pattern nf4_mm_match_pass looks for."""
    return invoke_quant_tracer(gn, x, y, scheme="nf4") @ z


def region_without_scheme_mm(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The same region without a scheme: the nf4 pattern must not match it."""
    return invoke_quant_tracer(gn, x, y) @ z


def prologue_mm(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """x, y, z (64, 64) float16: the region as a matmul prologue (fused into the Triton template)."""
    return invoke_quant_tracer(gn_prologue, x, y, scheme="nf4", quant_options=invoke_quant_tracer) @ z


def nf4_mm_match_pass() -> Callable[[torch.fx.Graph], None]:
    """A post-grad pass matching ``mm(impl_invoke_quant(..., scheme="nf4"), arg)``.

    Each match bumps ``counters["quantcheck"]["nf4_mm_matches"]`` and rewrites nothing.
    A fresh PatternMatcherPass per call, so cells never share registrations.
    """
    patterns = PatternMatcherPass()

    @register_graph_pattern(
        CallFunction(
            torch.ops.aten.mm,
            CallFunction(torch.ops.higher_order.impl_invoke_quant, Ignored(), Ignored(), Ignored(), scheme="nf4"),
            Arg(),
        ),
        pass_dict=patterns,
    )
    def count_match(match: Match, *args: object, **kwargs: object) -> None:
        counters[MATCH_COUNTER_GROUP][MATCH_COUNTER_NAME] += 1

    def nf4_mm_matches(graph: torch.fx.Graph) -> None:
        patterns.apply(graph)

    return nf4_mm_matches
