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
from typing import Any, Iterator, Optional

import torch

from .case import CUDAGRAPH_MODES, Case, Variant
from .core.backends import backend as backend_record
from .core.dtypes import DTYPES
from .core.execute import (
    FRESH_COMPILE_CONFIG,
    FRESH_DYNAMO_CONFIG,
    FRESH_FUNCTORCH_CONFIG,
    PostGradCapture,
    RunOptions,
    compile_program,
    deterministic_algorithms,
    extract_kernel_sources,
    inductor_config_patch,
    run_calls,
    run_compiled_calls,
    timed_call,
)
from .core.inputs import CallSpecs, InputSpec, build_sequence, derive_seed
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


def _one_call(case: Case) -> CallSpecs:
    """One call on the case's ``inputs``, each built afresh."""
    return CallSpecs((case.inputs,), (frozenset(spec.name for spec in case.inputs),), case.seed)


def call_specs(case: Case) -> CallSpecs:
    """What the case's calls take: the ``calls:`` sequence (each call builds the inputs it
    changes), or the one call on ``inputs``."""
    if not case.calls:
        return _one_call(case)
    return CallSpecs(tuple(call.inputs for call in case.calls), tuple(frozenset(call.changed) for call in case.calls), case.seed)


def run_options(case: Case) -> RunOptions:
    """How the case runs its program (no_grad, backward, inputs_after, its calls' names, mark_dynamic)."""
    return RunOptions(
        no_grad=case.no_grad, backward=case.backward, inputs_after=case.checks.inputs_after,
        named_calls=bool(case.calls), mark_dynamic=case.mark_dynamic,
    )


def input_seed(case: Case, index: int, spec: Optional[InputSpec] = None) -> int:
    """The seed of input ``index`` (``spec``: a call's spec of it, else the case's): its own, else derived from the case's."""
    return derive_seed(case.inputs[index] if spec is None else spec, case.seed, index)


def build_inputs(case: Case, device: str, dtype: torch.dtype) -> list[Any]:
    """The case's ``inputs``, each built afresh."""
    return build_sequence(_one_call(case), device, dtype)[0]


def build_call_inputs(case: Case, device: str, dtype: torch.dtype) -> list[list[Any]]:
    """Each call's arguments: an input a call overrides is built for that call; the others are
    built once and passed to every call of the sequence (a user calls one model, not copies)."""
    return build_sequence(call_specs(case), device, dtype)


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


def compiled_runs(case: Case, backend: str) -> int:
    return CUDAGRAPH_RUNS if compile_mode(case, backend) in CUDAGRAPH_MODES else 1


def _counter_snapshot() -> dict[str, dict[str, int]]:
    from torch._dynamo.utils import counters

    return {group: dict(values) for group, values in counters.items() if values}


def run_cell(case: Case, cell: MatrixCell, timer: Any = None) -> CellRun:
    """Run ``case`` on ``cell``; raises whatever the program or compiler raises.

    ``timer``: a ``harness.perf.DeviceTimer``; given, the compiled program is also timed
    (``CellRun.perf``) before Dynamo is reset.

    One direction: what the cell needs is read off the case first; then each run (eager,
    float64, references, compiled) is one call into ``core.execute``, which builds its
    arguments through ``core.inputs`` and runs them; the kernels' assembly last.
    """
    from torch._dynamo.utils import counters
    from torch._inductor import config as inductor_config
    from torch._dynamo import config as dynamo_config
    from torch._functorch import config as functorch_config

    dtype = DTYPES[cell.dtype]
    program = case.make_program()
    specs, options = call_specs(case), run_options(case)
    seconds: dict[str, float] = {}
    wants_float64 = any(t.float64_factor is not None for _, t in case.tolerances)
    references = [ref for ref in case.checks.references if ref.when.applies(cell.backend, cell.device, cell.dtype)]
    targets = {block.target for block in case.checks.filecheck if block.when.applies(cell.backend, cell.device, cell.dtype)}
    backend, mode, runs = backend_record(cell.backend), compile_mode(case, cell.backend), compiled_runs(case, cell.backend)
    cudagraphs = mode in CUDAGRAPH_MODES
    baseline = case.checks.perf.faster_than.baseline if timer is not None and case.checks.perf.faster_than is not None else None
    post_grad_capture = PostGradCapture() if "post_grad_graph" in targets else None
    autotune_capture = _AutotuneBlockCapture()
    asm_wanted = tuple(t for t in ASM_TARGETS if t in targets)
    loaded_modules = LoadedModules()

    with deterministic_algorithms(case.deterministic):
        start = time.perf_counter()
        eager = run_calls(program, specs, options, cell.device, dtype)
        seconds["eager"] = time.perf_counter() - start

        float64 = None
        if wants_float64:
            start = time.perf_counter()
            float64 = run_calls(program, specs, options, cell.device, dtype, float64=True)
            seconds["float64"] = time.perf_counter() - start

        start = time.perf_counter()
        reference_outputs = {}
        for ref in references:
            ref_case = variant_case(case, ref.variant)
            reference_outputs[ref.name] = run_calls(ref_case.make_program(), call_specs(ref_case), run_options(ref_case), cell.device, dtype)
        if references:
            seconds["references"] = time.perf_counter() - start

        torch._dynamo.reset()
        counters.clear()
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
            compiled_fn = compile_program(program, backend, mode, cell.dynamic)
            calls = run_compiled_calls(compiled_fn, specs, options, cell.device, dtype, runs, timed=timer is not None)
            code = [text for _, text in calls.graph_codes]
            seconds["compiled"] = calls.seconds
            snapshot = _counter_snapshot()  # the baseline's compile is not the case's
            perf = perf_baseline = None
            if timer is not None:
                perf = timer.measure(timed_call(compiled_fn, calls.timing_inputs, no_grad=case.no_grad, cudagraph_steps=cudagraphs), case.checks.perf)
            if baseline is not None:
                # The baseline compiled as the case was (backend, mode, dynamic, passes), put
                # through the same call sequence (so the same recompiles), then timed as the case was.
                base_case = variant_case(case, baseline)
                base_fn = compile_program(base_case.make_program(), backend, mode, cell.dynamic)
                base_calls = run_compiled_calls(base_fn, call_specs(base_case), run_options(base_case), cell.device, dtype, runs, timed=True)
                perf_baseline = timer.measure(timed_call(base_fn, base_calls.timing_inputs, no_grad=case.no_grad, cudagraph_steps=cudagraphs), case.checks.perf)
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
        compiled=calls.outputs,
        eager=eager,
        float64=float64,
        strides={name: tuple(t.stride()) for name, t in eager.items()},
        artifacts=artifacts,
        counters=snapshot,
        graphs=calls.graphs,
        graph_breaks=sum(graph_breaks.values()),
        graph_break_reasons=[reason.splitlines()[0] for reason in graph_breaks],
        seconds=seconds,
        perf=perf,
        perf_baseline=perf_baseline,
        references=reference_outputs,
        unavailable=unavailable,
        graph_codes=calls.graph_codes,
        recompiles=calls.recompiles,
    )


def variant_case(case: Case, variant: Variant) -> Case:
    """The case with a variant's program and inputs (a baseline, a reference)."""
    return dataclasses.replace(case, program=variant.program, params=variant.params, inputs=variant.inputs, calls=variant.calls)
