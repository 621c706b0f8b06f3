"""tools/mutation.py on a throw-away project: one mutant killed, one surviving, one stale.

The project has no torch in it, so the three pytest runs take about a second each.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tools.mutation import Mutant, RunOptions, mutate_text, run_mutants, score, table

MODULE = '''
def dequantize(code, scale, zero):
    """(code - zero) * scale"""
    return (code - zero) * scale
'''

TESTS = '''
from pkg.mod import dequantize


def test_dequantize():
    assert dequantize(5, 0.5, 3) == 1.0
'''

KILLED = Mutant("zero_off_by_one", "pkg/mod.py", "(code - zero) * scale\n", "(code - zero - 1) * scale\n", ("tests/test_mod.py",), "zero + 1")
SURVIVES = Mutant("docstring", "pkg/mod.py", '"""(code - zero) * scale"""', '"""changed"""', ("tests/test_mod.py",), "no behaviour change")
STALE = Mutant("gone", "pkg/mod.py", "code * scale", "code / scale", ("tests/test_mod.py",), "text not there")


def make_project(root: Path) -> Path:
    for relative, text in {"pkg/__init__.py": "", "pkg/mod.py": MODULE, "tests/test_mod.py": TESTS}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_killed_survived_stale_and_the_working_tree_untouched(tmp_path):
    project = make_project(tmp_path / "project")
    before = (project / "pkg/mod.py").read_text()
    results = run_mutants([KILLED, SURVIVES, STALE], project, RunOptions(workers=0, timeout=120))
    by_name = {r.mutant.name: r for r in results}
    assert by_name["zero_off_by_one"].status == "killed"
    assert by_name["zero_off_by_one"].detail == "tests/test_mod.py::test_dequantize"
    assert by_name["docstring"].status == "survived"
    assert by_name["gone"].status == "stale"
    assert score(results) == (1, 2)
    assert (project / "pkg/mod.py").read_text() == before  # mutants live in a temporary copy only
    lines = table(results)
    assert lines[-1] == "mutation score: 1/2 killed (50.0%); 1 killed, 1 survived, 1 stale"


def test_failing_baseline_is_an_error_not_a_kill(tmp_path):
    project = make_project(tmp_path / "project")
    (project / "tests/test_mod.py").write_text(TESTS.replace("== 1.0", "== 2.0"))
    (result,) = run_mutants([KILLED], project, RunOptions(workers=0, timeout=120))
    assert result.status == "error"
    assert "without the mutant the tests already failed" in result.detail


def test_mutate_text_needs_exactly_one_occurrence():
    assert mutate_text("a + b", Mutant("m", "f", "+", "-", ("t",), "")) == "a - b"
    assert mutate_text("a + b + c", Mutant("m", "f", "+", "-", ("t",), "")) is None


def test_catalogue_entries_are_well_formed():
    from tools.mutants import CATALOGUE

    names = [m.name for m in CATALOGUE]
    assert len(names) == len(set(names))
    assert all(m.path.startswith("impl/") for m in CATALOGUE)
    assert len(CATALOGUE) >= 20
