"""harness/programs.py: a program module that fails at import is one error line, never the session's end."""

from __future__ import annotations

import pytest

from harness.core.programs import ProgramImportError, import_program

pytest_plugins = ["pytester"]

GOOD_SUITE = """
cases:
  fine:
    program: progs:scaled
    inputs: {x: {shape: [3]}}
    matrix: {backends: [eager], devices: [cpu]}
    checks: {golden: false}
"""


@pytest.mark.parametrize(
    "module_text, message",
    [
        ("import sys\nsys.exit(3)\n", "suites/bad.yaml:3: cases.a.program: unknown program: importing module 'exits_at_import' raised SystemExit: 3 (exits_at_import.py:2)*"),
        ("def f(x):\n    return x\nundefined_name\n", "suites/bad.yaml:3: cases.a.program: unknown program: importing module 'raises_at_import' raised NameError: name 'undefined_name' is not defined (raises_at_import.py:3)*"),
    ],
    ids=["sys-exit", "name-error"],
)
def test_a_module_failing_at_import_is_one_line_and_the_session_goes_on(project, module_text, message):
    module = message.split("importing module '")[1].split("'")[0]
    (project.root / f"{module}.py").write_text(module_text, encoding="utf-8")
    project.suite(f"cases:\n  a:\n    program: {module}:f\n    inputs: {{x: {{shape: [2]}}}}\n", name="bad")
    project.suite(GOOD_SUITE, name="good")
    result = project.run("--continue-on-collection-errors")
    result.stdout.fnmatch_lines([message])
    result.assert_outcomes(passed=1, errors=1)
    output = result.stdout.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output


def test_import_program_names_the_exception_and_where(tmp_path, monkeypatch):
    (tmp_path / "divides_at_import.py").write_text("x = 1\ny = x / 0\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProgramImportError) as info:
        import_program("divides_at_import:f")
    assert str(info.value) == "importing module 'divides_at_import' raised ZeroDivisionError: division by zero (divides_at_import.py:2)"
