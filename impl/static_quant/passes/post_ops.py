"""Post-ops a oneDNN quantized linear / conv can absorb, matched forward from its output.

The order oneDNN applies them, and so the order matched here:

    y = core(x) [+ other] [-> unary] [-> quantize]

with a unary alone (no binary) also allowed. A unary reaches the post-grad graph
decomposed (gelu as its erf or tanh formula, hardtanh as clamp_min / clamp_max, silu as
x / (1 + exp(-x)), ...); for the bf16-mixed variants the formula is computed in float32
between two dtype conversions. Each unary is therefore a pattern-matcher tree over one
input ``x``, in a float32 form and an upcast bf16 form.

A stage is absorbed only when every node it would remove is used inside it alone, so
anything else reading an intermediate keeps its value (that stage is then not fused).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterable, Optional

import torch
import torch.fx as fx
from torch._inductor.pattern_matcher import MULTIPLE, CallFunction, KeywordArg, Match, PatternExpr, is_match

from .graph_utils import depends_on, fake_value, users_within
from .regions import Region, as_quantize

aten = torch.ops.aten
prims = torch.ops.prims


@dataclasses.dataclass(frozen=True)
class UnaryPostOp:
    """A unary post-op in oneDNN's terms: ``name`` with ``scalars`` and ``algorithm``."""

    name: str
    scalars: tuple = ()
    algorithm: str = ""


@dataclasses.dataclass(frozen=True)
class Stage:
    """Nodes one post-op removes from the graph, and the node whose value it ends on."""

    nodes: tuple[fx.Node, ...]
    output: fx.Node


@dataclasses.dataclass(frozen=True)
class Epilogue:
    """The post-ops found after a core node's output ``start``."""

    start: fx.Node
    binary: Optional[Stage] = None
    binary_other: Optional[fx.Node] = None
    unary: Optional[Stage] = None
    unary_op: Optional[UnaryPostOp] = None
    quant: Optional[Stage] = None
    quant_region: Optional[Region] = None
    quant_qparams: Optional[tuple[float, int]] = None

    @property
    def output(self) -> fx.Node:
        """The last node whose value the fused op computes."""
        for stage in (self.quant, self.unary, self.binary):
            if stage is not None:
                return stage.output
        return self.start

    @property
    def nodes(self) -> list[fx.Node]:
        return [n for stage in (self.binary, self.unary, self.quant) if stage is not None for n in stage.nodes]

    def without_quant(self) -> "Epilogue":
        return dataclasses.replace(self, quant=None, quant_region=None, quant_qparams=None)


def match_epilogue(
    start: fx.Node,
    core_nodes: Iterable[fx.Node],
    unary_alone: frozenset[str],
    unary_after_binary: frozenset[str],
    allow_binary: bool,
) -> Epilogue:
    """Greedily absorb [binary add] [unary] [quantize] after ``start``.

    ``unary_alone``: oneDNN unary names allowed without a binary post-op;
    ``unary_after_binary``: those allowed after one; ``core_nodes``: nodes the fused op
    replaces (an add's other operand must not be computed from them).
    """
    epilogue = Epilogue(start=start)
    unary = match_unary(start, unary_alone)
    if unary is not None:
        epilogue = dataclasses.replace(epilogue, unary=unary[1], unary_op=unary[0])
    elif allow_binary:
        binary = match_binary_add(start, [*core_nodes, start])
        if binary is not None:
            epilogue = dataclasses.replace(epilogue, binary=binary[1], binary_other=binary[0])
            unary = match_unary(epilogue.output, unary_after_binary)
            if unary is not None:
                epilogue = dataclasses.replace(epilogue, unary=unary[1], unary_op=unary[0])
    quant = match_output_quant(epilogue.output)
    if quant is not None:
        region, qparams, stage = quant
        epilogue = dataclasses.replace(epilogue, quant=stage, quant_region=region, quant_qparams=qparams)
    return epilogue


# ------------------------------------------------------------------------------- unary


