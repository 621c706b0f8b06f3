"""Perf check: a cell's median time held to a performance golden of its GPU kind.

A case asks for it under ``checks``::

    perf: {band: 0.15, cuda_graph: true}     # fail when slower than 1.15 x the golden

The cell's program (compiled with the cell's backend) is called on fresh inputs and timed
by the device's timer; the median goes to
``golden/<suite key>/<case>/perf-<device kind>-<backend>-<dtype>.json`` (one file per GPU kind:
an H100 and an H200 keep separate numbers; its path, writer and stale scan are
harness/golden.py's), written with ``--update-golden`` and, when missing, ``--add-missing-goldens``. CUDA cells are timed by CUDA events, a CUDA graph's
replay or the host's clock (``timer: events | graph | wall``, :func:`time_cuda`), CPU cells
by the host's clock (:func:`time_wall`); other cells say why they were not timed. Tests
register a fake timer with :func:`register_timer`. ``faster_than`` holds the time to a
baseline timed in the same cell instead of (or besides) a golden (:func:`judge_ratio`).

The golden records what the number depends on (shapes, CUDA graph, L2 flush, torch and
triton versions); a golden measured under another setup fails instead of comparing
numbers that do not compare.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .case import PERF_TIMERS
from .core.backends import backend
from .golden import GoldenWriteError, perf_golden_path, write_json
from .matrix import device_count

PERF_FORMAT = "quantcheck-perf/1"
# Spin the GPU this many cycles (~0.5 ms on an H100/H200) before each timed call, so the
# host's launch work queues up behind it and the events time the GPU alone.
SPIN_CYCLES = 1_000_000
L2_FLUSH_BYTES = 256 * 2**20  # several times any current GPU's L2


class PerfGoldenError(Exception):
    """A perf golden that cannot be used; the message is one line naming the file."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


class PerfGoldenMissing(PerfGoldenError):
    pass


@dataclasses.dataclass(frozen=True)
class PerfSample:
    """Timings of one cell: the median and the spread (interquartile range / median)."""

    median_us: float
    spread: float
    reps: int


@dataclasses.dataclass(frozen=True)
class DeviceTimer:
    """How one device type is timed.

    ``device_kind()`` names the hardware (``torch.cuda.get_device_name()``): perf goldens
    are kept per kind. ``measure(fn, spec)`` calls the zero-argument ``fn`` as ``spec`` (a
    ``harness.case.PerfSpec``) asks and returns a :class:`PerfSample`.
    """

    device_kind: Callable[[], str]
    measure: Callable[[Callable[[], Any], Any], PerfSample]
    timers: tuple[str, ...] = PERF_TIMERS  # the ``checks.perf.timer`` kinds it can measure


def summarize(times_us: list[float]) -> PerfSample:
    """Median and relative interquartile range of per-call times."""
    if not times_us:
        raise ValueError("summarize: no timings")
    ordered = sorted(times_us)

    def quantile(q: float) -> float:
        position = q * (len(ordered) - 1)
        low, high = math.floor(position), math.ceil(position)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    median = quantile(0.5)
    spread = (quantile(0.75) - quantile(0.25)) / median if median > 0 else 0.0
    return PerfSample(median_us=median, spread=spread, reps=len(ordered))


# --------------------------------------------------------------------------- CUDA timer


