"""qmaxpool2d, qcat, qreshape: an op between dequant and quant with the same qparams runs on
the int8 codes directly.

    quant(maxpool2d(dequant(q)))        ->  maxpool2d(q)
    quant(cat([dequant(q1), ...]))      ->  cat([q1, ...])
    quant(reshape(dequant(q)))          ->  reshape(q)

Exact, not approximate, when every dequantize and the quantize share one scale s > 0 and
zero point z: reshape and cat move values without changing them, max pooling commutes
with the increasing maps dequant and quant (its padding never wins a window), and
quant(dequant(q)) = q while the round trip stays within half a code of q: the values'
rounding to their float dtype (relative error at most u / (1 + u), u = 2^-24 for float32,
2^-8 for bfloat16), the scale tolerance and float32 math, times the largest |q - z| the
codes can reach, must be below 0.5 (``round_trip_exact``). float32 always passes (255 codes
off by 0.003); bfloat16 only with a constant zero point in the middle of the range
(|q - z| <= 128: uint8 with z in 127..128, int8 with z in -1..0), since 129 * 2^-8 > 0.5
(the property test found int8 with z = -128 in bfloat16 off by one code in 8% of codes).
Scales that agree to a relative 1e-5 count as the same.

Qparams match when both sides read provably equal operands (the same nodes, the same op
on the same runtime values, equal constants) or constants equal to a relative 1e-5.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Optional

import torch
import torch.fx as fx
from torch._inductor.pattern_matcher import Arg, CallFunction, ListOf, Match, PatternMatcherPass, register_graph_pattern

from .graph_utils import RESHAPE_OPS, constant_scalar, erase_dead, fake_mode_of, insert_call, record_match, same_value
from .regions import Region, RegionOperand, as_dequantize, as_quantize

aten = torch.ops.aten
prims = torch.ops.prims

# max_pool2d reaches the post-grad graph either decomposed into the low-memory prim
# (values + int8 offsets) or, where Inductor falls back, as the ATen op; both return
# (values, indices-or-offsets) and accept int8 / uint8 inputs.
_LOW_MEMORY_MAX_POOL = getattr(prims, "_low_memory_max_pool_with_offsets", None)
_MAX_POOL_ARITIES = (
    [(aten.max_pool2d_with_indices.default, n) for n in range(2, 7)]
    + ([(_LOW_MEMORY_MAX_POOL.default, 6)] if _LOW_MEMORY_MAX_POOL is not None else [])
)


def same_qparams(first: Region, second: Region) -> bool:
    """Same int8 type, float dtype and per-tensor (scale, zero point)."""
    if first.scheme.qdtype != second.scheme.qdtype or first.scheme.float_dtype != second.scheme.float_dtype:
        return False
    if same_value(first.scale, second.scale) and same_value(first.zero_point, second.zero_point):
        return True
    a, b = first.constant_qparams(), second.constant_qparams()
    return a is not None and b is not None and a[1] == b[1] and math.isclose(a[0], b[0], rel_tol=1e-5)


# Unit roundoff of the float dtypes dequantized values may have; the scale tolerance of
# ``same_qparams``; the float32 math of dequantize and quantize (a few roundings).
_UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8}
_SCALE_RTOL = 1e-5
_FLOAT32_MATH = 4 * 2.0**-24


def round_trip_exact(region: Region) -> bool:
    """Whether quant(dequant(q)) = q for every code q of ``region``'s type at its qparams:
    the relative error of the dequantized values times the largest |q - z| (every code
    against a constant zero point; the whole range when z is known only at run time) stays
    below half a code."""
    info = torch.iinfo(region.scheme.qdtype)
    unit = _UNIT_ROUNDOFF.get(region.scheme.float_dtype)
    if unit is None:
        return False
    zero_point = constant_scalar(region.zero_point)
    span = info.max - info.min if zero_point is None else max(zero_point - info.min, info.max - zero_point)
    return span * (unit / (1 + unit) + _SCALE_RTOL + _FLOAT32_MATH) < 0.5


def _requant_regions(op: fx.Node, dequant_nodes: list) -> Optional[tuple[Region, list[Region]]]:
    """The quantize that alone reads ``op`` and the dequantizes feeding it, when all share
    qparams."""
    if len(op.users) != 1:
        return None
    quant = as_quantize(next(iter(op.users)), per_tensor=True)
    if quant is None or quant.data is not op:
        return None
    dequants = [as_dequantize(n, per_tensor=True) for n in dequant_nodes]
    if quant is None or not dequants or any(d is None or not same_qparams(d, quant) for d in dequants):
        return None
    if not round_trip_exact(quant):
        return None
    return quant, dequants


def _finish(pass_name: str, quant: Region, replacement: fx.Node, removed: list[fx.Node]) -> None:
    quant.node.replace_all_uses_with(replacement)
    record_match(pass_name, len(removed))
    erase_dead(removed)


# --------------------------------------------------------------------------- qmaxpool2d


def _maxpool_parts(getitem: fx.Node) -> Optional[tuple[Region, Region, fx.Node, fx.Node]]:
    pool = getitem.args[0]
    if getitem.args[1] != 0 or len(pool.users) != 1:
        return None  # the pool's indices / offsets are used too
    regions = _requant_regions(getitem, [pool.args[0]])
    if regions is None:
        return None
    quant, (dequant,) = regions
    return quant, dequant, pool, getitem


def _is_qmaxpool2d(match: Match) -> bool:
    return _maxpool_parts(match.output_node()) is not None


def _qmaxpool2d(match: Match, *args: object, **kwargs: object) -> None:
    quant, dequant, pool, getitem = _maxpool_parts(match.output_node())
    mode = fake_mode_of([pool, dequant.data])
    new_pool = insert_call(pool.graph, quant.node, pool.target, (dequant.data, *pool.args[1:]), mode)
    values = insert_call(pool.graph, quant.node, operator.getitem, (new_pool, 0), mode)
    _finish("qmaxpool2d", quant, values, [dequant.node, pool, getitem, quant.node])


# -------------------------------------------------------------------------------- qcat


def _cat_parts(cat: fx.Node) -> Optional[tuple[Region, list[Region], fx.Node]]:
    regions = _requant_regions(cat, list(cat.args[0]))
    if regions is None:
        return None
    quant, dequants = regions
    return quant, dequants, cat


def _is_qcat(match: Match) -> bool:
    return _cat_parts(match.output_node()) is not None


def _qcat(match: Match, *args: object, **kwargs: object) -> None:
    quant, dequants, cat = _cat_parts(match.output_node())
    mode = fake_mode_of([cat, *(d.data for d in dequants)])
    codes = [d.data for d in dequants]
    new_cat = insert_call(cat.graph, quant.node, aten.cat.default, (codes, *cat.args[1:]), mode)
    unique_dequants = list(dict.fromkeys(d.node for d in dequants))
    _finish("qcat", quant, new_cat, [*unique_dequants, cat, quant.node])


# ---------------------------------------------------------------------------- qreshape


def _reshape_parts(reshape: fx.Node) -> Optional[tuple[Region, Region, fx.Node]]:
    regions = _requant_regions(reshape, [reshape.args[0]])
    if regions is None:
        return None
    quant, (dequant,) = regions
    return quant, dequant, reshape


def _is_qreshape(match: Match) -> bool:
    return _reshape_parts(match.output_node()) is not None


def _qreshape(match: Match, *args: object, **kwargs: object) -> None:
    quant, dequant, reshape = _reshape_parts(match.output_node())
    mode = fake_mode_of([reshape, dequant.data])
    # reshape, not view: the codes need not be contiguous where the dequantized copy was.
    new_reshape = insert_call(
        reshape.graph, quant.node, aten.reshape.default, (dequant.data, reshape.args[1]), mode
    )
    _finish("qreshape", quant, new_reshape, [dequant.node, reshape, quant.node])


# ----------------------------------------------------------------------------- registry


@functools.cache
def requant_pass() -> PatternMatcherPass:
    """One pattern-matcher pass holding the qmaxpool2d, qcat and qreshape patterns, each
    anchored at the op between the regions (the quantize after it is checked by hand: its
    operand count varies, see ``RegionOperand``)."""
    matcher = PatternMatcherPass(pass_name="static_quant_qpool_cat_reshape")
    for pool_op, arity in _MAX_POOL_ARITIES:
        pool = CallFunction(pool_op, RegionOperand(), *[Arg() for _ in range(arity - 1)])
        pattern = CallFunction(operator.getitem, pool, Arg())
        register_graph_pattern(pattern, extra_check=_is_qmaxpool2d, pass_dict=matcher)(_qmaxpool2d)
    for cat_args in ([], [Arg()]):
        pattern = CallFunction(aten.cat.default, ListOf(RegionOperand()), *cat_args)
        register_graph_pattern(pattern, extra_check=_is_qcat, pass_dict=matcher)(_qcat)
    for reshape_op in RESHAPE_OPS:
        pattern = CallFunction(reshape_op, RegionOperand(), Arg())
        register_graph_pattern(pattern, extra_check=_is_qreshape, pass_dict=matcher)(_qreshape)
    return matcher
