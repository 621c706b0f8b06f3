"""qconv2d: dequant(x) -> conv2d(dequant(w)) [-> add] [-> unary] [-> quant] as one oneDNN call.

Same checks as the qlinear tests: exact counters, the oneDNN call in the output code,
float64 SQNR floors and agreement with the unfused eager result. The binary post-op is an
in-place sum, so the tests also check that no input is overwritten.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from torch.testing import FileCheck

import impl.static_quant as sq
from impl.static_quant.prepack import SATURATION_FREE_WEIGHT_CODE, int8_products_saturate
from tests.impl.test_static_quant_helpers import (
    compile_with_passes,
    dequantize_reference,
    needs_onednn,
    randn,
    sqnr_db,
    uint8_codes,
)

pytestmark = needs_onednn

BATCH, IN_CHANNELS, OUT_CHANNELS, SIZE = 2, 4, 16, 6
QCONV = "static_quant_qconv2d_matcher"
FLOOR_DB = {torch.float32: 110.0, torch.bfloat16: 45.0, "int8": 38.0}
X_QPARAMS = (0.05, 128)


class QConv(torch.nn.Module):
    """dequant(x codes) -> conv2d with an int8 per-channel weight -> ``post`` [-> quantize]."""

    def __init__(self, post: Callable, dtype: torch.dtype = torch.float32, stride: int = 1, padding: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        weight = randn(OUT_CHANNELS, IN_CHANNELS // groups, 3, 3, seed=1)
        scales, zero_points = sq.choose_qparams_per_channel(weight, reduce_range=True)
        self.register_buffer("w_codes", sq.quantize_per_channel(weight, scales, zero_points, 0))
        self.register_buffer("w_scales", scales)
        self.register_buffer("w_zero_points", zero_points)
        self.bias = torch.nn.Parameter(randn(OUT_CHANNELS, seed=2).to(dtype))
        self.post, self.dtype = post, dtype
        self.conv_args = dict(stride=stride, padding=padding, groups=groups)
        self.out_qparams: Optional[tuple[float, int]] = None

    def forward(self, x_codes: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        x = sq.dequantize_per_tensor(x_codes, *X_QPARAMS, out_dtype=self.dtype)
        w = sq.dequantize_per_channel(self.w_codes, self.w_scales, self.w_zero_points, 0, out_dtype=self.dtype)
        y = self.post(F.conv2d(x, w, self.bias, **self.conv_args), other)
        return y if self.out_qparams is None else sq.quantize_per_tensor(y, *self.out_qparams)

    def conv_reference(self, x_codes: torch.Tensor) -> torch.Tensor:
        """The convolution alone, in float64."""
        x = dequantize_reference(x_codes, *X_QPARAMS)
        w = self.w_codes.double() * self.w_scales.double()[:, None, None, None]
        return F.conv2d(x, w, self.bias.double(), **self.conv_args)

    def reference(self, x_codes: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """The real-valued result in float64 (before any output quantize)."""
        return self.post(self.conv_reference(x_codes), other.double())


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    post: Callable
    nodes: int
    call: str  # the oneDNN op and post-op on one line of the output code
    dtype: torch.dtype = torch.float32
    quantize_output: bool = False
    conv_args: tuple = ()  # (stride, padding, groups)


# Nodes: x region, weight region, its channels-last copy, convolution; then post-ops as
# for qlinear; a dequantized accumulator adds its region node.
CASES = [
    Case("plain", lambda y, o: y, 4, "'none'"),
    Case("stride2-nopad-groups2", lambda y, o: y, 4, "'none'", conv_args=(2, 0, 2)),
    Case("relu", lambda y, o: F.relu(y), 5, "'relu'"),
    Case("hardtanh", lambda y, o: F.hardtanh(y, -0.5, 0.75), 6, "'hardtanh'"),
    Case("silu", lambda y, o: F.silu(y), 8, "'swish'"),
    Case("hardswish", lambda y, o: F.hardswish(y), 9, "'hardswish'"),
    Case("bf16-silu", lambda y, o: F.silu(y), 10, "'swish'", dtype=torch.bfloat16),
    Case("relu-quant", lambda y, o: F.relu(y), 6, "'relu'", quantize_output=True),
    Case("add", lambda y, o: y + o.to(y.dtype), 5, "'sum'"),
    Case("bf16-add-relu", lambda y, o: F.relu(o.to(y.dtype) + y), 6, "'sum'", dtype=torch.bfloat16),
]


def _inputs(model: QConv):
    codes = uint8_codes(BATCH, IN_CHANNELS, SIZE, SIZE)
    return codes, randn(*model.conv_reference(codes).shape, seed=3)


def _build(case: Case) -> QConv:
    stride, padding, groups = case.conv_args or (1, 1, 1)
    return QConv(case.post, case.dtype, stride=stride, padding=padding, groups=groups)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_qconv2d_fuses_pattern_and_post_ops(case):
    model = _build(case)
    codes, other = _inputs(model)
    reference = model.reference(codes, other)
    if case.quantize_output:
        model.out_qparams = sq.choose_qparams_per_tensor(reference.float())
    other_before = other.clone()

    result = compile_with_passes(model, codes, other)

    assert result.counts == {f"{QCONV}_count": 1, f"{QCONV}_nodes": case.nodes}
    assert result.lowered == {"static_quant_qconv2d_lower_count": 1}
    op = "torch.ops.onednn.qconv2d_pointwise.binary" if "'sum'" in case.call else "torch.ops.onednn.qconv_pointwise"
    FileCheck().check(op).check_same(case.call).check_not("extern_kernels.convolution").run(result.code)
    torch.testing.assert_close(other, other_before, rtol=0, atol=0)  # the in-place sum wrote a copy
    if case.quantize_output:
        assert sqnr_db(reference, dequantize_reference(result.out, *model.out_qparams)) >= FLOOR_DB["int8"]
        assert (result.out.int() - result.eager.int()).abs().max() <= 1
    else:
        assert result.out.dtype == case.dtype
        assert sqnr_db(reference, result.out) >= FLOOR_DB[case.dtype]
        tolerance = {} if case.dtype == torch.float32 else {"atol": 0.5, "rtol": 0.02}
        torch.testing.assert_close(result.out, result.eager, **tolerance)


def test_residual_from_a_dequantize_is_summed_as_int8_codes():
    """conv + dequant(residual codes) -> relu -> quantize: one call summing into the codes."""
    model = QConv(lambda y, o: F.relu(y + sq.dequantize_per_tensor(o, 0.2, 120)))
    codes = uint8_codes(BATCH, IN_CHANNELS, SIZE, SIZE)
    residual = uint8_codes(BATCH, OUT_CHANNELS, SIZE, SIZE, seed=5)
    reference = F.relu(model.conv_reference(codes) + dequantize_reference(residual, 0.2, 120))
    model.out_qparams = sq.choose_qparams_per_tensor(reference.float())
    residual_before = residual.clone()

    result = compile_with_passes(model, codes, residual)

    # + the residual's region node, the add, relu and the quantize
    assert result.counts == {f"{QCONV}_count": 1, f"{QCONV}_nodes": 4 + 4}
    FileCheck().check("torch.ops.onednn.qconv2d_pointwise.binary").check_same("'sum'").check_same("'relu'").run(
        result.code
    )
    assert result.out.dtype == torch.uint8
    assert sqnr_db(reference, dequantize_reference(result.out, *model.out_qparams)) >= FLOOR_DB["int8"]
    assert (result.out.int() - result.eager.int()).abs().max() <= 1
    torch.testing.assert_close(residual, residual_before, rtol=0, atol=0)


def test_float_residual_then_quantize_fuses_the_sum_but_not_the_quantize():
    """The sum accumulates in the output dtype: a float residual cannot be summed into
    int8 codes, so the quantize stays a separate region."""
    model = QConv(lambda y, o: F.relu(y + o))
    codes, other = _inputs(model)
    model.out_qparams = sq.choose_qparams_per_tensor(model.reference(codes, other).float())
    result = compile_with_passes(model, codes, other)
    assert result.counts == {f"{QCONV}_count": 1, f"{QCONV}_nodes": 6}
    FileCheck().check("torch.ops.onednn.qconv2d_pointwise.binary").check_same("torch.float32").run(result.code)
    assert (result.out.int() - result.eager.int()).abs().max() <= 1


def test_dynamic_batch_compiles_once_and_fuses():
    model = QConv(lambda y, o: F.relu(y))
    codes, other = _inputs(model)
    more = (uint8_codes(3, IN_CHANNELS, SIZE, SIZE, seed=9), randn(3, OUT_CHANNELS, SIZE, SIZE))
    result = compile_with_passes(model, codes, other, dynamic=True, more_inputs=(more,))
    assert result.frames == 1
    assert result.counts == {f"{QCONV}_count": 1, f"{QCONV}_nodes": 5}
    ((out, eager),) = result.more
    torch.testing.assert_close(out, eager)


# ------------------------------------------------------------------------- near misses


def test_int8_activations_are_not_fused():
    """oneDNN's quantized conv takes uint8 activations only."""
    model = QConv(lambda y, o: y)

    def program(x_codes):
        x = sq.dequantize_per_tensor(x_codes, 0.05, 0)
        return F.conv2d(x, sq.dequantize_per_channel(model.w_codes, model.w_scales, model.w_zero_points, 0), padding=1)

    result = compile_with_passes(program, uint8_codes(BATCH, IN_CHANNELS, SIZE, SIZE).to(torch.int8))
    assert result.counts == {}
    torch.testing.assert_close(result.out, result.eager)


