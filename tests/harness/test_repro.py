"""Repro scripts: a failing cell's script reproduces it without the harness, with the harness's own code."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from harness import repro_template
from harness.case import parse_suite
from harness.core import programs
from harness.core.inputs import InputSpec, build_input
from harness.matrix import expand_matrix
from harness.repro import SCRIPT_MODULES, _input_builder, build_spec, render_script
from tests.harness.conftest import PLANTED_MISCOMPILE

pytest_plugins = ["pytester"]


PLANTED = """
cases:
  planted:
    program: progs:sincos
    inputs:
      x: {shape: [6, 5], distribution: uniform, low: -2, high: 2}
    matrix: {backends: [inductor], devices: [cpu]}
    checks: {golden: false}
    passes:
      - {hook: post_grad_custom_pre_pass, factory: "progs:sin_to_cos_pass"}
"""


def _run_without_harness(script: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run the script in a fresh interpreter in which ``import harness`` fails."""
    runner = (
        "import runpy, sys; sys.modules['harness'] = None; "
        f"runpy.run_path({str(script)!r}, run_name='__main__')"
    )
    return subprocess.run([sys.executable, "-W", "ignore", "-c", runner], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_failing_cell_writes_a_script_that_reproduces_it_without_the_harness(project, tmp_path):
    """Inductor with the case's (miscompiling) pass: the script alone shows the same divergence."""
    project.set_programs(PLANTED_MISCOMPILE)
    project.suite(PLANTED)
    repro_dir = tmp_path / "repros"
    result = project.run(f"--repro-dir={repro_dir}")
    result.assert_outcomes(failed=1)
    script = repro_dir / "s.planted.inductor-cpu-float32.py"
    result.stdout.fnmatch_lines([f"repro script:*python {script}"])
    assert not re.search(r"^\s*(import|from)\s+harness\b", script.read_text(), re.MULTILINE)

    failing = _run_without_harness(script, tmp_path)
    assert failing.returncode == 1, failing.stderr[-2000:]
    assert "FAIL suites/s.yaml::planted[inductor-cpu-float32]" in failing.stdout
    assert "compiled (inductor) vs eager: output: 30 / 30 elements beyond atol=1e-05" in failing.stdout


def test_script_passes_once_the_program_is_fixed_and_a_passing_cell_removes_it(project):
    """Golden and counter checks reproduce too; the default directory is .quantcheck/repro/."""
    project.suite("""
        cases:
          scaled:
            program: progs:scaled
            inputs: {x: {shape: [4, 3], seed: 5}}
            matrix: {backends: [aot_eager], devices: [cpu]}
            checks:
              counters: [{key: aot_autograd.total, at_least: 1}]
    """)
    project.run("--update-golden").assert_outcomes(passed=1)
    original = (project.root / "progs.py").read_text()
    project.set_programs(original.replace("SCALE = 2.0", "SCALE = 2.25"))  # the regression (a new size: no stale .pyc)
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["repro script:*python .quantcheck/repro/s.scaled.aot_eager-cpu-float32.py"])
    script = project.root / ".quantcheck" / "repro" / "s.scaled.aot_eager-cpu-float32.py"

    failing = _run_without_harness(script, project.root.parent)
    assert failing.returncode == 1
    assert "eager vs golden" in failing.stdout and "counter" not in failing.stdout

    project.set_programs(original)  # the fix
    fixed = _run_without_harness(script, project.root.parent)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr[-2000:]
    assert "OK suites/s.yaml::scaled[aot_eager-cpu-float32]: every check passes" in fixed.stdout

    project.run().assert_outcomes(passed=1)
    assert not script.exists(), "a passing cell removes its stale script"


def test_a_script_runs_from_a_copy_of_the_project(project, tmp_path):
    """Paths relative to the script: a checkout copied (or moved) elsewhere runs its scripts,
    the program and the golden read from the copy, whatever the current directory."""
    import shutil

    project.suite("""
        cases:
          scaled:
            program: progs:scaled
            inputs: {x: {shape: [4, 3], seed: 5}}
            matrix: {backends: [aot_eager], devices: [cpu]}
    """)
    project.run("--update-golden").assert_outcomes(passed=1)
    project.set_programs((project.root / "progs.py").read_text().replace("SCALE = 2.0", "SCALE = 2.25"))
    project.run().assert_outcomes(failed=1)
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(project.root, copy)
    shutil.rmtree(project.root / "golden")
    (project.root / "progs.py").unlink()  # the original gone: only the copy's files can serve

    script = copy / ".quantcheck" / "repro" / "s.scaled.aot_eager-cpu-float32.py"
    assert str(project.root) not in script.read_text()
    failing = _run_without_harness(script, tmp_path)
    assert failing.returncode == 1, failing.stdout + failing.stderr[-2000:]
    assert "eager vs golden golden/s/scaled/cpu-float32.safetensors" in failing.stdout
    assert "golden missing" not in failing.stdout


