"""``--bisect``: where a failing cell's compiled result first diverges from eager.

Two searches, both rerunning the cell with "good" meaning *it runs, and compiled matches
eager within the case's tolerance*:

1. PyTorch's ``CompilerBisector.do_bisect``: the first torch.compile backend that fails
   (eager -> aot_eager -> aot_eager_decomp_partition -> ... -> inductor), then, inside it,
   the subsystem (pre-grad / joint / post-grad passes, config changes, lowerings, ...) and
   the application number of the offending pass or lowering. Which backends and
   subsystems exist is the bisector's own table (torch 2.13 has more than 2.11); we only
   read its result, so nothing here depends on the version.
2. Our own components, disabled one at a time: the case's ``passes``, custom-pass hooks
   installed outside the case (``impl.install()``, say), pattern-matcher passes whose
   handlers live outside torch, and Inductor lowerings registered outside torch (ours in
   ``impl/lowerings``). A probe on the first rerun records which of them actually ran and
   in what order; the first whose removal makes the cell good is where the result diverges. The bisector
   cannot see these: it disables only built-in ATen lowerings, and names a custom pass
   only by its hook.

A rerun that fails *otherwise* than the cell did (it raises where the cell produced wrong
numbers, or raises another error) is neither good nor bad: that stage or configuration
cannot run the program at all. A backend that cannot (``aot_eager_decomp_partition_crossref``
has no fake-tensor rule for our HOP) is reported "not applicable" and passed over, never
blamed; a subsystem or component whose removal makes the compile fail is reported as such
and cleared of nothing. A component that cannot be turned off alone (our HOP's lowering:
a higher-order op has no eager kernel to fall back to) says so, and what was done instead.

Every rerun compiles with the FX graph cache off: a cache hit would skip the passes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import traceback
from typing import Any, Callable, Iterator, Optional

import torch

from .case import Case, PassSpec
from .checks import compare_eager_with_float64, compare_with_eager
from .core.backends import MAX_AUTOTUNE_MODE
from .core.backends import backend as backend_record
from .matrix import MatrixCell
from .run import run_cell

CUSTOM_HOOKS = (
    "pre_grad_custom_pass",
    "joint_custom_pre_pass",
    "joint_custom_post_pass",
    "post_grad_custom_pre_pass",
    "post_grad_custom_post_pass",
)
# The FX graph cache off is enough for the passes to run on every rerun; keeping the kernel
# caches (unlike the harness's force_disable_caches) makes a rerun ~0.5 s instead of ~4 s.
NO_CACHE = (("fx_graph_cache", False), ("force_disable_caches", False))


MISMATCH = "compiled differs from eager"
MAX_ERROR_CHARS = 160


@dataclasses.dataclass(frozen=True)
class Rerun:
    """One rerun of the cell: good, or how it failed (MISMATCH, or the error in one line)."""

    failure: str = ""

    @property
    def good(self) -> bool:
        return not self.failure


@dataclasses.dataclass(frozen=True)
class Component:
    """Something of ours the compile ran, and how to run the cell without it."""

    name: str
    order: int  # when the probe saw it first: pipeline order
    without: Callable[[Case], tuple[Case, contextlib.AbstractContextManager]]
    partial: str = ""  # non-empty: it cannot be turned off alone; what "without" does instead


@dataclasses.dataclass(frozen=True)
class Ablation:
    """The cell rerun without one component."""

    component: Component
    fixed: bool  # the rerun was good
    cannot_run: str = ""  # the rerun failed otherwise than the cell: this error

    @property
    def verdict(self) -> str:
        return "FIXES" if self.fixed else "n/a  " if self.cannot_run else "no   "


@dataclasses.dataclass
class BisectReport:
    stage: Optional[str]  # CompilerBisector's verdict, one line
    components: list[Ablation]
    note: str = ""

    @property
    def culprits(self) -> list[Component]:
        return [a.component for a in self.components if a.fixed]

    def render(self) -> str:
        lines = ["bisect (--bisect): reran the cell; good = runs and compiled matches eager"]
        if self.note:
            lines.append(f"  {self.note}")
        if self.stage:
            lines.append(f"  first failing stage (CompilerBisector): {self.stage}")
        if self.components:
            lines.append("  passes and lowerings (the case's, installed hooks, quantcheck's), disabled one at a time (pipeline order):")
            for ablation in self.components:
                lines.append(f"    {ablation.verdict}  {ablation.component.name}")
                if ablation.component.partial:
                    lines.append(f"           cannot be turned off alone: {ablation.component.partial}")
                if ablation.cannot_run:
                    lines.append(f"           the cell cannot run without it: {ablation.cannot_run}")
            lines.append(f"  diverges at: {self._divergence()}")
        elif self.stage:
            lines.append("  passes and lowerings: none that can be disabled ran in this cell")
        return "\n".join(lines)

    def _divergence(self) -> str:
        culprits = self.culprits
        if culprits:
            return " > ".join(c.name for c in culprits)
        cleared = [a for a in self.components if not a.cannot_run and not a.component.partial]
        partial = [a.component.name for a in self.components if not a.cannot_run and a.component.partial]
        untried = [a.component.name for a in self.components if a.cannot_run]
        parts = [
            "no pass or lowering that could be turned off alone (disabling each left the failure)"
            if cleared else "not found: no pass or lowering could be turned off alone"
        ]
        if partial:
            parts.append(f"not cleared (cannot be turned off alone): {'; '.join(partial)}")
        if untried:
            parts.append(f"not cleared (the cell cannot run without it): {'; '.join(untried)}")
        return "; ".join(parts)


# ------------------------------------------------------------------------- the predicate


def _bisectable(case: Case, cell: MatrixCell) -> tuple[Case, MatrixCell]:
    """The cell as the bisector reruns it: caches off; max-autotune through config, since
    the bisector swaps the backend name and a mode makes no sense for eager."""
    config = dict(case.config)
    config.update(NO_CACHE)
    record = backend_record(cell.backend)
    if record.mode == MAX_AUTOTUNE_MODE:
        config["max_autotune"] = True
        cell = dataclasses.replace(cell, backend=record.compiler)  # the compiler's plain backend, its mode now in config
    return dataclasses.replace(case, config=tuple(config.items())), cell


def describe_error(exc: BaseException) -> str:
    """``Type: first line`` of the error that started it all (Dynamo wraps a backend's own)."""
    while True:
        inner = getattr(exc, "inner_exception", None) or exc.__cause__
        if inner is None or inner is exc:
            break
        exc = inner
    first = (str(exc).strip().splitlines() or [""])[0]
    first = re.sub(r" object at 0x[0-9a-fA-F]+", "", first)  # the same error on every rerun reads the same
    first = re.split(r"\.(?=\s+[A-Z])|(?<=[>)'\"])\.(?=[A-Z])", first, maxsplit=1)[0]  # its first sentence
    if len(first) > MAX_ERROR_CHARS:
        first = first[: MAX_ERROR_CHARS - 1] + "…"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def rerun(case: Case, cell: MatrixCell) -> Rerun:
    """Run the cell; good when it runs and its compiled outputs match eager's within tolerance."""
    return _rerun_keeping_run(case, cell)[0]


def _rerun_keeping_run(case: Case, cell: MatrixCell, probe: Optional[_Probe] = None) -> tuple[Rerun, Optional[Any]]:
    """The rerun and the cell's run (None when it raised); ``probe``: installed for the run,
    it records our components as they run (a crash still shows what ran before it)."""
    try:
        with probe.installed() if probe is not None else contextlib.nullcontext():
            run = run_cell(case, cell)
    except Exception as exc:
        return Rerun(describe_error(exc)), None
    ok = compare_with_eager(case, cell, run, label="bisect", float64=False).ok
    return Rerun("" if ok else MISMATCH), run


def _eager_vs_float64(case: Case, cell: MatrixCell, run: Any) -> str:
    """When eager itself is off the float64 run of the program: one line saying so."""
    comparison = None if run is None else compare_eager_with_float64(case, cell, run)
    if comparison is None or comparison.ok:
        return ""
    return (
        f" Eager itself is off the program's float64 run (max abs error {comparison.max_abs:.3g}): "
        "the bug is in code eager runs too (a kernel, a function of the program or its package), not in the compilation."
    )


class StagePredicate:
    """CompilerBisector's ``fn`` (True: good) for a cell that failed with ``failure``.

    A rerun failing otherwise cannot run the program in that configuration: it is recorded,
    and counts as good for a backend (passed over as not applicable: it cannot show where
    *this* failure starts) and as not fixed for a subsystem switched off (it fixed nothing
    we could see; the verdict then says it is uncertain)."""

    def __init__(self, case: Case, cell: MatrixCell, failure: str) -> None:
        self.case, self.cell, self.failure = case, cell, failure
        self.not_applicable: dict[str, str] = {}  # backend -> why it cannot run the program
        self.unsure: dict[str, str] = {}  # subsystem -> what failed with parts of it off

    def __call__(self) -> bool:
        outcome = rerun(self.case, self.cell)
        if outcome.good or outcome.failure == self.failure:
            return outcome.good
        backend, subsystem = _bisector_position()
        if subsystem:
            self.unsure.setdefault(subsystem, outcome.failure)
            return False
        self.not_applicable.setdefault(backend or "?", outcome.failure)
        return True


def _bisector_position() -> tuple[Optional[str], Optional[str]]:
    """(backend, subsystem) the running CompilerBisector is trying now."""
    from torch._inductor.compiler_bisector import CompilerBisector

    get_backend = getattr(CompilerBisector, "get_backend", lambda: None)
    get_subsystem = getattr(CompilerBisector, "get_subsystem", lambda: None)
    return get_backend(), get_subsystem() or None


def compiler_bisector_stage(good: Callable[[], bool]) -> str:
    """Run PyTorch's bisector on ``good``; one line naming backend, subsystem and application.

    ``good`` may be a :class:`StagePredicate`: its not-applicable backends and uncertain
    subsystems are then named too."""
    try:
        from torch._inductor.compiler_bisector import CompilerBisector
    except ImportError as exc:  # not in this torch
        return f"not available ({exc})"
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        result = CompilerBisector.do_bisect(good)
    not_applicable = getattr(good, "not_applicable", {})
    unsure = getattr(good, "unsure", {})
    skipped = "; ".join(f"{b} not applicable (cannot run this program: {why})" for b, why in not_applicable.items())
    if result is None:
        text = "none: every backend and subsystem the bisector tries gives a good result"
        return f"{text} ({skipped})" if skipped else text
    order = list(_bisector_backends())
    before = order[: order.index(result.backend)] if result.backend in order else []
    passed = [b for b in before if b not in not_applicable]
    text = f"backend {result.backend}"
    notes = ([f"{', '.join(passed)} good"] if passed else []) + ([skipped] if skipped else [])
    if notes:
        text += f" ({'; '.join(notes)})"
    if result.subsystem:
        text += f"; subsystem {result.subsystem}"
        if result.bisect_number is not None and result.debug_info != result.subsystem:
            text += f", application #{result.bisect_number}"
        if result.debug_info and result.debug_info != result.subsystem:
            text += f" ({result.debug_info})"
    else:
        text += "; no single subsystem"
    for subsystem, why in unsure.items():
        text += f"; uncertain: with parts of {subsystem} off the compile failed otherwise ({why})"
    return text


def _bisector_backends() -> Iterator[str]:
    from torch._inductor.compiler_bisector import BACKENDS

    return iter(BACKENDS)


# ------------------------------------------------------------------------- our components


def _describe(obj: Any) -> str:
    obj = getattr(obj, "func", obj)  # functools.partial
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}:{name}"


