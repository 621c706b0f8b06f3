"""harness/checks/: the checks of a cell as one ordered list, which CaseItem and FuzzItem both run."""

from __future__ import annotations

import harness.checks
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
