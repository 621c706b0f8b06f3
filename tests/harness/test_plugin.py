"""End to end through pytester: collection, errors, goldens, reports, narrowing, summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ONE_CASE = """
cases:
  scaled:
    program: progs:scaled
    inputs:
      x: {shape: [4, 3]}
    matrix: {backends: [eager, aot_eager], devices: [cpu, cuda], dtypes: [float32, bf16]}
    tolerances: {bfloat16: {atol: 1e-2, rtol: 1e-2}}
"""

TWO_CASES = """
cases:
  first:
    program: progs:scaled
    inputs:
      x: {shape: [4, 3]}
    matrix: {backends: [eager, aot_eager], devices: [cpu]}
  second:
    program: progs:two_outputs
    inputs:
      x: {shape: [5]}
      y: {shape: [5], seed: 7}
    matrix: {backends: [eager], devices: [cpu]}
"""

# What Project.run passes: a rerun hint repeats the user's own options (and drops --basetemp).
RUN_OPTIONS = "-p no:cacheprovider -W ignore::UserWarning -W ignore::DeprecationWarning"


def test_collection_ids_and_skips(project):
    project.suite(ONE_CASE)
    result = project.run("--collect-only", "-q")
    result.stdout.fnmatch_lines([
        "suites/s.yaml::scaled[[]eager-cpu-float32[]]",
        "suites/s.yaml::scaled[[]eager-cpu-bfloat16[]]",
        "suites/s.yaml::scaled[[]eager-cuda-float32[]]",
        "suites/s.yaml::scaled[[]aot_eager-cuda-bfloat16[]]",
        "8 tests collected*",
    ])


@pytest.mark.skipif(sys.platform != "linux", reason="cuda absence assumed only on the CI/dev machines")
def test_unavailable_device_is_a_skip_with_reason(project):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has cuda")
    project.suite(ONE_CASE)
    result = project.run("-rs", "--dtypes", "float32")
    result.assert_outcomes(passed=0, skipped=2, failed=2)  # cpu cells fail: no golden yet
    result.stdout.fnmatch_lines(["*no cuda device on this machine (available: cpu)*"])


def test_matrix_narrowing(project):
    project.suite(ONE_CASE)
    result = project.run("--collect-only", "-q", "--backends", "aot_eager", "--dtypes", "bf16", "--devices", "cpu")
    result.stdout.fnmatch_lines(["suites/s.yaml::scaled[[]aot_eager-cpu-bfloat16[]]", "1 test collected*"])


def test_bad_narrowing_value_is_a_usage_error(project):
    project.suite(ONE_CASE)
    result = project.run("--backends", "inductr")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--backends: 'inductr' is not one of eager, aot_eager, inductor, inductor_max_autotune*"])


@pytest.mark.parametrize(
    "suite, message",
    [
        ("cases:\n  a: [unclosed\n", "suites/s.yaml:3: yaml: malformed YAML: *"),
        (
            "cases:\n  a:\n    program: progs:scaled\n    inputs: {x: {shape: [2]}}\n    tolerance: {atol: 1}\n",
            "suites/s.yaml:5: cases.a.tolerance: unknown key (got 'tolerance'; allowed description, program, *)",
        ),
        (
            "cases:\n  a:\n    program: progs:scaled\n    inputs:\n      x: {shape: [2, two]}\n",
            "suites/s.yaml:5: cases.a.inputs.x.shape[[]1[]]: must be an integer (got 'two')",
        ),
        (
            "cases:\n  a:\n    program: progs:scaled\n    inputs:\n      x: {shape: [2], dtype: fp17}\n",
            "suites/s.yaml:5: cases.a.inputs.x.dtype: 'fp17' is not a dtype (got 'fp17'; allowed @dtype, float64, float32, *)",
        ),
        (
            "cases:\n  a:\n    program: progs:nope\n    inputs: {x: {shape: [2]}}\n",
            "suites/s.yaml:3: cases.a.program: unknown program: module 'progs' has no 'nope' (callables there: *",
        ),
        (
            "cases:\n  a:\n    program: matmull\n    inputs: {x: {shape: [2]}}\n",
            "suites/s.yaml:3: cases.a.program: unknown program: neither a built-in nor 'module:function' (got 'matmull'; allowed constant_pad_nd_mm, linear, matmul, *",
        ),
    ],
    ids=["malformed", "unknown-key", "wrong-type", "bad-dtype", "unknown-function", "unknown-builtin"],
)
def test_bad_input_is_one_line_without_traceback(project, suite, message):
    project.suite(suite)
    result = project.run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str()
    assert "harness/case.py" not in result.stdout.str()


GOOD_SUITE = """
cases:
  fine:
    program: progs:scaled
    inputs: {x: {shape: [3]}}
    matrix: {backends: [eager], devices: [cpu]}
    checks: {golden: false}
