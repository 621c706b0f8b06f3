"""The static quantize / dequantize primitives: scheme names, eager math, input checks, and
the graph contract the passes rely on (one region node, operands (data, scale, zero_point))."""

from __future__ import annotations

import unittest.mock

import pytest
import torch

import impl.static_quant as sq
from impl.hop import invoke_quant
from impl.static_quant.passes.regions import as_region
from impl.static_quant.schemes import SCHEMES, Direction, Granularity


def test_scheme_names_are_the_sixteen_variants():
    expected = {
        f"static_{d}_{g}_{q}{b}"
        for d in ("quant", "dequant")
        for g in ("per_tensor", "per_channel")
        for q in ("u8", "s8")
        for b in ("", "_bf16")
    }
    assert set(SCHEMES) == expected
    scheme = SCHEMES["static_quant_per_tensor_u8"]
    assert (scheme.direction, scheme.granularity, scheme.qdtype, scheme.float_dtype) == (
        Direction.QUANTIZE, Granularity.PER_TENSOR, torch.uint8, torch.float32
    )
    assert (SCHEMES["static_dequant_per_channel_s8_bf16"].qmin, SCHEMES["static_dequant_per_channel_s8_bf16"].qmax) == (-128, 127)


# ------------------------------------------------------------------------------ eager math


def _quantize_float64(x, scale, zero_point, qmin, qmax):
    return torch.clamp(torch.round(x.double() / scale) + zero_point, qmin, qmax)


@pytest.mark.parametrize("dtype,zero_point", [(torch.uint8, 100), (torch.int8, -3)], ids=["u8", "s8"])
def test_per_tensor_quantize_rounds_half_to_even_and_clamps(dtype, zero_point):
    scale = 0.5
    # ties at +-0.25 and +-0.75 (x / scale = +-0.5, +-1.5), and values far outside the range
    x = torch.tensor([0.25, 0.75, -0.25, -0.75, 1.0, 1000.0, -1000.0, 0.0])
    codes = sq.quantize_per_tensor(x, scale, zero_point, dtype)
    info = torch.iinfo(dtype)
    assert codes.dtype == dtype
    assert torch.equal(codes.double(), _quantize_float64(x, scale, zero_point, info.min, info.max))
    assert codes[0] == zero_point and codes[1] == zero_point + 2  # 0.5 -> 0, 1.5 -> 2
    values = sq.dequantize_per_tensor(codes, scale, zero_point)
    assert torch.equal(values.double(), (codes.double() - zero_point) * scale)


def test_round_trip_error_is_at_most_half_a_step_inside_the_range():
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    scale, zero_point = sq.choose_qparams_per_tensor(x)
    error = (sq.dequantize_per_tensor(sq.quantize_per_tensor(x, scale, zero_point), scale, zero_point) - x).abs()
    assert error.max() <= scale / 2 + 1e-6


def test_per_channel_uses_one_scale_and_zero_point_per_slice_of_the_axis():
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1))
    scales = torch.tensor([0.01, 0.02, 0.04, 0.08])
    zero_points = torch.tensor([0, 1, -1, 5])
    codes = sq.quantize_per_channel(x, scales, zero_points, axis=1)
    expected = _quantize_float64(x, scales.double()[None, :, None], zero_points[None, :, None], -128, 127)
    assert torch.equal(codes.double(), expected)
    values = sq.dequantize_per_channel(codes, scales, zero_points, axis=-2)
    assert torch.equal(values, ((codes.float() - zero_points[None, :, None]) * scales[None, :, None]))


def test_bf16_variants_compute_in_float32():
    codes = torch.randint(0, 256, (8, 8), dtype=torch.uint8)
    values = sq.dequantize_per_tensor(codes, 0.03, 128, out_dtype=torch.bfloat16)
    assert values.dtype == torch.bfloat16
    assert torch.equal(values, sq.dequantize_per_tensor(codes, 0.03, 128).to(torch.bfloat16))
    x = torch.randn(8, 8).to(torch.bfloat16)
    assert torch.equal(sq.quantize_per_tensor(x, 0.03, 128), sq.quantize_per_tensor(x.float(), 0.03, 128))


def test_choose_qparams_cover_the_range():
    x = torch.tensor([-1.0, 3.0])
    scale, zero_point = sq.choose_qparams_per_tensor(x, torch.uint8)
    assert scale == pytest.approx(4.0 / 255) and zero_point == round(1.0 / scale)
    assert sq.choose_qparams_per_tensor(x, torch.int8, symmetric=True) == (pytest.approx(3.0 / 127), 0)
    assert sq.choose_qparams_per_tensor(torch.zeros(4))[0] > 0
    scales, zero_points = sq.choose_qparams_per_channel(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))
    assert torch.allclose(scales, torch.tensor([2.0, 0.5]) / 127) and zero_points.dtype == torch.int32
    assert not zero_points.any()
    reduced, _ = sq.choose_qparams_per_channel(torch.tensor([[1.0, -2.0], [0.5, 0.25]]), reduce_range=True)
    assert torch.allclose(reduced, torch.tensor([2.0, 0.5]) / 63)


