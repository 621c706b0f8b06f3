"""harness/run.py: one cell's run, outputs named, grads collected, code and kernels captured."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.case import parse_suite
from harness.matrix import MatrixCell
from harness.core.execute import extract_kernel_sources, flatten_outputs
from harness.run import build_inputs, run_cell

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


def grad_mode_as_output(x):
    """x * 1 plus a flag: 1 when grad was enabled during this call (eager, float64 or compiled)."""
    return x * 1, torch.tensor(float(torch.is_grad_enabled()))


def test_no_grad_covers_every_run():
    body = (
        f"    program: '{PROGRAMS}:grad_mode_as_output'\n"
        "    inputs: {x: {shape: [3]}}\n"
        "    tolerances: {float64_factor: 2.0}\n"
    )
    grad_on = run_cell(load_case(body), MatrixCell("aot_eager", "cpu", "float32"))
    assert [run["output[1]"].item() for run in (grad_on.eager, grad_on.float64, grad_on.compiled)] == [1.0, 1.0, 1.0]
    grad_off = run_cell(load_case(body + "    no_grad: true\n"), MatrixCell("aot_eager", "cpu", "float32"))
    assert [run["output[1]"].item() for run in (grad_off.eager, grad_off.float64, grad_off.compiled)] == [0.0, 0.0, 0.0]
    assert grad_off.graphs == 1 and grad_off.graph_breaks == 0


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


def test_cells_that_check_the_compiler_bypass_warm_caches(tmp_path, monkeypatch):
    # A cache hit skips the post-grad passes: their graphs and logs never appear, and
    # counters are only replayed as the cache recorded them. A cell that checks counters
    # must compile afresh even when the FX graph and AOTAutograd caches are warm
    # (impl.install()'s passes are cache-friendly, so nothing else stops a hit).
    import impl

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    case = load_case(
        "    program: 'suites.programs.woq_fusion:linear'\n"
        "    params: {scheme: int8}\n"
        "    inputs:\n"
        "      x: {shape: [2, 32]}\n"
        "      weight: {shape: [8, 32], kind: 'suites.programs.woq_fusion:int8_weight'}\n"
        "      bias: {shape: [8]}\n"
        "    checks:\n"
        "      counters:\n"
        "        - {key: inductor.woq_fusion_int8_matcher_count, equals: 1}\n"
    )
    cell = MatrixCell("inductor", "cpu", "float32")
    caches_on = {"fx_graph_cache": True}
    with impl.installed(), torch._inductor.config.patch(caches_on), torch._functorch.config.patch(enable_autograd_cache=True):
        runs = [run_cell(case, cell) for _ in range(2)]
    for run in runs:
        assert run.counters["inductor"]["woq_fusion_int8_matcher_count"] == 1
        assert "fxgraph_cache_hit" not in run.counters["inductor"]
        assert "autograd_cache_hit" not in run.counters.get("aot_autograd", {})


def test_compile_mode_sets_the_inductor_mode_and_runs_cuda_graph_modes_until_they_replay(monkeypatch):
    modes = []
    real_compile = torch.compile

    def recording_compile(fn, **kwargs):
        modes.append(kwargs.get("mode"))
        return real_compile(fn, **kwargs)

    monkeypatch.setattr(torch, "compile", recording_compile)
    body = (
        f"    program: '{PROGRAMS}:add_in_place'\n"
        "    inputs: {x: {shape: [3]}}\n"
        "    checks: {inputs_after: true}\n"
    )
    default = run_cell(load_case(body), MatrixCell("inductor", "cpu", "float32"))
    graphs = run_cell(load_case(body + "    compile_mode: reduce-overhead\n"), MatrixCell("inductor", "cpu", "float32"))
    autotuned = run_cell(load_case(body + "    compile_mode: reduce-overhead\n"), MatrixCell("inductor_max_autotune", "cpu", "float32"))
    assert modes == [None, "reduce-overhead", "max-autotune-no-cudagraphs"]  # the backend's own mode wins
    torch.testing.assert_close(default.compiled["input(x)"], default.eager["input(x)"])  # one call each
    # warm-up, record, replay on the same inputs: the in-place add ran three times
    torch.testing.assert_close(graphs.compiled["input(x)"], graphs.eager["input(x)"] + 2)
    torch.testing.assert_close(autotuned.compiled["input(x)"], autotuned.eager["input(x)"])
