"""What the qlinear and qconv2d passes share: the weight side, and the final rewrite.

Both fold

    dequant(x_codes) ─┐
                      ├─ linear / conv ─ [epilogue: add, unary, quantize]
    dequant(w_codes) ─┘

into one oneDNN call on the int8 codes. The weight must be constant int8 codes with
symmetric per-output-channel scales (zero points 0): what oneDNN supports.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import torch
import torch.fx as fx

from ..prepack import weight_codes_safe
from .graph_utils import add_constant, constant_tensor, erase_dead, fake_mode_of, fake_value, insert_call
from .post_ops import Epilogue
from .regions import Region, as_dequantize


@dataclasses.dataclass(frozen=True)
class WeightSide:
    """Constant weight codes (O, ...) int8 and their per-output-channel float32 scales (O,)."""

    region: Region
    codes: torch.Tensor
    scales: torch.Tensor


def weight_side(node: object, dims: int, float_dtype: torch.dtype) -> Optional[WeightSide]:
    """The int8 weight behind a dequantize region node, when oneDNN can take it.

    ``dims``: 2 for linear (N, K), 4 for conv2d (O, I / groups, kH, kW). The region must
    dequantize to ``float_dtype`` (the activation's), per tensor or per channel along
    axis 0, from constant codes with constant scales and all-zero zero points, and the
    codes must be ones oneDNN computes with exactly on this CPU (``weight_codes_safe``).
    """
    region = as_dequantize(node)
    if region is None or region.scheme.qdtype != torch.int8 or region.scheme.float_dtype != float_dtype:
        return None
    codes = constant_tensor(region.data)
    if codes is None or codes.dim() != dims or codes.dtype != torch.int8 or not weight_codes_safe(codes):
        return None
    qparams = region.constant_channel_qparams(codes.shape[0], axis=0)
    if qparams is None:
        return None
    scales, zero_points = qparams
    if bool(zero_points.ne(0).any()) or not bool(scales.gt(0).all()):
        return None
    return WeightSide(region, codes, scales)


def bias_ok(bias: object, channels: int, float_dtype: torch.dtype) -> bool:
    """None, or a (channels,) tensor of the computation's dtype."""
    if bias is None:
        return True
    value = fake_value(bias)
    return value is not None and tuple(value.shape) == (channels,) and value.dtype == float_dtype


@dataclasses.dataclass(frozen=True)
class FusedCall:
    """The oneDNN call that replaces a matched core and its epilogue.

    ``args`` may hold the placeholders ``PACKED_WEIGHT``, ``WEIGHT_SCALES`` and
    ``WEIGHT_ZERO_POINTS``, filled with new constant nodes at rewrite time.
    """

    target: Callable
    args: tuple
    packed_weight: torch.Tensor
    packed_weight_fake: torch.Tensor
    weight_scales: torch.Tensor


PACKED_WEIGHT = object()
WEIGHT_SCALES = object()
WEIGHT_ZERO_POINTS = object()


def output_dtype_and_qparams(epilogue: Epilogue, float_dtype: torch.dtype) -> tuple[torch.dtype, float, int]:
    """The fused op's output dtype and output (scale, zero point): the quantize's when one
    was absorbed, else the float dtype with the identity (1.0, 0)."""
    if epilogue.quant is None:
        return float_dtype, 1.0, 0
    scale, zero_point = epilogue.quant_qparams
    return epilogue.quant_region.scheme.qdtype, scale, zero_point


def unary_args(epilogue: Epilogue) -> tuple[str, list, str]:
    """(name, scalars, algorithm) of the absorbed unary post-op, or oneDNN's "none"."""
    if epilogue.unary_op is None:
        return "none", [], ""
    return epilogue.unary_op.name, list(epilogue.unary_op.scalars), epilogue.unary_op.algorithm


def rewrite(call: FusedCall, epilogue: Epilogue, replaced: Sequence[fx.Node],
            extra_inserts: Callable[[fx.Node], dict] = lambda before: {}) -> fx.Node:
    """Insert the fused call where the epilogue ends, reroute its users, drop dead nodes.

    ``replaced``: the core's nodes (regions, views, the linear / conv); the epilogue's nodes
    are added. ``extra_inserts(before)`` may insert nodes the call needs (returns a mapping
    from placeholder objects in ``call.args`` to those nodes).
    """
    terminal = epilogue.output
    graph = terminal.graph
    mode = fake_mode_of([terminal, *replaced])
    channels = call.weight_scales.shape[0]
    fills: dict[Any, Any] = {
        PACKED_WEIGHT: add_constant(graph, "packed_weight", call.packed_weight, terminal, fake=call.packed_weight_fake),
        WEIGHT_SCALES: add_constant(graph, "weight_scales", call.weight_scales, terminal),
        WEIGHT_ZERO_POINTS: add_constant(graph, "weight_zero_points", torch.zeros(channels, dtype=torch.int32), terminal),
    }
    fills.update(extra_inserts(terminal))
    args = tuple(fills.get(a, a) if _hashable(a) else a for a in call.args)
    fused = insert_call(graph, terminal, call.target, args, mode)
    for key in ("stack_trace", "nn_module_stack", "source_fn_stack"):
        if key in terminal.meta:
            fused.meta[key] = terminal.meta[key]
    terminal.replace_all_uses_with(fused)
    erase_dead([*epilogue.nodes, *replaced])
    return fused


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