"""


def test_a_bad_suite_is_one_error_and_the_other_suites_run(project):
    project.suite("cases:\n  a:\n    program: progs:nope\n    inputs: {x: {shape: [2]}}\n", name="bad")
    project.suite(GOOD_SUITE, name="good")
    result = project.run()
    result.assert_outcomes(passed=1, errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["suites/bad.yaml:3: cases.a.program: unknown program: module 'progs' has no 'nope' *"])
    assert "Interrupted" not in result.stdout.str() and "Traceback" not in result.stdout.str()


def test_every_case_error_of_a_file_is_reported_in_one_run(project):
    """As a compiler does: fix one, rerun, meet the next was the old way."""
    project.suite("""
        defaults:
          tolerances: {float32: {atol: -1}}
        cases:
          a: {program: progs:nope, inputs: {x: {shape: [2]}}}
          ok: {program: progs:scaled, inputs: {x: {shape: [2]}}}
          b: {program: progs:also_nope, inputs: {x: {shape: [2]}}}
    """)
    result = project.run()
    result.assert_outcomes(errors=1)
    output = result.stdout.str()
    result.stdout.fnmatch_lines([
        "suites/s.yaml:2: defaults.tolerances.float32.atol: *",
        "suites/s.yaml:4: cases.a.program: unknown program: module 'progs' has no 'nope' *",
        "suites/s.yaml:6: cases.b.program: unknown program: module 'progs' has no 'also_nope' *",
    ])
    assert output.count("defaults.tolerances.float32.atol: must be") == 1  # once, though two cases merge it


def test_golden_workflow(project):
    project.suite(TWO_CASES)

    missing = project.run()
    missing.assert_outcomes(failed=3)
    missing.stdout.fnmatch_lines([
        "golden missing: golden/s/first/cpu-float32.safetensors",
        "  make it (from eager on cpu) with:",
        f"    python -m pytest suites/s.yaml::first {RUN_OPTIONS} --update-golden",
    ])
    assert "the golden differs" not in missing.stdout.str()  # nothing to differ from yet

    created = project.run("--update-golden")
    created.assert_outcomes(passed=3)
    created.stdout.fnmatch_lines([
        "suites/s.yaml::first: golden/s/first/cpu-float32.safetensors: created",
        "suites/s.yaml::second: golden/s/second/cpu-float32.safetensors: created",
        "2 goldens rewritten (created 2, changed 0), 0 unchanged",
    ])
    assert sorted(project.golden_files()) == [
        "s/first/cpu-float32.json", "s/first/cpu-float32.safetensors",
        "s/second/cpu-float32.json", "s/second/cpu-float32.safetensors",
    ]
    sidecar = json.loads((project.root / "golden/s/first/cpu-float32.json").read_text())
    assert sidecar["producer"]["backend"] == "eager"
    assert sidecar["tensors"]["output"]["shape"] == [4, 3]
    assert sidecar["suite"] == "suites/s.yaml"

    project.run().assert_outcomes(passed=3)

    # A planted regression: one changed constant in the program.
    project.set_programs((project.root / "progs.py").read_text().replace("SCALE = 2.0", "SCALE = 2.5"))
    regressed = project.run()
    regressed.assert_outcomes(failed=2, passed=1)
    regressed.stdout.fnmatch_lines([
        "suites/s.yaml:2: case 'first' [[]eager-cpu-float32[]] failed",
        "eager vs golden golden/s/first/cpu-float32.safetensors:",
        "  output: (4, 3) float32",
        "    mismatched elements: * / 12 (*%)  [[]atol=1e-05, rtol=1.3e-06[]]",
        "    max abs error: * at index (*)",
        "    max rel error: * at index (*)",
        "    SQNR: * dB",
        "    worst elements (*the max abs and max rel ones):",
        "*index*expected*actual*abs err*rel err",
        "*(*)*",
        f"re-run this cell:      python -m pytest 'suites/s.yaml::first[[]eager-cpu-float32[]]' {RUN_OPTIONS}",
        f"accept as new golden:  python -m pytest suites/s.yaml::first {RUN_OPTIONS} --update-golden   (only after an intended change)",
    ])
    assert "the golden differs because the program's own" in regressed.stdout.str()
    assert "impl/" not in regressed.stdout.str()  # the user's project has no impl/ of ours
    # What the failing cells got, beside the golden (as pytest-regressions' .obtained files), and the command to compare.
    regressed.stdout.fnmatch_lines([
        "obtained (eager's outputs): golden/s/first/cpu-float32.obtained.safetensors",
        "  compare: python -m harness golden diff golden/s/first/cpu-float32.safetensors",
    ])
    assert (project.root / "golden/s/first/cpu-float32.obtained-aot_eager.safetensors").is_file()
    harness_cli = [sys.executable, "-m", "harness", "golden"]
    env_path = {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    diff = subprocess.run([*harness_cli, "diff", "golden/s/first/cpu-float32.safetensors"], cwd=project.root, capture_output=True, text=True, env={**os.environ, **env_path})
    assert diff.returncode == 1, diff.stderr
    assert diff.stdout.startswith("golden/s/first/cpu-float32.obtained.safetensors vs golden golden/s/first/cpu-float32.safetensors:\n  output: (4, 3) float32")
    show = subprocess.run([*harness_cli, "show", "golden/s/first/cpu-float32.json"], cwd=project.root, capture_output=True, text=True, env={**os.environ, **env_path})
    assert show.returncode == 0 and "  case: first" in show.stdout and "  output: (4, 3) float32  min " in show.stdout, show.stdout + show.stderr
    stale = project.run("-k", "first")
    assert "obtained" not in "".join(line for line in stale.outlines if line.startswith("stale"))  # never a stale golden
    # One eager vs golden table a case (eager is the same in the aot_eager cell), not one a backend.
    assert regressed.stdout.str().count("eager vs golden golden/s/first/cpu-float32.safetensors:\n") == 1
    regressed.stdout.fnmatch_lines([
        "suites/s.yaml:2: case 'first' [[]aot_eager-cpu-float32[]] failed",
        "eager vs golden golden/s/first/cpu-float32.safetensors: output: (4, 3) float32",
        "  (eager is the same in every backend's cell: the table is in the report of suites/s.yaml::first[[]eager-cpu-float32[]])",
    ])

    before = project.golden_files()
    updated = project.run("--update-golden")
    updated.assert_outcomes(passed=3)
    updated.stdout.fnmatch_lines([
        "suites/s.yaml::first: golden/s/first/cpu-float32.safetensors: changed; output: max abs change *, max rel change *",
        "1 golden rewritten (created 0, changed 1), 1 unchanged",
    ])
    after = project.golden_files()
    changed = sorted(name for name in after if after[name] != before[name])
    assert changed == ["s/first/cpu-float32.json", "s/first/cpu-float32.safetensors"]

    again = project.run("--update-golden")
    again.stdout.fnmatch_lines(["0 goldens rewritten (created 0, changed 0), 2 unchanged"])
    assert project.golden_files() == after
    project.run().assert_outcomes(passed=3)
    assert not list((project.root / "golden/s/first").glob("*.obtained*")), "a passing cell removes what it obtained"

    # --fail-on-golden-writes: a run that rewrote a golden fails (a CI left with --update-golden on hides nothing).
    project.set_programs((project.root / "progs.py").read_text().replace("SCALE = 2.5", "SCALE = 2.75"))
    forced = project.run("--update-golden", "--fail-on-golden-writes")
    forced.assert_outcomes(passed=3)
    assert forced.ret == pytest.ExitCode.TESTS_FAILED
    forced.stdout.fnmatch_lines(["1 golden rewritten (created 0, changed 1), 1 unchanged", "1 golden(s) rewritten: this run fails (--fail-on-golden-writes)*"])
    assert project.run("--update-golden", "--fail-on-golden-writes").ret == pytest.ExitCode.OK


def test_add_missing_goldens_writes_only_what_is_missing(project):
    project.suite(TWO_CASES)
    project.run("--update-golden", "-k", "first").assert_outcomes(passed=2)
    first_before = project.golden_files()
    # A regression in 'first' must still fail: its golden exists and is compared, not rewritten.
    project.set_programs((project.root / "progs.py").read_text().replace("SCALE = 2.0", "SCALE = 2.5"))
    result = project.run("--add-missing-goldens")
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(["suites/s.yaml::second: golden/s/second/cpu-float32.safetensors: created"])
    after = project.golden_files()
    assert {name: after[name] for name in first_before} == first_before
    assert "s/second/cpu-float32.safetensors" in after


def _make_golden(project):
    project.suite(TWO_CASES)
    project.run("--update-golden", "-k", "first").assert_outcomes(passed=2)
    return project.root / "golden/s/first/cpu-float32.safetensors"


def test_truncated_golden_names_the_file_and_overwrites_nothing(project):
    data = _make_golden(project)
    data.write_bytes(data.read_bytes()[:20])
    before = project.golden_files()
    result = project.run("-k", "first")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "golden unusable: golden/s/first/cpu-float32.safetensors: unreadable safetensors data (truncated or corrupt: *",
        "  nothing was overwritten; to regenerate it:",
    ])
    assert project.golden_files() == before


def test_hash_mismatch_names_file_and_key(project):
    data = _make_golden(project)
    sidecar_path = data.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["tensors"]["output"]["sha256"] = "0" * 64
    sidecar_path.write_text(json.dumps(sidecar))
    result = project.run("-k", "first")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "golden unusable: golden/s/first/cpu-float32.safetensors: key 'output': sha256 mismatch: data hashes to *, sidecar says 0000000000000000*",
    ])


def test_counters_graph_breaks_and_summary(project, tmp_path):
    project.suite("""
        cases:
          counted:
            program: progs:scaled
            inputs: {x: {shape: [3]}}
            matrix: {backends: [eager], devices: [cpu]}
            checks:
              golden: false
              counters:
                - {key: stats.unique_graphs, equals: 1}
                - {key: frames.ok, at_least: 5}
          broken:
            program: progs:with_print
            inputs: {x: {shape: [3]}}
            matrix: {backends: [eager], devices: [cpu]}
            checks: {golden: false}
    """)
    summary_json = tmp_path / "summary.json"
    result = project.run("--summary", str(summary_json))
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "  suites/s.yaml:10: counter frames.ok: expected >= 5, got 1 (in this cell: frames.ok=1, frames.total=1)",
    ])
    result.stdout.fnmatch_lines([
        "  suites/s.yaml:11: graphs: expected 1 compiled graph(s), got 2",
        "  suites/s.yaml:11: graph_breaks: expected 0, got 1 (Failed to trace builtin operator)",
    ])
    result.stdout.fnmatch_lines([
        "*quantcheck summary*",
        "case*dtype*eager/cpu",
        "suites/s.yaml::counted*float32*FAIL 0",
        "suites/s.yaml::broken*float32*FAIL 0",
    ])
    rows = json.loads(summary_json.read_text())
    assert [(r["case"], r["outcome"]) for r in rows] == [("counted", "failed"), ("broken", "failed")]


def test_marks_xfail_and_skip(project):
    project.suite("""
        cases:
          known_bad:
            program: progs:scaled
            inputs: {x: {shape: [3]}}
            matrix: {backends: [eager, aot_eager], devices: [cpu]}
            checks: {golden: false, graphs: 2}
            marks:
              - {xfail: "compiles one graph, not two", when: {backends: [aot_eager]}}
              - {skip: "eager is covered elsewhere", when: {backends: [eager]}}
    """)
    result = project.run("-rsx")
    result.assert_outcomes(xfailed=1, skipped=1)
    result.stdout.fnmatch_lines(["*eager is covered elsewhere*", "*compiles one graph, not two*"])


def test_integer_outputs_compare_exactly_and_dtype_change_fails(project):
    project.suite("""
        cases:
          ints:
            program: progs:integer_out
            inputs: {x: {shape: [6]}}
            matrix: {backends: [eager], devices: [cpu]}
    """)
    project.run("--update-golden").assert_outcomes(passed=1)
    project.set_programs((project.root / "progs.py").read_text().replace("(x * 10).to(torch.int64)", "(x * 10).to(torch.int32)"))
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["  output: dtype differs: expected torch.int64, got torch.int32"])


def test_stale_goldens_reported_then_pruned(project):
    project.suite(TWO_CASES)
    project.run("--update-golden").assert_outcomes(passed=3)
    project.suite(TWO_CASES.replace("  second:", "  renamed:"))
    result = project.run("-k", "first")
    result.stdout.fnmatch_lines([
        "*quantcheck stale goldens*",
        "stale (no case declares it): golden/s/second/cpu-float32.json",
        "stale (no case declares it): golden/s/second/cpu-float32.safetensors",
        "delete them with --prune-stale-goldens",
    ])
    assert (project.root / "golden/s/second/cpu-float32.json").exists()
    pruned = project.run("-k", "first", "--prune-stale-goldens")
    pruned.stdout.fnmatch_lines(["deleted golden/s/second/cpu-float32.json", "deleted golden/s/second/cpu-float32.safetensors"])
    assert not (project.root / "golden/s/second").exists()
    assert (project.root / "golden/s/first/cpu-float32.json").exists()


def test_a_renamed_case_gets_a_rename_hint_with_its_missing_golden(project):
    project.suite(TWO_CASES)
    project.run("--update-golden").assert_outcomes(passed=3)
    project.suite(TWO_CASES.replace("  second:", "  renamed:"))
    result = project.run("-k", "renamed")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "golden missing: golden/s/renamed/cpu-float32.safetensors",
        "  renamed? golden/s/second/cpu-float32.safetensors is the golden of case 'second', which suites/s.yaml no longer has; "
        "to keep it: mv golden/s/second golden/s/renamed",
        "  make it (from eager on cpu) with:",
    ])


def test_inductor_filecheck_diagnostics(project):
    project.suite("""
        cases:
          fused:
            program: pointwise_chain
            params: {ops: [sin, {mul: 2.0}]}
            inputs: {x: {shape: [16]}}
            matrix: {backends: [inductor], devices: [cpu]}
            checks:
              golden: false
              filecheck:
                - target: kernel_source
                  check: |
                    CHECK-CPU: [[K:cpp_fused_\\w+]] (cpp_pybinding)
                    CHECK: tmp0.sin()
                    CHECK-NEXT: this line is not there
    """)
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "FileCheck on kernel_source (prefixes CHECK, CHECK-CPU, CHECK-INDUCTOR, CHECK-CPU-INDUCTOR):",
        "suites/s.yaml:14: CHECK-NEXT: this line is not there",
        "  error: Couldn't match \"this line is not there\".",
        "  variables: DEVICE = 'cpu', DTYPE = 'float32', BACKEND = 'inductor', K = 'cpp_fused_mul_sin_0'",
        "  scanning kernel_source from line *",
        "  the whole kernel_source: *kernel_source.txt",
    ])
    # In this run's own temporary directory (pytest's basetemp), not one every project shares.
    dumped = Path(next(line for line in result.outlines if "the whole kernel_source:" in line).split(": ", 1)[1])
    assert dumped.is_file() and "cpp_fused_mul_sin_0" in dumped.read_text()
    assert dumped.is_relative_to(project.pytester.path.parent / "basetemp" / "quantcheck")  # the inner run's --basetemp


def test_update_golden_under_xdist_touches_only_the_changed_case(project, monkeypatch):
    """The issue's done-when workflow with two worker processes: -n 2 --update-golden."""
    pytest.importorskip("xdist")

    repo = str(Path(__file__).resolve().parents[2])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p))
    project.suite(TWO_CASES)
    common = ("-p", "no:cacheprovider", "-W", "ignore::UserWarning", "-W", "ignore::DeprecationWarning", "-n", "2")
    project.pytester.runpytest_subprocess(*common, "--update-golden").assert_outcomes(passed=3)
    before = project.golden_files()
    project.set_programs((project.root / "progs.py").read_text().replace("return x + y, (x * y).sum()", "return x + y, (x * y).sum() + 1"))
    updated = project.pytester.runpytest_subprocess(*common, "--update-golden", "--summary")
    updated.assert_outcomes(passed=3)
    updated.stdout.fnmatch_lines(["suites/s.yaml::second: golden/s/second/cpu-float32.safetensors: changed; output[[]1[]]: max abs change 1, *"])
    after = project.golden_files()
    assert sorted(n for n in after if after[n] != before[n]) == ["s/second/cpu-float32.json", "s/second/cpu-float32.safetensors"]
    project.pytester.runpytest_subprocess(*common, "--update-golden").stdout.fnmatch_lines(["0 goldens rewritten (created 0, changed 0), 2 unchanged"])
    assert project.golden_files() == after


