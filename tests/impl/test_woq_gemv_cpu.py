"""The CPU decode kernels (impl/lowerings/woq_gemv_cpu.py) and the lowering's use of them.

Kernels: every scheme, activation dtype, row count (passes of 4 rows with a ragged tail),
K with padding / a non-multiple-of-16 tail, every loop (AVX-512 where the host has
AVX512-BF16, AVX2, scalar), against the float64 reference. Compiled: a quantized model at
decode sizes reads only the quantized bytes (the output code calls our kernel and allocates
no (N, K) weight, no GEMM), freezing on and off; a symbolic row count picks its route per
call (past 16 rows the prefill route, tests/impl/test_woq_panel_cpu.py).
"""

from __future__ import annotations

import re

import pytest
import torch
from torch._dynamo.utils import counters
from torch._inductor import config as inductor_config
from torch._inductor.utils import run_and_get_code

import impl
from impl.lowerings import woq_gemv_cpu
from impl.schemes import (
    compute_sqnr,
    dequantize_int4_reference,
    dequantize_int8_reference,
    dequantize_nf4_reference,
    nf4_levels,
    quantize_int4,
    quantize_int8,
    quantize_linear_,
    quantize_nf4,
)

# float32: the same float32 products summed in another order; half precision: x's
# rounding and the output's (the kernels never round the weight to x's dtype).
SQNR_FLOOR = {torch.float32: 120.0, torch.bfloat16: 40.0, torch.float16: 55.0}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# A kernel's loops, as its launcher's keywords. The AVX-512 loops (BF16 for bfloat16 x, F32
# for float32 / float16 x; int4 groups and nf4 blocks a multiple of 64) need AVX512-BF16 on
# the host; any other call falls through to AVX2.
LOOPS = [
    pytest.param({"avx512": True}, id="avx512", marks=pytest.mark.skipif(
        not torch.cpu._is_avx512_bf16_supported(), reason="this CPU has no AVX512-BF16: the call would run AVX2")),
    pytest.param({"avx512": False}, id="avx2"),
    pytest.param({"vectorized": False}, id="scalar"),
]


def _run(scheme: str, x: torch.Tensor, w: torch.Tensor, loop: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel output, float64 reference) for weight w quantized by ``scheme``."""
    if scheme == "int8":
        q = quantize_int8(w)
        return woq_gemv_cpu.gemv_int8(x, q.qweight, q.scale, **loop), dequantize_int8_reference(q)
    if scheme == "int4":
        q = quantize_int4(w, 64)
        y = woq_gemv_cpu.gemv_int4(x, *q.tensors(), group_size=64, **loop)
        return y, dequantize_int4_reference(q)
    q = quantize_nf4(w, 64, double_quant=scheme == "nf4-dq")
    y = woq_gemv_cpu.gemv_nf4(x, q.qweight, q.absmax, nf4_levels(), q.absmax_scale, q.absmax_offset,
                              block_size=64, **loop)
    return y, dequantize_nf4_reference(q)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("scheme", ["int8", "int4", "nf4", "nf4-dq"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16", "fp16"])
def test_kernels_match_the_float64_reference(scheme, dtype, loop):
    torch.manual_seed(0)
    for n, k in ((40, 203), (24, 264), (8, 8)):  # K padded to the group; 16-byte steps with a tail
        w = torch.randn(n, k) * 0.05
        for m in (1, 2, 3, 4, 5, 9, 16):
            x = torch.randn(m, k).to(dtype)
            y, w64 = _run(scheme, x, w, loop)
            assert y.shape == (m, n) and y.dtype == dtype
            sqnr = compute_sqnr(x.double() @ w64.T, y)
            assert sqnr > SQNR_FLOOR[dtype], (scheme, dtype, n, k, m, sqnr)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_int4_every_group_size(dtype, group_size, loop):
    """int4 sums x . u a group (16-byte steps, or pairs of them from 64 on; 32-byte steps on the
    AVX-512 BF16 loop), scales it once and takes the zero point off through x's group sums:
    every group size, an odd N."""
    torch.manual_seed(2)
    w = torch.randn(7, 300) * 0.05
    q = quantize_int4(w, group_size)
    for m in (1, 2, 5):
        x = torch.randn(m, 300).to(dtype)
        y = woq_gemv_cpu.gemv_int4(x, *q.tensors(), group_size=group_size, **loop)
        sqnr = compute_sqnr(x.double() @ dequantize_int4_reference(q).T, y)
        assert sqnr > SQNR_FLOOR[dtype], (group_size, m, sqnr)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("block_size", [32, 64, 128, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_nf4_every_block_size(dtype, block_size, loop):
    """nf4 sums x . levels[u] a block (one 16-byte step at 32, pairs of steps from 64 on) and
    scales it by the block's absmax once: every block size, double-quantized or not, an odd N."""
    torch.manual_seed(3)
    w = torch.randn(7, 600) * 0.05
    for double_quant in (False, True):
        q = quantize_nf4(w, block_size, double_quant=double_quant)
        for m in (1, 2, 5):
            x = torch.randn(m, 600).to(dtype)
            y = woq_gemv_cpu.gemv_nf4(x, q.qweight, q.absmax, nf4_levels(), q.absmax_scale, q.absmax_offset,
                                      block_size=block_size, **loop)
            sqnr = compute_sqnr(x.double() @ dequantize_nf4_reference(q).T, y)
            assert sqnr > SQNR_FLOOR[dtype], (block_size, double_quant, m, sqnr)


