"""FX helpers shared by the static-quant passes: constants, fake values, new nodes, counters.

The passes run as a post-grad graph pass (before Inductor lowers the graph). Under
``torch._inductor.config.freezing`` parameters and buffers are ``get_attr`` constants by
then, so weights can be read, prepacked and stored back on the module as new constants.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import torch.fx as fx
from torch._dynamo.utils import counters
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily

from ... import graph_pass

aten = torch.ops.aten
prims = torch.ops.prims

COUNTER_PREFIX = "static_quant_"

# Ops whose output may alias their input: an in-place kernel must not write through them.
RESHAPE_OPS = (aten.reshape.default, aten.view.default, aten._unsafe_view.default)
_CONSTANT_TRANSFORMS = {
    aten.reshape.default,
    aten.view.default,
    aten._unsafe_view.default,
    aten.permute.default,
    aten.expand.default,
    aten.squeeze.dim,
    aten.unsqueeze.default,
    aten.clone.default,
    aten.lift_fresh_copy.default,
    aten._to_copy.default,
    prims.convert_element_type.default,
}


def counter_key(pass_name: str, event: str) -> str:
    """``counters["inductor"]`` key of a pass event, e.g. ``static_quant_qlinear_matcher_count``."""
    return graph_pass.counter_key(f"{COUNTER_PREFIX}{pass_name}", event)


def record_match(pass_name: str, matched_nodes: int) -> None:
    """Count one rewrite of ``pass_name`` that replaced ``matched_nodes`` graph nodes."""
    counters["inductor"][counter_key(pass_name, "matcher_count")] += 1
    counters["inductor"][counter_key(pass_name, "matcher_nodes")] += matched_nodes


# ------------------------------------------------------------------------------ values


def fake_value(node: object) -> Optional[torch.Tensor]:
    """The (fake) tensor a node computes, when it computes exactly one tensor."""
    if not isinstance(node, fx.Node):
        return None
    value = node.meta.get("val")
    return value if isinstance(value, torch.Tensor) else None


def static_shape(node: object) -> Optional[list[int]]:
    """The node's shape as ints, None when unknown or symbolic (dynamic shapes)."""
    value = fake_value(node)
    if value is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return list(value.shape)


def on_cpu(*nodes: object) -> bool:
    values = [fake_value(n) for n in nodes]
    return all(v is not None and v.device.type == "cpu" for v in values)


def constant_tensor(node: object, _depth: int = 0) -> Optional[torch.Tensor]:
    """The real tensor a node always evaluates to, or None when it depends on inputs.

    Recognized: ``get_attr`` constants (frozen parameters and buffers, lifted tensor
    constants), ``full`` / ``scalar_tensor`` with constant arguments (what Python scalars
    turned into tensors become after tracing), and reshapes, permutes, copies and dtype
    conversions of those.
    """
    if not isinstance(node, fx.Node) or _depth > 8:
        return None
    with unset_fake_temporarily():
        if node.op == "get_attr":
            value = _fetch_attr(node.graph.owning_module, str(node.target))
            if isinstance(value, torch.Tensor) and not isinstance(value, torch._subclasses.FakeTensor):
                return value
            return None
        if node.op != "call_function":
            return None
        if node.target is aten.full.default:
            size, fill = node.args[:2]
            if _all_ints(size) and isinstance(fill, (int, float, bool)):
                return torch.full(list(size), fill, dtype=node.kwargs.get("dtype"))
            return None
        if node.target is aten.scalar_tensor.default:
            fill = node.args[0]
            if isinstance(fill, (int, float, bool)):
                return torch.scalar_tensor(fill, dtype=node.kwargs.get("dtype"))
            return None
        if node.target in _CONSTANT_TRANSFORMS and node.args:
            source = constant_tensor(node.args[0], _depth + 1)
            rest = node.args[1:]
            if source is None or any(isinstance(a, fx.Node) for a in _leaves(rest)):
                return None
            kwargs = {k: v for k, v in node.kwargs.items() if k not in ("device", "pin_memory", "layout")}
            return node.target(source, *rest, **kwargs)
    return None


def constant_scalar(node: object) -> Optional[float | int]:
    """A one-element constant as a Python number (int for integer dtypes), else None."""
    value = constant_tensor(node)
    if value is None or value.numel() != 1:
        return None
    return int(value.item()) if not value.dtype.is_floating_point else float(value.item())