def cuda_graph_replay(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` captured into a CUDA graph (after a warm-up on a side stream); returns its replay."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # the first calls may allocate, autotune or compile lazily
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def time_wall(fn: Callable[[], Any], spec: Any, synchronize: Callable[[], Any] = lambda: None, flush: Callable[[], Any] = lambda: None) -> PerfSample:
    """Host time per plain call of ``fn``, from ``time.perf_counter`` around a synchronized
    call: what a user's loop waits for a result (a decode step), host cost included (Python,
    Dynamo's guards, the wrapper, each launch) as well as the device's."""
    for _ in range(spec.warmup):
        fn()
    times = []
    for _ in range(spec.reps):
        flush()
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times.append((time.perf_counter() - start) * 1e6)
    return summarize(times)


def time_cuda(fn: Callable[[], Any], spec: Any) -> PerfSample:
    """GPU time per call of ``fn`` (or of its CUDA-graph replay), from CUDA events; with
    ``timer: wall`` the host's time around each synchronized call (:func:`time_wall`).

    Each timed call follows a GPU spin, so the time is the GPU's, not the host's launch
    path; with ``l2_flush`` a 256 MB buffer is read first, outside the timed interval, so
    the call finds its operands in HBM (a read, not a write: written lines would be written
    back while the timed call runs).
    """
    import torch

    if getattr(spec, "timer", "events") == "wall":
        buffer = torch.ones(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda") if spec.l2_flush else None
        return time_wall(fn, spec, torch.cuda.synchronize, (lambda: buffer.amax()) if buffer is not None else (lambda: None))

    call = cuda_graph_replay(fn) if spec.cuda_graph else fn
    for _ in range(spec.warmup):
        call()
    flush = torch.ones(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda") if spec.l2_flush else None
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(spec.reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(spec.reps)]
    torch.cuda.synchronize()
    for start, end in zip(starts, ends):
        if flush is not None:
            flush.amax()
        torch.cuda._sleep(SPIN_CYCLES)
        start.record()
        call()
        end.record()
    torch.cuda.synchronize()
    return summarize([start.elapsed_time(end) * 1e3 for start, end in zip(starts, ends)])


def _cuda_device_kind() -> str:
    import torch

    return torch.cuda.get_device_name()


def _cpu_device_kind() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


TIMERS: dict[str, DeviceTimer] = {
    "cuda": DeviceTimer(device_kind=_cuda_device_kind, measure=time_cuda),
    "cpu": DeviceTimer(device_kind=_cpu_device_kind, measure=time_wall, timers=("wall",)),
}


def register_timer(device: str, timer: Optional[DeviceTimer]) -> Optional[DeviceTimer]:
    """Time ``device`` cells with ``timer`` (None: stop timing them); returns the previous one."""
    previous = TIMERS.get(device)
    if timer is None:
        TIMERS.pop(device, None)
    else:
        TIMERS[device] = timer
    return previous


def why_not_timed(device: str, enabled: bool, workers: int, device_count: int, timer: str = "events") -> Optional[str]:
    """Why a ``device`` cell is not timed in this process (None: it is).

    ``workers``: pytest-xdist workers in the session (0 without xdist); ``device_count``:
    devices of that type. Workers sharing a GPU would time each other's kernels.
    ``timer``: the case's ``checks.perf.timer``.
    """
    if not enabled:
        return "perf checks are off (--no-perf)"
    if device not in TIMERS:
        return f"no timer for {device} cells"
    if timer not in TIMERS[device].timers:
        return f"timer: {timer} needs cuda; {device} cells have timer: {', '.join(TIMERS[device].timers)}"
    if workers > max(device_count, 1):
        return (
            f"{workers} xdist workers share {device_count} {device} device(s), so timings would be contended; "
            f"run perf cases with -n 0 (or at most one worker per device)"
        )
    return None


# --------------------------------------------------------------------------- goldens


def setup_of(spec: Any, shapes: dict[str, list[int]], compile_mode: str = "default") -> dict[str, Any]:
    """What a timing depends on besides the code: compared between golden and run. The wall
    timer and a compile mode other than the default are recorded only when used, so goldens
    written before they existed still compare."""
    setup: dict[str, Any] = {"shapes": shapes, "cuda_graph": spec.cuda_graph, "l2_flush": spec.l2_flush}
    if getattr(spec, "timer", "events") == "wall":
        setup["timer"] = "wall"
    if compile_mode != "default":
        setup["compile_mode"] = compile_mode
    return setup


def perf_record(sample: PerfSample, *, suite: str, case: str, backend: str, dtype: str, device_kind: str, setup: dict) -> dict:
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "format": PERF_FORMAT,
        "suite": suite,
        "case": case,
        "backend": backend,
        "dtype": dtype,
        "device_kind": device_kind,
        "median_us": round(sample.median_us, 3),
        "spread": round(sample.spread, 4),
        "reps": sample.reps,
        "setup": setup,
        "torch": torch.__version__,
        "triton": triton_version,
    }


def read_perf_golden(path: Path) -> dict:
    """The stored record; PerfGoldenMissing / PerfGoldenError say what is wrong in one line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PerfGoldenMissing(path, "no perf golden yet") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PerfGoldenError(path, f"unreadable ({exc})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PerfGoldenError(path, f"not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != PERF_FORMAT:
        raise PerfGoldenError(path, f"not a {PERF_FORMAT} record")
    median = record.get("median_us")
    if isinstance(median, bool) or not isinstance(median, (int, float)) or not median > 0 or math.isinf(median):
        raise PerfGoldenError(path, f"key 'median_us' must be a positive number (got {median!r})")
    if not isinstance(record.get("setup"), dict):
        raise PerfGoldenError(path, "key 'setup' must be a mapping")
    return record


@dataclasses.dataclass(frozen=True)
class PerfVerdict:
    ok: bool
    note: str  # one line for the session's perf section
    failure: str = ""  # the cell's failure section when not ok


def _fmt_us(us: float) -> str:
    return f"{us:.1f} µs" if us >= 10 else f"{us:.2f} µs"


def judge(sample: PerfSample, golden: dict, band: float, shown_path: str, now_setup: dict) -> PerfVerdict:
    """Measured against the golden: slower than ``1 + band`` times it fails; a changed setup fails."""
    for key, value in now_setup.items():
        if golden["setup"].get(key) != value:
            problem = (
                f"perf golden {shown_path} was measured with {key} = {golden['setup'].get(key)!r}; "
                f"the case now has {value!r}: the numbers do not compare"
            )
            return PerfVerdict(ok=False, note=f"setup changed ({key})", failure=problem)
    golden_us = float(golden["median_us"])
    ratio = sample.median_us / golden_us
    summary = (
        f"{_fmt_us(sample.median_us)} measured (spread {sample.spread:.0%}), golden {_fmt_us(golden_us)}, "
        f"ratio {ratio:.2f} (band +{band:.0%})"
    )
    if ratio <= 1 + band:
        return PerfVerdict(ok=True, note=summary)
    failure = (
        f"perf: slower than the golden: {_fmt_us(sample.median_us)} measured, golden {_fmt_us(golden_us)}, "
        f"ratio {ratio:.2f} > {1 + band:.2f} allowed (band +{band:.0%})\n"
        f"  golden: {shown_path} (torch {golden.get('torch')}, triton {golden.get('triton')}, "
        f"spread {float(golden.get('spread', 0.0)):.0%}, {golden.get('reps')} reps)\n"
        f"  now: spread {sample.spread:.0%}, {sample.reps} reps"
    )
    return PerfVerdict(ok=False, note="SLOWER: " + summary, failure=failure)


# --------------------------------------------------------------------------- one cell


def perf_applies(case: Any, cell: Any) -> bool:
    spec = case.checks.perf
    return spec is not None and spec.when.applies(cell.backend, cell.device, cell.dtype)


def timer_for_cell(case: Any, cell: Any, enabled: bool, workers: int) -> tuple[Optional[DeviceTimer], Optional[str]]:
    """(timer, None) when the cell is to be timed, (None, reason) when its perf check cannot run.

    ``workers``: pytest-xdist workers of the session (0 without xdist). Call only for cells
    where :func:`perf_applies`.
    """
    reason = why_not_timed(cell.device, enabled, workers, device_count(cell.device), case.checks.perf.timer)
    return (None, reason) if reason else (TIMERS[cell.device], None)


@dataclasses.dataclass(frozen=True)
class PerfGoldenStore:
    """Where a cell's perf golden lives and what the session may do to it."""

    golden_root: Path
    suite_key: str
    shown: Callable[[Path], str]  # a path as the failure message shows it
    write: bool  # --update-golden
    write_if_missing: bool  # --add-missing-goldens
    refresh_command: str  # the command line that rewrites this cell's golden


def check_perf(
    sample: PerfSample,
    timer: DeviceTimer,
    case: Any,
    cell: Any,
    store: PerfGoldenStore,
    baseline: Optional[PerfSample] = None,
) -> PerfVerdict:
    """The cell's perf checks: its perf golden (when ``checks.perf.golden``) and its ratio to the
    baseline timed in the same cell (``faster_than``; ``baseline`` is that sample)."""
    spec = case.checks.perf
    verdicts = []
    if spec.golden:
        verdicts.append(check_perf_golden(sample, timer, case, cell, store))
    if spec.faster_than is not None:
        if baseline is None:  # the run always times the baseline with the case; a harness bug otherwise
            raise ValueError(f"{case.display_path}: faster_than without a baseline sample")
        verdicts.append(judge_ratio(sample, baseline, spec.faster_than))
    return PerfVerdict(
        ok=all(v.ok for v in verdicts),
        note="; ".join(v.note for v in verdicts),
        failure="\n".join(v.failure for v in verdicts if not v.ok),
    )


def judge_ratio(sample: PerfSample, baseline: PerfSample, faster_than: Any) -> PerfVerdict:
    """The baseline's median over the case's must reach ``faster_than.by``; both times and the ratio reported."""
    ratio = baseline.median_us / sample.median_us if sample.median_us > 0 else math.inf
    summary = (
        f"{_fmt_us(sample.median_us)} measured, baseline {faster_than.baseline.text} {_fmt_us(baseline.median_us)}: "
        f"{ratio:.2f}x as fast (needs >= {faster_than.by:.2f}x)"
    )
    if ratio >= faster_than.by:
        return PerfVerdict(ok=True, note=summary)
    failure = (
        f"perf: not {faster_than.by:.2f}x as fast as the baseline: {_fmt_us(sample.median_us)} measured, "
        f"baseline {_fmt_us(baseline.median_us)}, ratio {ratio:.2f}\n"
        f"  baseline: {faster_than.baseline.text}, timed in this cell the same way\n"
        f"  spread {sample.spread:.0%} ({sample.reps} reps), baseline's {baseline.spread:.0%} ({baseline.reps} reps)"
    )
    return PerfVerdict(ok=False, note="NOT FASTER: " + summary, failure=failure)


def perf_setup(case: Any, cell: Any) -> dict[str, Any]:
    """:func:`setup_of` a cell: the shapes of its (last) call, its compile mode."""
    specs = case.calls[-1].inputs if case.calls else case.inputs
    mode = case.compile_mode if backend(cell.backend).takes_compile_mode else "default"
    return setup_of(case.checks.perf, {s.name: list(s.shape) for s in specs}, mode)


def check_perf_golden(sample: PerfSample, timer: DeviceTimer, case: Any, cell: Any, store: PerfGoldenStore) -> PerfVerdict:
    """The cell's perf golden: written when asked (``store.write``) or missing
    (``store.write_if_missing``), then judged. Missing or unusable goldens fail with one line
    and the refresh command; nothing is overwritten unless asked."""
    spec = case.checks.perf
    shown, refresh_command = store.shown, store.refresh_command
    kind = timer.device_kind()
    path = perf_golden_path(store.golden_root, store.suite_key, case.name, kind, getattr(cell, "variant", cell.backend), cell.dtype)
    setup = perf_setup(case, cell)
    if store.write or (store.write_if_missing and not path.exists()):
        try:
            previous: Optional[float] = read_perf_golden(path)["median_us"]
        except PerfGoldenError:
            previous = None
        record = perf_record(
            sample, suite=case.display_path, case=case.name, backend=getattr(cell, "variant", cell.backend), dtype=cell.dtype,
            device_kind=kind, setup=setup,
        )
        try:
            write_json(path, record)
        except GoldenWriteError as exc:
            return PerfVerdict(ok=False, note="perf golden not written", failure=f"perf golden not written: {shown(exc.path)}: {exc.problem}")
        was = f" (was {_fmt_us(previous)})" if previous is not None else ""
        return PerfVerdict(ok=True, note=f"perf golden written: {shown(path)}: {_fmt_us(sample.median_us)}{was}")
    try:
        golden = read_perf_golden(path)
    except PerfGoldenMissing:
        failure = (
            f"perf golden missing: {shown(path)} (measured now: {_fmt_us(sample.median_us)} on {kind})\n"
            f"  record it with:\n    {refresh_command}"
        )
        return PerfVerdict(ok=False, note="no perf golden", failure=failure)
    except PerfGoldenError as exc:
        failure = (
            f"perf golden unusable: {shown(exc.path)}: {exc.problem}\n"
            f"  nothing was overwritten; to regenerate it:\n    {refresh_command}"
        )
        return PerfVerdict(ok=False, note="perf golden unusable", failure=failure)
    verdict = judge(sample, golden, spec.band, shown(path), setup)
    if verdict.ok:
        return verdict
    return dataclasses.replace(
        verdict, failure=f"{verdict.failure}\n  if the change is intended, record the new time with:\n    {refresh_command}"
    )


# --------------------------------------------------------------------------- session


def declared_perf_keys(case: Any) -> set[tuple[str, str]]:
    """(backend, dtype) pairs whose perf goldens ``case`` owns (on any GPU kind)."""
    spec = case.checks.perf
    if spec is None:
        return set()
    if not spec.golden:
        return set()
    matrix = case.matrix
    return {
        (f"{backend}.{mode}" if mode else backend, dtype)
        for backend in matrix.backends for device in matrix.devices for dtype in matrix.dtypes for mode in (matrix.dynamic or (None,))
        if spec.when.applies(backend, device, dtype)
    }


def perf_section(notes: list[str]) -> list[str]:
    """The session's perf lines: each timed cell, then the cells not timed, counted per reason."""
    timed = sorted(n for n in notes if ": not timed: " not in n)
    reasons: dict[str, int] = {}
    for note in notes:
        if ": not timed: " in note:
            reason = note.split(": not timed: ", 1)[1]
            reasons[reason] = reasons.get(reason, 0) + 1
    lines = list(timed)
    lines += [f"{count} cell(s) not timed: {reason}" for reason, count in sorted(reasons.items())]
    return lines
