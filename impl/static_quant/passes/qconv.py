"""qconv2d: dequant(x) -> conv2d(dequant(w)) [-> add] [-> unary] [-> quant] as one oneDNN call.

What the post-grad graph holds for ``F.conv2d(dequantize_per_tensor(qx, ...),
dequantize_per_channel(qw, ...), b, ...)`` under freezing:

    x = impl_invoke_quant(sg, qx, x_scale, x_zp, scheme="static_dequant_per_tensor_u8")
    w = impl_invoke_quant(sg, qw, w_scale, w_zp, scheme="static_dequant_per_channel_s8")
    y = convolution(x, clone(w, memory_format=channels_last), b, stride, padding, dilation,
                    False, [0, 0], groups)

which becomes ``onednn.qconv_pointwise(qx, ...)`` with the unary post-op, or
``onednn.qconv2d_pointwise.binary(qx, ..., accum, ...)`` when a tensor is added.

oneDNN's quantized conv takes uint8 activations with constant scale / zero point (the
weight prepack needs them), unary post-ops relu, hardtanh, silu ("swish") and hardswish,
and as binary post-op only an in-place "sum" into the added tensor (optionally followed by
relu). The sum accumulates in the output's dtype, so with a quantize after it the added
tensor must itself be a dequantize (per tensor, to the same int8 type) whose codes are
accumulated; otherwise the quantize is left out of the fusion. The accumulated tensor is
overwritten: it is copied first unless nothing else reads it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import torch
import torch.fx as fx
from torch._inductor.pattern_matcher import Arg, CallFunction, KeywordArg, Match, PatternMatcherPass, register_graph_pattern

from ..prepack import prepack_conv2d_weight
from .fusion import (
    PACKED_WEIGHT,
    WEIGHT_SCALES,
    WEIGHT_ZERO_POINTS,
    FusedCall,
    WeightSide,
    bias_ok,
    output_dtype_and_qparams,
    rewrite,
    unary_args,
    weight_side,
)
from .graph_utils import fake_mode_of, fake_value, may_alias_an_input, record_match, static_shape
from .post_ops import Epilogue, match_epilogue
from .regions import Region, RegionOperand, as_dequantize

aten = torch.ops.aten
PASS_NAME = "qconv2d"

UNARY_POST_OPS = frozenset({"relu", "hardtanh", "swish", "hardswish"})
UNARY_AFTER_SUM = frozenset({"relu"})


def _core_patterns() -> list[CallFunction]:
    """convolution of a dequantized activation and a dequantized weight (copied to
    channels-last by Inductor's layout optimization, or not)."""
    weights = [RegionOperand(), CallFunction(aten.clone.default, RegionOperand(), memory_format=Arg())]
    return [
        CallFunction(
            aten.convolution.default, RegionOperand(), weight, KeywordArg("bias"), KeywordArg("stride"),
            KeywordArg("padding"), KeywordArg("dilation"), KeywordArg("transposed"),
            KeywordArg("output_padding"), KeywordArg("groups"),
        )
        for weight in weights
    ]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A validated match: everything the rewrite needs.

    ``accum``: the tensor the binary post-op sums into (the added float tensor, or the
    codes of a dequantized residual, ``accum_region``), with its ``accum_qparams``.
    """

    anchor: fx.Node
    x_region: Region
    x_qparams: tuple[float, int]
    weight: WeightSide
    epilogue: Epilogue
    accum: Optional[fx.Node]
    accum_qparams: tuple[float, int]
    accum_region: Optional[Region]

    @property
    def matched_nodes(self) -> list[fx.Node]:
        weight_input = self.anchor.args[1]
        nodes = [self.x_region.node, self.anchor]
        nodes += [weight_input] if weight_input is self.weight.region.node else [weight_input, self.weight.region.node]
        return nodes + ([self.accum_region.node] if self.accum_region is not None else [])

    @property
    def operand_nodes(self) -> list[fx.Node]:
        regions = [self.x_region, self.weight.region] + ([self.accum_region] if self.accum_region else [])
        return [n for r in regions for n in (r.scale, r.zero_point)] + [self.weight.region.data]


def plan_qconv2d(anchor: fx.Node) -> Optional[_Plan]:
    """Validate the conv matched at ``anchor`` and find its epilogue."""
    x_node, weight_input, bias, stride, padding, dilation, transposed, output_padding, groups = anchor.args
    if transposed or any(output_padding):
        return None
    x_region = as_dequantize(x_node, per_tensor=True)
    if x_region is None or x_region.scheme.qdtype != torch.uint8:
        return None
    x_qparams = x_region.constant_qparams()
    x_val = fake_value(x_region.data)
    if x_qparams is None or x_val.dim() != 4:
        return None
    float_dtype = x_region.scheme.float_dtype
    weight_region_node = weight_input.args[0] if weight_input.target is aten.clone.default else weight_input
    weight = weight_side(weight_region_node, dims=4, float_dtype=float_dtype)
    if weight is None or not bias_ok(bias, weight.codes.shape[0], float_dtype):
        return None
    epilogue = match_epilogue(anchor, [anchor, x_region.node], UNARY_POST_OPS, UNARY_AFTER_SUM, allow_binary=True)
    accum, accum_qparams, accum_region = None, (1.0, 0), None
    if epilogue.binary is not None:
        other = epilogue.binary_other
        if epilogue.quant is not None:
            accum_region = _quantized_accum(other, epilogue)
            if accum_region is None:
                epilogue = epilogue.without_quant()
        if accum_region is not None:
            accum, accum_qparams = accum_region.data, accum_region.constant_qparams()
        else:
            accum = other
    return _Plan(anchor, x_region, x_qparams, weight, epilogue, accum, accum_qparams, accum_region)


def _quantized_accum(other: fx.Node, epilogue: Epilogue) -> Optional[Region]:
    """The dequantize feeding the add, when its codes can be summed into in the output's
    int8 type: per tensor, same int8 dtype as the output, constant qparams, used only here."""
    region = as_dequantize(other, per_tensor=True)
    if region is None or len(other.users) != 1 or region.constant_qparams() is None:
        return None
    if region.scheme.qdtype != epilogue.quant_region.scheme.qdtype:
        return None
    if region.scheme.float_dtype != epilogue.quant_region.scheme.float_dtype:
        return None
    return region


def rewrite_qconv2d(plan: _Plan) -> fx.Node:
    anchor, epilogue = plan.anchor, plan.epilogue
    _, _, bias, stride, padding, dilation, _, _, groups = anchor.args
    mode = fake_mode_of([anchor, plan.x_region.data])
    x_scale, x_zp = plan.x_qparams
    packed, packed_fake = prepack_conv2d_weight(
        plan.weight.codes, plan.weight.scales, x_scale, x_zp, stride, padding, dilation, groups,
        static_shape(plan.x_region.data), mode,
    )
    out_dtype, out_scale, out_zp = output_dtype_and_qparams(epilogue, plan.x_region.scheme.float_dtype)
    unary_name, unary_scalars, unary_algorithm = unary_args(epilogue)
    head = (plan.x_region.data, x_scale, x_zp, PACKED_WEIGHT, WEIGHT_SCALES, WEIGHT_ZERO_POINTS)
    conv = (list(stride), list(padding), list(dilation), groups)
    if epilogue.binary is None:
        target = torch.ops.onednn.qconv_pointwise.default
        args = (*head, bias, *conv, out_scale, out_zp, out_dtype, unary_name, unary_scalars, unary_algorithm)
    else:
        target = torch.ops.onednn.qconv2d_pointwise.binary
        accum_scale, accum_zp = plan.accum_qparams
        args = (*head, _ACCUM, bias, *conv, out_scale, out_zp, out_dtype, accum_scale, accum_zp,
                "sum", 1.0, unary_name, unary_scalars, unary_algorithm)
    call = FusedCall(target, args, packed, packed_fake, plan.weight.scales)
    replaced = plan.matched_nodes + plan.operand_nodes

    def writable_accum(before: fx.Node) -> dict:
        if plan.accum is None:
            return {}
        if _overwritable(plan.accum, replaced + epilogue.nodes):
            return {_ACCUM: plan.accum}
        with before.graph.inserting_before(before):
            copy = before.graph.call_function(aten.clone.default, (plan.accum,))
        with mode:
            copy.meta["val"] = plan.accum.meta["val"].clone()
        return {_ACCUM: copy}

    record_match(PASS_NAME, len(plan.matched_nodes) + len(epilogue.nodes))
    return rewrite(call, epilogue, replaced, writable_accum)


_ACCUM = object()


def _overwritable(node: fx.Node, replaced: list[fx.Node]) -> bool:
    """Whether the fused conv may sum into ``node`` in place: it owns its storage and
    nothing that survives the rewrite reads it."""
    survivors = [user for user in node.users if user not in set(replaced)]
    return not survivors and not may_alias_an_input(node)


# ----------------------------------------------------------------------------- registry


@functools.cache
def qconv2d_pass() -> PatternMatcherPass:
    matcher = PatternMatcherPass(pass_name="static_quant_qconv2d")
    for pattern in _core_patterns():
        register_graph_pattern(pattern, extra_check=_is_fusible, pass_dict=matcher)(_fuse)
    return matcher


def _is_fusible(match: Match) -> bool:
    return plan_qconv2d(match.output_node()) is not None


def _fuse(match: Match, *args: object, **kwargs: object) -> None:
    plan = plan_qconv2d(match.output_node())
    if plan is not None:
        rewrite_qconv2d(plan)