def _owned_outside_torch(obj: Any) -> bool:
    module = getattr(getattr(obj, "func", obj), "__module__", None) or ""
    return bool(module) and not module.startswith("torch.")


def _pattern_pass_key(matcher: Any) -> Optional[tuple[str, ...]]:
    """Identifies a pattern-matcher pass across reruns (fresh objects per compile are fine):
    its name and its handlers; None when every handler is torch's own."""
    handlers = sorted({
        _describe(entry.handler)
        for entries in matcher.patterns.values()
        for entry in entries
        if getattr(entry, "handler", None) is not None and _owned_outside_torch(entry.handler)
    })
    if not handlers:
        return None
    return (getattr(matcher, "pass_name", None) or "", *handlers)


class _Probe:
    """Records, during one rerun, which hooks, pattern passes and lowerings of ours ran, in order."""

    def __init__(self) -> None:
        self.seen: dict[Any, int] = {}

    def saw(self, key: Any) -> None:
        self.seen.setdefault(key, len(self.seen))

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        from torch._inductor import lowering
        from torch._inductor.pattern_matcher import PatternMatcherPass
        from torch.fx.passes.graph_transform_observer import GraphTransformObserver

        probe = self
        original_apply = PatternMatcherPass.apply
        original_graph_pass = GraphTransformObserver.apply_graph_pass
        original_gm_pass = GraphTransformObserver.apply_gm_pass

        def apply(matcher, graph):
            key = _pattern_pass_key(matcher)
            if key is not None:
                probe.saw(("pattern", key))
            return original_apply(matcher, graph)

        def graph_pass(observer, pass_fn):
            if observer.passname in CUSTOM_HOOKS:
                probe.saw(("hook", observer.passname))
            return original_graph_pass(observer, pass_fn)

        def gm_pass(observer, pass_fn):
            if observer.passname in CUSTOM_HOOKS:
                probe.saw(("hook", observer.passname))
            return original_gm_pass(observer, pass_fn)

        ours = {op: fn for op, fn in lowering.lowerings.items() if _owned_outside_torch(fn)}

        def recording(op, fn):
            def lower(*args, **kwargs):
                probe.saw(("lowering", op))
                return fn(*args, **kwargs)

            return lower

        PatternMatcherPass.apply = apply
        GraphTransformObserver.apply_graph_pass = graph_pass
        GraphTransformObserver.apply_gm_pass = gm_pass
        lowering.lowerings.update({op: recording(op, fn) for op, fn in ours.items()})
        try:
            yield
        finally:
            PatternMatcherPass.apply = original_apply
            GraphTransformObserver.apply_graph_pass = original_graph_pass
            GraphTransformObserver.apply_gm_pass = original_gm_pass
            lowering.lowerings.update(ours)


