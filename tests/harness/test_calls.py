"""Call sequences (``calls:``): one compiled callable called with different inputs; each call's
outputs checked, recompiles counted, FileCheck per compiled graph (harness/case, run, checks)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.case import CaseFormatError, parse_suite
from harness.checks import counter_sections, filecheck_sections
from harness.matrix import MatrixCell
from harness.run import run_cell

pytest_plugins = ["pytester"]

PROGRAMS = "tests.harness.test_calls"
CPU = MatrixCell("inductor", "cpu", "float32")


def doubled_sin(x):
    return x.sin() * 2


def scaled(x, scale):
    return x * scale


def load(body: str):
    return parse_suite("cases:\n  c:\n" + body, Path("s.yaml"), "s.yaml").cases[0]


def error_of(body: str) -> str:
    with pytest.raises(CaseFormatError) as info:
        load(body)
    return str(info.value)


GROWING_BATCH = (
    f"    program: '{PROGRAMS}:doubled_sin'\n"
    "    inputs:\n"
    "      x: {shape: [1, 4], distribution: uniform, low: -1, high: 1}\n"
    "    calls:\n"
    "      - {}\n"
    "      - {x: {shape: [8, 4]}}\n"
    "      - {x: {shape: [16, 4]}}\n"
)


def test_a_call_overrides_only_what_it_names():
    case = load(GROWING_BATCH + "    checks: {recompiles: '<= 1'}\n")
    shapes = [call.inputs[0].shape for call in case.calls]
    assert shapes == [(1, 4), (8, 4), (16, 4)]
    assert {call.inputs[0].distribution for call in case.calls} == {"uniform"}  # kept from inputs:
    assert [call.changed for call in case.calls] == [(), ("x",), ("x",)]
    (bound,) = case.checks.recompiles
    assert (bound.op, bound.count) == ("<=", 1) and bound.holds(1) and not bound.holds(2)


def test_params_of_an_input_merge_key_by_key():
    case = load(
        f"    program: '{PROGRAMS}:doubled_sin'\n"
        "    inputs:\n"
        "      w: {shape: [4, 4], kind: 'suites.programs.woq:int4_weight', params: {group_size: 4}}\n"
        "    calls:\n"
        "      - {w: {shape: [8, 8]}}\n"
    )
    assert case.calls[0].inputs[0].param_dict == {"group_size": 4} and case.calls[0].inputs[0].shape == (8, 8)


@pytest.mark.parametrize(
    "extra, message",
    [
        ("    calls:\n      - {y: {shape: [2]}}\n", "s.yaml:7: cases.c.calls[0].y: not an input of this case (got 'y'; allowed x)"),
        ("    calls:\n      - {x: {shape: [2], colour: red}}\n", "s.yaml:7: cases.c.calls[0].x.colour: unknown key"),
        ("    checks: {recompiles: 1}\n", "s.yaml:6: cases.c.checks: recompiles counts the compiles after a case's first call: it needs calls:"),
        ("    calls: [{}]\n    checks: {recompiles: 'at most 1'}\n", "cases.c.checks.recompiles: must be a count or '<= N', '>= N', '== N'"),
        (
            "    calls: [{}]\n    checks: {filecheck: [{target: post_grad_graph, each_graph: true, check: 'CHECK: x'}]}\n",
            "cases.c.checks.filecheck[0].each_graph: target 'post_grad_graph' is not kept per graph",
        ),
    ],
)
def test_bad_calls_are_one_line(extra, message):
    text = error_of(f"    program: '{PROGRAMS}:doubled_sin'\n    inputs:\n      x: {{shape: [1, 4]}}\n" + extra)
    assert message in text and "\n" not in text


def test_each_call_is_checked_and_recompiles_are_counted():
    case = load(GROWING_BATCH + "    checks: {recompiles: 0}\n")
    run = run_cell(case, CPU)
    assert list(run.compiled) == ["call[0].output", "call[1].output", "call[2].output"]
    assert [tuple(run.eager[name].shape) for name in run.eager] == [(1, 4), (8, 4), (16, 4)]
    for name in run.eager:
        assert (run.compiled[name] - run.eager[name]).abs().max() < 1e-5
    # Automatic dynamic shapes: the second batch size recompiles with a symbolic M, the third reuses it.
    assert run.recompiles == 1 and [call for call, _ in run.graph_codes] == [0, 1] and run.graphs == 1
    (section,) = counter_sections(case, CPU, run)
    assert "s.yaml:10: recompiles: 1, expected == 0 (calls that compiled, counting from 0: 0, 1)" in section


def test_an_input_no_call_overrides_is_one_object_for_the_whole_sequence():
    case = load(
        f"    program: '{PROGRAMS}:scaled'\n"
        "    inputs:\n"
        "      x: {shape: [2]}\n"
        "      scale: {shape: [1]}\n"
        "    calls:\n"
        "      - {}\n"
        "      - {x: {shape: [3]}}\n"
    )
    from harness.run import build_call_inputs

    import torch

    first, second = build_call_inputs(case, "cpu", torch.float32)
    assert second[1] is first[1] and second[0] is not first[0]


def test_filecheck_each_graph_runs_on_every_compiled_graph_alone():
    case = load(
        GROWING_BATCH
        + "    checks:\n"
        "      filecheck:\n"
        "        - {target: output_code, each_graph: true, when: {backends: [inductor]}, check: 'CHECK: cpp_fused_mul_sin'}\n"
        "        - {target: kernel_source, each_graph: true, when: {backends: [inductor]}, check: 'CHECK-NOT: ks0'}\n"
    )
    run = run_cell(case, CPU)
    sections = filecheck_sections(case, CPU, run, lambda target, text: f"/tmp/{target}", lambda note: None)
    # The symbolic-M graph of the second call names its size ks0; the static first graph does not.
    assert len(sections) == 1
    assert re.search(r"FileCheck on kernel_source of graph 1 \(compiled by call 1\).*\n.*CHECK-NOT: ks0", sections[0])


def test_a_case_with_calls_runs_and_keeps_each_calls_golden(project):
    project.set_programs("def doubled_sin(x):\n    return x.sin() * 2\n")
    project.suite(
        """
        cases:
          grow:
            program: progs:doubled_sin
            inputs:
              x: {shape: [1, 4]}
            matrix: {backends: [inductor], devices: [cpu]}
            calls:
              - {}
              - {x: {shape: [8, 4]}}
            checks: {recompiles: "<= 1"}
        """
    )
    project.run("--update-golden").assert_outcomes(passed=1)
    from safetensors.torch import load_file

    stored = load_file(str(project.root / "golden/s/grow/cpu-float32.safetensors"))
    assert {name: tuple(t.shape) for name, t in stored.items()} == {"call[0].output": (1, 4), "call[1].output": (8, 4)}
    project.run().assert_outcomes(passed=1)