def test_update_golden_with_k_selection_and_skipped_first_backend(project):
    """The golden writer is a cell that runs: not one -k deselects, not one a skip mark skips."""
    project.suite("""
        cases:
          picky:
            program: progs:scaled
            inputs: {x: {shape: [3]}}
            matrix: {backends: [eager, aot_eager], devices: [cpu]}
            marks:
              - {skip: "eager covered elsewhere", when: {backends: [eager]}}
          other:
            program: progs:scaled
            inputs: {x: {shape: [3]}}
            matrix: {backends: [eager, aot_eager], devices: [cpu]}
    """)
    result = project.run("--update-golden", "-k", "aot_eager")
    result.assert_outcomes(passed=2)
    assert sorted(project.golden_files()) == [
        "s/other/cpu-float32.json", "s/other/cpu-float32.safetensors",
        "s/picky/cpu-float32.json", "s/picky/cpu-float32.safetensors",
    ]


def test_prune_keeps_what_a_suite_still_declares(project):
    """x.yaml and sub/x.yaml own golden/x/ and golden/sub/x/; a sidecar's claims decide nothing."""
    (project.root / "suites" / "sub").mkdir()
    project.suite(TWO_CASES, name="x")
    project.suite(TWO_CASES.split("  second:")[0].replace("  first:", "  third:"), name="sub/x")
    project.suite(TWO_CASES.split("  second:")[0], name="t")
    project.run("--update-golden").assert_outcomes(passed=7)
    sidecar_path = project.root / "golden/x/first/cpu-float32.json"
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["suite"] = "suites/gone.yaml"  # names a missing suite: once made a prune of another suite delete all of golden/x/
    sidecar_path.write_text(json.dumps(sidecar))
    before = project.golden_files()
    for suite in ("suites/sub/x.yaml", "suites/t.yaml"):
        result = project.run(suite, "--prune-stale-goldens")
        result.assert_outcomes(passed=2)
        assert "quantcheck stale goldens" not in result.stdout.str()
        assert project.golden_files() == before