def _without_case_pass(spec: PassSpec) -> Callable[[Case], tuple[Case, contextlib.AbstractContextManager]]:
    def without(case: Case):
        return dataclasses.replace(case, passes=tuple(p for p in case.passes if p is not spec)), contextlib.nullcontext()

    return without


def _without_hook(hook: str) -> Callable[[Case], tuple[Case, contextlib.AbstractContextManager]]:
    def without(case: Case):
        return dataclasses.replace(case, config=case.config + ((hook, None),)), contextlib.nullcontext()

    return without


def _without_pattern_pass(key: tuple[str, ...]) -> Callable[[Case], tuple[Case, contextlib.AbstractContextManager]]:
    @contextlib.contextmanager
    def skipped() -> Iterator[None]:
        from torch._inductor.pattern_matcher import PatternMatcherPass

        original = PatternMatcherPass.apply

        def apply(matcher, graph):
            return 0 if _pattern_pass_key(matcher) == key else original(matcher, graph)

        PatternMatcherPass.apply = apply
        try:
            yield
        finally:
            PatternMatcherPass.apply = original

    return lambda case: (case, skipped())


#: What disabling a higher-order op's lowering does instead (see _without_lowering).
HOP_LOWERING_PARTIAL = (
    "a higher-order op has no eager kernel to fall back to; reran with the lowering kept "
    "but its low-precision and prologue-fusion marks dropped"
)


