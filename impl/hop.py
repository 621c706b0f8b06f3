"""Our ``invoke_quant``: a dequantization subgraph that stays one operator down to Inductor.

Three layers, from the user down:

``InvokeQuant``
    Frozen dataclass front end. ``InvokeQuant()(fn, *args, scheme="nf4")`` returns what
    ``fn(*args)`` returns. Outside compilation it simply calls ``fn``; under
    ``torch.compile`` it records ``invoke_quant_packed``.

``invoke_quant_packed`` (``torch.ops.higher_order.impl_invoke_quant_packed``)
    What Dynamo records: ``(subgraph, *args, scheme=..., codegen_low_precision=...)``.
    The options travel as plain constants, never as the dataclass, so no FX node holds
    the dataclass and the op needs no special case in functionalization or partitioning.

``invoke_quant`` (``torch.ops.higher_order.impl_invoke_quant``)
    What AOTAutograd, post-grad passes, pattern matchers and Inductor see:
    ``(subgraph, *args, scheme=...)``; a single-output subgraph returns its tensor
    directly (no tuple, no ``getitem``). The options live in ``node.meta["quant_options"]``
    and in the subgraph module's ``meta`` (which keys the FX graph cache).

Canonicalization packed -> unpacked happens while AOTAutograd traces the packed op (its
``ProxyTorchDispatchMode`` rule emits the unpacked node), so every pass after tracing,
including any user ``post_grad_custom_pre_pass``, sees the unpacked form.

Names differ from PyTorch's own ``invoke_quant`` / ``invoke_quant_packed`` so both live in
one process untouched.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import torch
import torch.utils._pytree as pytree
from torch._higher_order_ops.base_hop import BaseHOP, FunctionWithNoFreeVars
from torch._higher_order_ops.utils import reenter_make_fx
from torch.fx.experimental.proxy_tensor import track_tensor_tree

PACKED_NAME = "impl_invoke_quant_packed"
UNPACKED_NAME = "impl_invoke_quant"
QUANT_OPTIONS_META_KEY = "quant_options"


@dataclasses.dataclass(frozen=True, repr=True)
class InvokeQuant:
    """Invoke a quantization function that is preserved as one operator under compilation.

    The compiled graph shows it as
    ``torch.ops.higher_order.impl_invoke_quant(subgraph, *args, scheme=scheme)``.

    Args:
        codegen_low_precision: let Inductor generate the subgraph's code in the dtypes it
            observes instead of upcasting to fp32; faster in matmul prologues, so the
            numerics of such regions deserve a test.

    Call as ``InvokeQuant()(fn, *tensors, scheme="int4")``. A caller may pass
    ``quant_options=InvokeQuant(...)`` to override this instance's options (PyTorch's seed
    tests call it that way). Keyword arguments other than ``scheme`` and ``quant_options``
    are passed to ``fn`` and must be Python constants under compilation.
    """

    codegen_low_precision: bool = True

    def __call__(
        self,
        fn: Any,
        *args: Any,
        scheme: Optional[str] = None,
        quant_options: Optional["InvokeQuant"] = None,
        **fn_kwargs: Any,
    ) -> Any:
        options = self if quant_options is None else quant_options
        if not isinstance(options, InvokeQuant):
            raise TypeError(
                f"quant_options must be an impl.InvokeQuant, got {type(options).__name__}"
            )
        if fn_kwargs:
            fn = functools.partial(fn, **fn_kwargs)
        if not torch.compiler.is_compiling():
            return fn(*args)
        return invoke_quant_packed(
            _no_aliasing_outputs(fn, args),
            *args,
            scheme=scheme,
            codegen_low_precision=options.codegen_low_precision,
        )


def _no_aliasing_outputs(fn: Any, args: tuple) -> Any:
    """Wrap ``fn`` so that no output aliases an input or another output.

    Dynamo refuses HOP subgraphs whose outputs alias (it would graph-break and silently
    run the region eagerly). A dequantization that returns ``w.t()``, an input unchanged,
    or a tensor together with a view of it is legitimate, so such outputs are copied.
    Under Inductor the copy is the pointwise loop that reads the aliased data, so it
    costs little; outputs that alias nothing are returned as they are.
    """

    # No functools.wraps: under Dynamo it fails on a functools.partial (the fn-kwargs form),
    # and nothing reads the wrapper's name.
    def wrapped(*inner_args: Any) -> Any:
        out = fn(*inner_args)
        leaves, spec = pytree.tree_flatten(out)
        seen = [_storage_root(a) for a in inner_args if isinstance(a, torch.Tensor)]
        unaliased = []
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                root = _storage_root(leaf)
                if any(root is other for other in seen):
                    leaf = leaf.clone()
                    root = leaf
                seen.append(root)
            unaliased.append(leaf)
        return pytree.tree_unflatten(unaliased, spec)

    return wrapped


def _storage_root(t: torch.Tensor) -> torch.Tensor:
    """The tensor whose storage ``t`` views (``t`` itself when it is no view)."""
    return t._base if t._base is not None else t


def options_of(node: torch.fx.Node) -> InvokeQuant:
    """The options of an unpacked ``invoke_quant`` node (defaults when none are recorded)."""
    options = node.meta.get(QUANT_OPTIONS_META_KEY)
    if options is None:
        subgraph = node.args[0]
        if isinstance(subgraph, torch.fx.Node) and subgraph.op == "get_attr":
            module = getattr(subgraph.graph.owning_module, str(subgraph.target), None)
            options = _options_from_module(module)
    return options if options is not None else InvokeQuant()


def _options_from_module(module: Any) -> Optional[InvokeQuant]:
    recorded = getattr(module, "meta", {}).get(QUANT_OPTIONS_META_KEY)
    return InvokeQuant(**recorded) if recorded is not None else None


def _as_callable(subgraph: Any) -> Any:
    if isinstance(subgraph, (torch.fx.GraphModule, FunctionWithNoFreeVars)):
        return subgraph
    if callable(subgraph):
        return FunctionWithNoFreeVars(subgraph)
    raise TypeError(f"invoke_quant: subgraph must be callable, got {type(subgraph).__name__}")


class _BackwardInlined(torch.autograd.Function):
    """Autograd for both ops: the forward stays one quant op; the backward is plain ATen.

    The backward recomputes the region and differentiates it. It deliberately carries
    no quant options: gradients are not a dequantization, must not be codegen'd in low
    precision, and AOTAutograd's partitioner cannot save non-tensor options anyway.
    """

    @staticmethod
    def forward(ctx: Any, hop: BaseHOP, subgraph: Any, kwargs: dict, *operands: Any) -> Any:
        ctx.subgraph = subgraph
        ctx.tensor_positions = [i for i, o in enumerate(operands) if isinstance(o, torch.Tensor)]
        ctx.save_for_backward(*(operands[i] for i in ctx.tensor_positions))
        ctx.num_operands = len(operands)
        ctx.constants = {i: o for i, o in enumerate(operands) if not isinstance(o, torch.Tensor)}
        with torch._C._AutoDispatchBelowAutograd():
            return hop(subgraph, *operands, **kwargs)

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Any) -> Any:
        saved = dict(zip(ctx.tensor_positions, ctx.saved_tensors))
        wants_grad = [
            i for i in ctx.tensor_positions if ctx.needs_input_grad[3 + i]
        ]
        with torch.enable_grad():
            inputs = []
            for i in range(ctx.num_operands):
                if i in saved:
                    t = saved[i].detach()
                    inputs.append(t.requires_grad_(True) if i in wants_grad else t)
                else:
                    inputs.append(ctx.constants[i])
            outputs = pytree.tree_leaves(ctx.subgraph(*inputs))
            pairs = [
                (o, g)
                for o, g in zip(outputs, grad_outputs)
                if isinstance(o, torch.Tensor) and o.requires_grad and g is not None
            ]
            grads = (
                torch.autograd.grad(
                    [o for o, _ in pairs],
                    [inputs[i] for i in wants_grad],
                    [g for _, g in pairs],
                    allow_unused=True,
                )
                if pairs and wants_grad
                else [None] * len(wants_grad)
            )
        by_position = dict(zip(wants_grad, grads))
        return (None, None, None, *(by_position.get(i) for i in range(ctx.num_operands)))


class _InvokeQuantBase(BaseHOP):
    """Shared dispatch rules: backward inlined, no auto-functionalization of mutations."""

    def __call__(self, subgraph: Any, *operands: Any, **kwargs: Any) -> Any:
        return super().__call__(_as_callable(subgraph), *operands, **kwargs)

    def _call_Autograd(self, subgraph: Any, *operands: Any, **kwargs: Any) -> Any:
        return _BackwardInlined.apply(self, subgraph, kwargs, *operands)

    def _call_Functionalize(self, ctx: Any, subgraph: Any, *operands: Any, **kwargs: Any) -> Any:
        # A dequantization region reads its inputs; Dynamo already rejects input mutation
        # inside HOP subgraphs, so there is nothing to auto-functionalize.
        unwrapped = ctx.unwrap_tensors(operands)
        with ctx.redispatch_to_next():
            functional = FunctionWithNoFreeVars(ctx.functionalize(subgraph))
            out = self(functional, *unwrapped, **kwargs)
        return ctx.wrap_tensors(out)


class InvokeQuantPacked(_InvokeQuantBase):
    """``impl_invoke_quant_packed(subgraph, *args, scheme, codegen_low_precision)``: what Dynamo records.

    Returns a tuple of the subgraph's flat outputs (Dynamo's HOP calling convention).
    """

    def __init__(self) -> None:
        super().__init__(PACKED_NAME)

    def __call__(  # type: ignore[override]
        self,
        subgraph: Any,
        *operands: Any,
        scheme: Optional[str] = None,
        codegen_low_precision: bool = True,
    ) -> Any:
        return super().__call__(
            subgraph, *operands, scheme=scheme, codegen_low_precision=codegen_low_precision
        )

    def _call_ProxyTorchDispatchMode(
        self,
        proxy_mode: Any,
        subgraph: Any,
        *operands: Any,
        scheme: Optional[str] = None,
        codegen_low_precision: bool = True,
    ) -> Any:
        """Trace the region and record it as the *unpacked* op: canonicalization at trace time."""
        traced = reenter_make_fx(subgraph)(*operands)
        flat_outputs = _output_values(traced)
        single = len(flat_outputs) == 1
        if single:
            _unwrap_single_output(traced)
        options = InvokeQuant(codegen_low_precision=codegen_low_precision)
        traced.meta[QUANT_OPTIONS_META_KEY] = dataclasses.asdict(options)

        out = _record_unpacked(proxy_mode, traced, operands, scheme, options)
        return (out,) if single else tuple(out)


class InvokeQuantUnpacked(_InvokeQuantBase):
    """``impl_invoke_quant(subgraph, *args, scheme)``: what passes and Inductor see."""

    def __init__(self) -> None:
        super().__init__(UNPACKED_NAME)

    def __call__(self, subgraph: Any, *operands: Any, scheme: Optional[str] = None) -> Any:  # type: ignore[override]
        return super().__call__(subgraph, *operands, scheme=scheme)

    def _call_ProxyTorchDispatchMode(
        self, proxy_mode: Any, subgraph: Any, *operands: Any, scheme: Optional[str] = None
    ) -> Any:
        options = _options_from_module(subgraph) or InvokeQuant()
        traced = reenter_make_fx(subgraph)(*operands)
        traced.meta[QUANT_OPTIONS_META_KEY] = dataclasses.asdict(options)
        return _record_unpacked(proxy_mode, traced, operands, scheme, options)


def _output_values(gm: torch.fx.GraphModule) -> list:
    (output_node,) = gm.graph.find_nodes(op="output")
    return list(pytree.tree_leaves(output_node.args[0]))


def _unwrap_single_output(gm: torch.fx.GraphModule) -> None:
    (output_node,) = gm.graph.find_nodes(op="output")
    (value,) = pytree.tree_leaves(output_node.args[0])
    output_node.args = (value,)
    gm.recompile()


def _record_unpacked(
    proxy_mode: Any,
    traced: torch.fx.GraphModule,
    operands: tuple,
    scheme: Optional[str],
    options: InvokeQuant,
) -> Any:
    tracer = proxy_mode.tracer
    qualname = tracer.get_fresh_qualname("subgraph")
    tracer.root.register_module(qualname, traced)
    proxy_args = pytree.tree_map(tracer.unwrap_proxy, (traced, *operands))
    out_proxy = tracer.create_proxy("call_function", invoke_quant, proxy_args, {"scheme": scheme})
    out_proxy.node.meta[QUANT_OPTIONS_META_KEY] = options
    out = invoke_quant(traced, *operands, scheme=scheme)
    return track_tensor_tree(out, out_proxy, constant=None, tracer=tracer)


invoke_quant_packed = InvokeQuantPacked()
invoke_quant = InvokeQuantUnpacked()
