"""tools/flakes.py: repeated -n 2 runs of a small YAML suite are stable; a planted flake is caught."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness.conftest import project, warm_torch  # noqa: F401  (fixtures: a pytester project)
from tools.flakes import RunRecord, analyse, run_repeatedly

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parents[2]

SUITE = """
defaults:
  matrix: {backends: [eager, aot_eager], devices: [cpu], dtypes: [float32, bfloat16]}
  tolerances: {bfloat16: {atol: 1e-2, rtol: 1e-2}}
cases:
  first: {program: progs:scaled, inputs: {x: {shape: [4, 3]}}}
  second: {program: progs:scaled, inputs: {x: {shape: [5], seed: 3}}}
"""

FLAKY_TEST = '''
from pathlib import Path

COUNTER = Path(__file__).with_name("runs.txt")


def test_fails_every_other_run():
    runs = int(COUNTER.read_text()) if COUNTER.exists() else 0
    COUNTER.write_text(str(runs + 1))
    assert runs % 2 == 0
'''


def test_repeated_runs_find_the_planted_flake_and_nothing_else(project, monkeypatch):
    pytest.importorskip("xdist")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    project.suite(SUITE)
    project.run("--update-golden").assert_outcomes(passed=8)
    (project.root / "test_flaky.py").write_text(FLAKY_TEST)
    report = run_repeatedly(["suites", "test_flaky.py"], repeat=3, workers=2, cwd=project.root)
    assert report.tests == 9
    assert list(report.flaky) == ["test_flaky::test_fails_every_other_run"]
    assert report.flaky["test_flaky::test_fails_every_other_run"] == ["passed", "failed", "passed"]
    assert report.always_failing == []
    assert all(len(run.outcomes) == 9 for run in report.runs)


def test_a_test_missing_from_one_run_is_a_flake():
    runs = [RunRecord(0, 1.0, 0, {"a": "passed", "b": "failed"}), RunRecord(1, 1.0, 1, {"b": "failed"})]
    report = analyse(runs)
    assert report.flaky == {"a": ["passed", "missing"]}
    assert report.always_failing == ["b"]
    assert report.lines()[0] == "2 runs of 2 tests: 1 flaky, 1 failing every run"