@dataclasses.dataclass(frozen=True)
class _UnaryPattern:
    name: str
    algorithm: str
    pattern: PatternExpr
    scalars: Callable[[dict], Optional[tuple]]
    upcast_bf16: bool


def _relu(x: PatternExpr) -> PatternExpr:
    return CallFunction(aten.relu.default, x)


def _tanh(x: PatternExpr) -> PatternExpr:
    return CallFunction(aten.tanh.default, x)


def _hardtanh(x: PatternExpr) -> PatternExpr:
    return CallFunction(
        aten.clamp_max.default,
        CallFunction(aten.clamp_min.default, x, KeywordArg("min_value")),
        KeywordArg("max_value"),
    )


def _gelu_erf(x: PatternExpr) -> PatternExpr:
    # 0.5 * x * (1 + erf(x / sqrt(2)))
    return CallFunction(
        aten.mul.Tensor,
        CallFunction(aten.mul.Tensor, x, 0.5),
        CallFunction(aten.add.Tensor, CallFunction(aten.erf.default, CallFunction(aten.mul.Tensor, x, 0.7071067811865476)), 1),
    )


def _gelu_tanh(x: PatternExpr) -> PatternExpr:
    # 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
    cube = CallFunction(aten.mul.Tensor, CallFunction(aten.mul.Tensor, x, x), x)
    inner = CallFunction(aten.add.Tensor, x, CallFunction(aten.mul.Tensor, cube, 0.044715))
    return CallFunction(
        aten.mul.Tensor,
        CallFunction(aten.mul.Tensor, x, 0.5),
        CallFunction(aten.add.Tensor, _tanh(CallFunction(aten.mul.Tensor, inner, 0.7978845608028654)), 1),
    )


def _silu(x: PatternExpr) -> PatternExpr:
    # x / (1 + exp(-x))
    return CallFunction(
        aten.div.Tensor, x, CallFunction(aten.add.Tensor, CallFunction(aten.exp.default, CallFunction(aten.neg.default, x)), 1)
    )


def _hardswish(x: PatternExpr) -> PatternExpr:
    # x * clamp(x + 3, 0, 6) / 6
    relu6 = CallFunction(
        aten.clamp_max.default, CallFunction(aten.clamp_min.default, CallFunction(aten.add.Tensor, x, 3), 0), 6
    )
    return CallFunction(aten.div.Tensor, CallFunction(aten.mul.Tensor, x, relu6), 6)


def _leaky_relu(x: PatternExpr) -> PatternExpr:
    return CallFunction(
        aten.where.self,
        CallFunction(aten.gt.Scalar, x, 0),
        x,
        CallFunction(aten.mul.Tensor, x, KeywordArg("negative_slope")),
    )


def _no_scalars(_: dict) -> tuple:
    return ()