def test_the_two_loops_agree_to_float32_rounding():
    torch.manual_seed(1)
    x, w = torch.randn(5, 520), torch.randn(33, 520)
    for scheme in ("int8", "int4", "nf4-dq"):
        fast, _ = _run(scheme, x, w, {})
        slow, _ = _run(scheme, x, w, {"vectorized": False})
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(not torch.cpu._is_avx512_bf16_supported(), reason="this CPU has no AVX512-BF16")
def test_the_bf16_dot_loop_agrees_with_the_float32_one():
    """int8 and int4 codes are exact in bfloat16, so both loops sum the same float32 products
    (in another order): their bfloat16 outputs differ by at most an ulp or so. nf4's levels
    are rounded to bfloat16 once (a relative 2^-9 a weight), within bfloat16's own tolerance."""
    torch.manual_seed(4)
    x, w = torch.randn(6, 1000).bfloat16(), torch.randn(37, 1000) * 0.05
    for scheme in ("int8", "int4", "nf4-dq"):
        dot, _ = _run(scheme, x, w, {"avx512": True})
        fma, _ = _run(scheme, x, w, {"avx512": False})
        tol = {"rtol": 1.6e-2, "atol": 1e-3} if scheme != "nf4-dq" else {"rtol": 5e-2, "atol": 5e-3}
        torch.testing.assert_close(dot.float(), fma.float(), **tol)
    assert not torch.equal(dot, fma)  # nf4's rounded levels: the bfloat16 loop did run


@pytest.mark.skipif(not torch.cpu._is_avx512_bf16_supported(), reason="this CPU has no AVX512-BF16")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_long_rows_take_weight_rows_in_pairs(dtype):
    """Past 32 KB of x a pass (four rows of K = 4100: 66 KB float32, 33 KB bfloat16) the AVX-512
    loops take two weight rows at once, one x load for both: an odd N leaves one alone, M = 5 a
    pass of one x row (one weight row at a time again), K's tail is masked / padded. The same
    sums as the AVX2 loop (float32) and the float64 reference's."""
    torch.manual_seed(5)
    w = torch.randn(7, 4100) * 0.05
    for m in (2, 4, 5):
        x = torch.randn(m, 4100).to(dtype)
        for scheme in ("int8", "int4", "nf4-dq"):
            wide, w64 = _run(scheme, x, w, {"avx512": True})
            assert compute_sqnr(x.double() @ w64.T, wide) > SQNR_FLOOR[dtype], (scheme, m)
            if dtype == torch.float32:
                narrow, _ = _run(scheme, x, w, {"avx512": False})
                torch.testing.assert_close(wide, narrow, rtol=1e-5, atol=1e-4)


def test_aten_cpu_capability_avx2_keeps_the_kernels_on_avx2():
    """The kernels take AVX-512 only where torch's own do: under ATEN_CPU_CAPABILITY=avx2 a
    default call asks for the AVX2 loop at most (isa 1), whatever the host."""
    import os
    import subprocess
    import sys

    code = "from impl.lowerings.woq_gemv_cpu import _isa; print(_isa(True, None), _isa(False, None))"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "0"]