def _without_lowering(op: Any) -> Callable[[Case], tuple[Case, contextlib.AbstractContextManager]]:
    """An operator overload falls back to its eager kernel (Inductor's implicit fallback);
    a higher-order op keeps its lowering (it has no eager fallback) minus the marks it puts
    on the graph: low-precision codegen and the invoke_quant prologue-fusion set."""

    @contextlib.contextmanager
    def disabled() -> Iterator[None]:
        from torch._inductor import lowering
        from torch._inductor.virtualized import V

        original = lowering.lowerings[op]
        had_fallback = op in lowering.fallbacks
        if isinstance(op, torch._ops.OpOverload):
            del lowering.lowerings[op]
        else:
            def unmarked(*args, **kwargs):
                marks = [getattr(V.graph, name, None) for name in ("low_precision_codegen_ops", "invoke_quant_ops")]
                before = [set(m) if m is not None else None for m in marks]
                out = original(*args, **kwargs)
                for mark, kept in zip(marks, before):
                    if mark is not None:
                        for name in [n for n in mark if n not in kept]:
                            mark.discard(name)
                return out

            lowering.lowerings[op] = unmarked
        try:
            yield
        finally:
            lowering.lowerings[op] = original  # make_fallback may have put a fallback there
            if not had_fallback:
                lowering.fallbacks.discard(op)

    return lambda case: (case, disabled())


