"""Weight-only fusion: "dequantize region -> matmul" becomes one ``torch.ops.impl.woq_mm_<scheme>``.

What a post-grad graph holds for ``F.linear(x, dequantize_<scheme>(weight), b)`` and kin:

    w = impl_invoke_quant(subgraph, <weight tensors>, scheme="int8_weight_only")   # (N, K)
    y = mm(x, permute(w, [1, 0]))                    # x @ w.T, F.linear without bias
    y = addmm(b, x, permute(w, [1, 0]))              # F.linear with bias
    y = bmm(x3, expand(permute(w, [1, 0]), [B, K, N]))          # torch.bmm(x3, w.t().expand(...))
    y = bmm(x3, expand(unsqueeze(permute(w, [1, 0]), 0), ...))  # torch.matmul(x3, w.t()[None])
    y = linear(x, w[, b])                            # (only in graphs that kept aten.linear)

which becomes ``y = woq_mm_<scheme>(x, <weight tensors>, b, <ints>)``; for bmm the (B, S, K)
activation keeps its batch dims (the op flattens them to (B * S, K) and restores them).

The weight operand may reach the matmul through any chain of view ops (permute, t,
transpose, unsqueeze, expand, view, reshape, squeeze): the chain is replayed on a meta
tensor and must amount to exactly W.T (mm, addmm), W.T broadcast over the batch (bmm) or W
(linear). A match also needs:

- the region's ``scheme`` is a scheme of ``impl.schemes.registry`` and its operands pass
  that scheme's one operand check (group size / block size read off the operand shapes by
  the record's ``infer_ints``, K the region's output's), output dtype = x's dtype;
- the region's body computes the scheme's formula (``body_computes_scheme``: probed once per
  distinct body on random operands, on the CPU; CUDA regions are taken at their word);
- the region and every view in the chain have exactly one user: a weight that is also read
  elsewhere stays dequantized, and fusing one of its readers would dequantize it twice;
- addmm: no alpha / beta keywords and a bias of shape (N,) in x's dtype.

Anything else (an unknown scheme, a weight used as x @ W, a bias broadcast over rows, ...)
is left as it is and still runs unfused. One ``PatternMatcherPass`` per registered scheme; each
rewrite bumps ``counters["inductor"]["woq_fusion_<short>_matcher_count"]`` and
``..._matcher_nodes`` (the nodes replaced: region, views, matmul). Run it as (part of)
``post_grad_custom_pre_pass``, before Inductor's own post-grad patterns rewrite mm / addmm;
``impl.install()`` does.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Optional

import torch
import torch.fx as fx
from torch._dynamo.utils import counters
from torch._inductor.pattern_matcher import (
    Arg,
    CallFunction,
    FailedMatch,
    Match,
    MatchContext,
    PatternExpr,
    PatternMatcherPass,
    register_graph_pattern,
)

from .. import graph_pass
from ..hop import invoke_quant
from ..schemes.common import ACTIVATION_DTYPES
from ..schemes.registry import SCHEMES, WeightOnlyScheme
from .. import woq_mm

aten = torch.ops.aten
prims = torch.ops.prims

# What the pass computes depends on these files (its cache key, ``WoqFusionPass.uuid``): the
# schemes' records and checks included.
SOURCE_FILES = tuple(
    str(Path(__file__).resolve().parent.parent / name)
    for name in ("passes/woq_fusion.py", "woq_mm.py", "hop.py", "schemes/registry.py", "schemes/common.py",
                 "schemes/int8.py", "schemes/int4.py", "schemes/nf4.py")
)


def pass_names() -> tuple[str, ...]:
    """``woq_fusion_<short>`` of every registered scheme."""
    return tuple(f"woq_fusion_{s.short}" for s in SCHEMES.values())


def __getattr__(name: str) -> tuple[str, ...]:
    # PASS_NAMES / COUNTER_NAMES follow the registry (a scheme registered later included).
    if name == "PASS_NAMES":
        return pass_names()
    if name == "COUNTER_NAMES":
        return tuple(f"{p}_{event}" for p in pass_names() for event in ("matcher_count", "matcher_nodes"))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

VIEW_OPS = frozenset({
    aten.permute.default,
    aten.t.default,
    aten.transpose.int,
    aten.unsqueeze.default,
    aten.expand.default,
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.squeeze.dim,
    aten.alias.default,
})


def counter_key(scheme: str, event: str) -> str:
    """``counters["inductor"]`` key, e.g. ``woq_fusion_int8_matcher_count``."""
    return graph_pass.counter_key(f"woq_fusion_{SCHEMES[scheme].short}", event)


# --------------------------------------------------------------------------- the weight


@dataclasses.dataclass(frozen=True)
class QuantizedWeight:
    """A region that dequantizes a weight of a known scheme, checked against its layout.

    ``tensors``: the fused op's weight arguments in its order (NF4: qweight, absmax,
    levels, absmax_scale or None, absmax_offset or None); ``ints``: its trailing int
    arguments (int4: group_size; nf4: block_size).
    """

    region: fx.Node
    scheme: str
    tensors: tuple[Optional[fx.Node], ...]
    ints: tuple[int, ...]
    out_features: int
    in_features: int
    dtype: torch.dtype


def _val(node: object) -> Optional[torch.Tensor]:
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    return value if isinstance(value, torch.Tensor) else None


def _static(shape: Any) -> Optional[tuple[int, ...]]:
    dims = tuple(shape)
    return dims if all(isinstance(d, int) for d in dims) else None


def as_quantized_weight(node: object) -> Optional[QuantizedWeight]:
    """The weight ``node`` dequantizes, or None when it is not one of our weight regions."""
    if not (isinstance(node, fx.Node) and node.op == "call_function" and node.target is invoke_quant):
        return None
    scheme = node.kwargs.get("scheme")
    if scheme not in SCHEMES:
        return None
    out = _val(node)
    out_shape = _static(out.shape) if out is not None else None
    if out_shape is None or len(out_shape) != 2 or out.dtype not in ACTIVATION_DTYPES:
        return None
    # Under dynamic shapes the size symbols the body uses are operands too: skip them.
    tensors = [a for a in node.args[1:] if _val(a) is not None]
    values = [_val(a) for a in tensors]
    if any(_static(v.shape) is None or v.device != out.device for v in values):
        return None
    ordered = _operands(SCHEMES[scheme], out_shape, tensors, values)
    if ordered is None:
        return None
    operands, ints = ordered
    return QuantizedWeight(node, scheme, operands, ints, out_shape[0], out_shape[1], out.dtype)


def _operands(scheme: WeightOnlyScheme, out_shape: tuple, tensors: list, values: list) -> Optional[tuple]:
    """(the op's weight operands, None where a region left an optional one out; the op's ints)
    when the region's operands are the scheme's layout for a weight of ``out_shape``, else None."""
    missing = len(scheme.operands) - len(tensors)
    if not 0 <= missing <= scheme.optional or values[0].dim() < 1 or values[0].shape[0] != out_shape[0]:
        return None
    ints = scheme.infer_ints(out_shape, [tuple(v.shape) for v in values])
    if ints is None:
        return None
    try:  # the one operand check, on the fake values
        scheme.check(*values, *([None] * missing), *ints, out_shape[1], "woq_fusion")
    except (TypeError, ValueError):
        return None
    return (*tensors, *([None] * missing)), tuple(ints)


# --------------------------------------------------------------------------- the region's body

_BODY_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
_BODY_VERDICTS: dict = {}


def body_computes_scheme(weight: QuantizedWeight) -> bool:
    """Whether the region's body computes its scheme's formula, not only takes operands of
    its layout (``q * scale`` on a square weight broadcasts the (N,) scale over columns:
    the scheme's shapes, another weight).

    Probed: the body and the formula run on one set of random operands of the region's
    shapes and dtypes (codes over their whole range, distinct positive floats), and must
    agree to the output dtype's rounding. One probe per body code, shapes and constants
    (a 4096 x 4096 int8 weight: 1.4 s on a loaded 2-core AVX2 machine; then cached).
    Regions on other devices than the CPU, or whose body also takes size symbols, are
    taken at their word (not probed).
    """
    node = weight.region
    out = _val(node)
    subgraph = node.args[0]
    module = None
    if isinstance(subgraph, fx.Node) and subgraph.op == "get_attr" and node.graph.owning_module is not None:
        module = getattr(node.graph.owning_module, subgraph.target, None)
    operands = list(node.args[1:])
    values = [_val(a) for a in operands]
    if out.device.type != "cpu" or any(v is None for v in values):
        return True
    if not isinstance(module, fx.GraphModule):
        return False
    constants = tuple(
        (name, tuple(t.shape), t.dtype, hash(t.cpu().numpy().tobytes()) if t.numel() <= 4096 else id(t))
        for name, t in (*module.named_parameters(), *module.named_buffers())
    )
    key = (weight.scheme, module.code, tuple((tuple(v.shape), v.dtype) for v in values), out.dtype, weight.ints, constants)
    if key not in _BODY_VERDICTS:
        _BODY_VERDICTS[key] = _probe_body(weight, module, operands, values)
    return _BODY_VERDICTS[key]


def _probe_operand(value: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if value.dtype.is_floating_point:
        return (torch.rand(value.shape, generator=generator) + 0.5).to(value.dtype)
    info = torch.iinfo(value.dtype)
    return torch.randint(info.min, info.max + 1, value.shape, generator=generator, dtype=value.dtype)


def _probe_body(weight: QuantizedWeight, module: fx.GraphModule, operands: list, values: list) -> bool:
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    generator = torch.Generator().manual_seed(0)
    with unset_fake_temporarily(), torch.no_grad():
        probes = {node: _probe_operand(v, generator) for node, v in zip(operands, values)}
        try:
            body = module(*(probes[a] for a in operands))
        except Exception:  # a body that cannot run on its own operands is no formula of ours
            return False
        ordered = [None if t is None else probes[t] for t in weight.tensors]
        formula = SCHEMES[weight.scheme].formula(*ordered, *weight.ints, weight.in_features, weight.dtype)
        if not isinstance(body, torch.Tensor) or body.shape != formula.shape or body.dtype != formula.dtype:
            return False
        formula = formula.float()
        scale = formula.abs().max().clamp_min(1e-12)
        error = ((body.float() - formula).abs().max() / scale).item()
    return error <= _BODY_TOLERANCE.get(weight.dtype, 0.0)


# --------------------------------------------------------------------------- view chains


def view_chain(node: fx.Node) -> tuple[list[fx.Node], fx.Node]:
    """(views from the source outwards, source): ``node`` followed back through view ops."""
    chain = []
    while isinstance(node, fx.Node) and node.op == "call_function" and node.target in VIEW_OPS:
        chain.append(node)
        node = node.args[0]
    chain.reverse()
    return chain, node


def replay_on_meta(chain: list[fx.Node], shape: tuple[int, ...]) -> Optional[torch.Tensor]:
    """The views of ``chain`` applied to a contiguous meta tensor of ``shape`` (None if any fails)."""
    value = torch.empty(shape, device="meta")
    for view in chain:
        if any(isinstance(a, fx.Node) for a in torch.utils._pytree.tree_leaves((view.args[1:], view.kwargs))):
            return None  # sizes computed at run time: not a layout we can check
        try:
            value = view.target(value, *view.args[1:], **view.kwargs)
        except (RuntimeError, TypeError, ValueError):
            return None
    return value


def _is_layout(value: Optional[torch.Tensor], shape: tuple, strides: tuple) -> bool:
    return (
        value is not None
        and tuple(value.shape) == shape
        and value.storage_offset() == 0
        and all(st == want for size, st, want in zip(value.shape, value.stride(), strides) if size != 1)
    )


class WeightOperand(PatternExpr):
    """Pattern leaf: a view chain of exactly ``transform`` over one of our ``scheme`` regions.

    ``transform``: "t" (W.T, (K, N)), "batched_t" (W.T broadcast to (B, K, N)) or "identity".
    Single users all along; what the chain amounts to is checked by replaying it (see
    ``replay_on_meta``).
    """

    def __init__(self, scheme: str, transform: str) -> None:
        super().__init__()
        self.scheme = scheme
        self.transform = transform

    def __repr__(self) -> str:
        return f"WeightOperand({self.scheme!r}, {self.transform!r})"

    def _match(self, node: object, ctx: MatchContext) -> Match | FailedMatch:
        if not isinstance(node, fx.Node):
            return FailedMatch("not a node: {}", node)
        chain, source = view_chain(node)
        weight = as_quantized_weight(source)
        if weight is None or weight.scheme != self.scheme:
            return FailedMatch("{} is not a {} weight region", source, self.scheme)
        for step in (source, *chain):
            if len(step.users) != 1:
                return FailedMatch("{} has {} users", step, len(step.users))
        if not _is_layout(replay_on_meta(chain, (weight.out_features, weight.in_features)), *self._expected(node, weight)):
            return FailedMatch("{} is not {} of the weight", node, self.transform)
        match = Match(ctx, self)
        match.nodes.extend([source, *chain])
        return match

    def _expected(self, node: fx.Node, weight: QuantizedWeight) -> tuple[tuple, tuple]:
        n, k = weight.out_features, weight.in_features
        if self.transform == "t":
            return (k, n), (1, k)
        if self.transform == "identity":
            return (n, k), (k, 1)
        value = _val(node)
        batch = value.shape[0] if value is not None and value.dim() == 3 else -1
        return (batch, k, n), (0, 1, k)

    def pattern_eq(self, other: Any) -> bool:
        return super().pattern_eq(other) and (self.scheme, self.transform) == (other.scheme, other.transform)


# --------------------------------------------------------------------------- the rewrite


def _bias_ok(bias: object, x: torch.Tensor, n: int) -> bool:
    value = _val(bias)
    return value is not None and tuple(value.shape) == (n,) and value.dtype == x.dtype


def _plan(match: Match, scheme: str) -> Optional[tuple[fx.Node, QuantizedWeight, Optional[fx.Node]]]:
    """(activation, weight, bias) of a valid match, else None."""
    anchor = match.output_node()
    target = anchor.target
    if target is aten.addmm.default:
        if any(anchor.kwargs.get(k, 1) != 1 for k in ("alpha", "beta")):
            return None
        bias, x, weight_node = anchor.args[:3]
    elif target is aten.linear.default:
        x, weight_node = anchor.args[:2]
        bias = anchor.args[2] if len(anchor.args) > 2 else anchor.kwargs.get("bias")
    else:
        (x, weight_node), bias = anchor.args[:2], None
    _, source = view_chain(weight_node)
    weight = as_quantized_weight(source)
    x_val = _val(x)
    if weight is None or weight.scheme != scheme or x_val is None:
        return None
    if x_val.dtype != weight.dtype or x_val.device != _val(source).device or x_val.dim() < 1:
        return None
    if x_val.shape[-1] != weight.in_features:
        return None
    if target is aten.bmm.default and x_val.dim() != 3:
        return None
    if bias is not None and not _bias_ok(bias, x_val, weight.out_features):
        return None
    if not body_computes_scheme(weight):
        return None
    return x, weight, bias


def _fake_mode(nodes: list[fx.Node]):
    from torch._guards import detect_fake_mode

    return detect_fake_mode([_val(n) for n in nodes if _val(n) is not None])


def rewrite(match: Match, scheme: str) -> None:
    plan = _plan(match, scheme)
    if plan is None:
        return
    x, weight, bias = plan
    anchor = match.output_node()
    graph = anchor.graph
    op = woq_mm.fused_op(scheme)
    args = (x, *weight.tensors, bias, *weight.ints)
    with graph.inserting_before(anchor):
        fused = graph.call_function(op, args)
    mode = _fake_mode([x, weight.region, anchor])
    fake_args = torch.utils._pytree.tree_map_only(fx.Node, lambda n: n.meta["val"], args)
    with mode:
        fused.meta["val"] = op(*fake_args)
    fused.meta["stack_trace"] = anchor.meta.get("stack_trace")
    anchor.replace_all_uses_with(fused)
    replaced = [n for n in match.nodes if isinstance(n, fx.Node)]
    subgraph = weight.region.args[0]
    for node in sorted(set(replaced), reverse=True):
        if not node.users:
            graph.erase_node(node)
    if isinstance(subgraph, fx.Node) and subgraph.op == "get_attr" and not subgraph.users:
        graph.erase_node(subgraph)
    counters["inductor"][counter_key(scheme, "matcher_count")] += 1
    counters["inductor"][counter_key(scheme, "matcher_nodes")] += len(set(replaced))


def _patterns(scheme: str) -> list[PatternExpr]:
    t = WeightOperand(scheme, "t")
    return [
        CallFunction(aten.mm.default, Arg(), t),
        CallFunction(aten.addmm.default, Arg(), Arg(), t),
        CallFunction(aten.bmm.default, Arg(), WeightOperand(scheme, "batched_t")),
        CallFunction(aten.linear.default, Arg(), WeightOperand(scheme, "identity")),
        CallFunction(aten.linear.default, Arg(), WeightOperand(scheme, "identity"), Arg()),
    ]


@functools.cache
def woq_fusion_pass(scheme: str) -> PatternMatcherPass:
    """The pattern-matcher pass of one scheme (built once)."""
    matcher = PatternMatcherPass(pass_name=f"woq_fusion_{SCHEMES[scheme].short}")
    for pattern in _patterns(scheme):
        register_graph_pattern(
            pattern,
            extra_check=functools.partial(_is_fusible, scheme=scheme),
            pass_dict=matcher,
        )(functools.partial(_fuse, scheme=scheme))
    return matcher


def _is_fusible(match: Match, scheme: str) -> bool:
    return _plan(match, scheme) is not None


def _fuse(match: Match, *args: object, scheme: str, **kwargs: object) -> None:
    rewrite(match, scheme)


def _zero_pad(node: object) -> Optional[list]:
    """The pad list of ``constant_pad_nd(t, pad, 0)`` with no negative pad, or None for anything else."""
    if not (isinstance(node, fx.Node) and node.op == "call_function" and node.target is aten.constant_pad_nd.default):
        return None
    value = node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0)
    pad = list(node.args[1])
    # A negative pad crops: the product then lacks terms, and is not pad_mm's form.
    return pad if value == 0 and all(isinstance(p, int) and p >= 0 for p in pad) else None


def _padded(node: object) -> Optional[tuple[object, list]]:
    """(the unpadded tensor, [right pad of the last dim, right pad of the one before]) of a
    2-D operand: ``constant_pad_nd(t, [0, a, 0, b], 0)`` (or ``[0, a]``), else (node, [0, 0])."""
    pad = _zero_pad(node)
    if pad is None:
        return node, [0, 0]
    pad = pad + [0] * (4 - len(pad))
    if len(pad) != 4 or pad[0] or pad[2]:
        return None
    return node.args[0], [pad[1], pad[3]]


def strip_matmul_padding(graph: fx.Graph) -> int:
    """Undo Inductor's ``pad_mm`` on ``mm`` / ``addmm`` over our regions where it padded K or M.

    pad_mm (a joint-graph pass, so before ours) may rewrite ``mm(x, W.T)`` to
    ``mm(pad(x, [0, pk, 0, pm]), pad(W.T, [0, 0, 0, pk]))[:M]``: zeros appended to K on
    both sides add nothing to the product, and the rows appended to M are sliced off
    again. Dropping the pads (and the slice) gives back the form the fusion patterns match;
    the fused kernel handles any M and K itself. Padding of N (which pads the bias too) and
    negative pads (which crop) are left alone. Returns the number of matmuls changed.
    """
    changed = 0
    for target, at in ((aten.mm.default, 0), (aten.addmm.default, 1)):
        for mm in graph.find_nodes(op="call_function", target=target):
            x_side, w_side = _padded(mm.args[at]), _padded(mm.args[at + 1])
            if x_side is None or w_side is None:
                continue
            (x, (pk, pm)), (w, (pn, pk_w)) = x_side, w_side
            if pn or pk != pk_w or not (pk or pm):
                continue
            _, source = view_chain(w)
            if as_quantized_weight(source) is None or _val(x) is None:
                continue
            rows = _val(x).shape[0]
            slice_node = None
            if pm:  # the padded rows must be sliced off by the matmul's only user
                (slice_node,) = mm.users if len(mm.users) == 1 else (None,)
                if not (isinstance(slice_node, fx.Node) and slice_node.target is aten.slice.Tensor
                        and tuple(slice_node.args[1:3]) == (0, 0) and _val(slice_node) is not None
                        and _val(slice_node).shape[0] == rows
                        and (len(slice_node.args) < 5 or slice_node.args[4] == 1)):
                    continue
            old = [mm.args[at], mm.args[at + 1]]
            mm.args = (*mm.args[:at], x, w, *mm.args[at + 2:])
            mode = _fake_mode([x, w])
            with mode:
                mm.meta["val"] = mm.target(*torch.utils._pytree.tree_map_only(fx.Node, lambda n: n.meta["val"], mm.args),
                                           **mm.kwargs)
            if slice_node is not None:
                slice_node.replace_all_uses_with(mm)
                graph.erase_node(slice_node)
            for pad in old:
                if isinstance(pad, fx.Node) and pad not in (x, w) and not pad.users:
                    graph.erase_node(pad)
            changed += 1
    return changed


def _call(node: object, target: Any) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target is target


def _single_use(*nodes: fx.Node) -> bool:
    return all(len(n.users) == 1 for n in nodes)


def _cast_dtype(node: object) -> Optional[torch.dtype]:
    """The dtype a pure dtype cast converts to (``prims.convert_element_type`` as after
    decompositions, or ``aten._to_copy(t, dtype=...)``), else None."""
    if _call(node, prims.convert_element_type.default):
        return node.args[1]
    if _call(node, aten._to_copy.default) and len(node.args) == 1 and set(node.kwargs) == {"dtype"}:
        return node.kwargs["dtype"]
    return None


def _uncast(node: fx.Node) -> fx.Node:
    """``node`` without a cast to float32 on top (opmath upcasts)."""
    if _cast_dtype(node) == torch.float32 and _single_use(node):
        return node.args[0]
    return node


def recompose_vector_mm(graph: fx.Graph) -> int:
    """Give back ``mm(x, W.T)`` where Inductor's decomposition wrote a matrix-vector product
    over our regions as a broadcast multiply and sum.

    With ``coordinate_descent_tuning`` (what max-autotune modes turn on) Inductor decomposes
    ``mm`` with M = 1 (or N = 1) before any post-grad pass, in float32 opmath:
    ``sum(x.float()[:, :, None] * W.T.float()[None], dim=1).to(x.dtype)``. That is the same
    product; rewriting it back lets the fusion patterns see the matmul (the H200 run: one
    matmul in 12 of the quantized MLP left unfused under max-autotune). Returns the count.
    """
    changed = 0
    for total in graph.find_nodes(op="call_function", target=aten.sum.dim_IntList):
        # A dtype= keyword makes the sum another dtype than the mm would be.
        if list(total.args[1]) not in ([1], [-2]) or len(total.args) > 2 or set(total.kwargs) - {"keepdim"} \
                or total.kwargs.get("keepdim"):
            continue
        mul = total.args[0]
        if not (_call(mul, aten.mul.Tensor) and len(mul.args) == 2 and _single_use(mul)):
            continue
        x_side, w_side = mul.args
        if not (_call(x_side, aten.unsqueeze.default) and x_side.args[1] in (2, -1)
                and _call(w_side, aten.unsqueeze.default) and w_side.args[1] == 0 and _single_use(x_side, w_side)):
            continue
        x, w_t = _uncast(x_side.args[0]), _uncast(w_side.args[0])
        _, source = view_chain(w_t)
        weight = as_quantized_weight(source)
        x_val, w_val = _val(x), _val(w_t)
        if weight is None or x_val is None or x_val.dim() != 2 or x_val.dtype != weight.dtype:
            continue
        # (M, K, 1) * (1, K, N) only: a size-1 K on either side broadcasts, which no mm does.
        if w_val is None or w_val.dim() != 2 or x_val.shape[1] != w_val.shape[0]:
            continue
        (user,) = total.users if len(total.users) == 1 else (None,)
        if _cast_dtype(user) == x_val.dtype:
            result = user
        elif x_val.dtype == torch.float32:
            result = total
        else:
            continue
        with graph.inserting_before(result):
            mm = graph.call_function(aten.mm.default, (x, w_t))
        with _fake_mode([x, w_t]):
            mm.meta["val"] = torch.mm(_val(x), _val(w_t))
        mm.meta["stack_trace"] = result.meta.get("stack_trace")
        result.replace_all_uses_with(mm)
        for node in dict.fromkeys((result, total, mul, x_side, w_side, x_side.args[0], w_side.args[0])):
            if node not in (x, w_t) and not node.users:
                graph.erase_node(node)
        changed += 1
    return changed


def apply_woq_fusion(graph: fx.Graph) -> None:
    """Every scheme's pass on ``graph``, in place; a graph without our regions is untouched."""
    regions = graph.find_nodes(op="call_function", target=invoke_quant)
    schemes = {n.kwargs.get("scheme") for n in regions} & set(SCHEMES)
    if schemes:
        strip_matmul_padding(graph)
        recompose_vector_mm(graph)
    for scheme in SCHEMES:
        if scheme in schemes:
            woq_fusion_pass(scheme).apply(graph)
    if schemes:
        graph.lint()


class WoqFusionPass(graph_pass.SourceHashedPass):
    """``apply_woq_fusion`` as an Inductor custom graph pass; ``uuid()`` hashes its sources."""

    apply = staticmethod(apply_woq_fusion)
    source_files = SOURCE_FILES


__all__ = [
    "COUNTER_NAMES",
    "PASS_NAMES",
    "QuantizedWeight",
    "WoqFusionPass",
    "apply_woq_fusion",
    "as_quantized_weight",
    "counter_key",
    "recompose_vector_mm",
    "strip_matmul_padding",
    "woq_fusion_pass",
]
