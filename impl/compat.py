"""Every difference between the torch versions we support (2.11 and 2.13), in one place.

Callers never compare versions themselves; they call a function here that hides the
difference. Each function says which versions behave which way.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

import torch

TORCH_VERSION: tuple[int, int] = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])  # type: ignore[assignment]
SUPPORTED_TORCH = ((2, 11), (2, 14))  # inclusive range of minor versions we test and support


def check_torch_version() -> None:
    """Fail early, with the supported range, on a torch we never ran against."""
    low, high = SUPPORTED_TORCH
    if not (low <= TORCH_VERSION <= high):
        raise ImportError(
            f"impl supports torch {low[0]}.{low[1]} to {high[0]}.{high[1]}; found {torch.__version__}"
        )


def teach_fx_utils_subgraph_args(hops: Iterable[Any]) -> None:
    """Tell Inductor's FakeTensorUpdater where our HOPs keep their subgraph and its args.

    torch 2.13 re-runs HOP nodes under fake mode after post-grad passes and, for a HOP it
    does not know by identity, warns "Please add support for subgraph args" and skips the
    subgraph. Our ops have PyTorch's invoke_quant calling convention ``(subgraph, *args)``,
    so we answer the same way it does for its own op. torch 2.11 has no such hook: no-op.
    """
    from torch._inductor import fx_utils

    original = getattr(fx_utils, "_extract_subgraphs_and_args", None)
    if original is None or getattr(original, "_impl_known_hops", None) is not None:
        if original is not None:
            original._impl_known_hops.update(hops)  # type: ignore[attr-defined]
        return
    known = set(hops)

    @functools.wraps(original)
    def extract(node: torch.fx.Node, valid_subgraphs: Any, *args: Any, **kwargs: Any):
        if node.target in known:
            yield args[0], tuple(args[1:])
            return
        yield from original(node, valid_subgraphs, *args, **kwargs)

    extract._impl_known_hops = known  # type: ignore[attr-defined]
    fx_utils._extract_subgraphs_and_args = extract


def register_inductor_lowering(op: Any) -> Callable[[Callable], Callable]:
    """``torch._inductor.lowering.register_lowering`` for a HOP, without type promotion (same on 2.11 and 2.13)."""
    from torch._inductor.lowering import register_lowering

    return register_lowering(op, type_promotion_kind=None)


def mark_hop_cacheable(op: Any) -> None:
    """Let Inductor's FX graph cache keep graphs holding ``op``.

    Both 2.11 and 2.13 bypass the cache for any HigherOrderOperator not constructed with
    ``cacheable=True``; BaseHOP's constructor does not pass it through, so we set the flag
    the constructor would have set. Safe for our ops: the cache key pickles the subgraph
    modules, whose ``meta`` holds the quant options.
    """
    if not hasattr(op, "_cacheable"):
        raise AssertionError(f"{type(op).__name__}: this torch has no HigherOrderOperator._cacheable")
    op._cacheable = True


def inference_aware_pass_type() -> Any:
    """torch 2.13's ``CustomInferenceAwareGraphPass`` (called as ``pass(graph, is_inference=...)``);
    None on torch 2.11, which has no such class and calls every post-grad pass as ``pass(graph)``."""
    from torch._inductor import custom_graph_pass

    return getattr(custom_graph_pass, "CustomInferenceAwareGraphPass", None)


def custom_graph_passes(hook_value: Any) -> list:
    """The passes a post-grad hook value holds, as a list (none, one pass, or on torch 2.13 a
    list of them); 2.13 ships this as ``get_custom_graph_passes``, 2.11 takes one pass only."""
    from torch._inductor import custom_graph_pass

    shipped = getattr(custom_graph_pass, "get_custom_graph_passes", None)
    if shipped is not None:
        return list(shipped(hook_value))
    if hook_value is None:
        return []
    return list(hook_value) if isinstance(hook_value, (list, tuple)) else [hook_value]


def default_compile_backend() -> Any:
    """The backend ``torch.compile`` uses when the caller names none: torch 2.13 asks its
    backend registry (``get_default_backend``, which a plugin may change); 2.11 has no
    registry default and uses "inductor"."""
    from torch._dynamo.backends import registry

    shipped = getattr(registry, "get_default_backend", None)
    return shipped() if shipped is not None else "inductor"


def inductor_mode_options(mode: Any, dynamic: Any) -> dict:
    """The Inductor options a ``torch.compile(mode=...)`` stands for, so a caller can pass
    them as ``options`` instead (torch.compile takes one or the other). 2.11 and 2.13 alike:
    ``_TorchCompileInductorWrapper.apply_mode`` applies ``list_mode_options(mode, dynamic)``
    and nothing for None or "default"."""
    if not mode or mode == "default":
        return {}
    from torch._inductor import list_mode_options

    return dict(list_mode_options(mode, dynamic))


def wrap_triton_takes_interpreted_kernels() -> bool:
    """Whether ``torch.library.wrap_triton`` accepts a kernel built under TRITON_INTERPRET=1.

    torch 2.13 does; 2.11 accepts only ``JITFunction`` / ``Autotuner`` and raises "wrap_triton
    only works on functions annotated with triton.jit", so on 2.11 our ``triton_op``s run on
    a GPU only (the kernels themselves still run in the interpreter).
    """
    return _version_at_least(2, 13)


def _version_at_least(major: int, minor: int) -> bool:
    parts = torch.__version__.split("+")[0].split(".")
    return (int(parts[0]), int(parts[1])) >= (major, minor)


def subgraph_choice(name: str, input_nodes: list, layout: Any, fn: Callable[..., Any]) -> Any:
    """An autotuning choice that runs ``fn`` (traced to ATen) as an Inductor subgraph, or None
    where this torch has no ``SubgraphTemplate`` (2.13 has it, with CPU benchmarking)."""
    try:
        from torch._inductor.codegen.subgraph import SubgraphTemplate
    except ImportError:
        return None
    from torch._dispatch.python import enable_python_dispatcher
    from torch._inductor.decomposition import select_decomp_table
    from torch.fx.experimental.proxy_tensor import make_fx

    from torch._inductor.virtualized import V

    def traced(*args: Any) -> Any:
        # Both versions call this outside the lowering's fake mode; a constant the function
        # makes (torch.tensor of nibble shifts) must be fake like the inputs.
        with V.fake_mode:
            return make_fx(fn, select_decomp_table())(*args)

    with enable_python_dispatcher():
        return SubgraphTemplate(name=name).generate(
            name=name, input_nodes=input_nodes, layout=layout, make_fx_graph=traced, description="decomposition"
        )


def time_subgraph_choice(choice: Any, input_sets: list[list], timer: Callable[[list[Callable[[], Any]]], float]) -> float:
    """``timer`` applied to calls of a subgraph choice's compiled module, one per set of real
    inputs (copies of the weights, which the timer takes in turn).

    Both 2.11 and 2.13 compile the choice with ``_compile_for_benchmarking()`` (under the
    lowering's fake mode) and call ``module.call([*sym_input_values, *inputs])``; their own
    ``benchmark`` times back-to-back host calls, which we avoid so that launch cost does not
    decide the contest (``timer`` replays a CUDA graph)."""
    if getattr(choice, "_compiled_module", None) is None:
        choice._compiled_module = choice._compile_for_benchmarking()
    call = choice._compiled_module.call
    symbols = list(getattr(choice, "sym_input_values", []))
    return timer([functools.partial(lambda inputs: call([*symbols, *inputs]), inputs) for inputs in input_sets])


def select_algorithm(name: str, choices: list, input_nodes: list, layout: Any) -> Any:
    """``autotune_select_algorithm``'s chosen output node. torch 2.13 returns
    ``(node, choice)``; earlier versions returned the node alone."""
    from torch._inductor.select_algorithm import autotune_select_algorithm

    result = autotune_select_algorithm(name, choices, input_nodes, layout)
    return result[0] if isinstance(result, tuple) else result


def size_hint(expr: Any, fallback: int) -> int:
    """The value Inductor expects a (possibly symbolic) size to take, without guarding on it;
    ``fallback`` for an unbacked one. torch 2.13 calls it ``SizeVarAllocator.optimization_hint``;
    2.11 ``size_hint``."""
    from torch._inductor.virtualized import V

    sizevars = V.graph.sizevars
    hint = getattr(sizevars, "optimization_hint", None) or sizevars.size_hint
    return int(hint(expr, fallback=fallback))
