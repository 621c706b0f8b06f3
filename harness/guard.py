"""What surrounds each cell's run so that one bad cell cannot take others down with it.

- **Deadline.** A case's ``timeout:`` (or ``--cell-timeout``) bounds its cell. At the deadline
  SIGALRM raises :class:`CellTimeout` in the cell, wherever Python code runs (a stuck
  compile, a program that loops), and the cell fails with the stack it was stuck in
  (an import in progress is let finish first: a half-run import breaks its module for
  every later cell of the process; Dynamo's caches are reset afterwards). A
  cell blocked inside C code that never returns to Python cannot be interrupted; after a
  grace period faulthandler prints every thread's stack and ends the process: pytest-xdist
  reports the cell as a crashed worker and goes on with the others on a new worker.
- **CUDA out of memory.** The cell fails with the error; the frames of its traceback are
  cleared (they hold the tensors), then garbage is collected and the caching allocator
  emptied, so the next cell starts with the memory this one had taken back.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Iterator, Optional

import pytest

#: Seconds after the deadline before a cell that never returned to Python ends its process
#: (at least the timeout itself; QUANTCHECK_HARD_STOP_GRACE overrides, for tests).
HARD_STOP_GRACE = 30.0


class CellTimeout(Exception):
    """A cell ran past its deadline."""


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


def hard_stop_dump(nodeid: str) -> Path:
    """Where the stacks of a cell stopped by the hard stop are written (read back by the xdist controller)."""
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)
    return Path(tempfile.gettempdir()) / f"quantcheck-{uid}" / "hard-stops" / f"{safe}.txt"


@contextlib.contextmanager
def deadline(seconds: Optional[float], source: str = "timeout", dump: Optional[Path] = None) -> Iterator[Optional[Deadline]]:
    """Bound the body to ``seconds`` (None or 0: no bound). Raises CellTimeout at the deadline.

    ``dump``: the file the hard stop writes every thread's stack to (default: stderr)."""
    if not seconds:
        yield None
        return
    state = Deadline(seconds, source)
    grace = os.environ.get("QUANTCHECK_HARD_STOP_GRACE")
    hard_stop = seconds + (float(grace) if grace else max(HARD_STOP_GRACE, seconds))
    stream = None
    if dump is not None:
        dump.parent.mkdir(parents=True, exist_ok=True)
        stream = open(dump, "w", encoding="utf-8")
    else:
        stream = _real_stderr()
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
        if dump is not None:
            stream.close()
            dump.unlink(missing_ok=True)


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
def guarded_cell(timeout: Optional[float], source: str, dump: Optional[Path] = None) -> Iterator[None]:
    """The deadline and the out-of-memory cleanup around one cell."""
    try:
        with deadline(timeout, source, dump):
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


# --------------------------------------------------------------------------- pytest glue


def add_options(group) -> None:
    group.addoption(
        "--cell-timeout", type=float, default=None, metavar="SECONDS",
        help="fail a cell that runs longer than this (a case's own 'timeout:' wins); default: no limit",
    )


class CellGuard:
    """Registered by the plugin: wraps each YAML cell's call in :func:`guarded_cell`."""

    def __init__(self, config) -> None:
        self.default_timeout = config.getoption("cell_timeout", None)

    def timeout_for(self, item) -> tuple[Optional[float], str]:
        own = getattr(item.case, "timeout", None)
        if own is not None:
            return own, f"the case's timeout: {own:g}"
        return self.default_timeout, f"--cell-timeout {self.default_timeout:g}" if self.default_timeout else ""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        from .items import CaseItem

        if not isinstance(item, CaseItem):
            return (yield)
        timeout, source = self.timeout_for(item)
        with guarded_cell(timeout, source, hard_stop_dump(item.nodeid)):
            return (yield)

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report, sched) -> None:
        """On the xdist controller: a worker died in a cell; if our hard stop ended it, say so and show where."""
        dump = hard_stop_dump(crashitem)
        if not dump.exists():
            return
        stacks = dump.read_text(encoding="utf-8", errors="replace").strip()
        dump.unlink(missing_ok=True)
        report.longrepr = (
            f"{report.longrepr}\n\nthe cell ran past its timeout inside code that never returned to Python "
            f"(C code, a deadlock, signals blocked), so the harness ended its worker; every thread's stack then:\n{stacks}"
        )