def test_orphaned_suite_folder_is_reported_then_pruned(project):
    project.suite(TWO_CASES)
    project.suite(TWO_CASES, name="old")
    project.run("--update-golden").assert_outcomes(passed=6)
    (project.root / "suites" / "old.yaml").unlink()
    result = project.run()
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "stale (its suite file is gone): golden/old/first/cpu-float32.json",
        "stale (its suite file is gone): golden/old/second/cpu-float32.safetensors",
        "delete them with --prune-stale-goldens",
    ], consecutive=False)
    assert result.ret == 0
    project.run("--prune-stale-goldens").stdout.fnmatch_lines(["deleted golden/old/first/cpu-float32.json"])
    assert not (project.root / "golden/old").exists() and (project.root / "golden/s/first").is_dir()


@pytest.mark.parametrize("how", ["option", "ini", "pyproject"])
def test_stale_goldens_fail_the_run_when_asked(project, how):
    project.suite(TWO_CASES)
    project.run("--update-golden").assert_outcomes(passed=3)
    project.suite(TWO_CASES.replace("  second:", "  renamed:"))
    args = []
    if how == "option":
        args = ["--fail-on-stale-goldens"]
    elif how == "ini":
        project.pytester.makeini("[pytest]\nquantcheck_fail_on_stale_goldens = true\n")
    else:
        project.pytester.makepyprojecttoml("[tool.quantcheck]\nfail_on_stale_goldens = true\n")
    result = project.run("-k", "first", *args)
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["2 stale golden file(s) fail this run (fail_on_stale_goldens); delete them with --prune-stale-goldens"])
    pruned = project.run("-k", "first", "--prune-stale-goldens", *args)
    assert pruned.ret == 0
    assert project.run("-k", "first", *args).ret == 0


