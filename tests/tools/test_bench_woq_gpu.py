"""tools/bench_woq_gpu.py: the pure parts (plan, model building and bytes, speedups, tables) on the CPU."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from tools import bench_woq_gpu as bench


def args(**overrides) -> argparse.Namespace:
    fields = dict(quick=False, m="", dtypes="", kn="", schemes="int8,int4,nf4", peer_budget_s=None,
                  model_budget_s=None, no_model=False)
    fields.update(overrides)
    return argparse.Namespace(**fields)


def test_plan_full_quick_and_explicit():
    full = bench.make_plan(args())
    assert full.m_values == (1, 2, 4, 8, 16, 64, 256)
    assert full.dtypes == ("bf16", "fp16")
    assert full.kn_shapes == ((4096, 4096), (8192, 8192), (8192, 28672))
    assert (full.peer_budget_s, full.model_budget_s, full.models) == (240.0, 300.0, True)
    quick = bench.make_plan(args(quick=True))
    assert (quick.m_values, quick.dtypes, quick.kn_shapes) == ((1, 16), ("bf16",), ((8192, 8192),))
    assert (quick.peer_budget_s, quick.model_budget_s) == (60.0, 120.0)
    explicit = bench.make_plan(args(quick=True, m="2,8", dtypes="fp16", kn="4096x4096", model_budget_s=5.0, no_model=True))
    assert (explicit.m_values, explicit.dtypes, explicit.kn_shapes) == ((2, 8), ("fp16",), ((4096, 4096),))
    assert (explicit.model_budget_s, explicit.models) == (5.0, False)
    with pytest.raises(SystemExit, match="--dtypes: 'fp8' is not one of bf16, fp16"):
        bench.make_plan(args(dtypes="bf16,fp8"))
    with pytest.raises(SystemExit, match="--kn: '8192' is not KxN"):
        bench.make_plan(args(kn="8192"))


def test_target_shapes_come_first():
    work = [(256, 8192, 8192), (1, 4096, 4096), (16, 8192, 28672), (1, 8192, 8192)]
    assert sorted(work, key=lambda w: bench.target_first(*w)) == [
        (1, 8192, 8192), (16, 8192, 28672), (1, 4096, 4096), (256, 8192, 8192),
    ]


def test_model_layers_put_the_4bit_weights_past_the_minimum():
    for K, N in bench.KN_SHAPES:
        layers = bench.model_layers(K, N)
        int4 = bench.Problem("int4", 1, N, K).weight_bytes()
        assert layers * int4 >= bench.MODEL_MIN_WEIGHT_BYTES  # past the minimum ...
        assert layers == 2 or (layers - 1) * int4 < bench.MODEL_MIN_WEIGHT_BYTES  # ... by less than a layer
    assert bench.model_layers(8192, 8192) == 8
    assert bench.model_layers(8192, 28672) == 3


@pytest.mark.parametrize("kind", ["dense", "int8", "int4", "nf4"])
def test_models_quantize_every_layer_and_count_their_bytes(kind):
    from impl.schemes import WeightOnlyLinear

    K, N, layers, M = 256, 128, 3, 2
    model = bench.make_model(kind, K, N, layers, torch.bfloat16, "cpu")
    assert len(model.layers) == layers
    assert all(isinstance(layer, WeightOnlyLinear) for layer in model.layers) == (kind != "dense")
    with torch.no_grad():
        outputs = model(torch.randn(M, K, dtype=torch.bfloat16))
    assert len(outputs) == layers and all(y.shape == (M, N) and y.dtype == torch.bfloat16 for y in outputs)
    expected_weights = {
        "dense": N * K * 2,
        "int8": N * K + N * 4,  # codes + a float32 scale per row
        "int4": N * K // 2 + N * (K // 128) * 8,  # nibbles + scale and zero per group of 128
    }
    per_layer = bench.model_weight_bytes(model) // layers
    if kind in expected_weights:
        assert per_layer == expected_weights[kind]
    else:  # nf4: nibbles + absmax (and the 16-entry level table) per layer
        assert N * K // 2 < per_layer < N * K // 2 + N * (K // 64) * 4 + 128  # blocks of 64
    assert bench.layer_min_bytes(model, M, K, N, torch.bfloat16) == per_layer + (M * K + M * N) * 2


def test_speedups_over_dense():
    rows = [{"paths": {"ours": {"ms": 0.02}, "dense": {"ms": 0.04}, "eager": {"error": "x"}, "iq": {"ms": 0.08}}}]
    models = [
        {"model": "dense", "dtype": "bf16", "M": 1, "K": 8, "N": 8, "ms": 0.35, "per_layer_us": 35.0},
        {"model": "int4", "dtype": "bf16", "M": 1, "K": 8, "N": 8, "ms": 0.2, "per_layer_us": 20.0},
        {"model": "int4", "dtype": "fp16", "M": 1, "K": 8, "N": 8, "ms": 0.2, "per_layer_us": 20.0},
    ]
    bench.add_speedups(rows, models)
    assert rows[0]["paths"]["ours"]["speedup_vs_dense"] == 2.0
    assert rows[0]["paths"]["iq"]["speedup_vs_dense"] == 0.5
    assert "speedup_vs_dense" not in rows[0]["paths"]["eager"] and "speedup_vs_dense" not in rows[0]["paths"]["dense"]
    assert models[1]["speedup_vs_dense"] == 1.75
    assert "speedup_vs_dense" not in models[2]  # no fp16 dense model to compare with


def test_markdown_has_kernel_and_model_tables():
    kernel_row = {"scheme": "int4", "dtype": "bf16", "M": 1, "K": 8192, "N": 8192, "config": "cfg", "paths": {
        "ours": {"ms": 0.0252, "pct_copy": 35.0, "speedup_vs_dense": 1.39, "cpu_us": 106.0},
        "dense": {"ms": 0.035, "pct_copy": 90.0}, "iq": {"error": "NoValidChoicesError: nf4"},
        "compiled": {"skipped": "peer time budget spent"},
    }}
    models = [
        {"model": "dense", "dtype": "bf16", "M": 1, "K": 8192, "N": 8192, "layers": 8, "ms": 0.28, "per_layer_us": 35.0, "pct_copy": 90.0},
        {"model": "int4", "dtype": "bf16", "M": 1, "K": 8192, "N": 8192, "layers": 8, "ms": 0.16, "per_layer_us": 20.0,
         "pct_copy": 44.0, "speedup_vs_dense": 1.75},
        {"model": "nf4", "dtype": "bf16", "M": 1, "K": 8192, "N": 8192, "layers": 8, "error": "RuntimeError: boom"},
    ]
    result = {"device": "NVIDIA H200", "torch": "2.11.0", "triton": "3.6.0", "dtype": "bf16", "copy_GBps": 4250.0,
              "timer": "events", "scheme_ints": {"int4": {"group_size": 128}, "nf4": {"block_size": 64}},
              "model_mode": "max-autotune-no-cudagraphs",
              "rows": [kernel_row], "model_rows": models}
    text = bench.markdown_table(result)
    assert "bf16 activations; int4 group_size 128, nf4 block_size 64." in text
    assert ("| scheme | dtype | M | K | N | ours | dense | eager | compiled max-autotune | InvokeQuant + prologue | "
            "_weight_int8pack_mm | ours vs dense |") in text
    assert ("| int4 | bf16 | 1 | 8192 | 8192 | 25.2 µs (35 %) | 35.0 µs (90 %) | — | skipped | error | — | 1.39× "
            "| — | 106 µs | cfg |") in text
    assert "| dtype | M | K | N | layers | dense | int4 | nf4 |" in text
    assert "| bf16 | 1 | 8192 | 8192 | 8 | 35.0 µs (90 %) | 20.0 µs (44 %, 1.75×) | error |" in text
    assert "- model nf4 bf16 M=1 K=8192 N=8192: RuntimeError: boom" in text
    assert "- int4 bf16 M=1 K=8192 N=8192 iq: NoValidChoicesError: nf4" in text


def test_main_without_cuda_says_so(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device; the bench itself would run")
    assert bench.main(["--quick"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def test_bench_models_goes_dense_first_target_shapes_first_and_stops_at_the_budget(monkeypatch, tmp_path):
    calls = []

    def fake_bench_model(kind, dtype_name, M, K, N, layers, device, copy_gbs, mode):
        calls.append((kind, dtype_name, M, K, N))
        if len(calls) == 3:
            monkeypatch.setattr(bench.time, "perf_counter", lambda: float("inf"))  # the budget runs out
        return {"model": kind, "dtype": dtype_name, "M": M, "K": K, "N": N, "layers": layers, "ms": 1.0,
                "per_layer_us": 1000.0 / layers, "pct_copy": 50.0}

    monkeypatch.setattr(bench, "bench_model", fake_bench_model)
    plan = bench.make_plan(args(m="16,1", dtypes="bf16", kn="4096x4096,8192x8192", schemes="int8,int4"))
    partial = tmp_path / "partial.json"
    out = bench.bench_models(plan, "cuda", 4000.0, "default", partial_path=str(partial), rows=[])
    assert calls == [("dense", "bf16", 1, 8192, 8192), ("int8", "bf16", 1, 8192, 8192), ("int4", "bf16", 1, 8192, 8192)]
    assert len(out) == 3 * 4  # every (shape, M) keeps its rows ...
    assert [m.get("skipped") for m in out[3:]] == ["model time budget spent"] * 9  # ... the rest say why
    assert out[3]["layers"] == bench.model_layers(8192, 8192)
    assert len(json.loads(partial.read_text())["model_rows"]) == 12


@pytest.mark.parametrize("scheme, group", [("int4", 128), ("nf4", 64)])
def test_tune_candidates_span_groups_only_with_the_scale_before_the_dot(scheme, group):
    configs = bench.tune_candidates(scheme, 1, group)
    spanning = [c for c in configs if c.block_k > group]
    assert spanning, "no candidate reads more than one group a step"
    assert not any(c.scale_after_dot for c in spanning)
    assert len(configs) == len(set(configs))


@pytest.mark.parametrize("scheme, group", [("int4", 128), ("nf4", 64), ("int8", None)])
def test_m1_candidates_put_the_gemv_kernels_against_the_tiles(scheme, group):
    """M = 1 sweeps the GEMV kernels (block_m 1, one stage) next to the 16-row tiles; the 4-bit
    GEMV steps are not capped at the group (wide row segments are what made them pay)."""
    gemv = [c for c in bench.tune_candidates(scheme, 1, group) if c.block_m == 1]
    tiles = [c for c in bench.tune_candidates(scheme, 1, group) if c.block_m == 16]
    assert gemv and tiles
    assert max(c.block_k for c in gemv) >= 1024
    if group:
        assert all(c.num_stages == 1 for c in gemv)
    assert not any(c.block_m == 1 for c in bench.tune_candidates(scheme, 16, group))


@pytest.mark.parametrize("M", [2, 4, 8])
@pytest.mark.parametrize("scheme, group", [("int4", 128), ("nf4", 64), ("int8", None)])
def test_small_m_candidates_put_m_row_gemv_kernels_against_the_tiles(scheme, group, M):
    """M = 2, 4, 8 sweep the GEMV kernels with exactly M rows a tile next to the 16-row tiles."""
    candidates = bench.tune_candidates(scheme, M, group)
    gemv = [c for c in candidates if c.gemv]
    assert gemv and {c.block_m for c in gemv} == {M}
    assert any(c.block_m == 16 for c in candidates)
    assert len(candidates) == len(set(candidates))
