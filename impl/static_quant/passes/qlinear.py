"""qlinear: dequant(x) -> linear(dequant(w)) [-> add] [-> unary] [-> quant] as one oneDNN call.

What the post-grad graph holds for ``F.linear(dequantize_per_tensor(qx, ...),
dequantize_per_channel(qw, ...), b)``:

    x = impl_invoke_quant(sg, qx, x_scale, x_zp, scheme="static_dequant_per_tensor_u8")
    w = impl_invoke_quant(sg, qw, w_scale, w_zp, scheme="static_dequant_per_channel_s8")
    y = addmm(b, x, permute(w, [1, 0]))            # mm(...) without bias
    (x of shape (B, S, K): reshape(x, [B*S, K]) before, reshape(y, [B, S, N]) after)

which becomes

    y = onednn.qlinear_pointwise(qx, x_scale, x_zp, packed_w, w_scales, w_zps, b,
                                 out_scale, out_zp, out_dtype, unary, scalars, algorithm)

(``.binary`` with an added tensor; ``.tensor`` / ``.binary_tensor`` when the activation's
scale and zero point are runtime tensors rather than constants). The weight is packed here,
so it must be a constant: compile with ``torch._inductor.config.freezing = True``.

Activations may be uint8 or int8, float32 or bf16 (int8-mixed-bf16: the output is bf16,
or int8 when a quantize follows).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import torch
import torch.fx as fx
from torch._inductor.pattern_matcher import Arg, CallFunction, Match, PatternMatcherPass, register_graph_pattern

from ..prepack import bf16_linear_binary_supported, prepack_linear_weight
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
from .graph_utils import RESHAPE_OPS, fake_mode_of, fake_value, record_match, static_shape
from .post_ops import Epilogue, match_epilogue
from .regions import Region, RegionOperand, as_dequantize

aten = torch.ops.aten
PASS_NAME = "qlinear"

UNARY_POST_OPS = frozenset({"relu", "gelu", "hardtanh", "swish", "hardswish", "leaky_relu", "tanh"})
UNARY_AFTER_ADD = UNARY_POST_OPS


def _core_patterns() -> list[CallFunction]:
    """mm / addmm of a (possibly flattened) dequantized activation and a transposed
    dequantized weight; every intermediate node used once."""
    activations = [RegionOperand()] + [CallFunction(op, RegionOperand(), Arg()) for op in RESHAPE_OPS]
    weight_t = CallFunction(aten.permute.default, RegionOperand(), Arg())
    patterns = []
    for activation in activations:
        patterns.append(CallFunction(aten.mm.default, activation, weight_t))
        patterns.append(CallFunction(aten.addmm.default, Arg(), activation, weight_t))
    return patterns


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A validated match: everything the rewrite needs.

    ``flatten`` / ``unflatten``: the reshapes of an N-D activation to (M, K) and of the
    result back; with both, the fused call takes the N-D codes directly (oneDNN flattens
    itself); with ``flatten`` alone, it takes the codes flattened the same way.
    """

    anchor: fx.Node
    x_region: Region
    flatten: Optional[fx.Node]
    weight: WeightSide
    bias: Optional[fx.Node]
    unflatten: Optional[fx.Node]
    epilogue: Epilogue

    @property
    def matched_nodes(self) -> list[fx.Node]:
        """The computation the fused call replaces, before its epilogue."""
        nodes = [self.x_region.node, self.weight.region.node, self.anchor.args[-1], self.anchor]
        return nodes + [n for n in (self.flatten, self.unflatten) if n is not None]

    @property
    def operand_nodes(self) -> list[fx.Node]:
        """Constants only the replaced regions read (erased when left unused)."""
        regions = (self.x_region, self.weight.region)
        return [n for r in regions for n in (r.scale, r.zero_point)] + [self.weight.region.data]