def _hardtanh_bounds(kwargs: dict) -> Optional[tuple]:
    low, high = kwargs["min_value"], kwargs["max_value"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low > high:
        return None
    return (float(low), float(high))


def _leaky_slope(kwargs: dict) -> Optional[tuple]:
    slope = kwargs["negative_slope"]
    return (float(slope),) if isinstance(slope, (int, float)) and not isinstance(slope, bool) else None


# (oneDNN name, algorithm, formula, scalars)
_UNARY_FORMULAS = (
    ("relu", "", _relu, _no_scalars),
    ("tanh", "", _tanh, _no_scalars),
    ("hardtanh", "", _hardtanh, _hardtanh_bounds),
    ("gelu", "none", _gelu_erf, _no_scalars),
    ("gelu", "tanh", _gelu_tanh, _no_scalars),
    ("swish", "", _silu, _no_scalars),
    ("hardswish", "", _hardswish, _no_scalars),
    ("leaky_relu", "", _leaky_relu, _leaky_slope),
)


@functools.cache
def _unary_patterns() -> tuple[_UnaryPattern, ...]:
    patterns = []
    for name, algorithm, formula, scalars in _UNARY_FORMULAS:
        patterns.append(_UnaryPattern(name, algorithm, formula(KeywordArg("x")), scalars, upcast_bf16=False))
        upcast = CallFunction(prims.convert_element_type.default, KeywordArg("x"), torch.float32, _users=MULTIPLE)
        patterns.append(
            _UnaryPattern(
                name, algorithm,
                CallFunction(prims.convert_element_type.default, formula(upcast), torch.bfloat16),
                scalars, upcast_bf16=True,
            )
        )
    return tuple(patterns)


# The longest formula (gelu tanh, upcast) spans 10 nodes after its input.
_MAX_UNARY_DEPTH = 12
_MAX_CANDIDATES = 64


def match_unary(start: fx.Node, allowed: frozenset[str]) -> Optional[tuple[UnaryPostOp, Stage]]:
    """The unary post-op applied to ``start`` and nothing else, when it is one of ``allowed``."""
    if not allowed or not start.users:
        return None
    start_val = fake_value(start)
    if start_val is None:
        return None
    for candidate in _descendants(start, _MAX_UNARY_DEPTH, _MAX_CANDIDATES):
        for entry in _unary_patterns():
            if entry.name not in allowed or (entry.upcast_bf16 and start_val.dtype != torch.bfloat16):
                continue
            match = entry.pattern.match(candidate)
            if not is_match(match) or match.kwargs.get("x") is not start:
                continue
            if not _self_contained(start, candidate, match):
                continue
            scalars = entry.scalars(match.kwargs)
            if scalars is None:
                continue
            return UnaryPostOp(entry.name, scalars, entry.algorithm), Stage(tuple(match.nodes), candidate)
    return None


def _self_contained(start: fx.Node, output: fx.Node, match: Match) -> bool:
    """Every user of ``start`` and of the match's inner nodes lies inside the match."""
    nodes = set(match.nodes)
    return users_within(start, nodes) and all(users_within(n, nodes) for n in nodes if n is not output)


def _descendants(start: fx.Node, depth: int, limit: int) -> list[fx.Node]:
    found: dict[fx.Node, None] = {}
    frontier = [start]
    for _ in range(depth):
        frontier = [user for node in frontier for user in node.users if user not in found]
        for node in frontier:
            found[node] = None
        if not frontier or len(found) > limit:
            break
    return sorted(found)


# ------------------------------------------------------------------------------ binary


def match_binary_add(start: fx.Node, replaced: list[fx.Node]) -> Optional[tuple[fx.Node, Stage]]:
    """``start + other`` (either order), ``other`` a same-shape, same-dtype tensor that is
    not computed from the nodes the fused op ``replaced``."""
    if len(start.users) != 1:
        return None
    (add,) = start.users
    if add.target is not aten.add.Tensor or add.kwargs or len(add.args) != 2:
        return None
    first, second = add.args
    if (first is start) == (second is start):
        return None  # start + start, or start not a direct operand
    other = second if first is start else first
    start_val, other_val = fake_value(start), fake_value(other)
    if other_val is None or start_val is None:
        return None
    if other_val.shape != start_val.shape or other_val.dtype != start_val.dtype:
        return None
    if depends_on(other, replaced):
        return None
    return other, Stage((add,), add)


# ---------------------------------------------------------------------------- quantize


def match_output_quant(start: fx.Node) -> Optional[tuple[Region, tuple[float, int], Stage]]:
    """A per-tensor quantize of ``start`` with constant qparams, in ``start``'s dtype or
    after a bf16 -> float32 conversion (the seed's int8-mixed-bf16 form)."""
    if len(start.users) != 1:
        return None
    (user,) = start.users
    nodes = []
    start_val = fake_value(start)
    if (
        user.target is prims.convert_element_type.default
        and user.args[1:] == (torch.float32,)
        and start_val is not None
        and start_val.dtype == torch.bfloat16
        and len(user.users) == 1
    ):
        nodes.append(user)
        (user,) = user.users
    region = as_quantize(user, per_tensor=True)
    if region is None or region.data is not (nodes[0] if nodes else start):
        return None
    qparams = region.constant_qparams()
    if qparams is None:
        return None
    nodes.append(region.node)
    return region, qparams, Stage(tuple(nodes), region.node)
