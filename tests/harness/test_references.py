"""``checks.references`` (a variant run beside the case, the compiled outputs held to it), the
next-token tolerance keys, and ``requires: {imports: [...]}`` (harness/case, run, checks, matrix)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.case import CaseFormatError, parse_suite
from harness.checks import compare_with_references
from harness.matrix import MatrixCell, expand_matrix
from harness.run import run_cell

pytest_plugins = ["pytester"]

PROGRAMS = "tests.harness.test_references"
CELL = MatrixCell("aot_eager", "cpu", "float32")


def logits(x, w):
    return x @ w


def load(body: str):
    return parse_suite("cases:\n  c:\n" + body, Path("s.yaml"), "s.yaml").cases[0]


CASE = (
    f"    program: '{PROGRAMS}:logits'\n"
    "    inputs:\n"
    "      x: {shape: [8, 16]}\n"
    "      w: {shape: [16, 32], std: 2.0}\n"
    "    checks:\n"
    "      references:\n"
)


def test_a_reference_runs_its_variant_and_holds_the_compiled_outputs_to_it():
    case = load(
        CASE
        + "        - {name: same, inputs: {w: {std: 2.0}}, tolerances: {atol: 1e-5, max_kl_div: 1e-9, min_top_k_agreement: 1.0}}\n"
        + "        - {name: noisier, inputs: {w: {std: 2.0, seed: 99}}, tolerances: {atol: .inf, max_kl_div: 0.01, top_k: 2, min_top_k_agreement: 0.9}}\n"
    )
    same, noisier = case.checks.references
    assert (same.variant.changed, noisier.variant.text) == (("w",), f"{PROGRAMS}:logits, w changed")
    run = run_cell(case, CELL)
    assert set(run.references) == {"same", "noisier"}
    first, second = compare_with_references(case, CELL, run)
    assert first.ok and "reference 'same'" in first.label
    assert not second.ok  # other weights: other distributions
    assert "compiled (aot_eager) vs reference 'noisier' (tests.harness.test_references:logits, w changed, eager)" in second.report
    assert "failed: mean KL" in second.report


@pytest.mark.parametrize(
    "reference, message",
    [
        ("{tolerances: {atol: 1}}", "cases.c.checks.references[0]: missing key 'name'"),
        ("{name: r}", "cases.c.checks.references[0]: missing key 'tolerances'"),
        ("{name: r, tolerances: {top_k: 1.5}}", "cases.c.checks.references[0].tolerances.top_k: must be an integer >= 1 (got 1.5)"),
        ("{name: r, tolerances: {min_top_k_agreement: 2}}", "tolerances.min_top_k_agreement: is a share of rows: at most 1 (got 2)"),
        ("{name: r, inputs: {v: {std: 1}}, tolerances: {atol: 1}}", "cases.c.checks.references[0].inputs.v: not an input of this case"),
        ("{name: r, program: 'nowhere:at_all', tolerances: {atol: 1}}", "cases.c.checks.references[0].program: unknown program"),
    ],
)
def test_bad_references_are_one_line(reference, message):
    with pytest.raises(CaseFormatError) as info:
        load(CASE + f"        - {reference}\n")
    assert message in str(info.value)


def test_a_call_that_changes_an_inputs_kind_drops_the_old_kinds_params():
    case = load(
        f"    program: '{PROGRAMS}:logits'\n"
        "    inputs:\n"
        "      x: {shape: [8, 16]}\n"
        "      w: {shape: [16, 32], kind: 'suites.programs.woq_fusion:int4_weight', params: {group_size: 16}}\n"
        "    checks:\n"
        "      perf: {faster_than: {program: linear, inputs: {w: {kind: tensor}}, by: 1.0}}\n"
    )
    baseline = case.checks.perf.faster_than.baseline
    assert (baseline.program, baseline.params, baseline.inputs[1].kind, baseline.inputs[1].params) == ("linear", (), "tensor", ())


def test_requires_imports_skips_with_the_reason():
    case = load(
        f"    program: '{PROGRAMS}:logits'\n"
        "    inputs: {x: {shape: [2, 2]}, w: {shape: [2, 2]}}\n"
        "    matrix: {backends: [eager], devices: [cpu]}\n"
        "    marks: [{requires: {imports: [pytest, no_such_module_anywhere]}}]\n"
    )
    (cell,) = expand_matrix(case)
    assert cell.skip_reason == (
        "needs the Python module 'no_such_module_anywhere', which is not importable here (tools/setup.sh installs the test dependencies)"
    )


def test_a_cell_fails_on_a_reference_and_says_which(project):
    project.set_programs("def logits(x, w):\n    return x @ w\n")
    project.suite(
        """
        cases:
          lm:
            program: progs:logits
            inputs:
              x: {shape: [8, 16]}
              w: {shape: [16, 32], std: 2.0}
            matrix: {backends: [eager], devices: [cpu]}
            checks:
              golden: false
              references:
                - {name: other, inputs: {w: {seed: 99}}, tolerances: {atol: .inf, max_kl_div: 1e-6}}
        """
    )
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "compiled (eager) vs reference 'other' (progs:logits, w changed, eager):",
        "*next-token distributions (one per row of the last dim): KL mean *",
        "*failed: mean KL * > 1e-06 nats",
    ])