def test_killed_writers_leftovers_are_reported_and_cleaned(project):
    project.suite(TWO_CASES)
    project.run("--update-golden").assert_outcomes(passed=3)
    case_dir = project.root / "golden/s/second"
    (case_dir / ".cpu-float32.json.k1ll.tmp").write_text("{")
    result = project.run("-k", "first")  # 'second' is not run: the session end still finds its leftover
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["repaired: golden/s/second/.cpu-float32.json.k1ll.tmp: removed (temporary file of a killed writer)"])
    assert sorted(p.name for p in case_dir.iterdir()) == ["cpu-float32.json", "cpu-float32.safetensors"]


def test_update_golden_on_a_full_disk_is_one_line(project, monkeypatch):
    from harness import golden as golden_module

    project.suite(TWO_CASES)

    def disk_full(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(golden_module, "_atomic_write", disk_full)
    result = project.run("--update-golden", "-k", "second")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "golden not written: golden/s/second/cpu-float32.safetensors: cannot write the golden (No space left on device); the old one, if any, is untouched",
    ])
    assert "Traceback" not in result.stdout.str()


COMPILE_AWARE = '''
import torch

EAGER_SCALE = 2.0
COMPILED_SCALE = 2.0


def scaled(x):
    """x * 2 + 1, with a scale that eager and compiled code can be given apart."""
    return x * (COMPILED_SCALE if torch.compiler.is_compiling() else EAGER_SCALE) + 1
'''
# aot_eager only: the "eager" backend is a Dynamo compile too (is_compiling() is true there).
COMPILED_ONLY = """
cases:
  scaled:
    program: progs:scaled
    inputs: {x: {shape: [4]}}
    matrix: {backends: [aot_eager], devices: [cpu]}
"""