def discover_components(case: Case, seen: dict[Any, int]) -> list[Component]:
    """Our components the cell's compile ran (``seen``: a probe's record of its run), in the order it ran them."""
    from torch._inductor import config as inductor_config

    late = len(seen)
    components: list[Component] = []
    for spec in case.passes:
        order = seen.get(("hook", spec.hook), late)
        components.append(Component(f"pass {spec.hook}: {spec.factory} ({case.display_path}:{spec.line})", order, _without_case_pass(spec)))
    configured = dict(case.config)
    for hook in CUSTOM_HOOKS:
        value = configured.get(hook, getattr(inductor_config, hook, None))
        if value is not None and ("hook", hook) in seen:
            components.append(Component(f"hook {hook} installed outside the case: {_describe(value)}", seen[("hook", hook)], _without_hook(hook)))
    for key, order in seen.items():
        if key[0] == "pattern":
            name, *handlers = key[1]
            label = f"pattern pass {name!r}" if name else "pattern pass"
            components.append(Component(f"{label} ({', '.join(handlers)})", order, _without_pattern_pass(key[1])))
        elif key[0] == "lowering":
            from torch._inductor import lowering

            fn = lowering.lowerings.get(key[1])
            partial = "" if isinstance(key[1], torch._ops.OpOverload) else HOP_LOWERING_PARTIAL
            components.append(Component(f"lowering of {key[1]} ({_describe(fn)})", order, _without_lowering(key[1]), partial))
    # Hooks before what runs inside them; stable for equal order.
    return sorted(components, key=lambda c: (c.order, not c.name.startswith(("pass ", "hook "))))


def bisect_cell(case: Case, cell: MatrixCell, *, use_compiler_bisector: bool = True) -> BisectReport:
    """Both searches for a failing cell (see the module docstring)."""
    case, cell = _bisectable(case, cell)
    try:
        probe = _Probe()
        first, run = _rerun_keeping_run(case, cell, probe)
        if not backend_record(cell.backend).compiles:
            return BisectReport(None, [], note="an eager cell compiles nothing: nothing to bisect." + _eager_vs_float64(case, cell, run))
        failure = first.failure
        if not failure:
            return BisectReport(None, [], note=(
                "compiled matches eager on a rerun: the failure is not a compiled-vs-eager divergence "
                "(a golden, float64, counter, FileCheck or graph check), or it does not reproduce."
                + _eager_vs_float64(case, cell, run)
            ))
        stage = compiler_bisector_stage(StagePredicate(case, cell, failure)) if use_compiler_bisector else None
        results = []
        for component in discover_components(case, probe.seen):
            edited, context = component.without(case)
            with context:
                outcome = rerun(edited, cell)
            otherwise = "" if outcome.good or outcome.failure == failure else outcome.failure
            results.append(Ablation(component, outcome.good, otherwise))
        return BisectReport(stage, results)
    except Exception:  # the report must not lose the cell's own failure to a bisect crash
        return BisectReport(None, [], note="bisect itself failed:\n" + traceback.format_exc(limit=6))
