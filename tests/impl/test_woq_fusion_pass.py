"""impl.passes.woq_fusion on small traced graphs: what fuses, what must not, numerics either way.

Graphs come from ``make_fx`` of functions calling our unpacked ``invoke_quant`` directly
(its tracing rule records the region node with fake values, as after AOTAutograd), so
each test applies the pass without compiling; the rewritten graph is then run eagerly
(the fused op's own implementation) and compared with the function itself.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters
from torch.fx.experimental.proxy_tensor import make_fx

from impl.hop import invoke_quant
from impl.passes.woq_fusion import COUNTER_NAMES, apply_woq_fusion, counter_key
from impl.schemes import quantize_int4, quantize_int8, quantize_nf4
from impl.schemes import nf4 as nf4_scheme
from impl.schemes.int4 import dequantize_int4_values as dequantize_int4
from impl.schemes.int8 import dequantize_int8_values as dequantize_int8
from impl.schemes.nf4 import dequantize_nf4_values as dequantize_nf4

N, K = 32, 200
INT8 = "int8_weight_only"


@pytest.fixture(autouse=True)
def _clear_counters():
    counters.clear()
    yield
    counters.clear()


def _weights():
    torch.manual_seed(0)
    w = torch.randn(N, K) * 0.05
    return quantize_int8(w), quantize_int4(w, 64), quantize_nf4(w, 64, double_quant=True)


def _int8_region(q, s, scheme=INT8):
    return invoke_quant(lambda q, s: dequantize_int8(q, s, torch.float32), q, s, scheme=scheme)


def _rewrite(fn: Callable, *args, pre_dispatch: bool = False) -> torch.fx.GraphModule:
    gm = make_fx(fn, tracing_mode="fake", pre_dispatch=pre_dispatch)(*args)
    apply_woq_fusion(gm.graph)
    gm.recompile()
    return gm


def _targets(gm: torch.fx.GraphModule) -> set:
    return {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}


def _fused_count() -> dict:
    return {k: v for k, v in counters["inductor"].items() if k in COUNTER_NAMES}


@pytest.mark.parametrize("scheme", ["int8", "int4", "nf4"])
def test_linear_with_bias_fuses_each_scheme(scheme):
    q8, q4, qn = _weights()
    levels = nf4_scheme.nf4_levels()
    regions = {
        "int8": (INT8, lambda q, s: dequantize_int8(q, s, torch.float32), (q8.qweight, q8.scale)),
        "int4": ("int4_weight_only", lambda q, s, z: dequantize_int4(q, s, z, 64, K, torch.float32), q4.tensors()),
        "nf4": (
            "nf4",
            lambda q, a, lv, sc, off: dequantize_nf4(q, a, lv, sc, off, 64, K, torch.float32),
            (qn.qweight, qn.absmax, levels, qn.absmax_scale, qn.absmax_offset),
        ),
    }
    name, body, tensors = regions[scheme]

    def fn(x, b, *tensors):
        return F.linear(x, invoke_quant(body, *tensors, scheme=name), b)

    x, b = torch.randn(3, K), torch.randn(N)
    gm = _rewrite(fn, x, b, *tensors)
    assert f"impl.woq_mm_{scheme}.default" in _targets(gm)
    assert "impl_invoke_quant" not in str(gm.graph)
    # region, t, addmm replaced
    assert _fused_count() == {counter_key(name, "matcher_count"): 1, counter_key(name, "matcher_nodes"): 3}
    torch.testing.assert_close(gm(x, b, *tensors), fn(x, b, *tensors), rtol=1e-5, atol=1e-5)


def test_aten_linear_pattern_fuses():
    """Graphs that keep aten.linear (pre-dispatch tracing) fuse through the identity view chain."""
    q8, _, _ = _weights()

    def fn(x, q, s):
        return torch.ops.aten.linear(x, _int8_region(q, s))

    x = torch.randn(2, 5, K)
    gm = _rewrite(fn, x, q8.qweight, q8.scale, pre_dispatch=True)
    assert counters["inductor"][counter_key(INT8, "matcher_count")] == 1
    torch.testing.assert_close(gm(x, q8.qweight, q8.scale), fn(x, q8.qweight, q8.scale), rtol=1e-5, atol=1e-5)


def test_transpose_then_expand_for_bmm_fuses():
    q8, _, _ = _weights()

    def fn(x, q, s):
        return torch.bmm(x, _int8_region(q, s).transpose(0, 1).unsqueeze(0).expand(2, K, N))

    x = torch.randn(2, 3, K)
    gm = _rewrite(fn, x, q8.qweight, q8.scale)
    assert counters["inductor"][counter_key(INT8, "matcher_count")] == 1
    torch.testing.assert_close(gm(x, q8.qweight, q8.scale), fn(x, q8.qweight, q8.scale), rtol=1e-5, atol=1e-5)


NEAR_MISSES = {
    "unknown_scheme": lambda x, q, s: x @ _int8_region(q, s, scheme="int8_custom").t(),
    "addmm_alpha": lambda x, q, s: torch.addmm(torch.ones(N), x, _int8_region(q, s).t(), alpha=2.0),
    "bias_per_row": lambda x, q, s: torch.addmm(torch.ones(x.shape[0], N), x, _int8_region(q, s).t()),
    "shared_by_two_matmuls": lambda x, q, s: (lambda w: (x @ w.t(), (2 * x) @ w.t()))(_int8_region(q, s)),
    "read_elsewhere": lambda x, q, s: (lambda w: (x @ w.t(), w.amax()))(_int8_region(q, s)),
    "untransposed": lambda x, q, s: x[:, :N] @ _int8_region(q, s),
    "sliced_weight": lambda x, q, s: x[:, : K - 8] @ _int8_region(q, s)[:, : K - 8].t(),
    "batch_varying_weight": lambda x, q, s: torch.bmm(
        x.unsqueeze(0).expand(2, -1, -1), torch.stack([_int8_region(q, s).t(), _int8_region(q, s).t()])
    ),
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_near_miss_stays_unfused(name):
    q8, _, _ = _weights()
    fn = NEAR_MISSES[name]
    x = torch.randn(4, K)
    gm = _rewrite(fn, x, q8.qweight, q8.scale)
    assert _fused_count() == {}, name
    assert not any("woq_mm" in t for t in _targets(gm))
    torch.testing.assert_close(gm(x, q8.qweight, q8.scale), fn(x, q8.qweight, q8.scale))


def test_region_breaking_the_layout_contract_stays_unfused():
    """scheme int8_weight_only, but the scale is (N, 1): not the scheme's layout."""
    q8, _, _ = _weights()
    scale = q8.scale[:, None].clone()

    def fn(x, q, s):
        w = invoke_quant(lambda q, s: q.to(torch.float32) * s, q, s, scheme=INT8)
        return x @ w.t()

    x = torch.randn(4, K)
    gm = _rewrite(fn, x, q8.qweight, scale)
    assert _fused_count() == {}
    torch.testing.assert_close(gm(x, q8.qweight, scale), fn(x, q8.qweight, scale))


