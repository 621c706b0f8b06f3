"""The CPU prefill route (impl/lowerings/woq_panel_cpu.py) and the lowering's use of it.

Decoders: each scheme's panel equals the op's float32 dequantization exactly (float32; bfloat16
and float16 as the float32 value rounded to nearest), both loops (AVX2 and scalar), odd K
(a 32-value step cut by K), rows from the middle of W. Products: every scheme, activation
dtype and GEMM dtype, several panels with a ragged last one, against the float64 reference.
Compiled: past 16 rows every scheme, dtype and freezing setting calls the panel route and
allocates no (N, K) weight and no whole-weight GEMM; at 16 rows the decode kernel; a
symbolic row count picks its route per call.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from impl.schemes import int4, int8, nf4
from impl.lowerings import woq_gemv_cpu, woq_panel_cpu
from impl.schemes import (
    compute_sqnr,
    dequantize_int4_reference,
    dequantize_int8_reference,
    dequantize_nf4_reference,
    nf4_levels,
    quantize_int4,
    quantize_int8,
    quantize_nf4,
)
from tests.impl.test_woq_gemv_cpu import K1, _compile, _model, _weight_sized_buffers
from tests.impl.test_woq_gemv_cpu import SCHEMES as MODEL_SCHEMES  # the model's schemes (this file's SCHEMES: the decoders')

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DTYPE_IDS = ["fp32", "bf16", "fp16"]
# The GEMM in float32 on the exact weight: x's rounding and the output's; in x's dtype
# (gemm_dtype = x's): the weight rounded to it too.
SQNR_FLOOR = {torch.float32: 110.0, torch.bfloat16: 38.0, torch.float16: 50.0}


def _quantized(scheme: str, w: torch.Tensor):
    """(float64 reference W, the op's float32 W, mm(x, **kw), decode(out, dtype_code, n0, rows, vectorized))."""
    n, k = w.shape
    if scheme == "int8":
        q = quantize_int8(w)
        kernel = woq_panel_cpu.compiled_kernel("int8")
        return (dequantize_int8_reference(q), int8.dequantize_int8_values(q.qweight, q.scale, torch.float32),
                lambda x, **kw: woq_panel_cpu.mm_int8(x, q.qweight, q.scale, **kw),
                lambda out, code, n0, rows, vec: kernel(q.qweight, q.scale, out, n0, rows, k, code, vec))
    if scheme == "int4":
        q = quantize_int4(w, 32)
        kernel = woq_panel_cpu.compiled_kernel("int4")
        k_pad = 2 * q.qweight.shape[1]
        return (dequantize_int4_reference(q), int4.dequantize_int4_values(*q.tensors(), 32, k, torch.float32),
                lambda x, **kw: woq_panel_cpu.mm_int4(x, *q.tensors(), group_size=32, **kw),
                lambda out, code, n0, rows, vec: kernel(q.qweight, q.scale, q.zero, out, n0, rows, k, k_pad, 32,
                                                        code, vec))
    dq = scheme == "nf4-dq"
    q = quantize_nf4(w, 64, double_quant=dq)
    levels = nf4_levels()
    kernel = woq_panel_cpu.compiled_kernel("nf4")
    k_pad = 2 * q.qweight.shape[1]
    a_scale, a_offset = (q.absmax_scale, q.absmax_offset) if dq else (levels, levels)
    w32 = nf4.dequantize_nf4_values(q.qweight, q.absmax, levels, q.absmax_scale, q.absmax_offset, 64, k, torch.float32)
    return (dequantize_nf4_reference(q), w32,
            lambda x, **kw: woq_panel_cpu.mm_nf4(x, q.qweight, q.absmax, levels, q.absmax_scale, q.absmax_offset,
                                                 block_size=64, **kw),
            lambda out, code, n0, rows, vec: kernel(q.qweight, q.absmax, levels, a_scale, a_offset, out, n0, rows, k,
                                                    k_pad, 64, int(dq), code, vec))


SCHEMES = ["int8", "int4", "nf4", "nf4-dq"]


@pytest.mark.parametrize("vectorized", [True, False], ids=["avx2", "scalar"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_decoded_panels_are_the_reference_weight(scheme, dtype, vectorized):
    torch.manual_seed(0)
    for n, k in ((40, 203), (24, 264), (9, 8)):  # a step cut by K; whole steps; K shorter than a step
        _, w32, _, decode = _quantized(scheme, torch.randn(n, k) * 0.05)
        expected = w32.to(dtype)  # the op's float32 weight exactly, then rounded
        n0, rows = n // 3, n - n // 3 - 1  # rows from the middle of W
        out = torch.full((rows, k), float("nan"), dtype=dtype)
        decode(out, woq_panel_cpu._DTYPE_CODES[dtype], n0, rows, int(vectorized))
        torch.testing.assert_close(out, expected[n0:n0 + rows], rtol=0, atol=0, msg=f"{scheme} {n}x{k}")


@pytest.mark.parametrize("gemm", ["auto", "x_dtype"])
@pytest.mark.parametrize("vectorized", [True, False], ids=["avx2", "scalar"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_products_match_the_float64_reference(scheme, dtype, vectorized, gemm):
    torch.manual_seed(0)
    for n, k, panel_rows in ((40, 203, 16), (33, 520, None)):  # 3 panels, the last ragged; one panel
        w64, _, mm, _ = _quantized(scheme, torch.randn(n, k) * 0.05)
        for m in (17, 33):
            x = torch.randn(m, k).to(dtype)
            y = mm(x, vectorized=vectorized, panel_rows=panel_rows, gemm_dtype=dtype if gemm == "x_dtype" else None)
            assert y.shape == (m, n) and y.dtype == dtype and y.is_contiguous()
            sqnr = compute_sqnr(x.double() @ w64.T, y)
            assert sqnr > SQNR_FLOOR[dtype], (scheme, n, k, m, sqnr)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_calls_past_the_parallel_threshold_match_one_thread(scheme):
    """Past kParallelMinValues weight values the kernels (this route's and the decode ones)
    split rows over the threads; below it they run on one. Same sums either way."""
    torch.manual_seed(0)
    n, k = 131, 2048  # 268k values: past 1 << 18; n odd, so the threads' shares differ
    w = torch.randn(n, k) * 0.05
    _, _, mm, _ = _quantized(scheme, w)
    x = torch.randn(19, k)
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2):
            torch.set_num_threads(count)
            gemv = _gemv(scheme, w, x[:3])
            results.append((mm(x), gemv))
    finally:
        torch.set_num_threads(threads)
    (mm1, gemv1), (mm2, gemv2) = results
    torch.testing.assert_close(gemv1, gemv2, rtol=0, atol=0)  # each sum on one thread, in one order
    torch.testing.assert_close(mm1, mm2)  # ATen's GEMM may order its sums by thread count


def _gemv(scheme: str, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if scheme == "int8":
        q = quantize_int8(w)
        return woq_gemv_cpu.gemv_int8(x, q.qweight, q.scale)
    if scheme == "int4":
        q = quantize_int4(w, 32)
        return woq_gemv_cpu.gemv_int4(x, *q.tensors(), group_size=32)
    q = quantize_nf4(w, 64, double_quant=scheme == "nf4-dq")
    return woq_gemv_cpu.gemv_nf4(x, q.qweight, q.absmax, nf4_levels(), q.absmax_scale, q.absmax_offset, block_size=64)


def test_gemm_dtype_follows_the_hosts_native_dot_products(monkeypatch):
    woq_panel_cpu.compute_dtype.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)
    assert [woq_panel_cpu.compute_dtype(d) for d in DTYPES] == [torch.float32] * 3
    woq_panel_cpu.compute_dtype.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: True)
    assert [woq_panel_cpu.compute_dtype(d) for d in DTYPES] == DTYPES
    woq_panel_cpu.compute_dtype.cache_clear()


def test_panel_rows_hold_the_panel_bytes():
    assert woq_panel_cpu.panel_rows_for(2048, torch.float32) == 256
    assert woq_panel_cpu.panel_rows_for(5632, torch.float32) == 80
    assert woq_panel_cpu.panel_rows_for(2048, torch.bfloat16) == 512
    assert woq_panel_cpu.panel_rows_for(10 ** 7, torch.float32) == 16


def test_bad_x_names_the_kernel():
    q = quantize_int4(torch.randn(16, 64), 32)
    with pytest.raises(ValueError, match=r"woq_panel_int4: x must be a CPU \(M, K <= 64\)"):
        woq_panel_cpu.mm_int4(torch.randn(20, 65), *q.tensors(), group_size=32)
    q8 = quantize_int8(torch.randn(16, 64))
    with pytest.raises(ValueError, match="woq_panel_int8: x must have K = 64 columns"):
        woq_panel_cpu.mm_int8(torch.randn(20, 63), q8.qweight, q8.scale)


# --------------------------------------------------------------------------- compiled

# The two-layer model, its compile and its weight-buffer scan: the decode kernels' test's.


@pytest.mark.parametrize("freezing", [False, True], ids=["unfrozen", "frozen"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=DTYPE_IDS[:2])
@pytest.mark.parametrize("scheme", list(MODEL_SCHEMES))
def test_prefill_decodes_panels_not_the_whole_weight(scheme, dtype, freezing):
    model = _model(scheme)
    xs = [torch.randn(m, K1, dtype=dtype) for m in (17, 64)]
    outputs, code = _compile(model, xs, dynamic=False, freezing=freezing)
    assert counters["inductor"][f"woq_fusion_{scheme}_matcher_count"] == 4  # 2 Linears x 2 compiles
    assert code.count(f"extern_kernels.impl_woq_panel_{scheme}_cpu(") == 4, code
    assert _weight_sized_buffers(code) == [], code
    for other in ("extern_kernels.mm(", "extern_kernels.addmm(", "_weight_int8pack_mm", "_weight_int4pack_mm",
                  "impl_woq_gemv"):
        assert other not in code, (other, code)
    with torch.no_grad():
        for x, y in zip(xs, outputs):
            assert compute_sqnr(model(x), y) > (90.0 if dtype == torch.float32 else 35.0)


def test_the_route_changes_between_16_and_17_rows():
    model = _model("int4")
    _, at_max = _compile(model, [torch.randn(woq_gemv_cpu.GEMV_MAX_M, K1)], dynamic=False)
    _, past_max = _compile(model, [torch.randn(woq_gemv_cpu.GEMV_MAX_M + 1, K1)], dynamic=False)
    assert "impl_woq_gemv_int4_cpu(" in at_max and "impl_woq_panel" not in at_max
    assert "impl_woq_panel_int4_cpu(" in past_max and "impl_woq_gemv" not in past_max


@pytest.mark.parametrize("scheme", list(MODEL_SCHEMES))
def test_a_symbolic_prefill_row_count_takes_the_panel_route(scheme):
    """Compiled with a dynamic row count whose hint is a prefill size. (A symbolic count with a
    decode hint: test_woq_gemv_cpu.py, whose kernel hands rows past 16 to this route.)"""
    model = _model(scheme)
    xs = [torch.randn(1, t, K1) for t in (40, 64)]
    outputs, code = _compile(model, xs, dynamic=True)
    assert f"impl_woq_panel_{scheme}_cpu(" in code and "impl_woq_gemv" not in code, code
    with torch.no_grad():
        for x, y in zip(xs, outputs):
            assert compute_sqnr(model(x), y) > 90.0, x.shape