def test_a_compiled_only_regression_does_not_offer_a_new_golden(project):
    project.set_programs(COMPILE_AWARE)
    project.suite(COMPILED_ONLY)
    project.run("--update-golden").assert_outcomes(passed=1)
    project.set_programs(COMPILE_AWARE.replace("COMPILED_SCALE = 2.0", "COMPILED_SCALE = 3.0"))
    result = project.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "compiled (aot_eager) vs golden golden/s/scaled/cpu-float32.safetensors:",
        "*",
        "eager still matches the golden: only the compiled output moved, a compiler or pass",
        "problem; the golden is right as it is.",
    ], consecutive=False)
    assert "accept as new golden" not in result.stdout.str()


def test_eager_moving_alone_says_compiled_still_matches_the_old_golden(project):
    project.set_programs(COMPILE_AWARE)
    project.suite(COMPILED_ONLY)
    project.run("--update-golden").assert_outcomes(passed=1)
    project.set_programs(COMPILE_AWARE.replace("EAGER_SCALE = 2.0", "EAGER_SCALE = 3.0"))
    result = project.run()
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "compiled still matches the old golden: only eager's output moved" in out
    assert "compiled (aot_eager) vs golden" not in out  # that comparison passed
    result.stdout.fnmatch_lines([f"accept as new golden:  python -m pytest suites/s.yaml::scaled {RUN_OPTIONS} --update-golden *"])