@pytest.mark.skipif(not int8_products_saturate(), reason="this CPU has VNNI: oneDNN int8 pair sums cannot saturate")
def test_full_range_weight_is_not_fused_where_int8_pairs_saturate():
    """Without VNNI oneDNN's int16 pair sums saturate (measured: conv results off by up to
    20 with codes up to 127), so full-range weights stay unfused."""
    model = QConv(lambda y, o: y)
    weight = randn(OUT_CHANNELS, IN_CHANNELS, 3, 3, seed=1)
    scales, zero_points = sq.choose_qparams_per_channel(weight)
    model.w_codes, model.w_scales = sq.quantize_per_channel(weight, scales, zero_points, 0), scales
    assert int(model.w_codes.abs().max()) > SATURATION_FREE_WEIGHT_CODE
    result = compile_with_passes(model, *_inputs(model))
    assert result.counts == {}
    torch.testing.assert_close(result.out, result.eager)


def test_runtime_activation_scale_is_not_fused():
    """The weight prepack needs the activation scale as a constant."""
    model = QConv(lambda y, o: y)

    def program(x_codes, x_scale):
        x = sq.dequantize_per_tensor(x_codes, x_scale, 128)
        return F.conv2d(x, sq.dequantize_per_channel(model.w_codes, model.w_scales, model.w_zero_points, 0), padding=1)

    result = compile_with_passes(program, uint8_codes(BATCH, IN_CHANNELS, SIZE, SIZE), torch.tensor(0.05))
    assert result.counts == {}
    torch.testing.assert_close(result.out, result.eager)


def test_without_freezing_nothing_fuses():
    model = QConv(lambda y, o: F.relu(y))
    result = compile_with_passes(model, *_inputs(model), freezing=False)
    assert result.counts == {}
    torch.testing.assert_close(result.out, result.eager)
    FileCheck().check_not("onednn").run(result.code)