def test_a_strided_x_and_bad_shapes():
    q = quantize_int4(torch.randn(16, 64), 32)
    x = torch.randn(2, 128)[:, ::2]
    expected = x.double() @ dequantize_int4_reference(q).T
    assert compute_sqnr(expected, woq_gemv_cpu.gemv_int4(x, *q.tensors(), group_size=32)) > 120
    with pytest.raises(ValueError, match=r"gemv_int4: x must be a CPU \(M, K <= 64\)"):
        woq_gemv_cpu.gemv_int4(torch.randn(2, 65), *q.tensors(), group_size=32)
    q8 = quantize_int8(torch.randn(16, 64))
    with pytest.raises(ValueError, match="gemv_int8: x must have K = 64 columns"):
        woq_gemv_cpu.gemv_int8(torch.randn(2, 63), q8.qweight, q8.scale)


# --------------------------------------------------------------------------- compiled

N1, K1, N2 = 96, 160, 48  # K1 not a multiple of the groups below: padded columns
SCHEMES = {"int8": {}, "int4": {"group_size": 64}, "nf4": {"block_size": 32, "double_quant": True}}


def _model(scheme: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(K1, N1), torch.nn.SiLU(), torch.nn.Linear(N1, N2))
    return quantize_linear_(model, scheme, **SCHEMES[scheme]).eval()


def _compile(model, xs, *, dynamic=None, **config):
    torch._dynamo.reset()
    counters.clear()
    outputs, codes = [], []
    with impl.installed(), inductor_config.patch(force_disable_caches=True, **config), torch.no_grad():
        compiled = torch.compile(model, dynamic=dynamic)
        for x in xs:
            y, code = run_and_get_code(compiled, x)
            outputs.append(y)
            codes.extend(code)
    return outputs, "\n".join(codes)


def _weight_sized_buffers(code: str) -> list[str]:
    """Buffers the output code allocates with a Linear's weight shape (a dequantized weight)."""
    shapes = {(N1, K1), (N2, N1), (K1, N1), (N1, N2)}
    found = re.findall(r"empty_strided_cpu\(\((\d+), (\d+)\)", code)
    return [f"{a}x{b}" for a, b in found if (int(a), int(b)) in shapes]


@pytest.mark.parametrize("freezing", [False, True], ids=["unfrozen", "frozen"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_decode_reads_only_the_quantized_bytes(scheme, dtype, freezing):
    model = _model(scheme)
    xs = [torch.randn(m, K1, dtype=dtype) for m in (1, 16)]  # the second a recompile at M = 16
    (y1, y16), code = _compile(model, xs, dynamic=False, freezing=freezing)
    name = {"int8": "int8_weight_only", "int4": "int4_weight_only", "nf4": "nf4"}[scheme]
    assert counters["inductor"][f"woq_fusion_{scheme}_matcher_count"] == 4, name  # 2 Linears x 2 compiles
    assert code.count(f"impl_woq_gemv_{scheme}_cpu(") == 4, code
    assert _weight_sized_buffers(code) == [], code
    for gemm in ("extern_kernels.mm(", "extern_kernels.addmm(", "_weight_int8pack_mm", "_weight_int4pack_mm"):
        assert gemm not in code, (gemm, code)
    with torch.no_grad():
        for x, y in zip(xs, (y1, y16)):
            assert compute_sqnr(model(x), y) > (90.0 if dtype == torch.float32 else 35.0)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_a_symbolic_row_count_picks_its_route_per_call(scheme):
    """Compiled with a dynamic batch, one graph serves any M: our kernel up to GEMV_MAX_M
    rows, the panel route (woq_panel_cpu) past it (the call decides), both right."""
    model = _model(scheme)
    xs = [torch.randn(b, 1, K1, dtype=torch.bfloat16) for b in (4, 3, 40)]
    outputs, code = _compile(model, xs, dynamic=True)
    calls = re.findall(rf"impl_woq_gemv_{scheme}_cpu\(.*\)", code)
    assert calls and all(call.endswith("any_m=True)") for call in calls), code
    with torch.no_grad():
        for x, y in zip(xs, outputs):
            assert compute_sqnr(model(x), y) > 35.0, x.shape


def test_gemv_max_m_is_where_the_lowering_switches():
    model = _model("int8")
    xs = [torch.randn(m, K1) for m in (woq_gemv_cpu.GEMV_MAX_M, woq_gemv_cpu.GEMV_MAX_M + 1)]
    _, at_max = _compile(model, xs[:1], dynamic=False)
    _, past_max = _compile(model, xs[1:], dynamic=False)
    assert "impl_woq_gemv_int8_cpu(" in at_max and "impl_woq_gemv" not in past_max
