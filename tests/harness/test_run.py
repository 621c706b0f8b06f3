"""harness/run.py: one cell's run, outputs named, grads collected, code and kernels captured."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.case import parse_suite
from harness.matrix import MatrixCell
from harness.run import build_inputs, extract_kernel_sources, flatten_outputs, run_cell

PROGRAMS = "tests.harness.test_run"


def linear_loss(x, weight, target):
    return torch.nn.functional.cross_entropy(x @ weight.T, target)


def add_in_place(x):
    x.add_(1)
    return x * 2


def load_case(body: str):
    return parse_suite("cases:\n  c:\n" + body, Path("s.yaml"), "s.yaml").cases[0]


def test_output_names():
    t = torch.ones(2)
    assert list(flatten_outputs(t)) == ["output"]
    assert list(flatten_outputs((t, [t, t]))) == ["output[0]", "output[1][0]", "output[1][1]"]
    assert list(flatten_outputs({"a": t, "b": 3})) == ["output[a]", "output[b]"]


def test_inputs_are_deterministic_and_strided():
    case = load_case(
        "    program: matmul\n"
        "    inputs:\n"
        "      a: {shape: [4, 3], strides: [1, 4]}\n"
        "      b: {shape: [3, 5], pad_last_dim: 3}\n"
    )
    a, b = build_inputs(case, "cpu", torch.bfloat16)
    a2, _ = build_inputs(case, "cpu", torch.bfloat16)
    assert torch.equal(a, a2) and a.stride() == (1, 4) and a.dtype == torch.bfloat16
    assert b.shape == (3, 5) and b.stride() == (8, 1) and b.untyped_storage().nbytes() == 3 * 8 * 2
    a32, _ = build_inputs(case, "cpu", torch.float32)
    assert torch.equal(a32.to(torch.bfloat16), a)  # drawn in float32, then cast


def test_backward_grads_and_graph_count_on_aot_eager():
    case = load_case(
        f"    program: '{PROGRAMS}:linear_loss'\n"
        "    backward: true\n"
        "    inputs:\n"
        "      x: {shape: [8, 4], requires_grad: true}\n"
        "      weight: {shape: [5, 4], requires_grad: true}\n"
        "      target: {shape: [8], dtype: int64, distribution: randint, high: 5}\n"
    )
    run = run_cell(case, MatrixCell("aot_eager", "cpu", "float32"))
    assert sorted(run.compiled) == ["grad(weight)", "grad(x)", "output"]
    torch.testing.assert_close(run.compiled["grad(weight)"], run.eager["grad(weight)"])
    assert run.graphs == 1 and run.graph_breaks == 0


def test_inputs_after_and_float64_reference():
    case = load_case(
        f"    program: '{PROGRAMS}:add_in_place'\n"
        "    inputs: {x: {shape: [3]}}\n"
        "    tolerances: {float64_factor: 2.0}\n"
        "    checks: {inputs_after: true}\n"
    )
    run = run_cell(case, MatrixCell("eager", "cpu", "float32"))
    assert sorted(run.compiled) == ["input(x)", "output"]
    torch.testing.assert_close(run.compiled["output"], (run.compiled["input(x)"]) * 2)
    assert run.float64 is not None and run.float64["output"].dtype == torch.float64


def test_kernel_sources_are_cut_out_of_output_code():
    code = (
        "cpp_fused_sin_0 = async_compile.cpp_pybinding(['const float*'], r'''\n"
        "extern \"C\" void kernel() {}\n"
        "''')\n"
        "triton_poi_fused_1 = async_compile.triton('triton_poi_fused_1', '''\n"
        "@triton.jit\n"
        "def triton_poi_fused_1(): pass\n"
        "''', device_str='cuda')\n"
    )
    assert extract_kernel_sources(code).splitlines() == [
        "# kernel cpp_fused_sin_0 (cpp_pybinding)",
        'extern "C" void kernel() {}',
        "# kernel triton_poi_fused_1 (triton)",
        "@triton.jit",
        "def triton_poi_fused_1(): pass",
    ]
