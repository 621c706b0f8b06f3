"""harness/guard.py: a default deadline, torch's global state put back, exits and leaked threads."""

from __future__ import annotations

import os
import time
import types
from pathlib import Path

import pytest

from harness import guard

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
QUIET = ("-p", "no:cacheprovider", "-W", "ignore::UserWarning", "-W", "ignore::DeprecationWarning")

MISBEHAVING = '''
import os
import threading
import time

import torch


def sleeps(x):
    time.sleep(3600)
    return x


def sets_float64(x):
    torch.set_default_dtype(torch.float64)
    torch.set_grad_enabled(False)
    torch.manual_seed(1234)
    return x * 2


def needs_float32(x):
    assert torch.get_default_dtype() is torch.float32, torch.get_default_dtype()
    assert torch.is_grad_enabled()
    return x + torch.ones(x.shape)


def exits(x):
    os._exit(0)


def leaks_a_thread(x):
    threading.Thread(target=time.sleep, args=(3600,), name="sleeper").start()
    return x + 1
'''

ONE_CELL = "\n    matrix: {backends: [eager], devices: [cpu]}\n    checks: {golden: false, graphs: null, graph_breaks: null}\n"


def suite_of(*cases: tuple[str, str]) -> str:
    return "cases:\n" + "".join(f"  {name}:\n    program: progs:{fn}\n    inputs: {{x: {{shape: [3]}}}}{ONE_CELL}" for name, fn in cases)


def fake_config(cell_timeout):
    return types.SimpleNamespace(getoption=lambda name, default=None: cell_timeout)


def test_a_cell_has_a_deadline_by_default():
    case = types.SimpleNamespace(case=types.SimpleNamespace(timeout=None))
    timeout, source = guard.CellGuard(fake_config(None)).timeout_for(case)
    assert timeout == guard.DEFAULT_CELL_TIMEOUT == 600
    assert source.startswith("the default cell timeout, 600")
    assert guard.CellGuard(fake_config(0.0)).timeout_for(case) == (None, "")
    assert guard.CellGuard(fake_config(5.0)).timeout_for(case) == (5.0, "--cell-timeout 5")
    own = types.SimpleNamespace(case=types.SimpleNamespace(timeout=2.0))
    assert guard.CellGuard(fake_config(5.0)).timeout_for(own) == (2.0, "the case's timeout: 2")


def test_a_sleeping_program_fails_at_the_default_deadline(project, monkeypatch):
    monkeypatch.setattr(guard, "DEFAULT_CELL_TIMEOUT", 1.0)
    project.set_programs(MISBEHAVING)
    project.suite(suite_of(("sleepy", "sleeps")))
    start = time.monotonic()
    result = project.run()
    assert time.monotonic() - start < 60
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*raised CellTimeout: cell timed out after 1 s (the default cell timeout, 1; --cell-timeout or the case's timeout: changes it)"])


def test_torch_global_state_is_put_back_after_each_cell(project):
    import torch

    project.set_programs(MISBEHAVING)
    project.suite(suite_of(("changes", "sets_float64"), ("reads", "needs_float32")))
    seed_state = torch.random.get_rng_state()
    result = project.run("-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert torch.get_default_dtype() is torch.float32 and torch.is_grad_enabled()
    assert torch.equal(torch.random.get_rng_state(), seed_state)


def subprocess_run(project, monkeypatch, *args):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    return project.pytester.runpytest_subprocess(*QUIET, "-n", "0", *args, timeout=120)


def test_os_exit_in_a_program_fails_its_cell_and_the_session_goes_on(project, monkeypatch):
    project.set_programs(MISBEHAVING)
    project.suite(suite_of(("leaves", "exits"), ("after", "needs_float32")))
    result = subprocess_run(project, monkeypatch)
    result.assert_outcomes(failed=1, passed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*raised ProgramExit: the program called os._exit(0), which would end the whole session silently"])


def test_a_thread_left_running_does_not_hang_the_session(project, monkeypatch):
    project.set_programs(MISBEHAVING)
    project.suite(suite_of(("leaks", "leaks_a_thread")))
    start = time.monotonic()
    result = subprocess_run(project, monkeypatch)  # before: hung until the thread ended (an hour)
    assert time.monotonic() - start < 120
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    assert (
        "quantcheck: exiting without waiting for 2 thread(s) a program left running: "
        "'sleeper', 'sleeper' started by suites/s.yaml::leaks[eager-cpu-float32]"  # the eager run's and the compiled run's
    ) in result.stderr.str()
