"""The graph-side view of a primitive: one ``impl_invoke_quant`` node with one of our schemes.

After AOTAutograd a primitive from :mod:`impl.static_quant.primitives` is

    impl_invoke_quant(subgraph, data, scale, zero_point, scheme="static_...")

(under dynamic shapes with the size symbols the body uses among the operands as well).

``as_region`` recognizes such a node and checks the operand contract (dtypes, shapes,
CPU); anything else, including a region whose scheme is not ours, yields None, so the
passes leave it alone.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.fx as fx

from torch._inductor.pattern_matcher import FailedMatch, Match, MatchContext, PatternExpr

from ...hop import invoke_quant

from ..schemes import StaticScheme, lookup_scheme
from .graph_utils import constant_scalar, constant_tensor, fake_value, on_cpu


@dataclasses.dataclass(frozen=True)
class Region:
    """One static quantize / dequantize region.

    ``data``: the codes of a dequantize, the float input of a quantize.
    ``scale`` / ``zero_point``: float32 / int32 operand nodes (0-d per-tensor; per-channel
    shaped to broadcast along the channel axis).
    """

    node: fx.Node
    scheme: StaticScheme
    data: fx.Node
    scale: fx.Node
    zero_point: fx.Node

    def constant_qparams(self) -> Optional[tuple[float, int]]:
        """Per-tensor (scale, zero_point) as Python numbers when both are constants."""
        if not self.scheme.per_tensor:
            return None
        scale, zero_point = constant_scalar(self.scale), constant_scalar(self.zero_point)
        if scale is None or zero_point is None:
            return None
        return float(scale), int(zero_point)

    def constant_channel_qparams(self, channels: int, axis: int = 0) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Per-channel (scales (C,) float32, zero_points (C,) int32) along ``axis`` when both
        are constants; a per-tensor region yields its one pair repeated C times."""
        scale, zero_point = constant_tensor(self.scale), constant_tensor(self.zero_point)
        if scale is None or zero_point is None:
            return None
        flat = []
        for value in (scale, zero_point):
            if value.numel() == 1:
                value = value.reshape(1).expand(channels)
            else:
                if value.dim() <= axis or value.shape[axis] != channels or value.numel() != channels:
                    return None  # not a per-channel tensor along ``axis``
                value = value.reshape(channels)
            flat.append(value.contiguous())
        return flat[0].to(torch.float32), flat[1].to(torch.int32)


def as_region(node: object) -> Optional[Region]:
    """The region ``node`` is, or None when it is not one of ours (or breaks the contract)."""
    if not (isinstance(node, fx.Node) and node.op == "call_function" and node.target is invoke_quant):
        return None
    scheme = lookup_scheme(node.kwargs.get("scheme"))
    if scheme is None:
        return None
    # Under dynamic shapes Dynamo also passes the size symbols the body uses (SymInt
    # operands, in no fixed place); the tensor operands keep their order.
    tensors = [a for a in node.args[1:] if fake_value(a) is not None]
    symbols = [a for a in node.args[1:] if fake_value(a) is None]
    if len(tensors) != 3 or not all(_is_symbolic_int(a) for a in symbols):
        return None
    data, scale, zero_point = tensors
    values = [fake_value(v) for v in (data, scale, zero_point, node)]
    if values[-1] is None or not on_cpu(data, node):
        return None
    data_val, scale_val, zero_point_val, out_val = values
    data_dtype, out_dtype = (
        (scheme.qdtype, scheme.float_dtype) if scheme.is_dequantize else (scheme.float_dtype, scheme.qdtype)
    )
    if (data_val.dtype, out_val.dtype, scale_val.dtype, zero_point_val.dtype) != (
        data_dtype, out_dtype, torch.float32, torch.int32
    ):
        return None
    if scheme.per_tensor and (scale_val.dim() != 0 or zero_point_val.dim() != 0):
        return None
    return Region(node, scheme, data, scale, zero_point)


def _is_symbolic_int(arg: object) -> bool:
    return isinstance(arg, fx.Node) and isinstance(arg.meta.get("val"), (int, torch.SymInt))


def as_dequantize(node: object, per_tensor: Optional[bool] = None) -> Optional[Region]:
    region = as_region(node)
    if region is None or not region.scheme.is_dequantize:
        return None
    if per_tensor is not None and region.scheme.per_tensor != per_tensor:
        return None
    return region


def as_quantize(node: object, per_tensor: Optional[bool] = None) -> Optional[Region]:
    region = as_region(node)
    if region is None or not region.scheme.is_quantize:
        return None
    if per_tensor is not None and region.scheme.per_tensor != per_tensor:
        return None
    return region


class RegionOperand(PatternExpr):
    """Pattern-matcher leaf: a node that is one of our regions, used by one node only.

    A leaf (like ``Arg``) rather than a ``CallFunction`` because a region's operand count
    varies (size symbols under dynamic shapes). Handlers read the region through
    ``as_region``; ``direction`` restricts the match to quantize or dequantize regions.
    """

    def __init__(self, dequantize: bool = True) -> None:
        super().__init__()
        self.dequantize = dequantize

    def __repr__(self) -> str:
        return f"RegionOperand(dequantize={self.dequantize})"

    def _match(self, node: object, ctx: MatchContext) -> Match | FailedMatch:
        region = as_region(node)
        if region is None or region.scheme.is_dequantize != self.dequantize:
            return FailedMatch("not a static-quant {} region: {}", "dequantize" if self.dequantize else "quantize", node)
        if len(node.users) != 1:
            return FailedMatch("region {} has {} users", node, len(node.users))
        return Match(ctx, self)

    def pattern_eq(self, other: object) -> bool:
        return super().pattern_eq(other) and self.dequantize == other.dequantize  # type: ignore[attr-defined]
