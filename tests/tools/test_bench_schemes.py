"""tools/bench_schemes.py, and the scheme list of every tool: a scheme registered in
impl.schemes.registry (the toy "int8 per group" of tests/impl/int8g_scheme.py, registered by
a module-scoped fixture) is quantized, sized and listed by each tool without editing it."""

from __future__ import annotations

import pytest
import torch

from impl.schemes import registry
from tests.impl.int8g_scheme import registry_entry
from tools import bench_schemes

N, K = 8, 256


@pytest.fixture(scope="module")
def toy():
    record = registry.register_scheme(registry_entry())
    yield record.short
    registry.unregister_scheme(record.name)


def test_schemes_by_short_name_name_or_alias_in_registration_order(toy):
    assert bench_schemes.shorts() == ("int8", "int4", "nf4", toy)
    assert bench_schemes.parse_schemes("int4_weight_only, int8g,nf4", "tool") == ("int4", toy, "nf4")
    with pytest.raises(SystemExit, match=f"tool: --schemes: 'fp8' is not one of int8, int4, nf4, {toy}"):
        bench_schemes.parse_schemes("int8,fp8", "tool")


@pytest.mark.parametrize("short, nbytes, ints", [
    ("int8", N * K + N * 4, ()),                          # codes + a float32 scale a row
    ("int4", N * K // 2 + N * (K // 128) * 8, (128,)),    # nibbles + float32 scale and zero a group
    ("nf4", N * K // 2 + N * (K // 64) * 4, (64,)),       # nibbles + float32 absmax a block
    ("toy", N * K + N * (K // 32) * 4, (32,)),            # codes + float32 scale a group of 32
])
def test_quantized_operands_their_bytes_and_ints(toy, short, nbytes, ints):
    short = toy if short == "toy" else short
    options = bench_schemes.quantize_options(short)
    assert bench_schemes.weight_bytes(short, N, K, options) == nbytes
    assert bench_schemes.scheme_ints(short, K, options) == ints
    operands, got_ints = bench_schemes.quantize(short, N, K, "cpu", options)
    record = registry.by_short(short)
    assert got_ints == ints and len(operands) == len(record.operands)
    named = dict(zip(record.operands, operands))  # the packed tensors, not the derived ones (nf4's levels)
    assert sum(named[b].numel() * named[b].element_size() for b in record.buffers if named[b] is not None) == nbytes
    w = bench_schemes.dequantize(short, operands, ints, K, torch.float32)
    assert w.shape == (N, K) and w.abs().max() < 0.2  # the formula on the 0.02 N(0, 1) weight
    copies = bench_schemes.copies(operands, 3)
    assert len(copies) == 3 and copies[0] is operands
    assert all(torch.equal(a, b) and a.data_ptr() != b.data_ptr()
               for a, b in zip(copies[0], copies[2]) if a is not None)
    spec = bench_schemes.layout(operands)
    zeros = bench_schemes.zeros_of(spec, "cpu")
    assert [(z.shape, z.dtype) for z in zeros if z is not None] == [(t.shape, t.dtype) for t in operands if t is not None]


def test_options_of_a_tool_go_over_the_tables(toy):
    assert bench_schemes.quantize_options("int4") == {"group_size": 128}
    assert bench_schemes.quantize_options("nf4", {"nf4": {"double_quant": True}}) == {"block_size": 64, "double_quant": True}
    assert bench_schemes.quantize_options(toy) == {}  # its quantizer's defaults


def test_every_tool_lists_a_registered_scheme(toy):
    from tools import bench_woq_cpu, bench_woq_gpu, bench_woq_kernels, bench_woq_model

    assert bench_woq_gpu.make_plan(bench_woq_gpu.parse_args([])).schemes == ("int8", "int4", "nf4", toy)
    assert bench_woq_gpu.Problem(toy, 1, N, K).weight_bytes() == N * K + N * (K // 32) * 4
    assert bench_woq_gpu.tune_candidates(toy, 16, 32)
    variants = bench_woq_kernels.parse_args([]).variants.split(",")
    assert variants[:5] == ["dense", "int8", "int4", "nf4", toy] and "tinygemm_int4" in variants
    assert bench_woq_kernels.weight_bytes(toy, K, N, torch.bfloat16) == N * K + N * (K // 32) * 4
    variants = bench_woq_model.parse_args([]).variants.split(",")
    assert variants[:5] == ["dense", "int8", "int4", "nf4", toy] and "bnb_nf4" in variants
    assert bench_woq_cpu.parse_args([]).schemes == ("int8", "int4", "nf4", toy)


def test_the_gpu_bench_builds_and_sizes_a_model_of_a_registered_scheme(toy):
    from impl.schemes import WeightOnlyLinear
    from tools import bench_woq_gpu

    model = bench_woq_gpu.make_model(toy, K, N, 2, torch.bfloat16, "cpu")
    assert all(isinstance(layer, WeightOnlyLinear) and layer.scheme == registry.by_short(toy).name
               for layer in model.layers)
    assert bench_woq_gpu.model_weight_bytes(model) == 2 * (N * K + N * (K // 32) * 4)


def test_the_launcher_cost_tool_calls_every_registered_launcher(toy):
    pytest.importorskip("triton")
    from tools import launcher_cost

    assert list(launcher_cost.calls("cpu", k=K, n=N)) == ["int8", "int4", "nf4", toy]


@pytest.mark.parametrize("short", ["int8", "int4", "nf4", "toy"])
def test_a_gpu_bench_cell_runs_each_path_of_a_registered_scheme_on_the_cpu(toy, short, monkeypatch):
    """bench_woq_gpu.bench_problem's plumbing (our launcher on the launch arguments, the eager
    peer on the formula, the layout peers, the reference) through Triton's interpreter, each
    timing replaced by one call."""
    pytest.importorskip("triton")
    from impl.kernels import use_interpreter
    from tools import bench_woq_gpu as bench

    use_interpreter()
    short = toy if short == "toy" else short
    for name in ("time_gpu_ms", "cpu_us_per_call", "do_bench_median"):
        monkeypatch.setattr(bench, name, lambda fn, *args, **kwargs: (fn(), 1.0)[1])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    problem = bench.Problem(short, 2, N * 4, K, torch.bfloat16)
    config = bench.current_config(problem, torch.device("cpu"))
    row = bench.bench_problem(problem, torch.device("cpu"), 1000.0, config, peers=False, peer_deadline=0.0)
    expected = {"ours", "eager", "dense", *bench.LAYOUT_PEERS.get(short, {})}
    assert set(row["paths"]) == expected
    assert all(entry["rel_err"] < 2e-2 for entry in row["paths"].values()), row["paths"]
    assert row["bytes"] == problem.weight_bytes() + 2 * K * 2 + 2 * N * 4 * 2
