"""Running a program: eager (and its float64 twin) and compiled, its outputs named.

``run_program`` calls the program as a case asks (no_grad, backward, the inputs after the
call) and names each output leaf; ``run_calls`` and ``run_compiled_calls`` run a cell's whole
call sequence on arguments they build (through :mod:`.inputs`: the data goes down, the
outputs come back); ``compile_program`` is ``torch.compile`` for a cell's
backend record; ``inductor_config_patch`` builds a case's graph passes and chains them, with the
post-grad capture, into Inductor's single-callable hooks; ``extract_kernel_sources`` reads the generated kernels out
of an output-code module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.utils._pytree as pytree

from .backends import Backend
from .inputs import CallSpecs, InputSpec, build_sequence, upcast_to_float64
from .programs import import_program

# Inductor config for a compile whose passes must really run (no cache hit skips them).
# Only the caches that would skip the passes: the FX graph cache and AOTAutograd's cache
# (patched beside it, see FRESH_FUNCTORCH_CONFIG). The C++/Triton kernel caches stay on: a
# kernel compiled from the same source is the same kernel, and recompiling it costs seconds
# a cell (force_disable_caches would switch those off too).
FRESH_COMPILE_CONFIG = {"fx_graph_cache": False, "autotune_local_cache": False}
FRESH_FUNCTORCH_CONFIG = {"enable_autograd_cache": False}
# Profile-guided dynamism read from an earlier run's cache would compile shapes dynamic that
# the case declares static.
FRESH_DYNAMO_CONFIG = {"automatic_dynamic_local_pgo": False}


def flatten_outputs(result: Any, prefix: str = "output") -> dict[str, torch.Tensor]:
    """Name each leaf of a program's result: 'output' for a lone tensor, else 'output[i]' / 'output[key]'."""
    if isinstance(result, torch.Tensor):
        return {prefix: result}
    leaves, _ = pytree.tree_flatten_with_path(result)
    named = {}
    for path, leaf in leaves:
        name = prefix + "".join(f"[{getattr(k, 'idx', getattr(k, 'key', k))}]" for k in path)
        if isinstance(leaf, torch.Tensor):
            named[name] = leaf
        elif isinstance(leaf, (bool, int, float)):
            named[name] = torch.tensor(leaf)
        elif leaf is not None:
            raise TypeError(f"{name}: the program returned a {type(leaf).__name__}; outputs must be tensors or numbers")
    return named


def run_program(
    fn: Callable[..., Any], inputs: list[Any], specs: Sequence[InputSpec], *, no_grad: bool, backward: bool, inputs_after: bool,
) -> dict[str, torch.Tensor]:
    """Call ``fn`` (under no_grad when the case asks), run backward when it asks, and collect
    outputs, grads and (optionally) inputs; ``specs`` name the inputs."""
    with torch.no_grad() if no_grad else contextlib.nullcontext():
        result = fn(*inputs)
    outputs = flatten_outputs(result)
    if backward:
        differentiable = [t for t in outputs.values() if t.requires_grad]
        if not differentiable:
            raise RuntimeError("backward: true, but no output requires grad")
        torch.autograd.backward(differentiable, [torch.ones_like(t) for t in differentiable])
        for spec, value in zip(specs, inputs):
            if spec.requires_grad and isinstance(value, torch.Tensor):
                if value.grad is None:
                    raise RuntimeError(f"backward: input {spec.name!r} got no gradient")
                outputs[f"grad({spec.name})"] = value.grad
    if inputs_after:
        for spec, value in zip(specs, inputs):
            for name, tensor in flatten_outputs(value, prefix=f"input({spec.name})").items():
                outputs[name] = tensor
    return {name: t.detach() for name, t in outputs.items()}


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a case runs its program, besides the arguments: what ``run_program`` reads, the
    outputs' names, and the dims each input is marked dynamic in before a compiled call."""

    no_grad: bool = False
    backward: bool = False
    inputs_after: bool = False
    named_calls: bool = False  # a case with calls: outputs named ``call[i].<name>``
    mark_dynamic: tuple[tuple[str, tuple[int, ...]], ...] = ()


def _run_one(fn: Callable[..., Any], args: list[Any], specs: Sequence[InputSpec], options: RunOptions) -> dict[str, torch.Tensor]:
    return run_program(fn, args, specs, no_grad=options.no_grad, backward=options.backward, inputs_after=options.inputs_after)


