"""The ``dynamic:`` matrix axis and ``mark_dynamic:``: cells compiled static, dynamic=True and
automatic, and named dims marked dynamic (harness/case, matrix, run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.case import CaseFormatError, parse_suite
from harness.matrix import MatrixCell, expand_matrix
from harness.run import run_cell

pytest_plugins = ["pytester"]

PROGRAMS = "tests.harness.test_calls"


def load(body: str):
    return parse_suite("cases:\n  c:\n" + body, Path("s.yaml"), "s.yaml").cases[0]


SEQUENCE = (
    f"    program: '{PROGRAMS}:doubled_sin'\n"
    "    inputs:\n"
    "      x: {shape: [2, 4]}\n"
    "    calls:\n"
    "      - {}\n"
    "      - {x: {shape: [8, 4]}}\n"
    "      - {x: {shape: [16, 4]}}\n"
)


def test_the_axis_multiplies_cells_and_names_them():
    case = load(SEQUENCE + "    matrix: {backends: [inductor], devices: [cpu], dynamic: [false, true, automatic]}\n")
    assert [cell.id for cell in expand_matrix(case)] == [
        "inductor-cpu-float32-static", "inductor-cpu-float32-dynamic", "inductor-cpu-float32-automatic",
    ]
    assert expand_matrix(case)[1].variant == "inductor.dynamic"
    plain = load(SEQUENCE + "    matrix: {backends: [inductor], devices: [cpu]}\n")
    assert [cell.id for cell in expand_matrix(plain)] == ["inductor-cpu-float32"]  # no axis: ids as before


@pytest.mark.parametrize(
    "extra, message",
    [
        ("    matrix: {dynamic: [maybe]}\n", "cases.c.matrix.dynamic[0]: not a dynamic mode (got 'maybe'; allowed false, true, automatic)"),
        ("    matrix: {dynamic: [true, dynamic]}\n", "cases.c.matrix.dynamic[1]: named twice"),
        ("    mark_dynamic: {y: [0]}\n", "cases.c.mark_dynamic.y: not an input of this case"),
        ("    mark_dynamic: {x: [2]}\n", "cases.c.mark_dynamic.x[0]: input 'x' has 2 dims (got 2)"),
    ],
)
def test_bad_dynamic_settings_are_one_line(extra, message):
    with pytest.raises(CaseFormatError) as info:
        load(SEQUENCE + extra)
    assert message in str(info.value)


@pytest.mark.parametrize("mode, recompiles, first_graph_symbolic", [("static", 2, False), ("dynamic", 0, True), ("automatic", 1, False)])
def test_each_mode_compiles_as_torch_compile_would(mode, recompiles, first_graph_symbolic):
    case = load(SEQUENCE + "    matrix: {dynamic: [false, true, automatic]}\n")
    run = run_cell(case, MatrixCell("inductor", "cpu", "float32", dynamic=mode))
    assert run.recompiles == recompiles
    assert ("ks0" in run.graph_codes[0][1]) == first_graph_symbolic
    for name in run.eager:
        assert (run.compiled[name] - run.eager[name]).abs().max() < 1e-5


def test_mark_dynamic_makes_the_first_compile_symbolic():
    case = load(SEQUENCE + "    mark_dynamic: {x: [0]}\n    checks: {recompiles: 0}\n")
    run = run_cell(case, MatrixCell("inductor", "cpu", "float32"))
    assert run.recompiles == 0 and "ks0" in run.graph_codes[0][1]


def test_recompile_bounds_per_mode_through_the_plugin(project):
    project.set_programs("def doubled_sin(x):\n    return x.sin() * 2\n")
    project.suite(
        """
        cases:
          grow:
            program: progs:doubled_sin
            inputs:
              x: {shape: [2, 4]}
            matrix: {backends: [inductor], devices: [cpu], dynamic: [false, true, automatic]}
            calls:
              - {}
              - {x: {shape: [8, 4]}}
              - {x: {shape: [16, 4]}}
            checks:
              golden: false
              recompiles: {static: 2, dynamic: 0, automatic: 0}
        """
    )
    result = project.run()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*grow*inductor-cpu-float32-automatic*failed*", "*recompiles: 1, expected == 0*"])
