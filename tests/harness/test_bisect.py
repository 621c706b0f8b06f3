"""--bisect: a planted miscompile is named, by PyTorch's CompilerBisector and by our own ablation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from harness.bisect import bisect_cell
from harness.case import load_suite
from harness.matrix import Narrowing, expand_matrix
from tests.harness.conftest import PLANTED_MISCOMPILE

pytest_plugins = ["pytester"]


def test_bisect_names_the_stage_and_the_planted_pass(project):
    project.set_programs(PLANTED_MISCOMPILE)
    project.suite("""
        cases:
          planted:
            program: progs:sincos
            inputs: {x: {shape: [8, 6]}}
            matrix: {backends: [inductor], devices: [cpu]}
            checks: {golden: false}
            passes:
              - {hook: post_grad_custom_pre_pass, factory: "progs:harmless_pass"}
              - {hook: post_grad_custom_pre_pass, factory: "progs:sin_to_cos_pass"}
    """)
    result = project.run("--bisect", f"--repro-dir={project.root / 'repro'}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "bisect (--bisect): reran the cell; good = runs and compiled matches eager",
        "  first failing stage (CompilerBisector): backend inductor (eager, aot_eager, *good); subsystem post_grad_passes*(post_grad_custom_pre_pass)",
        "  our passes and lowerings, disabled one at a time (pipeline order):",
        "    no     pass post_grad_custom_pre_pass: progs:harmless_pass (suites/s.yaml:8)",
        "    FIXES  pass post_grad_custom_pre_pass: progs:sin_to_cos_pass (suites/s.yaml:9)",
        "  diverges at: pass post_grad_custom_pre_pass: progs:sin_to_cos_pass (suites/s.yaml:9)",
        "repro script:*",
    ])


# A lowering of ours that miscompiles: the op doubles in eager, its lowering triples.
_LIB = torch.library.Library("quantcheck_bisect_test", "DEF")
_LIB.define("double(Tensor x) -> Tensor")
_LIB.impl("double", lambda x: x * 2, "CompositeExplicitAutograd")
_LIB.impl("double", lambda x: torch.empty_like(x), "Meta")


def _register_bad_lowering() -> None:
    from torch._inductor.lowering import lowerings, register_lowering

    op = torch.ops.quantcheck_bisect_test.double.default
    if op in lowerings:
        return

    @register_lowering(op)
    def triple(x):
        return lowerings[torch.ops.aten.mul.Tensor](x, 3)


def test_bisect_names_a_miscompiling_lowering_of_ours(tmp_path):
    _register_bad_lowering()
    (tmp_path / "s.yaml").write_text(textwrap.dedent("""
        cases:
          lowered:
            program: tests.harness.test_bisect:uses_double
            inputs: {x: {shape: [5]}}
            matrix: {backends: [aot_eager, inductor], devices: [cpu]}
            checks: {golden: false}
    """))
    case = load_suite(tmp_path / "s.yaml", "s.yaml").cases[0]
    aot_eager, inductor = expand_matrix(case, Narrowing(devices=("cpu",)))
    report = bisect_cell(case, inductor, use_compiler_bisector=False)
    assert report.note == ""
    names = [c.name for c in report.culprits]
    assert names == ["lowering of quantcheck_bisect_test.double.default (tests.harness.test_bisect:_register_bad_lowering.<locals>.triple)"]
    assert "diverges at: lowering of quantcheck_bisect_test.double.default" in report.render()
    assert "compiled matches eager on a rerun" in bisect_cell(case, aot_eager, use_compiler_bisector=False).note


def uses_double(x: torch.Tensor) -> torch.Tensor:
    return torch.ops.quantcheck_bisect_test.double(x) + 1
