"""impl/schemes/int4.py (and the nibble packing in impl/schemes/common.py): group-wise int4
against its float64 reference, K padding, edge shapes, input errors, and the one-region graph
contract under every backend."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from impl.schemes import INT4_WEIGHT_ONLY, compute_sqnr
from impl.schemes.common import pack_nibbles, unpack_nibbles, unpack_nibbles_reference
from impl.schemes.int4 import (
    Int4Weight,
    dequantize_int4,
    dequantize_int4_packed,
    dequantize_int4_reference,
    quantize_int4,
)
from tests.impl.schemes_support import assert_backends_agree, assert_one_region_over_inputs, randn_weight

# Measured on randn (64, 300), seeds 0-2 (with search): asymmetric 22.2 / 21.2 / 20.6 dB and
# symmetric 21.2 / 20.5 / 20.0 dB for groups 32 / 64 / 128. Floors ~0.5 dB below.
SQNR_FLOOR_DB = {
    (32, False): 21.7, (64, False): 20.7, (128, False): 20.0,
    (32, True): 20.7, (64, True): 20.0, (128, True): 19.5,
}
LOW_PRECISION = (torch.bfloat16, torch.float16)


# ------------------------------------------------------------------------------ nibbles


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(1, 9), st.randoms(use_true_random=False))
def test_nibble_pack_unpack_round_trip(rows, half_k, rng):
    codes = torch.tensor([[rng.randrange(16) for _ in range(2 * half_k)] for _ in range(rows)], dtype=torch.uint8)
    packed = pack_nibbles(codes)
    assert packed.shape == (rows, half_k) and packed.dtype == torch.uint8
    # Byte j holds k = 2j in the low nibble and k = 2j + 1 in the high one.
    assert torch.equal(packed.to(torch.int64), codes[:, 0::2].to(torch.int64) + 16 * codes[:, 1::2].to(torch.int64))
    assert torch.equal(unpack_nibbles(packed), codes)
    assert torch.equal(unpack_nibbles_reference(packed), codes.to(torch.int64))


def test_pack_nibbles_rejects_odd_k():
    with pytest.raises(ValueError, match="pack_nibbles: K_pad must be even; got 3"):
        pack_nibbles(torch.zeros(2, 3, dtype=torch.uint8))


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("symmetric", [False, True], ids=["zero-point", "symmetric"])
def test_dequantize_equals_the_float64_reference_cast(symmetric):
    weight = quantize_int4(randn_weight(16, 100, seed=0), 32, symmetric=symmetric)
    reference = dequantize_int4_reference(weight)
    # (u - zero) is a small integer, times a float32 scale: exact in float64, one rounding in float32.
    assert torch.equal(dequantize_int4(weight), reference.to(torch.float32))
    for dtype in LOW_PRECISION:
        assert torch.equal(dequantize_int4(weight, dtype), reference.to(torch.float32).to(dtype))


@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [False, True], ids=["zero-point", "symmetric"])
def test_sqnr_floor_on_randn(group_size, symmetric):
    w = randn_weight(64, 300, seed=1)
    weight = quantize_int4(w, group_size, symmetric=symmetric)
    assert compute_sqnr(w, dequantize_int4_reference(weight)) >= SQNR_FLOOR_DB[group_size, symmetric]


@pytest.mark.parametrize("symmetric", [False, True], ids=["zero-point", "symmetric"])
def test_search_never_worsens_a_group(symmetric):
    w = randn_weight(16, 128, seed=2)
    w[0, 3] = 12.0
    groups = lambda weight: (dequantize_int4_reference(weight) - w.double()).square().reshape(16, -1, 32).sum(-1)
    plain = groups(quantize_int4(w, 32, symmetric=symmetric, search=False))
    searched = groups(quantize_int4(w, 32, symmetric=symmetric))
    assert bool((searched <= plain * (1 + 1e-6)).all())


def test_zero_points_are_integers_in_range_and_symmetric_uses_eight():
    w = randn_weight(8, 64, seed=3) + 0.7  # a shifted range: zero points move off the middle
    asymmetric = quantize_int4(w, 32)
    assert torch.equal(asymmetric.zero, asymmetric.zero.round()) and bool(((asymmetric.zero >= 0) & (asymmetric.zero <= 15)).all())
    assert bool((asymmetric.zero != 8).any())
    assert torch.equal(quantize_int4(w, 32, symmetric=True).zero, torch.full((8, 2), 8.0))


@pytest.mark.parametrize("n, k, group_size", [(1, 1, 32), (1, 33, 32), (5, 200, 64), (3, 127, 128)])
def test_k_padding_codes_decode_to_zero_and_are_sliced_off(n, k, group_size):
    w = randn_weight(n, k, seed=k)
    weight = quantize_int4(w, group_size)
    k_pad = -(-k // group_size) * group_size
    assert weight.qweight.shape == (n, k_pad // 2) and weight.scale.shape == (n, k_pad // group_size)
    codes = unpack_nibbles_reference(weight.qweight).double()
    last_zero = weight.zero[:, -1:].double()
    assert torch.equal(codes[:, k:], last_zero.expand(n, k_pad - k))  # padding is w = 0, code u = zero
    out = dequantize_int4(weight)
    assert out.shape == (n, k)
    assert compute_sqnr(w, out) > 15 if k > 1 else torch.allclose(out, w, atol=float(weight.scale.max()))


def test_all_zero_rows_and_groups_decode_to_exact_zero():
    w = randn_weight(4, 128, seed=4)
    w[1] = 0.0
    w[2, 64:96] = 0.0
    out = dequantize_int4(quantize_int4(w, 32))
    assert torch.equal(out[1], torch.zeros(128)) and torch.equal(out[2, 64:96], torch.zeros(32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_accepts_low_precision_weights(dtype):
    w = randn_weight(64, 300, seed=5, dtype=dtype)
    assert compute_sqnr(w, dequantize_int4_reference(quantize_int4(w, 64))) >= SQNR_FLOOR_DB[64, False]


# ------------------------------------------------------------------------------ errors


def test_quantize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="quantize_int4: group_size 48 is not one of 32, 64, 128"):
        quantize_int4(torch.ones(2, 64), 48)
    with pytest.raises(ValueError, match=r"weight must be 2-D \(N, K\); got shape \(2, 2, 2\)"):
        quantize_int4(torch.ones(2, 2, 2), 32)
    with pytest.raises(ValueError, match="weight holds 2 non-finite values"):
        quantize_int4(torch.tensor([[float("inf"), float("-inf")]]), 32)


def test_dequantize_rejects_bad_operands():
    q, scale, zero = quantize_int4(randn_weight(4, 70, seed=6), 32).tensors()  # K_pad = 96
    kw = dict(group_size=32, in_features=70, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"dequantize_int4: qweight must have shape \(4, 48\); got \(4, 32\)"):
        dequantize_int4_packed(q[:, :32], scale, zero, **kw)
    with pytest.raises(TypeError, match="dequantize_int4: qweight must be torch.uint8; got torch.int8"):
        dequantize_int4_packed(q.view(torch.int8), scale, zero, **kw)
    with pytest.raises(ValueError, match=r"dequantize_int4: zero must have shape \(4, 3\); got \(3, 4\)"):
        dequantize_int4_packed(q, scale, zero.T, **kw)
    with pytest.raises(TypeError, match="dequantize_int4: scale must be torch.float32; got torch.float16"):
        dequantize_int4_packed(q, scale.half(), zero, **kw)
    with pytest.raises(ValueError, match=r"dequantize_int4: qweight must have shape \(4, 64\)"):
        dequantize_int4_packed(q, scale, zero, **{**kw, "in_features": 100})
    with pytest.raises(ValueError, match="dequantize_int4: in_features must be an int >= 1; got 0"):
        dequantize_int4_packed(q, scale, zero, **{**kw, "in_features": 0})
    with pytest.raises(TypeError, match="dequantize_int4: dtype torch.float64 is not one of"):
        dequantize_int4_packed(q, scale, zero, **{**kw, "dtype": torch.float64})
    with pytest.raises(ValueError, match="Int4Weight: group_size 16 is not one of 32, 64, 128"):
        Int4Weight(q, scale, zero, 16, 70)


# ----------------------------------------------------------------------------- compiled


def test_one_region_with_operands_in_layout_order():
    weight = quantize_int4(randn_weight(6, 100, seed=7), 64)
    node = assert_one_region_over_inputs(
        lambda q, s, z: dequantize_int4_packed(q, s, z, group_size=64, in_features=100, dtype=torch.float16),
        *weight.tensors(),
        scheme=INT4_WEIGHT_ONLY,
    )
    # What the fusion passes derive: K from the output, G = K_pad / groups from the operands.
    q, scale, _ = (a.meta["val"] for a in node.args[1:])
    assert node.meta["val"].shape == (6, 100) and node.meta["val"].dtype == torch.float16
    assert 2 * q.shape[1] // scale.shape[1] == 64


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_backends_agree_bit_for_bit(dtype):
    # K = 200 is not a multiple of G = 64: the slice of the padding is inside the region.
    weight = quantize_int4(randn_weight(24, 200, seed=8), 64)
    out = assert_backends_agree(
        lambda q, s, z: dequantize_int4_packed(q, s, z, group_size=64, in_features=200, dtype=dtype), *weight.tensors()
    )
    assert torch.equal(out, dequantize_int4_reference(weight).to(torch.float32).to(dtype))
