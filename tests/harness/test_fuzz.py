"""Fuzz cases (harness/fuzz.py): a planted bug is found and shrunk to the smallest shape; loader errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.case import CaseFormatError, parse_suite

pytest_plugins = ["pytester"]

PROGRAMS = '''
import torch

SCALE = 2.0


def scaled(x):
    return x * SCALE + 1


def rowsum(x):
    """A planted compiler-only bug: an odd K >= 17 adds 1 to every row under compilation."""
    out = x.sum(dim=1)
    if torch.compiler.is_compiling() and x.shape[1] >= 17 and x.shape[1] % 2 == 1:
        out = out + 1
    return out


def rowsum_wrong_from_3_rows(x):
    """Wrong in eager too (from 3 rows on): only a reference can tell."""
    return x.sum(dim=1) + (1.0 if x.shape[0] >= 3 else 0.0)


def rowsum_reference(x):
    return x.double().sum(dim=1)
'''

SUITE = """
defaults:
  matrix: {backends: [eager], devices: [cpu]}
cases:
  planted:
    program: progs:rowsum
    inputs:
      x: {shape: [M, K]}
    fuzz:
      examples: 12
      dims: {M: [1, 8], K: [1, 64]}
      inputs:
        x: {layout: [contiguous, transposed, padded], distribution: [normal, uniform], std: [0.5, 4.0]}
  oracle:
    program: progs:rowsum_wrong_from_3_rows
    inputs:
      x: {shape: [M, 5]}
    tolerances: {atol: 1e-4, rtol: 1e-4}
    fuzz:
      dims: {M: [1, 6]}
      reference: progs:rowsum_reference
  sound:
    program: progs:scaled
    inputs:
      x: {shape: [M, N]}
    fuzz:
      examples: 4
      dims: {M: [0, 5], N: {min: 2, max: 12, multiple_of: 2}}
      inputs:
        x: {layout: [contiguous, transposed, padded]}
"""


def test_planted_bug_is_found_and_shrunk_and_pinned(project):
    project.set_programs(PROGRAMS)
    project.suite(SUITE)
    result = project.run()
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines([
        "suites/s.yaml:4: fuzz case 'planted' [[]eager-cpu-float32[]] failed",
        "",
        "fuzz: * example(s) run in * s; the first failure was run *, then shrunk",
        "smallest failing example: M=1, K=17; x: layout=contiguous, distribution=normal, std=1",
        "",
        "compiled (eager) vs eager, same inputs:",
        "  output: (1,) float32",
    ])
    result.stdout.fnmatch_lines([
        "pin it as a plain case (under cases: in suites/s.yaml):",
        "  planted_pinned:",
        "    description: fuzz example of planted, pinned",
        "    program: progs:rowsum",
        "    inputs:",
        "      x:",
        "        shape: [[]1, 17[]]",
    ])
    result.stdout.fnmatch_lines([
        "suites/s.yaml:13: fuzz case 'oracle' [[]eager-cpu-float32[]] failed",
        "",
        "fuzz: * example(s) run in * s; the first failure was run *, then shrunk",
        "smallest failing example: M=3",
        "",
        "eager vs reference progs:rowsum_reference:",
    ])


def test_same_examples_every_run(project):
    project.set_programs(PROGRAMS)
    project.suite(SUITE)
    first = project.run("-k", "planted")
    second = project.run("-k", "planted")
    line = lambda result: [l for l in result.stdout.lines if l.startswith("fuzz: ")][0].split(" run in ")[0]  # noqa: E731
    assert line(first) == line(second)


BASE = "cases:\n  a:\n    program: matmul\n"


@pytest.mark.parametrize(
    "body, message",
    [
        ("    inputs: {x: {shape: [M, 2]}, y: {shape: [2, 2]}}\n",
         "suites/x.yaml:4: cases.a.inputs.x.shape[[]0[]]: must be an integer (got 'M')"),
        ("    inputs: {x: {shape: [M, 2]}, y: {shape: [2, 2]}}\n    fuzz: {dims: {M: [1, 4], Q: [1, 2]}}\n",
         "suites/x.yaml:5: cases.a.fuzz.dims: dim(s) Q appear in no input's shape"),
        ("    inputs: {x: {shape: [M, 2]}, y: {shape: [2, 2]}}\n    fuzz: {dims: {M: [4, 1]}}\n",
         "suites/x.yaml:5: cases.a.fuzz.dims.M: max must be >= min (got [[]4, 1[]])"),
        ("    inputs: {x: {shape: [M, 2]}, y: {shape: [2, 2]}}\n    fuzz: {dims: {M: {min: 1, max: 3, multiple_of: 4}}}\n",
         "suites/x.yaml:5: cases.a.fuzz.dims.M: no multiple of 4 in [[]1, 3[]]"),
        ("    inputs: {x: {shape: [M, 2]}, y: {shape: [2, 2]}}\n    fuzz: {dims: {M: [1, 4]}, inputs: {z: {layout: [padded]}}}\n",
         "suites/x.yaml:5: cases.a.fuzz.inputs.z: not an input of this case (got 'z'; allowed x, y)"),
        ("    inputs: {x: {shape: [M, 2]}, y: {shape: [2, 2]}}\n    fuzz: {dims: {M: [1, 4]}, inputs: {x: {layout: [diagonal]}}}\n",
         "suites/x.yaml:5: cases.a.fuzz.inputs.x.layout[[]0[]]: 'diagonal' is not one of the allowed values *"),
        ("    inputs: {x: {shape: [M, 2]}, y: {shape: [2, 2]}}\n    fuzz: {dims: {M: [1, 4]}, reference: nowhere}\n",
         "suites/x.yaml:5: cases.a.fuzz.reference: must be 'module:function' (got 'nowhere')"),
        ("    inputs: {x: {shape: [2, 2]}, y: {shape: [2, 2]}}\n    fuzz: {examples: 3}\n",
         "suites/x.yaml:5: cases.a.fuzz: a fuzz block varies something: give 'dims' and/or 'inputs'"),
    ],
    ids=["dim-without-fuzz", "unused-dim", "empty-range", "no-multiple", "unknown-input", "bad-layout", "bad-reference", "nothing-varies"],
)
def test_fuzz_block_errors_are_one_line(body, message):
    with pytest.raises(CaseFormatError) as excinfo:
        parse_suite(BASE + body, Path("suites/x.yaml"), "suites/x.yaml")
    import fnmatch

    assert fnmatch.fnmatch(str(excinfo.value), message.replace("[[]", "\0").replace("[]]", "\1").replace("\0", "[[]").replace("\1", "[]]")), str(excinfo.value)


def test_fuzz_case_has_no_golden():
    suite = parse_suite(
        BASE + "    inputs: {x: {shape: [M, 2]}, y: {shape: [2, 2]}}\n    fuzz: {dims: {M: [1, 4]}}\n",
        Path("suites/x.yaml"), "suites/x.yaml",
    )
    (case,) = suite.cases
    assert case.checks.golden is False and case.fuzz.dims[0].name == "M"