# ------------------------------------------------------------------------------- bad input

BAD_INPUTS = [
    (lambda: sq.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.int32), ValueError, "dtype torch.int32 is not supported"),
    (lambda: sq.quantize_per_tensor(torch.ones(2), 0.0, 0), ValueError, "scale must be finite and > 0, got 0.0"),
    (lambda: sq.quantize_per_tensor(torch.ones(2), float("nan"), 0), ValueError, "scale must be finite"),
    (lambda: sq.quantize_per_tensor(torch.ones(2), 0.1, 300), ValueError, r"zero_point 300 is outside \[0, 255\]"),
    (lambda: sq.quantize_per_tensor(torch.ones(2), 0.1, 1.5), TypeError, "zero_point must be an int"),
    (lambda: sq.quantize_per_tensor(torch.ones(2), torch.ones(2), 0), ValueError, "per-tensor scale must have one element"),
    (lambda: sq.quantize_per_tensor(torch.ones(2, dtype=torch.float16), 0.1, 0), ValueError, "float dtype torch.float16"),
    (lambda: sq.dequantize_per_tensor(torch.ones(2), 0.1, 0), ValueError, "dtype torch.float32 is not supported"),
    (
        lambda: sq.quantize_per_channel(torch.ones(2, 3), torch.ones(2), torch.zeros(2), axis=1),
        ValueError,
        r"per-channel scales must have shape \(3,\) for axis 1",
    ),
    (lambda: sq.quantize_per_channel(torch.ones(2, 3), torch.ones(2), torch.zeros(2), axis=2), ValueError, "axis 2 is out of range"),
]


@pytest.mark.parametrize("call,error,message", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_bad_input_gets_one_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --------------------------------------------------------------------------- graph contract


def _regions_seen_by_post_grad_passes(program, *inputs, dynamic=None):
    seen = []

    def record(graph):
        seen.extend(as_region(n) for n in graph.find_nodes(op="call_function", target=invoke_quant))

    torch._dynamo.reset()
    with unittest.mock.patch("torch._inductor.config.post_grad_custom_post_pass", record):
        out = torch.compile(program, dynamic=dynamic, fullgraph=True)(*inputs)
    return out, seen


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_each_primitive_is_one_region_with_operands_in_order(dynamic):
    """After AOTAutograd each call is one node whose tensor operands are (data, scale,
    zero_point) with float32 / int32 qparams, whatever order the body uses them in."""
    scales = torch.tensor([0.01, 0.02, 0.04, 0.08])
    zero_points = torch.tensor([0, 1, -1, 5])

    def program(x, w):
        codes = sq.quantize_per_tensor(x, 0.05, 7)
        values = sq.dequantize_per_tensor(codes, 0.05, 7, out_dtype=torch.bfloat16)
        w_codes = sq.quantize_per_channel(w, scales, zero_points, 0)
        return values, sq.dequantize_per_channel(w_codes, scales, zero_points, 0)

    x, w = torch.randn(4, 6), torch.randn(4, 3)
    out, regions = _regions_seen_by_post_grad_passes(program, x, w, dynamic=dynamic)

    assert [r.scheme.name for r in regions] == [
        "static_quant_per_tensor_u8", "static_dequant_per_tensor_u8_bf16",
        "static_quant_per_channel_s8", "static_dequant_per_channel_s8",
    ]
    quant, dequant, quant_w, dequant_w = regions
    assert dequant.data is quant.node and dequant_w.data is quant_w.node
    assert quant.constant_qparams() == (pytest.approx(0.05), 7)
    # per-channel qparams broadcast along the axis (tensors from outside the program are
    # graph inputs here, constants only under freezing)
    scale_val, zero_point_val = dequant_w.scale.meta["val"], dequant_w.zero_point.meta["val"]
    assert (tuple(scale_val.shape), scale_val.dtype) == ((4, 1), torch.float32)
    assert (tuple(zero_point_val.shape), zero_point_val.dtype) == ((4, 1), torch.int32)
    for actual, expected in zip(out, program(x, w)):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_compiled_primitives_match_eager_bit_for_bit_without_passes():
    def program(x, w):
        codes = sq.quantize_per_tensor(x, 0.05, 7)
        w_codes = sq.quantize_per_channel(w, torch.tensor([0.1, 0.2]), torch.tensor([0, 3]), 1, torch.uint8)
        return codes, sq.dequantize_per_tensor(codes, 0.05, 7), w_codes, sq.dequantize_per_channel(
            w_codes, torch.tensor([0.1, 0.2]), torch.tensor([0, 3]), 1, out_dtype=torch.bfloat16
        )

    x, w = torch.randn(16, 8) * 3, torch.randn(5, 2) * 10
    torch._dynamo.reset()
    for actual, expected in zip(torch.compile(program, fullgraph=True)(x, w), program(x, w)):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)
