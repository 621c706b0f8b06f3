"""The fused ops (torch.ops.impl.woq_mm_<scheme>) eagerly, and their CPU lowerings compiled.

Eager: each op against the scheme's float64 reference dequantization (M = 1, odd K,
N not a multiple of the group, 3-D and strided activations, bias), opcheck, bad input.
Compiled: a WeightOnlyLinear model under impl.install(): the kernel Inductor emits for
each regime (our decode kernels up to 16 rows; past that the panel route, freezing on or
off; under max-autotune the ATen kernels and the decomposition are choices too) and numerics
against eager. The kernels' own tests: test_woq_gemv_cpu.py, test_woq_panel_cpu.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters
from torch._inductor import config as inductor_config
from torch._inductor.utils import run_and_get_code

import impl
from impl import woq_mm
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

N, K = 40, 203  # N not a multiple of 16 (nor of a group), K odd and not a multiple of any group


def _weights():
    torch.manual_seed(0)
    w = torch.randn(N, K) * 0.05
    return quantize_int8(w), quantize_int4(w, 64), quantize_nf4(w, 32, double_quant=True)


def _calls(x, bias):
    q8, q4, qn = _weights()
    return {
        "int8": (woq_mm.woq_mm_int8(x, q8.qweight, q8.scale, bias), dequantize_int8_reference(q8)),
        "int4": (woq_mm.woq_mm_int4(x, *q4.tensors(), bias, 64), dequantize_int4_reference(q4)),
        "nf4": (
            woq_mm.woq_mm_nf4(x, qn.qweight, qn.absmax, nf4_levels(), qn.absmax_scale, qn.absmax_offset, bias, 32),
            dequantize_nf4_reference(qn),
        ),
    }


@pytest.mark.parametrize("shape", [(1, K), (2, 3, K)], ids=["m1", "3d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_ops_match_the_float64_reference(shape, dtype):
    torch.manual_seed(1)
    x = torch.randn(*shape[:-1], 2 * K)[..., ::2].to(dtype)  # stride 2 along K
    bias = torch.randn(N).to(dtype)
    floor = {torch.float32: 100.0, torch.bfloat16: 40.0, torch.float16: 55.0}[dtype]
    for scheme, (y, weight64) in _calls(x, bias).items():
        assert y.shape == (*shape[:-1], N) and y.dtype == dtype
        expected = F.linear(x.double(), weight64, bias.double())
        assert compute_sqnr(expected, y) > floor, (scheme, dtype, compute_sqnr(expected, y))


def test_opcheck_each_op():
    x = torch.randn(3, K)
    q8, q4, qn = _weights()
    cases = [
        (torch.ops.impl.woq_mm_int8.default, (x, q8.qweight, q8.scale, None)),
        (torch.ops.impl.woq_mm_int4.default, (x, *q4.tensors(), torch.randn(N), 64)),
        (torch.ops.impl.woq_mm_nf4.default, (x, qn.qweight, qn.absmax, nf4_levels(), qn.absmax_scale, qn.absmax_offset, None, 32)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


def test_bad_inputs_name_the_argument():
    q8, q4, _ = _weights()
    with pytest.raises(ValueError, match="bias must be"):
        woq_mm.woq_mm_int8(torch.randn(2, K), q8.qweight, q8.scale, torch.randn(N + 1))
    with pytest.raises(ValueError, match="qweight must be"):
        woq_mm.woq_mm_int8(torch.randn(2, K + 1), q8.qweight, q8.scale)
    with pytest.raises(ValueError, match="group_size"):
        woq_mm.woq_mm_int4(torch.randn(2, K), *q4.tensors(), None, 48)
    with pytest.raises(TypeError, match="x dtype"):
        woq_mm.woq_mm_int8(torch.randn(2, K, dtype=torch.float64), q8.qweight, q8.scale)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton path needs a CUDA device")
def test_cuda_ops_use_the_triton_kernels_and_match_the_reference():
    x = torch.randn(5, K, device="cuda", dtype=torch.bfloat16)
    q8, q4, qn = _weights()
    cuda = lambda ts: [t.cuda() for t in ts]  # noqa: E731
    ys = {
        "int8": (woq_mm.woq_mm_int8(x, *cuda(q8.tensors())), dequantize_int8_reference(q8)),
        "int4": (woq_mm.woq_mm_int4(x, *cuda(q4.tensors()), None, 64), dequantize_int4_reference(q4)),
        "nf4": (
            woq_mm.woq_mm_nf4(x, *cuda([qn.qweight, qn.absmax, nf4_levels(), qn.absmax_scale, qn.absmax_offset]), None, 32),
            dequantize_nf4_reference(qn),
        ),
    }
    for scheme, (y, w64) in ys.items():
        assert compute_sqnr(x.double().cpu() @ w64.T, y.cpu()) > 40.0, scheme


# --------------------------------------------------------------------------- compiled


def _model(scheme: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 64), torch.nn.ReLU(), torch.nn.Linear(64, 48))
    return quantize_linear_(model, scheme, **options).eval()


def _compile(model, x, **config):
    torch._dynamo.reset()
    counters.clear()
    with impl.installed(), inductor_config.patch(force_disable_caches=True, **config), torch.no_grad():
        y, (code, *_) = run_and_get_code(torch.compile(model), x)
    return y, code


@pytest.mark.parametrize(
    "scheme, options, dtype, m, freezing, kernel",
    [
        ("int8", {}, torch.bfloat16, 1, False, "extern_kernels.impl_woq_gemv_int8_cpu("),
        ("int8", {}, torch.bfloat16, 32, False, "extern_kernels.impl_woq_panel_int8_cpu("),
        ("int8", {}, torch.float32, 4, False, "extern_kernels.impl_woq_gemv_int8_cpu("),
        ("int8", {}, torch.float32, 32, False, "extern_kernels.impl_woq_panel_int8_cpu("),
        ("int4", {"group_size": 64}, torch.bfloat16, 1, True, "extern_kernels.impl_woq_gemv_int4_cpu("),
        ("int4", {"group_size": 64}, torch.bfloat16, 32, True, "extern_kernels.impl_woq_panel_int4_cpu("),
        ("int4", {"group_size": 64}, torch.float32, 32, False, "extern_kernels.impl_woq_panel_int4_cpu("),
        ("nf4", {"block_size": 64}, torch.float16, 2, False, "extern_kernels.impl_woq_gemv_nf4_cpu("),
        ("nf4", {"block_size": 64}, torch.float16, 32, False, "extern_kernels.impl_woq_panel_nf4_cpu("),
    ],
    ids=["int8-bf16-decode", "int8-bf16-prefill", "int8-fp32-decode", "int8-fp32-prefill", "int4-bf16-decode",
         "int4-bf16-frozen-prefill", "int4-fp32-prefill", "nf4-fp16-decode", "nf4-fp16-prefill"],
)
def test_cpu_lowering_picks_the_kernel(scheme, options, dtype, m, freezing, kernel):
    model = _model(scheme, **options)
    x = torch.randn(m, 256, dtype=dtype)
    with torch.no_grad():
        expected = model(x)
    y, code = _compile(model, x, freezing=freezing)
    name = {"int8": "int8_weight_only", "int4": "int4_weight_only", "nf4": "nf4"}[scheme]
    assert counters["inductor"][f"woq_fusion_{scheme}_matcher_count"] == 2, name  # both Linears
    assert code.count(kernel) == 2, code
    floor = 60.0 if dtype == torch.float32 else 35.0
    assert compute_sqnr(expected, y) > floor


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_call_without_the_optional_bias_lowers(dtype):
    """torch.ops.impl.woq_mm_int8(x, q, s) records three args; the lowering read a fourth
    (IndexError) before it filled the bias in."""
    q8, _, _ = _weights()
    x = torch.randn(3, K, dtype=dtype)
    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(lambda x, q, s: torch.ops.impl.woq_mm_int8(x, q, s))(x, q8.qweight, q8.scale)
    expected = torch.ops.impl.woq_mm_int8(x, q8.qweight, q8.scale)
    torch.testing.assert_close(out, expected, rtol=2e-2, atol=2e-2)


def test_an_op_call_with_its_bias_as_a_keyword_is_lowered_not_left_to_the_fallback():
    """A graph may carry the optional bias as a keyword (``bias=None``): the lowering takes the
    arguments by the op's schema, so the call is lowered like a positional one."""
    from torch._inductor.utils import run_and_get_code

    from impl.schemes import quantize_int8

    torch.manual_seed(0)
    q = quantize_int8(torch.randn(32, 64) * 0.05)

    def linear(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.impl.woq_mm_int8(x, q.qweight, q.scale, bias=None)

    x = torch.randn(3, 64)
    torch._dynamo.reset()
    with torch._inductor.config.patch(force_disable_caches=True):
        out, (code, *_) = run_and_get_code(torch.compile(linear), x)
    torch._dynamo.reset()
    assert "torch.ops.impl.woq_mm_int8.default(" not in code, code
    torch.testing.assert_close(out, linear(x), rtol=1e-4, atol=1e-4)


def test_the_lowering_reads_keyword_arguments_by_the_ops_schema():
    """After a bisect rerun in the same process (its fallback of our op), traced graphs carried
    ``bias=None`` as a keyword, and the lowering had left every such call to the fallback."""
    from impl.lowerings.woq_mm_devices import _positional

    int8, int4 = torch.ops.impl.woq_mm_int8.default, torch.ops.impl.woq_mm_int4.default
    assert _positional(int8, ("x", "q", "s"), {"bias": None}) == ("x", "q", "s", None)
    assert _positional(int8, ("x", "q", "s"), {}) == ("x", "q", "s", None)
    assert _positional(int4, ("x", "q", "s", "z"), {"group_size": 64, "bias": "b"}) == ("x", "q", "s", "z", "b", 64)
    assert _positional(int8, ("x", "q", "s"), {"alpha": 2}) is None  # no argument of the op's: the fallback's

