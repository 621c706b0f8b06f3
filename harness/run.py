"""Run one matrix cell: eager reference, optional float64 reference, compiled run with capture.

The steps follow Inductor's own test pattern (clear counters, eager reference,
``run_and_get_code(torch.compile(fn))``, then hand results to the checks), with what a
declarative harness adds:

- every run gets freshly built inputs (programs may mutate them);
- Dynamo is reset and counters cleared before the compiled run, so counters and the
  graph count belong to this cell alone;
- compiler caches are disabled when a cell checks counters, code or installs passes:
  an FX-graph-cache hit skips the passes, so counters would silently stay 0;
- custom passes and the post-grad capture share Inductor's single-callable hooks
  through one composite pass (torch 2.11 takes no lists there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from typing import Any, Callable, Iterator, Optional

import torch

from .case import CUDAGRAPH_MODES, Case, Variant
from .core.backends import backend as backend_record
from .core.dtypes import DTYPES
from .core.execute import (
    FRESH_COMPILE_CONFIG,
    FRESH_DYNAMO_CONFIG,
    FRESH_FUNCTORCH_CONFIG,
    PostGradCapture,
    compile_program,
    deterministic_algorithms,
    extract_kernel_sources,
    inductor_config_patch,
    run_program,
    upcast_to_float64,
)
from .core.inputs import InputSpec, build_input
from .kernel_asm import ASM_TARGETS, LoadedModules, collect_asm_artifacts
from .matrix import MatrixCell

# A compile mode with CUDA graphs warms up on the first call, records on the second and
# replays from the third: the cell runs that many times on its inputs and checks the last.
CUDAGRAPH_RUNS = 3


@dataclasses.dataclass
class CellRun:
    """What one cell produced. Output dicts map a leaf name ('output', 'output[1]', 'grad(x)') to a tensor."""

    compiled: dict[str, torch.Tensor]
    eager: dict[str, torch.Tensor]
    float64: Optional[dict[str, torch.Tensor]]
    strides: dict[str, tuple[int, ...]]  # of the eager outputs, for the golden sidecar
    artifacts: dict[str, str]  # filecheck target -> text
    counters: dict[str, dict[str, int]]
    graphs: int
    graph_breaks: int
    graph_break_reasons: list[str]
    seconds: dict[str, float]
    perf: Optional[Any] = None  # a harness.perf.PerfSample when the cell was timed
    perf_baseline: Optional[Any] = None  # the same for checks.perf.faster_than's baseline, timed after it
    references: dict[str, dict[str, torch.Tensor]] = dataclasses.field(default_factory=dict)  # checks.references, run eagerly
    # FileCheck targets this cell has no text for (ptx on a CPU cell), with the reason
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)
    # each compiled graph's output code, with the index of the call that compiled it
    graph_codes: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    recompiles: int = 0  # calls after the first that compiled anything (a case with calls)


def input_seed(case: Case, index: int, spec: Optional[InputSpec] = None) -> int:
    """The seed of input ``index`` (``spec``: a call's spec of it, else the case's): its own, else derived from the case's."""
    spec = case.inputs[index] if spec is None else spec
    return spec.seed if spec.seed is not None else case.seed * 1000 + index


def build_inputs(case: Case, device: str, dtype: torch.dtype) -> list[Any]:
    return [
        build_input(spec, device=device, matrix_dtype=dtype, seed=input_seed(case, i))
        for i, spec in enumerate(case.inputs)
    ]


def call_specs(case: Case) -> list[tuple[InputSpec, ...]]:
    """Each call's input specs: the ``calls:`` sequence, or the one call on ``inputs``."""
    return [call.inputs for call in case.calls] if case.calls else [case.inputs]


def build_call_inputs(case: Case, device: str, dtype: torch.dtype) -> list[list[Any]]:
    """Each call's arguments. An input a call overrides is built for that call; the others are
    built once and passed to every call of the sequence (a user calls one model, not copies)."""
    if not case.calls:
        return [build_inputs(case, device, dtype)]
    shared: dict[str, Any] = {}
    sequence = []
    for call in case.calls:
        args = []
        for index, spec in enumerate(call.inputs):
            seed = input_seed(case, index, spec)
            if spec.name in call.changed:
                args.append(build_input(spec, device=device, matrix_dtype=dtype, seed=seed))
            else:
                if spec.name not in shared:
                    shared[spec.name] = build_input(spec, device=device, matrix_dtype=dtype, seed=seed)
                args.append(shared[spec.name])
        sequence.append(args)
    return sequence


