"""harness/checks/: the checks of a cell as one ordered list, which CaseItem and FuzzItem both run."""

from __future__ import annotations

import harness.checks
from harness.case.check_sections import CheckKey
from harness.case.validators import require_number
from harness.checks import CHECKS, CheckContext

pytest_plugins = ["pytester"]


def test_the_order_of_the_report_and_what_a_fuzz_example_runs():
    assert [c.name for c in CHECKS] == ["eager", "fuzz reference", "golden", "references", "filecheck", "counters", "perf"]
    assert [c.name for c in CHECKS if not c.per_example] == ["golden", "perf"]  # they need fixed shapes


class OddSizes:
    """A new kind of check, as a project would add one: an output of odd size fails."""

    name = "odd sizes"
    per_example = True

    def applies(self, case, cell) -> bool:
        return cell.backend == "aot_eager"

    def run(self, ctx: CheckContext) -> list[str]:
        odd = [name for name, t in ctx.run.compiled.items() if t.numel() % 2]
        return [f"odd sizes: {', '.join(odd)}"] if odd else []


SUITE = """
defaults:
  matrix: {backends: [eager, aot_eager], devices: [cpu]}
cases:
  plain:
    program: progs:scaled
    inputs: {x: {shape: [3]}}
    checks: {golden: false}
  drawn:
    program: progs:scaled
    inputs: {x: {shape: [N]}}
    fuzz: {examples: 4, dims: {N: [2, 9]}}
"""


def test_a_new_check_is_one_entry_in_the_list(project, monkeypatch):
    """Was: each item wired its checks by hand (CaseItem and FuzzItem, in different orders)."""
    monkeypatch.setattr(harness.checks, "CHECKS", (*CHECKS, OddSizes()))
    project.suite(SUITE)
    result = project.run()
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*case 'plain' [[]aot_eager-cpu-float32[]] failed", "", "odd sizes: output"])
    result.stdout.fnmatch_lines(["*fuzz case 'drawn' [[]aot_eager-cpu-float32[]] failed", "*", "smallest failing example: N=3", "", "odd sizes: output"])


class MaxAbs:
    """A new kind of check with a ``checks:`` key of its own, as a project would add one: its
    key's parser and default sit beside ``applies`` and ``run``, nowhere else."""

    name = "max abs"
    per_example = True
    keys = {"max_abs": CheckKey(lambda value, at, section: require_number(value, at, minimum=0.0))}

    def applies(self, case, cell) -> bool:
        return case.checks.max_abs is not None

    def run(self, ctx: CheckContext) -> list[str]:
        bound = ctx.case.checks.max_abs
        over = [name for name, t in ctx.run.compiled.items() if t.abs().max() > bound]
        return [f"max abs: {', '.join(over)} above {bound}"] if over else []


KEYED_SUITE = """
defaults:
  matrix: {backends: [eager], devices: [cpu]}
  checks: {golden: false}
cases:
  loose:
    program: progs:scaled
    inputs: {x: {shape: [3]}}
    checks: {max_abs: 1000}
  tight:
    program: progs:scaled
    inputs: {x: {shape: [3]}}
    checks: {max_abs: 0.0}
  unchecked:
    program: progs:scaled
    inputs: {x: {shape: [3]}}
"""


def test_a_new_check_with_its_own_key_is_one_entry_in_the_list(project, monkeypatch):
    """Was: a check's ``checks:`` key needed a parser in the loader's table and a field of ``Checks``."""
    monkeypatch.setattr(harness.checks, "CHECKS", (*CHECKS, MaxAbs()))
    project.suite(KEYED_SUITE)
    result = project.run()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*case 'tight' [[]eager-cpu-float32[]] failed", "", "max abs: output above 0.0"])

    project.suite(KEYED_SUITE.replace("max_abs: 0.0", "max_abs: -1"))
    result = project.run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*suites/s.yaml:12: cases.tight.checks.max_abs: must be >= 0.0 (got -1)*"])


def test_a_key_no_check_declares_is_unknown(project):
    project.suite(KEYED_SUITE)
    result = project.run()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*suites/s.yaml:8: cases.loose.checks.max_abs: unknown key (got 'max_abs'; allowed eager, inputs_after, golden*"])
