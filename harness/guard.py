"""What surrounds each cell's run so that one bad cell cannot take others down with it.

- **Deadline.** A case's ``timeout:`` (or ``--cell-timeout``) bounds its cell. At the deadline
  SIGALRM raises :class:`CellTimeout` in the cell, wherever Python code runs (a stuck
  compile, a program that loops), and the cell fails with the stack it was stuck in
  (an import in progress is let finish first: a half-run import breaks its module for
  every later cell of the process; Dynamo's caches are reset afterwards). A
  cell blocked inside C code that never returns to Python cannot be interrupted; after a
  grace period faulthandler prints every thread's stack and ends the process: pytest-xdist
  reports the cell as a crashed worker and goes on with the others on a new worker.
- **Crash record.** Under pytest-xdist each cell runs with faulthandler writing to a file of
  its own in a directory the controller made for the session: a fatal signal (SIGSEGV,
  SIGABRT, SIGFPE, SIGBUS, SIGILL) or the hard stop leaves there the stack the cell died
  in. When the worker dies, the controller reads it back (:func:`read_crash`) with the
  worker's exit status, and the cell is reported ``crashed`` (harness.diagnostics).
- **CUDA out of memory.** The cell fails with the error; the frames of its traceback are
  cleared (they hold the tensors), then garbage is collected and the caching allocator
  emptied, so the next cell starts with the memory this one had taken back.
- **Global torch state.** Default dtype and device, grad and anomaly mode, deterministic
  algorithms, matmul precision, TF32 flags, thread count and the RNG are saved before each
  cell and put back after it: ``torch.set_default_dtype(torch.float64)`` in one program
  must not change the next cell's results.
- **Exits.** ``os._exit()`` called by a program (in this process) raises
  :class:`ProgramExit` in the cell instead of ending the session with no output; a
  non-daemon thread a program leaves running is reported at the end of the session, which
  then exits without waiting for it (it would hang there forever).
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import gc
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any, Iterator, Optional

import pytest

from .items import CaseItem

#: Seconds after the deadline before a cell that never returned to Python ends its process
#: (at least the timeout itself; QUANTCHECK_HARD_STOP_GRACE overrides, for tests).
HARD_STOP_GRACE = 30.0


#: Seconds a cell may run when neither its case nor --cell-timeout says otherwise: no
#: legitimate cell takes this long, and without a bound one sleeping program hangs
#: ``python -m harness`` forever. ``--cell-timeout 0`` removes it.
DEFAULT_CELL_TIMEOUT = 600.0


class CellTimeout(Exception):
    """A cell ran past its deadline."""


class ProgramExit(Exception):
    """A program called ``os._exit()``, which would end the whole session without a word."""


class Deadline:
    """State of one armed deadline: whether it fired, and where the cell was at that moment."""

    def __init__(self, seconds: float, source: str) -> None:
        self.seconds, self.source = seconds, source
        self.fired = False
        self.stuck_in = ""
        self.started = time.monotonic()

    def exception(self) -> CellTimeout:
        where = f"\nstuck in (innermost last):\n{self.stuck_in}" if self.stuck_in else ""
        return CellTimeout(f"cell timed out after {self.seconds:g} s ({self.source}){where}")


def _real_stderr():
    """A stream with a file descriptor for faulthandler (pytest's capture replaces sys.stderr)."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            stream.fileno()
            return stream
        except (AttributeError, OSError, ValueError):
            continue
    return None


def _importing(frame) -> bool:
    """Whether ``frame`` or a caller is inside the import machinery."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _can_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


CRASH_DIR_INPUT = "quantcheck_crash_dir"  # the workerinput key: where workers write their crash records
CRASH_DIR_KEY = pytest.StashKey[Path]()  # the same directory, on the controller

#: What faulthandler writes for each fatal signal ("Fatal Python error: <text>").
FATAL_SIGNALS = {
    "Segmentation fault": "SIGSEGV", "Aborted": "SIGABRT", "Floating-point exception": "SIGFPE",
    "Floating point exception": "SIGFPE", "Bus error": "SIGBUS", "Illegal instruction": "SIGILL",
}


def crash_record_path(directory: Path, nodeid: str) -> Path:
    return directory / (re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid) + ".txt")


@contextlib.contextmanager
def crash_record(path: Optional[Path]) -> Iterator[Optional[IO[str]]]:
    """faulthandler writes into ``path`` while the body runs (None: left as it is); the file is
    removed when the body returns, so only a cell that killed its process leaves one."""
    if path is None:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    was_enabled = faulthandler.is_enabled()
    with open(path, "w", encoding="utf-8") as stream:
        faulthandler.enable(file=stream, all_threads=True)
        try:
            yield stream
        finally:
            restored = _real_stderr() if was_enabled else None
            if restored is not None:
                faulthandler.enable(file=restored, all_threads=True)
            else:
                faulthandler.disable()
    path.unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class Crash:
    """Why a worker died in a cell, as far as its crash record and exit status tell."""

    cause: str  # one line: "SIGSEGV (Segmentation fault)", "the hard stop after a timeout", ...
    signal: Optional[str]  # "SIGSEGV", ...; None when the process was not ended by a signal
    stack: str  # the last stack faulthandler wrote for the cell, or ""
    hard_stop: bool = False


_RUNNER_FRAME = re.compile(r'^\s+File "[^"]*/(_pytest|pluggy|xdist|execnet)/')


def trim_stack(text: str) -> str:
    """faulthandler's dump without what every cell shares: each thread's frames stop at the
    first pytest / pluggy / xdist / execnet frame, and the list of extension modules goes."""
    lines, skipping = [], False
    for line in text.splitlines():
        if line.startswith("Extension modules:"):
            continue
        if not line.startswith(" "):
            skipping = False
        elif skipping:
            continue
        elif _RUNNER_FRAME.match(line):
            lines.append("  ... (the test runner's frames)")
            skipping = True
            continue
        lines.append(line)
    return "\n".join(lines).strip()


def read_crash(record: Optional[Path], exit_code: Optional[int]) -> Crash:
    """The crash of the cell whose record is ``record``; ``exit_code`` as subprocess gives it (-N: signal N)."""
    text = ""
    if record is not None and record.is_file():
        text = trim_stack(record.read_text(encoding="utf-8", errors="replace"))
    by_signal = None
    if exit_code is not None and exit_code < 0:
        with contextlib.suppress(ValueError):
            by_signal = signal.Signals(-exit_code).name
    fatal = re.search(r"Fatal Python error: ([^\n]+)", text)
    if re.search(r"^Timeout \(\d+:\d\d:\d\d\)!", text, re.MULTILINE):
        return Crash("the harness ended it: past its timeout inside code that never returned to Python", None, text, hard_stop=True)
    if fatal:
        name = FATAL_SIGNALS.get(fatal.group(1).strip(), by_signal)
        return Crash(f"{name or 'fatal error'} ({fatal.group(1).strip()})", name, text)
    if by_signal == "SIGKILL":
        return Crash("SIGKILL (the kernel's out-of-memory killer, or kill -9)", by_signal, text)
    if by_signal is not None:
        return Crash(by_signal, by_signal, text)
    if exit_code is not None:
        return Crash(f"the process exited with status {exit_code} in the middle of the cell (os._exit, a C library's exit)", None, text)
    return Crash("its worker process died (cause unknown)", None, text)


def worker_exit_code(node: Any, wait_seconds: float = 5.0) -> Optional[int]:
    """The exit status of a dead pytest-xdist worker, where execnet lets us see it (popen gateways)."""
    popen = getattr(getattr(getattr(node, "gateway", None), "_io", None), "popen", None)
    if popen is None:
        return None
    try:
        return popen.wait(timeout=wait_seconds)
    except Exception:  # noqa: BLE001 - best effort: the report says "cause unknown" instead
        return None


@contextlib.contextmanager
def deadline(seconds: Optional[float], source: str = "timeout", dump: Optional[IO[str]] = None) -> Iterator[Optional[Deadline]]:
    """Bound the body to ``seconds`` (None or 0: no bound). Raises CellTimeout at the deadline.

    ``dump``: the stream the hard stop writes every thread's stack to (default: stderr)."""
    if not seconds:
        yield None
        return
    state = Deadline(seconds, source)
    grace = os.environ.get("QUANTCHECK_HARD_STOP_GRACE")
    hard_stop = seconds + (float(grace) if grace else max(HARD_STOP_GRACE, seconds))
    stream = dump if dump is not None else _real_stderr()
    if stream is not None:
        faulthandler.dump_traceback_later(hard_stop, exit=True, file=stream)
    previous = None
    if _can_alarm():

        def on_alarm(signum, frame):
            if _importing(frame):  # a half-run import would break the module for every later cell
                signal.setitimer(signal.ITIMER_REAL, 0.05)
                return
            state.fired = True
            state.stuck_in = "".join(traceback.format_stack(frame, limit=12))
            raise state.exception()

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield state
    except CellTimeout:
        raise
    except BaseException as exc:
        # Code between the alarm and here may have wrapped our exception in its own
        # (Dynamo's BackendCompilerFailed, say): report the timeout, not the wrapper.
        if state.fired:
            raise state.exception() from exc
        raise
    finally:
        if previous is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        if stream is not None:
            faulthandler.cancel_dump_traceback_later()


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or an allocator RuntimeError saying the same."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_after_out_of_memory(exc: BaseException) -> None:
    """Drop what the failed cell still holds: its traceback's locals, then the allocator cache."""
    traceback.clear_frames(exc.__traceback__)
    gc.collect()
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def guarded_cell(timeout: Optional[float], source: str, record: Optional[Path] = None) -> Iterator[None]:
    """The crash record, the deadline and the out-of-memory cleanup around one cell."""
    try:
        with crash_record(record) as stream, deadline(timeout, source, stream):
            yield
    except BaseException as exc:
        if is_out_of_memory(exc):
            release_after_out_of_memory(exc)
        elif isinstance(exc, CellTimeout):
            _forget_compiled_state()
        raise


def _forget_compiled_state() -> None:
    """After an interrupted cell: drop Dynamo's caches, which the interruption may have left half-built."""
    import torch

    try:
        torch._dynamo.reset()
    except Exception:  # best effort: the cell's own failure is what gets reported
        pass


@contextlib.contextmanager
def preserved_torch_state() -> Iterator[None]:
    """Put back the process-wide torch settings a program may change (see the module docstring)."""
    import torch

    backends = torch.backends
    flags = [
        (backends.cudnn, "allow_tf32"), (backends.cudnn, "benchmark"), (backends.cudnn, "deterministic"),
        (backends.cuda.matmul, "allow_tf32"), (backends.cuda.matmul, "allow_fp16_reduced_precision_reduction"),
        (backends.cuda.matmul, "allow_bf16_reduced_precision_reduction"),
    ]
    saved_flags = [(owner, name, getattr(owner, name)) for owner, name in flags if hasattr(owner, name)]
    dtype, device = torch.get_default_dtype(), torch.get_default_device()
    grad, anomaly = torch.is_grad_enabled(), torch.is_anomaly_enabled()
    deterministic, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch._C._get_deterministic_fill_uninitialized_memory()
    precision, threads = torch.get_float32_matmul_precision(), torch.get_num_threads()
    rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_default_device(None if device == torch.device("cpu") else device)
        torch.set_grad_enabled(grad)
        torch.set_anomaly_enabled(anomaly)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch._C._set_deterministic_fill_uninitialized_memory(fill)
        torch.set_float32_matmul_precision(precision)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.random.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        for owner, name, value in saved_flags:
            setattr(owner, name, value)


@contextlib.contextmanager
def os_exit_raises() -> Iterator[None]:
    """``os._exit`` in this process raises ProgramExit (forked children still exit)."""
    real_exit, pid = os._exit, os.getpid()

    def refuse(code: int = 0) -> None:
        if os.getpid() != pid:
            real_exit(code)
        raise ProgramExit(f"the program called os._exit({code}), which would end the whole session silently")

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = real_exit


def _program_thread(thread: threading.Thread) -> bool:
    """A thread running code of the project (not of Python's library or torch): its target or run()."""
    code = getattr(thread, "_target", None) or type(thread).run
    module = getattr(code, "__module__", None) or ""
    return not module.split(".")[0] in ("threading", "concurrent", "torch", "queue", "multiprocessing", "asyncio", "_pytest", "pytest", "execnet", "xdist")


def leaked_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Non-daemon threads a program started that still run (interpreter exit would wait for them)."""
    return [
        t for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.daemon and _program_thread(t)
    ]


# --------------------------------------------------------------------------- pytest glue


def add_options(group) -> None:
    group.addoption(
        "--cell-timeout", type=float, default=None, metavar="SECONDS",
        help=f"fail a cell that runs longer than this (a case's own 'timeout:' wins); default {DEFAULT_CELL_TIMEOUT:g}, 0: no limit",
    )


class CellGuard:
    """Registered by the plugin: wraps each YAML cell's call in :func:`guarded_cell`.

    On the xdist controller it makes the session's crash-record directory and hands it to
    each worker; a worker writes its cells' records there."""

    def __init__(self, config) -> None:
        self.config = config
        self.given_timeout = config.getoption("cell_timeout", None)
        self.leaked: list[tuple[threading.Thread, str]] = []  # (thread, the cell that started it)
        self.exitstatus = 0
        workerinput = getattr(config, "workerinput", None)
        self.crash_dir: Optional[Path] = None
        self._owns_crash_dir = False
        if workerinput is not None:
            given = workerinput.get(CRASH_DIR_INPUT)
            self.crash_dir = Path(given) if given else None

    def timeout_for(self, item) -> tuple[Optional[float], str]:
        own = getattr(item.case, "timeout", None)
        if own is not None:
            return own, f"the case's timeout: {own:g}"
        if self.given_timeout is not None:
            return self.given_timeout or None, f"--cell-timeout {self.given_timeout:g}" if self.given_timeout else ""
        return DEFAULT_CELL_TIMEOUT, f"the default cell timeout, {DEFAULT_CELL_TIMEOUT:g}; --cell-timeout or the case's timeout: changes it"

    def record_for(self, nodeid: str) -> Optional[Path]:
        return crash_record_path(self.crash_dir, nodeid) if self.crash_dir is not None else None

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        """On the xdist controller, before each worker starts."""
        if self.crash_dir is None:
            self.crash_dir = Path(tempfile.mkdtemp(prefix="quantcheck-crashes-"))
            self._owns_crash_dir = True
            node.config.stash[CRASH_DIR_KEY] = self.crash_dir
        node.workerinput[CRASH_DIR_INPUT] = str(self.crash_dir)

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        self.exitstatus = int(exitstatus)

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config) -> None:
        if self._owns_crash_dir and self.crash_dir is not None:
            shutil.rmtree(self.crash_dir, ignore_errors=True)
        self._exit_past_leaked_threads(config)

    def _exit_past_leaked_threads(self, config) -> None:
        """Interpreter exit would wait forever for a thread a program left running: say so, then go."""
        if config is not self.config or hasattr(config, "workerinput"):
            return
        alive = [(t, nodeid) for t, nodeid in self.leaked if t.is_alive()]
        if not alive:
            return
        by_cell: dict[str, list[str]] = {}
        for thread, nodeid in alive:
            by_cell.setdefault(nodeid, []).append(repr(thread.name))
        named = "; ".join(f"{', '.join(names)} started by {nodeid}" for nodeid, names in by_cell.items())
        print(f"quantcheck: exiting without waiting for {len(alive)} thread(s) a program left running: {named}", file=sys.__stderr__, flush=True)
        sys.stdout.flush()
        os._exit(self.exitstatus)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        if not isinstance(item, CaseItem):
            return (yield)
        timeout, source = self.timeout_for(item)
        threads_before = set(threading.enumerate())
        try:
            with preserved_torch_state(), os_exit_raises(), guarded_cell(timeout, source, self.record_for(item.nodeid)):
                return (yield)
        finally:
            self.leaked += [(t, item.nodeid) for t in leaked_threads(threads_before)]