def call_output_names(options: RunOptions, index: int, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A call's outputs named for the cell: ``call[i].output`` when the case has calls."""
    return {f"call[{index}].{name}": t for name, t in outputs.items()} if options.named_calls else outputs


def call_arguments(specs: CallSpecs, device: str, dtype: torch.dtype, float64: bool = False) -> list[list[Any]]:
    """Each call's arguments, built afresh (programs may mutate them); ``float64``: floating
    tensors upcast, for the float64 run."""
    sequence = build_sequence(specs, device, dtype)
    return [upcast_to_float64(args) for args in sequence] if float64 else sequence


def run_calls(
    fn: Callable[..., Any], specs: CallSpecs, options: RunOptions, device: str, dtype: torch.dtype, float64: bool = False,
) -> dict[str, torch.Tensor]:
    """Every call of the sequence through ``fn`` (eager, or the float64 run), on arguments
    built for it: the cell's named outputs."""
    outputs: dict[str, torch.Tensor] = {}
    for index, (call, args) in enumerate(zip(specs.calls, call_arguments(specs, device, dtype, float64))):
        outputs.update(call_output_names(options, index, _run_one(fn, args, call, options)))
    return outputs


def mark_dynamic(options: RunOptions, specs: Sequence[InputSpec], args: list[Any]) -> None:
    """``torch._dynamo.mark_dynamic`` on the dims the case's ``mark_dynamic:`` names."""
    dims = dict(options.mark_dynamic)
    for spec, value in zip(specs, args):
        if spec.name in dims and isinstance(value, torch.Tensor):
            torch._dynamo.mark_dynamic(value, list(dims[spec.name]))


@dataclasses.dataclass
class CompiledCalls:
    """What the compiled calls of a cell produced."""

    outputs: dict[str, torch.Tensor]  # named as ``run_calls`` names them, of the last run
    graph_codes: list[tuple[int, str]]  # (call index, output code) of each graph compiled
    graphs: int  # graphs of the first call
    recompiles: int  # calls after the first that compiled anything
    seconds: float  # the calls' own time, building their arguments left out
    timing_inputs: Optional[list[Any]] = None  # what a timer calls the program on (``timed``)


def run_compiled_calls(
    compiled_fn: Callable[..., Any], specs: CallSpecs, options: RunOptions, device: str, dtype: torch.dtype,
    runs: int = 1, timed: bool = False,
) -> CompiledCalls:
    """Each call through the compiled callable, on arguments built for it, ``runs`` times (CUDA
    graphs replay from the third). ``timed``: also the timer's inputs: a case with calls is
    timed on its last call's arguments after the whole sequence ran (so with whatever its
    recompiles left), any other on fresh ones."""
    from unittest import mock

    from torch._dynamo.utils import counters
    from torch._inductor.graph import GraphLowering

    sequence = call_arguments(specs, device, dtype)
    start = time.perf_counter()
    outputs: dict[str, torch.Tensor] = {}
    graph_codes: list[tuple[int, str]] = []
    first_graphs = recompiles = 0
    index = 0
    # As run_and_get_code records output code, but across the whole sequence: it resets
    # Dynamo on each call, which would make every call a first compile.
    with mock.patch.object(GraphLowering, "save_output_code", lambda code: graph_codes.append((index, code))):
        for index, (call, args) in enumerate(zip(specs.calls, sequence)):
            before = counters["stats"]["unique_graphs"]
            mark_dynamic(options, call, args)
            result = _run_one(compiled_fn, args, call, options)
            for _ in range(runs - 1):
                result = _run_one(compiled_fn, args, call, options)
            if runs > 1:  # a replay's outputs live in the graph's pool
                result = {name: t.clone() for name, t in result.items()}
            outputs.update(call_output_names(options, index, result))
            after = counters["stats"]["unique_graphs"]
            if index == 0:
                first_graphs = after
            elif after > before:
                recompiles += 1
    seconds = time.perf_counter() - start
    timing_inputs = None
    if timed:
        timing_inputs = sequence[-1] if options.named_calls else call_arguments(specs, device, dtype)[0]
    return CompiledCalls(outputs, graph_codes, first_graphs, recompiles, seconds, timing_inputs)


def timed_call(fn: Callable[..., Any], inputs: list[Any], *, no_grad: bool, cudagraph_steps: bool) -> Callable[[], Any]:
    """``fn`` on fixed ``inputs`` as a timer calls it, forward only; ``cudagraph_steps``: each
    call is a new step of Inductor's CUDA graphs (a replay may overwrite the last one's outputs)."""
    new_step = torch.compiler.cudagraph_mark_step_begin if cudagraph_steps else None

    def call() -> Any:
        if new_step is not None:
            new_step()
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            return fn(*inputs)

    return call


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    # The C-level switch behind torch.utils.deterministic's module property, which 2.11 and
    # 2.13 spell differently (fill_uninitialized_memory / fill_uninitialized_empty).
    previous_fill = torch._C._get_deterministic_fill_uninitialized_memory()
    previous_workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    # cuBLAS is only deterministic with a fixed workspace; torch refuses otherwise.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch._C._set_deterministic_fill_uninitialized_memory(True)  # torch.empty gives NaN, not stale memory
    try:
        yield
    finally:
        if previous_workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        torch.use_deterministic_algorithms(previous)
        torch._C._set_deterministic_fill_uninitialized_memory(previous_fill)


#: torch.compile's ``dynamic=`` for each mode of a case's ``dynamic:`` axis (None: automatic,
#: static until a second shape is seen, as torch.compile does by default).
DYNAMIC_ARGUMENT = {"static": False, "dynamic": True, "automatic": None, None: None}


def compile_program(fn: Callable[..., Any], backend: Backend, mode: Optional[str], dynamic: Optional[str] = None) -> Callable[..., Any]:
    """torch.compile with ``backend``'s compiler in ``mode`` (``backend.compile_mode`` of the
    case's: None for a backend that takes none); ``dynamic``: the cell's dynamic mode
    (static, dynamic, automatic; None: the default)."""
    return torch.compile(fn, backend=backend.compiler, mode=mode, dynamic=DYNAMIC_ARGUMENT[dynamic])


def _chain(passes: list[Callable[[Any], Any]]) -> Callable[[Any], None]:
    def composite(graph: Any) -> None:
        for graph_pass in passes:
            graph_pass(graph)

    composite.__qualname__ = "quantcheck_composite_pass"
    return composite


def chain_passes(patch: dict[str, Any], passes: Sequence[tuple[str, Callable[[Any], Any]]], inductor_config: Any) -> dict[str, Any]:
    """``patch`` with each ``(hook, graph pass)`` run after what the hook already holds (in
    ``patch``, else in Inductor's config): one composite pass per hook, since torch 2.11's
    hooks take a single callable, no list."""
    patch = dict(patch)
    hooks: dict[str, list[Callable[[Any], Any]]] = {}
    for hook, graph_pass in passes:
        if hook not in hooks:
            existing = patch.get(hook, getattr(inductor_config, hook))
            hooks[hook] = [existing] if existing is not None else []
        hooks[hook].append(graph_pass)
    for hook, chain in hooks.items():
        patch[hook] = chain[0] if len(chain) == 1 else _chain(chain)
    return patch


def inductor_config_patch(
    config: dict[str, Any], passes: Sequence[tuple[str, str]], capture: Optional["PostGradCapture"] = None
) -> dict[str, Any]:
    """``config`` with each ``(hook, 'module:factory')`` pass built and chained after what the
    hook holds, and the post-grad ``capture`` (if any) last: what ``inductor_config.patch`` takes."""
    from torch._inductor import config as inductor_config

    graph_passes = [(hook, import_program(factory)()) for hook, factory in passes]
    if capture is not None:
        graph_passes.append(("post_grad_custom_post_pass", capture))
    return chain_passes(config, graph_passes, inductor_config)


class PostGradCapture:
    """A post-grad pass that records each graph it sees as readable text (forward and backward)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, graph: torch.fx.Graph) -> None:
        module = graph.owning_module
        if module is not None:
            body = module.print_readable(print_output=False, include_stride=True, include_device=True)
        else:
            body = str(graph)
        self.texts.append(f"# AFTER POST GRAD: graph {len(self.texts)}\n{body}")


_KERNEL_DEFINITION = re.compile(
    r"^(?P<name>\w+) = async_compile\.(?P<kind>\w+)\((?P<head>[^\n]*?)r?'''\n?(?P<source>.*?)'''",
    re.DOTALL | re.MULTILINE,
)


def extract_kernel_sources(output_code: str) -> str:
    """The generated kernels (Triton, C++) in an output-code module, each under a '# kernel <name>' header."""
    parts = []
    for match in _KERNEL_DEFINITION.finditer(output_code):
        parts.append(f"# kernel {match['name']} ({match['kind']})\n{match['source'].rstrip()}")
    return "\n".join(parts)