def plan_qlinear(anchor: fx.Node) -> Optional[_Plan]:
    """Validate the core matched at ``anchor`` (an mm / addmm) and find its epilogue."""
    if anchor.target is aten.addmm.default:
        if anchor.kwargs:  # beta / alpha other than the defaults
            return None
        bias, x_input, weight_t = anchor.args
    else:
        bias, (x_input, weight_t) = None, anchor.args
    if list(weight_t.args[1]) != [1, 0]:
        return None
    flatten = x_input if x_input.target in RESHAPE_OPS else None
    x_region = as_dequantize(flatten.args[0] if flatten is not None else x_input, per_tensor=True)
    if x_region is None:
        return None
    float_dtype = x_region.scheme.float_dtype
    weight = weight_side(weight_t.args[0], dims=2, float_dtype=float_dtype)
    if weight is None:
        return None
    out_features, in_features = weight.codes.shape
    x_val = fake_value(x_region.data)
    if x_val.dim() < 2 or x_val.shape[-1] != in_features or not bias_ok(bias, out_features, float_dtype):
        return None
    unflatten = None
    if flatten is not None:
        unflatten = _unflatten_user(anchor, list(x_val.shape[:-1]) + [out_features])
    allow_binary = float_dtype != torch.bfloat16 or bf16_linear_binary_supported()
    epilogue = match_epilogue(
        unflatten or anchor, [anchor, x_region.node], UNARY_POST_OPS, UNARY_AFTER_ADD, allow_binary=allow_binary
    )
    return _Plan(anchor, x_region, flatten, weight, bias, unflatten, epilogue)


def _unflatten_user(anchor: fx.Node, shape: list) -> Optional[fx.Node]:
    """The single reshape of ``anchor`` back to ``shape`` (the activation's leading dims)."""
    if len(anchor.users) != 1:
        return None
    (user,) = anchor.users
    user_val = fake_value(user)
    if user.target not in RESHAPE_OPS or user_val is None or list(user_val.shape) != shape:
        return None
    return user


def rewrite_qlinear(plan: _Plan) -> fx.Node:
    epilogue, x_region = plan.epilogue, plan.x_region
    mode = fake_mode_of([plan.anchor, x_region.data])
    x_shape = static_shape(x_region.data)
    flat_shape = [math.prod(x_shape[:-1]), x_shape[-1]] if x_shape is not None else None
    packed, packed_fake = prepack_linear_weight(plan.weight.codes, flat_shape, mode)

    qparams = x_region.constant_qparams()
    x_scale, x_zp = qparams if qparams is not None else (x_region.scale, x_region.zero_point)
    out_dtype, out_scale, out_zp = output_dtype_and_qparams(epilogue, x_region.scheme.float_dtype)
    unary_name, unary_scalars, unary_algorithm = unary_args(epilogue)
    x_codes = x_region.data if plan.unflatten is not None or plan.flatten is None else _FLAT_CODES
    head = (x_codes, x_scale, x_zp, PACKED_WEIGHT, WEIGHT_SCALES, WEIGHT_ZERO_POINTS)
    onednn = torch.ops.onednn.qlinear_pointwise
    if epilogue.binary is None:
        target = onednn.default if qparams is not None else onednn.tensor
        args = (*head, plan.bias, out_scale, out_zp, out_dtype, unary_name, unary_scalars, unary_algorithm)
    else:
        target = onednn.binary if qparams is not None else onednn.binary_tensor
        args = (*head, epilogue.binary_other, plan.bias, out_scale, out_zp, out_dtype,
                1.0, 0, "add", 1.0, unary_name, unary_scalars, unary_algorithm)
    call = FusedCall(target, args, packed, packed_fake, plan.weight.scales)

    def flatten_codes(before: fx.Node) -> dict:
        # The flattened activation's result is used as is (2-D): flatten the codes the same way.
        if x_codes is not _FLAT_CODES:
            return {}
        with before.graph.inserting_before(before):
            node = before.graph.call_function(plan.flatten.target, (x_region.data, plan.flatten.args[1]))
        with mode:
            node.meta["val"] = plan.flatten.target(x_region.data.meta["val"], plan.flatten.args[1])
        return {_FLAT_CODES: node}

    record_match(PASS_NAME, len(plan.matched_nodes) + len(epilogue.nodes))
    return rewrite(call, epilogue, plan.matched_nodes + plan.operand_nodes, flatten_codes)


_FLAT_CODES = object()


# ----------------------------------------------------------------------------- registry


@functools.cache
def qlinear_pass() -> PatternMatcherPass:
    """The pattern-matcher pass holding the qlinear patterns (built once)."""
    matcher = PatternMatcherPass(pass_name="static_quant_qlinear")
    for pattern in _core_patterns():
        register_graph_pattern(pattern, extra_check=_is_fusible, pass_dict=matcher)(_fuse)
    return matcher


def _is_fusible(match: Match) -> bool:
    return plan_qlinear(match.output_node()) is not None


def _fuse(match: Match, *args: object, **kwargs: object) -> None:
    plan = plan_qlinear(match.output_node())
    if plan is not None:
        rewrite_qlinear(plan)