def same_value(first: object, second: object, _depth: int = 0) -> bool:
    """Whether two graph values are provably equal: the same node, equal constants, or
    the same deterministic op applied to provably equal arguments (two ``scalar_tensor``
    of one size symbol, say, which is what a symbolic Python scalar turns into)."""
    if first is second:
        return True
    if not (isinstance(first, fx.Node) and isinstance(second, fx.Node)):
        if isinstance(first, fx.Node) or isinstance(second, fx.Node):
            return False
        if isinstance(first, (list, tuple)) and isinstance(second, (list, tuple)):
            return len(first) == len(second) and all(same_value(a, b, _depth) for a, b in zip(first, second))
        return type(first) is type(second) and first == second
    a, b = constant_tensor(first), constant_tensor(second)
    if a is not None and b is not None:
        return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
    if _depth > 4 or first.op != "call_function" or first.target is not second.target:
        return False
    if not isinstance(first.target, torch._ops.OpOverload) or first.target.is_view:
        return False
    if torch.Tag.nondeterministic_seeded in first.target.tags or first.target._schema.is_mutable:
        return False
    return same_value(list(first.args), list(second.args), _depth + 1) and first.kwargs.keys() == second.kwargs.keys() and all(
        same_value(first.kwargs[k], second.kwargs[k], _depth + 1) for k in first.kwargs
    )


def _fetch_attr(module: Any, target: str) -> Any:
    for part in target.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def _all_ints(values: object) -> bool:
    return isinstance(values, (list, tuple)) and all(isinstance(v, int) for v in values)


def _leaves(value: object) -> list:
    return list(torch.utils._pytree.tree_leaves(value))


# ------------------------------------------------------------------------ graph edits


def fake_mode_of(nodes: Iterable[fx.Node]) -> FakeTensorMode:
    """The fake mode the graph's metadata lives in (needed to give new nodes a ``val``)."""
    from torch._guards import detect_fake_mode

    mode = detect_fake_mode([fake_value(n) for n in nodes if fake_value(n) is not None])
    if mode is None:
        raise AssertionError("static quant passes: graph nodes carry no fake tensor metadata")
    return mode


def add_constant(graph: fx.Graph, stem: str, value: torch.Tensor, before: fx.Node,
                 fake: Optional[torch.Tensor] = None) -> fx.Node:
    """Store ``value`` on the graph's module under a fresh name; return its ``get_attr`` node.

    ``fake``: the node's ``val`` when ``value`` cannot be faked directly (oneDNN packed
    weights are opaque mkldnn tensors; their fake comes from the prepack op's meta kernel).
    """
    module = graph.owning_module
    name = next(
        f"_{COUNTER_PREFIX}{stem}_{i}" for i in itertools.count() if not hasattr(module, f"_{COUNTER_PREFIX}{stem}_{i}")
    )
    module.register_buffer(name, value)  # a buffer, so get_attr on it is a known constant
    with graph.inserting_before(before):
        node = graph.get_attr(name)
    if fake is None:
        fake = fake_mode_of([before, *before.all_input_nodes]).from_tensor(value, static_shapes=True)
    node.meta["val"] = fake
    return node


def insert_call(graph: fx.Graph, before: fx.Node, target: Callable, args: Sequence[Any],
                mode: FakeTensorMode) -> fx.Node:
    """Insert ``target(*args)`` before ``before`` with its fake result as ``meta["val"]``."""
    with graph.inserting_before(before):
        node = graph.call_function(target, tuple(args))
    node.meta["val"] = run_fake(mode, target, args)
    return node


def run_fake(mode: FakeTensorMode, target: Callable, args: Sequence[Any]) -> Any:
    fake_args = torch.utils._pytree.tree_map_only(fx.Node, lambda n: n.meta["val"], tuple(args))
    with mode:
        return target(*fake_args)


def erase_dead(nodes: Iterable[fx.Node]) -> None:
    """Erase those of ``nodes`` left without users, latest first (so chains fall away)."""
    graph_order = {}
    for node in nodes:
        if not node._erased:
            graph_order[node] = node
    for node in sorted(graph_order, reverse=True):
        if not node._erased and not node.users and node.op in ("call_function", "get_attr"):
            node.graph.erase_node(node)


def users_within(node: fx.Node, allowed: Iterable[fx.Node]) -> bool:
    allowed_set = set(allowed)
    return all(user in allowed_set for user in node.users)


def depends_on(node: object, sources: Iterable[fx.Node]) -> bool:
    """Whether ``node`` is computed (transitively) from any of ``sources``."""
    targets = set(sources)
    if not isinstance(node, fx.Node) or not targets:
        return False
    earliest = min(targets)
    seen: set[fx.Node] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if current in targets:
            return True
        if current in seen or current < earliest:
            continue  # nodes before every source cannot depend on one
        seen.add(current)
        stack.extend(current.all_input_nodes)
    return False


def may_alias_an_input(node: fx.Node) -> bool:
    """Whether the node's output may share storage with something else (so in-place
    writes to it are unsafe): graph inputs, constants, views, and unknown ops."""
    if node.op != "call_function":
        return True
    from ...hop import invoke_quant

    if node.target is invoke_quant:
        return False  # the op copies any output that would alias an input
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return True
    return any(ret.alias_info is not None for ret in schema.returns)
