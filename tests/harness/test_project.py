"""harness/project.py: suite keys (golden paths by suite path), settings, and ``python -m harness``."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from harness.project import ProjectSettingsError, common_directory, load_project

pytest_plugins = ["pytester"]

SCALED = """
cases:
  c:
    program: progs:scaled
    inputs: {x: {shape: [3]}}
    matrix: {backends: [eager], devices: [cpu]}
"""
CHAIN = """
cases:
  c:
    program: pointwise_chain
    params: {ops: [sin]}
    inputs: {x: {shape: [3]}}
    matrix: {backends: [eager], devices: [cpu]}
"""


def test_suite_keys_are_paths_under_the_suites_root(tmp_path):
    project = load_project(tmp_path, {})
    assert project.suites_root == tmp_path / "suites"
    assert project.suite_key(tmp_path / "suites" / "other.yaml") == "other"
    assert project.suite_key(tmp_path / "suites" / "sub" / "other.yml") == "sub/other"
    with pytest.raises(ValueError):
        project.suite_key(tmp_path / "elsewhere" / "other.yaml")
    assert common_directory(("numerics/*.yaml", "numerics/**/*.yml")) == "numerics"
    assert common_directory(("a/x/*.yaml", "a/y/*.yaml")) == "a"
    assert common_directory(("*.yaml",)) == ""


def test_settings_come_from_ini_then_pyproject_then_defaults(tmp_path):
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [tool.quantcheck]
        suites = ["numerics/*.yaml"]
        golden_dir = "refs"
        fail_on_stale_goldens = true
    """))
    project = load_project(tmp_path, {})
    assert (project.suite_patterns, project.suites_root, project.golden_root) == (("numerics/*.yaml",), tmp_path / "numerics", tmp_path / "refs")
    assert project.fail_on_stale_goldens is True
    overridden = load_project(tmp_path, {"golden_dir": "golden", "fail_on_stale_goldens": "false", "suites_root": "."})
    assert (overridden.golden_root, overridden.suites_root, overridden.fail_on_stale_goldens) == (tmp_path / "golden", tmp_path / ".", False)
    (tmp_path / "pyproject.toml").write_text("[tool.quantcheck]\ngolden = 'refs'\n")
    with pytest.raises(ProjectSettingsError, match=r"pyproject.toml: \[tool.quantcheck\] golden: unknown key \(allowed suites, suites_root"):
        load_project(tmp_path, {})
    (tmp_path / "pyproject.toml").write_text("[tool.quantcheck]\nfail_on_stale_goldens = 'yes'\n")
    with pytest.raises(ProjectSettingsError, match="fail_on_stale_goldens: must be true or false"):
        load_project(tmp_path, {})


def test_same_named_suites_in_two_folders_keep_their_own_goldens(project):
    (project.root / "suites" / "sub").mkdir()
    project.suite(SCALED, name="other")
    project.suite(CHAIN, name="sub/other")
    project.run("--update-golden").assert_outcomes(passed=2)
    assert sorted(project.golden_files()) == [
        "other/c/cpu-float32.json", "other/c/cpu-float32.safetensors",
        "sub/other/c/cpu-float32.json", "sub/other/c/cpu-float32.safetensors",
    ]
    assert json.loads((project.root / "golden/sub/other/c/cpu-float32.json").read_text())["suite"] == "suites/sub/other.yaml"
    project.run().assert_outcomes(passed=2)


def test_a_golden_of_another_suite_is_one_clear_error(project):
    """The old layout (by file name) put sub/other.yaml's golden where other.yaml reads its own."""
    (project.root / "suites" / "sub").mkdir()
    project.suite(SCALED, name="other")
    project.suite(CHAIN, name="sub/other")
    project.run("--update-golden").assert_outcomes(passed=2)
    for suffix in (".json", ".safetensors"):
        shutil.copy(project.root / f"golden/sub/other/c/cpu-float32{suffix}", project.root / f"golden/other/c/cpu-float32{suffix}")
    result = project.run("suites/other.yaml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "golden unusable: golden/other/c/cpu-float32.json: key 'suite': this golden belongs to 'suites/sub/other.yaml', "
        "not 'suites/other.yaml' (two suites mapped to one golden directory?)",
    ])
    assert "Traceback" not in result.stdout.str()


def test_two_suites_with_one_key_are_a_collection_error(project):
    project.suite(SCALED, name="x")
    (project.root / "suites" / "x.yml").write_text(textwrap.dedent(SCALED))
    result = project.run()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([
        "suites/x.yaml:1: file: shares its golden directory golden/x/ with suites/x.yml; rename one of them *",
        "suites/x.yml:1: file: shares its golden directory golden/x/ with suites/x.yaml; rename one of them *",
    ], consecutive=False)
    assert not (project.root / "golden").exists()


def test_a_suite_outside_the_suites_root_is_a_collection_error(project):
    project.pytester.makeini("[pytest]\nquantcheck_suites_root = suites\nquantcheck_suites =\n    suites/*.yaml\n    numerics/*.yaml\n")
    (project.root / "numerics").mkdir()
    (project.root / "numerics" / "n.yaml").write_text(textwrap.dedent(SCALED))
    result = project.run("numerics/n.yaml")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["numerics/n.yaml:1: file: outside the suites root suites/, so its goldens have no path; set quantcheck_suites_root *"])


def test_python_m_harness_runs_this_projects_suites_and_passes_options_through(project, monkeypatch):
    """From another project: its own suites (not the harness repo's), and --lf works."""
    repo = str(Path(__file__).resolve().parents[2])
    monkeypatch.setenv("PYTHONPATH", repo)
    project.suite("""
        cases:
          missing_golden: {program: progs:scaled, inputs: {x: {shape: [3]}}, matrix: {backends: [eager], devices: [cpu]}}
          no_golden:
            program: progs:scaled
            inputs: {x: {shape: [3]}}
            matrix: {backends: [eager], devices: [cpu]}
            checks: {golden: false}
    """)
    first = project.pytester.run(sys.executable, "-m", "harness", "-n", "0", "-W", "ignore::DeprecationWarning")
    assert first.ret == pytest.ExitCode.TESTS_FAILED
    first.stdout.fnmatch_lines(["*1 failed, 1 passed*"])
    assert "woq_fusion" not in first.stdout.str() and "cacheprovider" not in first.stdout.str()
    again = project.pytester.run(sys.executable, "-m", "harness", "-n", "0", "--lf", "-W", "ignore::DeprecationWarning")
    again.stdout.fnmatch_lines(["run-last-failure: rerun previous 1 failure*", "*1 failed in *"])