@pytest.mark.parametrize("x_pad", [[0, 1], [0, 1, 0, 0]])
def test_matmul_padded_on_k_by_pad_mm_still_fuses(x_pad):
    """CUDA's pad_mm runs before our pass and may pad K of x and W.T with zeros (the H200 run:
    int8, K = 203 padded to 204, left unfused); the padding is dropped and the matmul fuses."""
    q8, _, _ = _weights()

    def fn(x, q, s):
        w_t = _int8_region(q, s).t()
        return torch.mm(F.pad(x, x_pad), F.pad(w_t, [0, 0, 0, 1]))

    x = torch.randn(3, K)
    gm = _rewrite(fn, x, q8.qweight, q8.scale)
    assert "impl.woq_mm_int8.default" in _targets(gm)
    assert "aten.constant_pad_nd.default" not in _targets(gm)
    torch.testing.assert_close(gm(x, q8.qweight, q8.scale), fn(x, q8.qweight, q8.scale), rtol=1e-5, atol=1e-5)


def test_matmul_padded_on_m_and_k_then_sliced_still_fuses():
    """pad_mm's M padding (max-autotune on the H200: M = 37 padded to 40, one matmul of 12 left
    unfused): the appended rows are sliced off after the matmul; pads and slice are dropped."""
    q8, _, _ = _weights()

    def fn(x, q, s, b):
        w_t = _int8_region(q, s).t()
        return torch.addmm(b, F.pad(x, [0, 1, 0, 3]), F.pad(w_t, [0, 0, 0, 1]))[:37]

    x, b = torch.randn(37, K), torch.randn(N)
    gm = _rewrite(fn, x, q8.qweight, q8.scale, b)
    assert "impl.woq_mm_int8.default" in _targets(gm)
    assert not {"aten.constant_pad_nd.default", "aten.slice.Tensor"} & _targets(gm)
    torch.testing.assert_close(gm(x, q8.qweight, q8.scale, b), fn(x, q8.qweight, q8.scale, b), rtol=1e-5, atol=1e-5)


