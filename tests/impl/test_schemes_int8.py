"""impl/schemes/int8.py: per-channel symmetric int8 against its float64 reference, edge
shapes, input errors, and the one-region graph contract under every backend."""

from __future__ import annotations

import pytest
import torch

from impl.schemes import INT8_WEIGHT_ONLY, compute_sqnr
from impl.schemes.int8 import (
    Int8Weight,
    dequantize_int8,
    dequantize_int8_packed,
    dequantize_int8_reference,
    quantize_int8,
)
from tests.impl.schemes_support import assert_backends_agree, assert_one_region_over_inputs, randn_weight

# Measured on randn (64, 300), seeds 0-2: 42.9 dB with search, 42.9 without.
SQNR_FLOOR_DB = 42.0
LOW_PRECISION = (torch.bfloat16, torch.float16)


def test_dequantize_equals_the_float64_reference_cast():
    weight = quantize_int8(randn_weight(16, 40, seed=0))
    reference = dequantize_int8_reference(weight)
    # q * scale is exact in float64 and rounded once in float32: equality, not closeness.
    assert torch.equal(dequantize_int8(weight), reference.to(torch.float32))
    for dtype in LOW_PRECISION:
        assert torch.equal(dequantize_int8(weight, dtype), reference.to(torch.float32).to(dtype))


@pytest.mark.parametrize("search", [True, False])
def test_sqnr_floor_on_randn(search):
    w = randn_weight(64, 300, seed=1)
    assert compute_sqnr(w, dequantize_int8_reference(quantize_int8(w, search=search))) >= SQNR_FLOOR_DB


def test_search_never_worsens_a_row():
    w = randn_weight(32, 96, seed=2) * torch.logspace(-3, 2, 32)[:, None]
    w[3, 5] = 40.0  # one outlier row, where clipping pays most
    plain = (dequantize_int8_reference(quantize_int8(w, search=False)) - w.double()).square().sum(1)
    searched = (dequantize_int8_reference(quantize_int8(w)) - w.double()).square().sum(1)
    assert bool((searched <= plain).all())


def test_codes_are_symmetric_and_reach_the_row_maximum():
    w = randn_weight(8, 33, seed=3)
    q = quantize_int8(w, search=False).qweight
    assert q.dtype == torch.int8 and int(q.min()) >= -127 and int(q.max()) <= 127
    assert torch.equal(q.abs().amax(dim=1), torch.full((8,), 127, dtype=torch.int8))
    assert torch.equal(quantize_int8(-w, search=False).qweight, -q)


@pytest.mark.parametrize("n, k", [(1, 1), (1, 7), (3, 129)])
def test_edge_shapes_round_trip(n, k):
    w = randn_weight(n, k, seed=n * 1000 + k)
    weight = quantize_int8(w, search=False)  # unclipped: every error within half a step
    assert weight.qweight.shape == (n, k) and weight.scale.shape == (n,)
    error = (dequantize_int8_reference(weight) - w.double()).abs()
    assert bool((error <= weight.scale.double()[:, None] / 2 * 1.0001).all())


def test_all_zero_rows_decode_to_exact_zero():
    w = randn_weight(4, 20, seed=4)
    w[1] = 0.0
    weight = quantize_int8(w)
    assert float(weight.scale[1]) > 0
    assert torch.equal(dequantize_int8(weight)[1], torch.zeros(20))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=str)
def test_accepts_low_and_high_precision_weights(dtype):
    w = randn_weight(8, 64, seed=5, dtype=dtype)
    assert compute_sqnr(w, dequantize_int8_reference(quantize_int8(w))) >= SQNR_FLOOR_DB


@pytest.mark.parametrize(
    "weight, error, match",
    [
        ([[1.0]], TypeError, "weight must be a torch.Tensor; got list"),
        (torch.ones(4), ValueError, r"weight must be 2-D \(N, K\); got shape \(4,\)"),
        (torch.ones(2, 2, dtype=torch.int32), TypeError, "weight dtype torch.int32 is not one of"),
        (torch.ones(0, 3), ValueError, "weight must not be empty"),
        (torch.tensor([[1.0, float("nan")]]), ValueError, "weight holds 1 non-finite values"),
    ],
    ids=["list", "1-D", "int", "empty", "nan"],
)
def test_quantize_rejects_bad_weights(weight, error, match):
    with pytest.raises(error, match=match):
        quantize_int8(weight)


def test_dequantize_rejects_bad_operands():
    q, scale = quantize_int8(randn_weight(4, 8, seed=6)).qweight, torch.ones(4)
    with pytest.raises(TypeError, match="dequantize_int8: qweight must be torch.int8; got torch.uint8"):
        dequantize_int8_packed(q.view(torch.uint8), scale, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"dequantize_int8: scale must have shape \(4,\); got \(4, 1\)"):
        dequantize_int8_packed(q, scale[:, None], dtype=torch.float32)
    with pytest.raises(TypeError, match="dequantize_int8: scale must be torch.float32; got torch.bfloat16"):
        dequantize_int8_packed(q, scale.bfloat16(), dtype=torch.float32)
    with pytest.raises(TypeError, match="dequantize_int8: dtype torch.int8 is not one of"):
        dequantize_int8_packed(q, scale, dtype=torch.int8)
    with pytest.raises(ValueError, match=r"Int8Weight: qweight must be a 2-D tensor \(N, K\); got \(8,\)"):
        Int8Weight(torch.zeros(8, dtype=torch.int8), torch.ones(8))


def test_one_region_with_operands_in_layout_order():
    weight = quantize_int8(randn_weight(6, 10, seed=7))
    node = assert_one_region_over_inputs(
        lambda q, s: dequantize_int8_packed(q, s, dtype=torch.bfloat16), *weight.tensors(), scheme=INT8_WEIGHT_ONLY
    )
    assert node.meta["val"].shape == (6, 10) and node.meta["val"].dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_backends_agree_bit_for_bit(dtype):
    weight = quantize_int8(randn_weight(24, 40, seed=8))
    out = assert_backends_agree(lambda q, s: dequantize_int8_packed(q, s, dtype=dtype), *weight.tensors())
    assert torch.equal(out, dequantize_int8_reference(weight).to(torch.float32).to(dtype))
