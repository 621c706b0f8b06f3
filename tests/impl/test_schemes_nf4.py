"""impl/schemes/nf4.py: NF4 with block-wise absmax (and double-quantized absmax) against its
float64 reference, edge shapes, input errors, and the one-region graph contract (operands
(qweight, absmax, levels[, absmax_scale, absmax_offset])) under every backend."""

from __future__ import annotations

import pytest
import torch

from impl.schemes import NF4, compute_sqnr
from impl.schemes.common import unpack_nibbles_reference
from impl.schemes.nf4 import (
    DOUBLE_QUANT_BLOCK,
    NF4_LEVELS,
    NF4Weight,
    decode_absmax_reference,
    dequantize_nf4,
    dequantize_nf4_packed,
    dequantize_nf4_reference,
    nf4_levels,
    quantize_absmax,
    quantize_nf4,
)
from tests.impl.schemes_support import assert_backends_agree, assert_one_region_over_inputs, randn_weight

# Measured on randn (64, 300), seeds 0-2: 21.2 / 20.8 / 20.4 / 20.2 dB for blocks
# 32 / 64 / 128 / 256, the same to 0.01 dB with double quantization. Floors ~0.4 dB below.
SQNR_FLOOR_DB = {32: 20.8, 64: 20.4, 128: 20.0, 256: 19.8}
LOW_PRECISION = (torch.bfloat16, torch.float16)


def test_levels_are_sorted_float32_values_with_exact_zero_and_ends():
    assert len(NF4_LEVELS) == 16 and list(NF4_LEVELS) == sorted(NF4_LEVELS)
    assert (NF4_LEVELS[0], NF4_LEVELS[7], NF4_LEVELS[15]) == (-1.0, 0.0, 1.0)
    assert torch.equal(nf4_levels().double(), torch.tensor(NF4_LEVELS, dtype=torch.float64))


@pytest.mark.parametrize("block_size", [32, 64, 128, 256])
def test_dequantize_equals_the_float64_reference_cast(block_size):
    weight = quantize_nf4(randn_weight(8, 300, seed=block_size), block_size)
    reference = dequantize_nf4_reference(weight)
    # level * absmax: two float32 values, exact in float64, one rounding in float32.
    assert torch.equal(dequantize_nf4(weight), reference.to(torch.float32))
    for dtype in LOW_PRECISION:
        assert torch.equal(dequantize_nf4(weight, dtype), reference.to(torch.float32).to(dtype))


def test_double_quant_dequantize_is_the_reference_to_float32_rounding():
    weight = quantize_nf4(randn_weight(70, 200, seed=1), 32, double_quant=True)
    reference = dequantize_nf4_reference(weight)
    # float32 decodes absmax with two roundings (c * scale, + offset) before the level product.
    assert torch.allclose(dequantize_nf4(weight).double(), reference, rtol=2**-22, atol=0)


@pytest.mark.parametrize("block_size", [32, 64, 128, 256])
@pytest.mark.parametrize("double_quant", [False, True], ids=["absmax", "double-quant"])
def test_sqnr_floor_on_randn(block_size, double_quant):
    w = randn_weight(64, 300, seed=2)
    weight = quantize_nf4(w, block_size, double_quant=double_quant)
    assert compute_sqnr(w, dequantize_nf4_reference(weight)) >= SQNR_FLOOR_DB[block_size]


def test_codes_are_the_nearest_level_of_each_normalized_value():
    w = randn_weight(6, 128, seed=3)
    weight = quantize_nf4(w, 64)
    levels = torch.tensor(NF4_LEVELS, dtype=torch.float64)
    normalized = w.double() / weight.absmax.double().repeat_interleave(64, dim=1)
    chosen = (normalized - levels[unpack_nibbles_reference(weight.qweight)]).abs()
    best = (normalized[..., None] - levels).abs().amin(dim=-1)
    assert torch.equal(chosen, best)
    assert torch.equal(weight.absmax, w.abs().reshape(6, 2, 64).amax(-1))  # absmax is exact