def test_padding_that_changes_the_product_is_kept():
    """Padding K by different amounts, or M without the slice back, is not pad_mm's form: left alone."""
    q8, _, _ = _weights()

    def fn(x, q, s):
        w_t = _int8_region(q, s).t()
        return torch.mm(F.pad(x, [0, 1, 0, 1]), F.pad(w_t, [0, 0, 0, 1]))

    x = torch.randn(3, K)
    gm = _rewrite(fn, x, q8.qweight, q8.scale)
    assert "impl.woq_mm_int8.default" not in _targets(gm)
    torch.testing.assert_close(gm(x, q8.qweight, q8.scale), fn(x, q8.qweight, q8.scale))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matrix_vector_product_decomposed_by_inductor_still_fuses(dtype):
    """Max-autotune's coordinate-descent tuning makes Inductor decompose mm with M = 1 into a
    float32 broadcast multiply and sum before our pass (the H200 run: 1 matmul in 12 unfused);
    the product is recomposed to mm and fuses."""
    q8, _, _ = _weights()

    def fn(x, q, s):
        w_t = invoke_quant(lambda q, s: dequantize_int8(q, s, dtype), q, s, scheme=INT8).t()
        product = (x.float().unsqueeze(2) * w_t.float().unsqueeze(0)).sum(dim=1)
        return product.to(dtype)

    x = torch.randn(1, K, dtype=dtype)
    gm = _rewrite(fn, x, q8.qweight, q8.scale)
    assert "impl.woq_mm_int8.default" in _targets(gm)
    assert "aten.sum.dim_IntList" not in _targets(gm)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(gm(x, q8.qweight, q8.scale), fn(x, q8.qweight, q8.scale), rtol=tol, atol=tol)


def test_broadcast_multiply_and_sum_that_is_no_matrix_product_is_left_alone():
    """Found by the property test: sum(x[:, :, None] * W.T[None], 1) with x (M, 1) broadcasts
    x over K; it is not mm(x, W.T) (whose K would not match: the pass crashed on the fake mm)."""
    q8, _, _ = _weights()

    def fn(x, q, s):
        w_t = _int8_region(q, s).t()
        return (x.unsqueeze(2) * w_t.unsqueeze(0)).sum(dim=1)

    x = torch.randn(3, 1)
    gm = _rewrite(fn, x, q8.qweight, q8.scale)
    assert _fused_count() == {}
    torch.testing.assert_close(gm(x, q8.qweight, q8.scale), fn(x, q8.qweight, q8.scale))


def test_multiply_and_sum_into_another_dtype_is_left_alone():
    """sum(..., dtype=float64) of a float32 product is no float32 mm: recomposing it would change
    the output's dtype."""
    q8, _, _ = _weights()

    def fn(x, q, s):
        w_t = _int8_region(q, s).t()
        return torch.sum(x.unsqueeze(2) * w_t.unsqueeze(0), dim=1, dtype=torch.float64)

    x = torch.randn(1, K)
    gm = _rewrite(fn, x, q8.qweight, q8.scale)
    assert gm(x, q8.qweight, q8.scale).dtype == torch.float64
    torch.testing.assert_close(gm(x, q8.qweight, q8.scale), fn(x, q8.qweight, q8.scale))


def test_negative_padding_that_crops_k_is_kept():
    """Found by the property test: F.pad with negative pads crops; mm(pad(x, [0, -1]),
    pad(W.T, [0, 0, 0, -1])) drops the last K column, and dropping the "padding" fused a
    different product (off by 0.3 of the output's max)."""
    q8, _, _ = _weights()

    def fn(x, q, s):
        w_t = _int8_region(q, s).t()
        return torch.mm(F.pad(x, [0, -1]), F.pad(w_t, [0, 0, 0, -1]))

    x = torch.randn(3, K)
    gm = _rewrite(fn, x, q8.qweight, q8.scale)
    assert _fused_count() == {}
    torch.testing.assert_close(gm(x, q8.qweight, q8.scale), fn(x, q8.qweight, q8.scale))


def test_region_body_that_is_not_the_scheme_formula_stays_unfused():
    """README's op example, ``q.to(scale.dtype) * scale`` tagged int8_weight_only, on a square
    weight: the (N,) scale broadcasts over columns, yet operand shapes and dtypes are the
    scheme's; the pass fused it as a per-row scale (max error 8.8 here). The body is now
    probed against the scheme's formula (CPU regions)."""
    torch.manual_seed(0)
    q8 = quantize_int8(torch.randn(32, 32))

    def fn(x, q, s):
        w = invoke_quant(lambda q, s: q.to(s.dtype) * s, q, s, scheme=INT8)
        return x @ w.t()

    x = torch.randn(3, 32)
    gm = _rewrite(fn, x, q8.qweight, q8.scale)
    assert _fused_count() == {}
    torch.testing.assert_close(gm(x, q8.qweight, q8.scale), fn(x, q8.qweight, q8.scale))