SPECS = [
    InputSpec(name="a", shape=(3, 4)),
    InputSpec(name="b", shape=(5,), distribution="uniform", low=-0.5, high=0.5, seed=7),
    InputSpec(name="c", shape=(2, 3), dtype="int64", distribution="randint", low=0, high=50),
    InputSpec(name="d", shape=(2, 2), distribution="fill", value=3.5),
    InputSpec(name="e", shape=(2, 3), distribution="arange", dtype="bfloat16"),
    InputSpec(name="f", shape=(4, 4), strides=(6, 1)),
    InputSpec(name="g", shape=(3, 5), pad_last_dim=3, requires_grad=True),
    InputSpec(name="h", shape=(0, 3)),
    InputSpec(name="w", shape=(16, 32), kind="suites.programs.woq:int8_weight"),
]


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_template_rebuilds_inputs_exactly_as_the_harness(spec, dtype):
    """An input's spec, as the script's SPEC holds it, rebuilds the harness's input: same values, strides, storage."""
    import dataclasses

    expected = build_input(spec, device="cpu", matrix_dtype=dtype, seed=11)
    item = {"builder": _input_builder(spec), "seed": 11, "spec": dataclasses.asdict(spec)}
    (actual,) = repro_template.build_inputs({"inputs": [item]}, "cpu", dtype)
    for e, a in zip(expected if isinstance(expected, tuple) else (expected,), actual if isinstance(actual, tuple) else (actual,)):
        assert a.dtype == e.dtype and a.shape == e.shape and a.stride() == e.stride() and a.requires_grad == e.requires_grad
        assert a.untyped_storage().nbytes() == e.untyped_storage().nbytes()
        torch.testing.assert_close(a, e, rtol=0, atol=0)


BUILTIN_CASES = """
defaults:
  matrix: {backends: [aot_eager], devices: [cpu]}
  checks: {golden: false}
cases:
  matmul: {program: matmul, inputs: {a: {shape: [3, 4]}, b: {shape: [4, 2]}}}
  linear: {program: linear, inputs: {x: {shape: [3, 4]}, weight: {shape: [5, 4]}, bias: {shape: [5]}}}
  pointwise_chain:
    program: pointwise_chain
    params: {ops: [sin, {mul: 2.0}, gelu, {pow: 2}]}
    inputs: {x: {shape: [3, 4]}, y: {shape: [3, 4]}}
  constant_pad_nd_mm:
    program: constant_pad_nd_mm
    params: {pad: [0, 2, 0, 0], value: 1.5, add_before: 0.25}
    inputs: {a: {shape: [3, 4]}, b: {shape: [6, 2]}}
  reduce: {program: reduce, params: {op: amax, dim: 0}, inputs: {x: {shape: [3, 4]}}}
"""


def test_a_script_of_each_builtin_runs_without_the_harness(tmp_path):
    """Every built-in of the harness, as a script builds it (the core's builders): each cell's script passes."""
    suite = parse_suite(textwrap.dedent(BUILTIN_CASES), Path("suites/b.yaml"), "suites/b.yaml")
    assert sorted(case.name for case in suite.cases) == sorted(programs.CORE_BUILTINS), "a case per built-in"
    scripts = []
    for case in suite.cases:
        (cell,) = expand_matrix(case)
        spec = build_spec(case, cell, None, f"suites/b.yaml::{case.name}[{cell.id}]")
        assert spec["program"]["kind"] == "builtin"
        scripts.append(tmp_path / f"{case.name}.py")
        scripts[-1].write_text(render_script(spec, tmp_path, "(nothing: a test)", None), encoding="utf-8")
    runner = (
        "import runpy, sys; sys.modules['harness'] = None\n"
        f"for script in {[str(s) for s in scripts]!r}:\n"
        "    try:\n"
        "        runpy.run_path(script, run_name='__main__')\n"
        "    except SystemExit as exit:\n"
        "        print('exit', exit.code)\n"
    )
    ran = subprocess.run([sys.executable, "-W", "ignore", "-c", runner], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    for case in suite.cases:
        assert f"OK suites/b.yaml::{case.name}[aot_eager-cpu-float32]: every check passes" in ran.stdout, ran.stdout
    assert ran.stdout.count("exit 0") == len(suite.cases), ran.stdout


def _top_level_names(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_the_pasted_modules_can_share_one_script():
    """A script holds the core's modules' source, then the template's: each module stands after
    those it imports (the imports themselves are dropped), and no two define the same name."""
    pasted = [*SCRIPT_MODULES, repro_template]
    for position, module in enumerate(pasted):
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        ours = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
        before = {m.__name__.rpartition(".")[2] for m in pasted[:position]}
        assert {name.rpartition(".")[2] for name in ours} <= before, f"{module.__name__} imports what stands after it"
    for i, first in enumerate(pasted):
        for second in pasted[i + 1:]:
            assert not _top_level_names(first) & _top_level_names(second), (first.__name__, second.__name__)


def test_template_compare_follows_the_tolerance_model():
    expected = {"out": torch.tensor([1.0, 2.0, float("nan"), float("inf")]), "i": torch.tensor([1, 2])}
    close = {"out": torch.tensor([1.0, 2.0 + 1e-7, float("nan"), float("inf")]), "i": torch.tensor([1, 2])}
    tolerance = {"atol": 1e-5, "rtol": 1.3e-6, "min_sqnr_db": None, "quant_step": None, "max_step_error": None, "float64_factor": None}
    assert repro_template.compare("x", expected, close, tolerance) == []
    far = {"out": torch.tensor([1.0, 2.5, 0.0, float("inf")]), "i": torch.tensor([1, 3])}
    problems = repro_template.compare("x", expected, far, dict(tolerance, quant_step=0.1, max_step_error=2))
    assert any(p.startswith("x: out: 2 / 4 elements beyond") for p in problems)
    assert any("quantization steps > 2" in p for p in problems)
    assert any(p.startswith("x: i: 1 / 2 elements beyond atol=0, rtol=0") for p in problems)