def test_double_quant_layout_and_absmax_error():
    n, k, block = 70, 200, 32  # 70 * 7 = 490 absmax values: two scales, the last one partial
    w = randn_weight(n, k, seed=4)
    plain = quantize_nf4(w, block)
    weight = quantize_nf4(w, block, double_quant=True)
    assert weight.absmax.dtype == torch.uint8 and weight.absmax.shape == (n, 7)
    assert weight.absmax_scale.shape == (-(-n * 7 // DOUBLE_QUANT_BLOCK),) == (2,)
    assert weight.absmax_offset.shape == () and float(weight.absmax_offset) == float(plain.absmax.min())
    decoded = decode_absmax_reference(weight)
    step = weight.absmax_scale.double().repeat_interleave(DOUBLE_QUANT_BLOCK)[: n * 7].reshape(n, 7)
    assert bool(((decoded - plain.absmax.double()).abs() <= step / 2 * (1 + 1e-6)).all())
    assert bool((decoded > 0).all())


def test_quantize_absmax_of_constant_absmax_is_exact():
    codes, scale, offset = quantize_absmax(torch.full((3, 5), 0.25))
    assert torch.equal(codes, torch.zeros(3, 5, dtype=torch.uint8)) and float(offset) == 0.25
    assert bool((scale > 0).all())


@pytest.mark.parametrize("double_quant", [False, True], ids=["absmax", "double-quant"])
@pytest.mark.parametrize("n, k, block_size", [(1, 1, 32), (1, 33, 64), (5, 200, 64), (3, 127, 128)])
def test_k_padding_is_code_zero_level_and_sliced_off(n, k, block_size, double_quant):
    w = randn_weight(n, k, seed=k)
    weight = quantize_nf4(w, block_size, double_quant=double_quant)
    k_pad = -(-k // block_size) * block_size
    assert weight.qweight.shape == (n, k_pad // 2) and weight.absmax.shape == (n, k_pad // block_size)
    codes = unpack_nibbles_reference(weight.qweight)
    assert bool((codes[:, k:] == NF4_LEVELS.index(0.0)).all())
    out = dequantize_nf4(weight)
    assert out.shape == (n, k)
    if k == 1:  # the block's only value is its absmax: level +-1 reproduces it
        assert torch.allclose(out, w, rtol=1e-2 if double_quant else 0, atol=0)


@pytest.mark.parametrize("double_quant", [False, True], ids=["absmax", "double-quant"])
def test_all_zero_rows_and_blocks_decode_to_exact_zero(double_quant):
    w = randn_weight(4, 128, seed=5)
    w[1] = 0.0
    w[2, 32:64] = 0.0
    out = dequantize_nf4(quantize_nf4(w, 32, double_quant=double_quant))
    assert torch.equal(out[1], torch.zeros(128)) and torch.equal(out[2, 32:64], torch.zeros(32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_accepts_low_precision_weights(dtype):
    w = randn_weight(64, 300, seed=6, dtype=dtype)
    assert compute_sqnr(w, dequantize_nf4_reference(quantize_nf4(w, 64))) >= SQNR_FLOOR_DB[64]


# ------------------------------------------------------------------------------ errors


def test_quantize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="quantize_nf4: block_size 48 is not one of 32, 64, 128, 256"):
        quantize_nf4(torch.ones(2, 64), 48)
    with pytest.raises(TypeError, match="quantize_nf4: weight dtype torch.uint8 is not one of"):
        quantize_nf4(torch.ones(2, 64, dtype=torch.uint8))


def test_dequantize_rejects_bad_operands():
    q, absmax = quantize_nf4(randn_weight(4, 70, seed=7), 32).tensors()  # K_pad = 96, nb = 3
    kw = dict(block_size=32, in_features=70, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"dequantize_nf4: absmax must have shape \(4, 3\); got \(4, 2\)"):
        dequantize_nf4_packed(q, absmax[:, :2], **kw)
    with pytest.raises(TypeError, match="dequantize_nf4: qweight must be torch.uint8; got torch.int8"):
        dequantize_nf4_packed(q.view(torch.int8), absmax, **kw)
    with pytest.raises(ValueError, match="dequantize_nf4: double quantization needs both absmax_scale and absmax_offset"):
        dequantize_nf4_packed(q, absmax, torch.ones(1), **kw)
    codes = torch.zeros(4, 3, dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"dequantize_nf4: absmax \(double-quantized codes\) must be torch.uint8"):
        dequantize_nf4_packed(q, absmax, torch.ones(1), torch.tensor(0.0), **kw)
    with pytest.raises(ValueError, match=r"dequantize_nf4: absmax_scale must have shape \(1,\); got \(2,\)"):
        dequantize_nf4_packed(q, codes, torch.ones(2), torch.tensor(0.0), **kw)
    with pytest.raises(ValueError, match=r"dequantize_nf4: absmax_offset must have shape \(\); got \(1,\)"):
        dequantize_nf4_packed(q, codes, torch.ones(1), torch.zeros(1), **kw)
    with pytest.raises(ValueError, match=r"dequantize_nf4: levels must have shape \(16,\); got \(8,\)"):
        dequantize_nf4_packed(q, absmax, **kw, levels=torch.zeros(8))
    with pytest.raises(ValueError, match="NF4Weight: block_size 16 is not one of"):
        NF4Weight(q, absmax, 16, 70)


# ----------------------------------------------------------------------------- compiled


def test_one_region_with_operands_in_layout_order():
    weight = quantize_nf4(randn_weight(6, 100, seed=8), 32)
    node = assert_one_region_over_inputs(
        lambda q, a, levels: dequantize_nf4_packed(q, a, block_size=32, in_features=100, dtype=torch.bfloat16, levels=levels),
        *weight.tensors(), nf4_levels(), scheme=NF4,
    )
    q, absmax, levels = (a.meta["val"] for a in node.args[1:])
    assert node.meta["val"].shape == (6, 100) and node.meta["val"].dtype == torch.bfloat16
    assert 2 * q.shape[1] // absmax.shape[1] == 32 and levels.shape == (16,)


def test_double_quant_region_operands_follow_the_base_ones():
    weight = quantize_nf4(randn_weight(6, 100, seed=9), 32, double_quant=True)
    q, codes, scale, offset = weight.tensors()
    assert_one_region_over_inputs(
        lambda q, c, levels, s, o: dequantize_nf4_packed(q, c, s, o, block_size=32, in_features=100,
                                                         dtype=torch.float32, levels=levels),
        q, codes, nf4_levels(), scale, offset, scheme=NF4,
    )


@pytest.mark.parametrize(
    "double_quant, dtype", [(False, torch.bfloat16), (True, torch.float32)], ids=["absmax-bf16", "double-quant-fp32"]
)
def test_backends_agree_bit_for_bit(double_quant, dtype):
    # K = 200 is not a multiple of B = 64; 40 * 4 = 160 absmax values: one partial scale block.
    weight = quantize_nf4(randn_weight(40, 200, seed=10), 64, double_quant=double_quant)
    out = assert_backends_agree(
        lambda *ops: dequantize_nf4_packed(*ops, block_size=64, in_features=200, dtype=dtype), *weight.tensors()
    )
    assert torch.equal(out, dequantize_nf4(weight, dtype))