def call_output_names(case: Case, index: int, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A call's outputs named for the cell: ``call[i].output`` when the case has calls."""
    return {f"call[{index}].{name}": t for name, t in outputs.items()} if case.calls else outputs


def _run_program(
    case: Case, fn: Callable[..., Any], inputs: list[Any], specs: Optional[tuple[InputSpec, ...]] = None,
) -> dict[str, torch.Tensor]:
    """``fn`` on ``inputs`` as the case runs it (no_grad, backward, inputs_after): named outputs."""
    return run_program(
        fn, inputs, case.inputs if specs is None else specs,
        no_grad=case.no_grad, backward=case.backward, inputs_after=case.checks.inputs_after,
    )


def _run_calls(case: Case, fn: Callable[..., Any], sequence: list[list[Any]]) -> dict[str, torch.Tensor]:
    """Every call of the sequence through ``fn`` (eager or float64): the cell's named outputs."""
    outputs: dict[str, torch.Tensor] = {}
    for index, (specs, args) in enumerate(zip(call_specs(case), sequence)):
        outputs.update(call_output_names(case, index, _run_program(case, fn, args, specs)))
    return outputs


def needs_fresh_compile(case: Case) -> bool:
    """Counters, code checks and custom passes need the passes to really run: no cache hits."""
    return bool(case.checks.counters or case.checks.filecheck or case.passes)


class _AutotuneBlockCapture:
    """Records the cpp-wrapper's compile-time autotune block (GPU cpp_wrapper only)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        try:
            from torch._inductor.codegen.cpp_wrapper_gpu import CppWrapperGpu
        except ImportError:
            yield
            return
        original = CppWrapperGpu.generate_and_run_autotune_block
        capture = self

        def recording(wrapper: Any) -> Any:
            out = original(wrapper)
            capture.texts.append(wrapper.kernel_autotune_calls.getvalue())
            return out

        CppWrapperGpu.generate_and_run_autotune_block = recording
        try:
            yield
        finally:
            CppWrapperGpu.generate_and_run_autotune_block = original


def case_inductor_config(case: Case) -> dict[str, Any]:
    """The case's Inductor config, with the caches that would skip its passes off where it needs them run."""
    config: dict[str, Any] = dict(case.config)
    if needs_fresh_compile(case):
        for key, value in FRESH_COMPILE_CONFIG.items():
            config.setdefault(key, value)  # a case (or --bisect) may set one of them itself
    return config


def compile_mode(case: Case, backend: str) -> Optional[str]:
    """The torch.compile mode of a cell: the max-autotune backend's, else the case's for inductor."""
    return backend_record(backend).compile_mode(case.compile_mode)


def compile_cell(case: Case, cell: MatrixCell, program: Callable[..., Any]) -> Callable[..., Any]:
    """``program`` compiled as the cell compiles (its backend's record, the mode it takes of
    the case's, the cell's dynamic mode): the case's program, or its perf baseline."""
    return compile_program(program, backend_record(cell.backend), compile_mode(case, cell.backend), cell.dynamic)


def compiled_runs(case: Case, backend: str) -> int:
    return CUDAGRAPH_RUNS if compile_mode(case, backend) in CUDAGRAPH_MODES else 1


def _counter_snapshot() -> dict[str, dict[str, int]]:
    from torch._dynamo.utils import counters

    return {group: dict(values) for group, values in counters.items() if values}


def _time_compiled(case: Case, cell: MatrixCell, compiled_fn: Callable[..., Any], timer: Any, last_call: list[Any]) -> Any:
    """``timer.measure`` of the compiled program (forward only): on fresh inputs, or for a case
    with calls on the last call's own arguments, after the whole sequence has run (so the
    times are those of whatever the sequence's recompiles left)."""
    inputs = last_call if case.calls else build_inputs(case, cell.device, DTYPES[cell.dtype])
    # Inductor's CUDA graphs: each call is a new step, whose replay may overwrite the last one's outputs.
    new_step = torch.compiler.cudagraph_mark_step_begin if compile_mode(case, cell.backend) in CUDAGRAPH_MODES else None

    def call() -> Any:
        if new_step is not None:
            new_step()
        with torch.no_grad() if case.no_grad else contextlib.nullcontext():
            return compiled_fn(*inputs)

    return timer.measure(call, case.checks.perf)


def run_cell(case: Case, cell: MatrixCell, timer: Any = None) -> CellRun:
    """Run ``case`` on ``cell``; raises whatever the program or compiler raises.

    ``timer``: a ``harness.perf.DeviceTimer``; given, the compiled program is also timed
    (``CellRun.perf``) before Dynamo is reset.
    """
    from torch._dynamo.utils import counters
    from torch._inductor import config as inductor_config
    from torch._dynamo import config as dynamo_config
    from torch._functorch import config as functorch_config

    dtype = DTYPES[cell.dtype]
    program = case.make_program()
    seconds: dict[str, float] = {}
    wants_float64 = any(t.float64_factor is not None for _, t in case.tolerances)

    with deterministic_algorithms(case.deterministic):
        start = time.perf_counter()
        eager = _run_calls(case, program, build_call_inputs(case, cell.device, dtype))
        seconds["eager"] = time.perf_counter() - start

        float64 = None
        if wants_float64:
            start = time.perf_counter()
            float64 = _run_calls(case, program, [upcast_to_float64(args) for args in build_call_inputs(case, cell.device, dtype)])
            seconds["float64"] = time.perf_counter() - start

        start = time.perf_counter()
        references = {}
        for ref in case.checks.references:
            if ref.when.applies(cell.backend, cell.device, cell.dtype):
                ref_case = variant_case(case, ref.variant)
                references[ref.name] = _run_calls(ref_case, ref_case.make_program(), build_call_inputs(ref_case, cell.device, dtype))
        if references:
            seconds["references"] = time.perf_counter() - start

        targets = {block.target for block in case.checks.filecheck if block.when.applies(cell.backend, cell.device, cell.dtype)}
        post_grad_capture = PostGradCapture() if "post_grad_graph" in targets else None
        autotune_capture = _AutotuneBlockCapture()
        asm_wanted = tuple(t for t in ASM_TARGETS if t in targets)
        loaded_modules = LoadedModules()

        torch._dynamo.reset()
        counters.clear()
        sequence = build_call_inputs(case, cell.device, dtype)
        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            passes = [(spec.hook, spec.factory) for spec in case.passes]
            stack.enter_context(inductor_config.patch(inductor_config_patch(case_inductor_config(case), passes, post_grad_capture)))
            if needs_fresh_compile(case):
                stack.enter_context(functorch_config.patch(FRESH_FUNCTORCH_CONFIG))
                stack.enter_context(dynamo_config.patch(FRESH_DYNAMO_CONFIG))
            if case.dynamo_config:
                stack.enter_context(dynamo_config.patch(dict(case.dynamo_config)))
            if "autotune_block" in targets:
                stack.enter_context(autotune_capture.installed())
            if asm_wanted:
                stack.enter_context(loaded_modules.installed())
            # A case setting force_disable_caches makes Dynamo warn that PGO is off: that is the point.
            stack.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", message=".*dynamo_pgo force disabled.*")
            compiled_fn = compile_cell(case, cell, program)
            compiled, graph_codes, graphs, recompiles = _run_compiled_calls(case, cell, compiled_fn, sequence)
            code = [text for _, text in graph_codes]
            seconds["compiled"] = time.perf_counter() - start
            snapshot = _counter_snapshot()  # the baseline's compile is not the case's
            perf = perf_baseline = None
            if timer is not None:
                perf = _time_compiled(case, cell, compiled_fn, timer, sequence[-1])
                if case.checks.perf.faster_than is not None:
                    perf_baseline = _time_baseline(case, cell, timer, case.checks.perf.faster_than.baseline)
        torch._dynamo.reset()

    output_code = "\n".join(code)
    artifacts = {
        "output_code": output_code,
        "kernel_source": extract_kernel_sources(output_code),
        "post_grad_graph": "\n".join(post_grad_capture.texts) if post_grad_capture else "",
        "autotune_block": "\n".join(autotune_capture.texts),
    }
    unavailable: dict[str, str] = {}
    if asm_wanted:
        asm_texts, unavailable = collect_asm_artifacts(loaded_modules.modules, code, cell.device, cell.backend, asm_wanted)
        artifacts.update(asm_texts)
    graph_breaks = snapshot.get("graph_break", {})
    return CellRun(
        compiled=compiled,
        eager=eager,
        float64=float64,
        strides={name: tuple(t.stride()) for name, t in eager.items()},
        artifacts=artifacts,
        counters=snapshot,
        graphs=graphs,
        graph_breaks=sum(graph_breaks.values()),
        graph_break_reasons=[reason.splitlines()[0] for reason in graph_breaks],
        seconds=seconds,
        perf=perf,
        perf_baseline=perf_baseline,
        references=references,
        unavailable=unavailable,
        graph_codes=graph_codes,
        recompiles=recompiles,
    )


def variant_case(case: Case, variant: Variant) -> Case:
    """The case with a variant's program and inputs (a baseline, a reference)."""
    return dataclasses.replace(case, program=variant.program, params=variant.params, inputs=variant.inputs, calls=variant.calls)


def _time_baseline(case: Case, cell: MatrixCell, timer: Any, baseline: Variant) -> Any:
    """The baseline compiled as the case was (backend, mode, dynamic, passes), put through the
    same call sequence (so the same recompiles), then timed as the case was."""
    baseline_case = variant_case(case, baseline)
    compiled_fn = compile_cell(case, cell, baseline_case.make_program())
    sequence = build_call_inputs(baseline_case, cell.device, DTYPES[cell.dtype])
    _run_compiled_calls(baseline_case, cell, compiled_fn, sequence)
    return _time_compiled(baseline_case, cell, compiled_fn, timer, sequence[-1])


def mark_dynamic(case: Case, specs: tuple[InputSpec, ...], args: list[Any]) -> None:
    """``torch._dynamo.mark_dynamic`` on the dims the case's ``mark_dynamic:`` names."""
    dims = dict(case.mark_dynamic)
    for spec, value in zip(specs, args):
        if spec.name in dims and isinstance(value, torch.Tensor):
            torch._dynamo.mark_dynamic(value, list(dims[spec.name]))


def _run_compiled_calls(
    case: Case, cell: MatrixCell, compiled_fn: Callable[..., Any], sequence: list[list[Any]],
) -> tuple[dict[str, torch.Tensor], list[tuple[int, str]], int, int]:
    """Each call through the compiled callable: (named outputs, (call index, output code) of
    each graph compiled, graphs of the first call, calls after the first that compiled)."""
    from unittest import mock

    from torch._dynamo.utils import counters
    from torch._inductor.graph import GraphLowering

    outputs: dict[str, torch.Tensor] = {}
    graph_codes: list[tuple[int, str]] = []
    first_graphs = recompiles = 0
    runs = compiled_runs(case, cell.backend)
    index = 0
    # As run_and_get_code records output code, but across the whole sequence: it resets
    # Dynamo on each call, which would make every call a first compile.
    with mock.patch.object(GraphLowering, "save_output_code", lambda code: graph_codes.append((index, code))):
        for index, (specs, args) in enumerate(zip(call_specs(case), sequence)):
            before = counters["stats"]["unique_graphs"]
            mark_dynamic(case, specs, args)
            result = _run_program(case, compiled_fn, args, specs)
            for _ in range(runs - 1):
                result = _run_program(case, compiled_fn, args, specs)
            if runs > 1:  # a replay's outputs live in the graph's pool
                result = {name: t.clone() for name, t in result.items()}
            outputs.update(call_output_names(case, index, result))
            after = counters["stats"]["unique_graphs"]
            if index == 0:
                first_graphs = after
            elif after > before:
                recompiles += 1
    return outputs, graph_codes, first_graphs, recompiles