def test_rerun_hints_repeat_the_users_own_options(project):
    from harness.plugin import rerun_options

    project.suite(TWO_CASES)  # a path that exists: pytest refuses one that does not
    config = project.pytester.parseconfigure(
        "suites/s.yaml", "-k", "first", "--devices", "cpu", "-n", "0", "--summary", "out.json", "-W", "ignore::UserWarning",
        "--cell-timeout=30", "--update-golden", "-pno:randomly", "--report=out", "-x", "--tb", "short",
    )
    assert rerun_options(config) == ("--devices", "cpu", "-W", "ignore::UserWarning", "--cell-timeout=30", "-pno:randomly", "--tb", "short")


def test_a_missing_path_is_named_under_xdist_and_by_python_m_harness(project, monkeypatch):
    import subprocess

    pytest.importorskip("xdist")
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH")) if p))
    project.suite(ONE_CASE)
    result = project.pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "suites/typo.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # was 5, "no tests ran", naming nothing
    result.stderr.fnmatch_lines(["ERROR: file or directory not found: suites/typo.yaml"])
    main = subprocess.run(
        [sys.executable, "-m", "harness", "suites/typo.yaml"], cwd=project.root, capture_output=True, text=True, timeout=300,
    )
    assert main.returncode == pytest.ExitCode.USAGE_ERROR, main.stdout + main.stderr
    assert "ERROR: file or directory not found: suites/typo.yaml" in main.stderr
