"""qlinear: dequant(x) -> linear(dequant(w)) [-> add] [-> unary] [-> quant] as one oneDNN call.

Each case compiles one small module once, under freezing, and checks: the exact counters
of every static-quant pass, the oneDNN call (with its post-op) in Inductor's output code,
and the numerics against a float64 reference (SQNR floors) and the unfused eager result.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from torch.testing import FileCheck

import impl.static_quant as sq
from impl.static_quant.prepack import SATURATION_FREE_WEIGHT_CODE, bf16_linear_binary_supported, int8_products_saturate
from tests.impl.test_static_quant_helpers import (
    compile_with_passes,
    dequantize_reference,
    int8_codes,
    needs_onednn,
    randn,
    sqnr_db,
    uint8_codes,
)

pytestmark = needs_onednn

IN_FEATURES, OUT_FEATURES = 16, 32
QLINEAR = "static_quant_qlinear_matcher"
# SQNR floors against float64: float32 outputs are exact up to accumulation order; bf16
# outputs carry 8 mantissa bits; int8 outputs carry the output quantization step.
FLOOR_DB = {torch.float32: 110.0, torch.bfloat16: 45.0, "int8": 38.0}  # measured: ~147, ~55, ~43-50


class QLinear(torch.nn.Module):
    """dequant(x codes) -> linear with an int8 per-channel weight -> ``post`` [-> quantize]."""

    def __init__(self, post: Callable, dtype: torch.dtype = torch.float32, bias: bool = True,
                 act_dtype: torch.dtype = torch.uint8, weight_zero_point: int = 0) -> None:
        super().__init__()
        weight = randn(OUT_FEATURES, IN_FEATURES, seed=1)
        scales, zero_points = sq.choose_qparams_per_channel(weight, reduce_range=True)
        zero_points += weight_zero_point
        self.register_buffer("w_codes", sq.quantize_per_channel(weight, scales, zero_points, 0))
        self.register_buffer("w_scales", scales)
        self.register_buffer("w_zero_points", zero_points)
        self.bias = torch.nn.Parameter(randn(OUT_FEATURES, seed=2).to(dtype)) if bias else None
        self.post, self.dtype = post, dtype
        self.x_qparams = (0.05, 128) if act_dtype == torch.uint8 else (0.05, 0)
        self.out_qparams: Optional[tuple[float, int]] = None
        self.out_dtype = torch.uint8

    def forward(self, x_codes: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        x = sq.dequantize_per_tensor(x_codes, *self.x_qparams, out_dtype=self.dtype)
        w = sq.dequantize_per_channel(self.w_codes, self.w_scales, self.w_zero_points, 0, out_dtype=self.dtype)
        y = self.post(F.linear(x, w, self.bias), other.to(self.dtype))
        if self.out_qparams is None:
            return y
        return sq.quantize_per_tensor(y, *self.out_qparams, dtype=self.out_dtype)

    def reference(self, x_codes: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """The real-valued result in float64 (before any output quantize)."""
        x = dequantize_reference(x_codes, *self.x_qparams)
        w = (self.w_codes.double() - self.w_zero_points[:, None]) * self.w_scales[:, None].double()
        bias = None if self.bias is None else self.bias.double()
        return self.post(F.linear(x, w, bias), other.double())

    def calibrate_output(self, x_codes: torch.Tensor, other: torch.Tensor, dtype: torch.dtype) -> None:
        """Quantize the output with qparams covering the reference's range."""
        self.out_dtype = dtype
        self.out_qparams = sq.choose_qparams_per_tensor(self.reference(x_codes, other).float(), dtype)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    post: Callable
    nodes: int  # graph nodes the fused call replaces
    post_op: str  # the oneDNN post-op name in the output code
    dtype: torch.dtype = torch.float32
    rows: tuple = (4,)  # activation shape before the feature dim: (M,) or (B, S)
    out_dtype: Optional[torch.dtype] = None  # quantize the output to this
    act_dtype: torch.dtype = torch.uint8
    bias: bool = True


# Nodes: x region, w region, permute, mm / addmm (+2 flatten / unflatten for 3-D inputs),
# then each post-op's decomposed nodes (+2 dtype conversions for bf16 upcasts), +1 add,
# +1 quantize (+1 bf16 -> float32 conversion before it).
CASES = [
    Case("plain", lambda y, o: y, 4, "'none'"),
    Case("3d-nobias-relu", lambda y, o: F.relu(y), 7, "'relu'", rows=(2, 3), bias=False),
    Case("gelu", lambda y, o: F.gelu(y), 9, "'gelu'"),
    Case("gelu-tanh", lambda y, o: F.gelu(y, approximate="tanh"), 13, "'tanh'"),
    Case("hardtanh", lambda y, o: F.hardtanh(y, -0.5, 0.75), 6, "'hardtanh'"),
    Case("silu", lambda y, o: F.silu(y), 8, "'swish'"),
    Case("hardswish", lambda y, o: F.hardswish(y), 9, "'hardswish'"),
    Case("leaky-relu", lambda y, o: F.leaky_relu(y, 0.1), 7, "'leaky_relu'"),
    Case("tanh", lambda y, o: torch.tanh(y), 5, "'tanh'"),
    Case("bf16-gelu", lambda y, o: F.gelu(y), 11, "'gelu'", dtype=torch.bfloat16),
    Case("bf16-3d-silu-quant", lambda y, o: F.silu(y), 6 + 6 + 1, "'swish'", dtype=torch.bfloat16,
         rows=(2, 3), out_dtype=torch.uint8),
    Case("3d-add-relu-quant", lambda y, o: F.relu(o + y), 6 + 3, "'add'", rows=(2, 3), out_dtype=torch.uint8),
    # Without native bf16 oneDNN cannot add a bf16 tensor in the matmul: the add stays out.
    Case("bf16-add", lambda y, o: y + o, *((5, "'add'") if bf16_linear_binary_supported() else (4, "'none'")),
         dtype=torch.bfloat16),
    Case("bf16-quant-after-to-float32", lambda y, o: y.float(), 4 + 2, "'none'", dtype=torch.bfloat16,
         out_dtype=torch.uint8),
    Case("s8-activations-s8-output", lambda y, o: y, 5, "'none'", act_dtype=torch.int8, out_dtype=torch.int8),
]


def _inputs(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    codes = (uint8_codes if case.act_dtype == torch.uint8 else int8_codes)(*case.rows, IN_FEATURES)
    return codes, randn(*case.rows, OUT_FEATURES, seed=3)


def _check_numerics(model: QLinear, result, inputs, dtype: torch.dtype) -> None:
    reference = model.reference(*inputs)
    if model.out_qparams is None:
        assert result.out.dtype == dtype
        assert sqnr_db(reference, result.out) >= FLOOR_DB[dtype]
        torch.testing.assert_close(result.out, result.eager, **({} if dtype == torch.float32 else {"atol": 0.5, "rtol": 0.02}))
        return
    assert result.out.dtype == model.out_dtype
    assert sqnr_db(reference, dequantize_reference(result.out, *model.out_qparams)) >= FLOOR_DB["int8"]
    # The fused kernel accumulates in float32 where the unfused bf16 path rounds in between.
    max_code_step = 1 if dtype == torch.float32 else 3
    assert (result.out.int() - result.eager.int()).abs().max() <= max_code_step


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_qlinear_fuses_pattern_and_post_ops(case):
    model = QLinear(case.post, case.dtype, bias=case.bias, act_dtype=case.act_dtype)
    inputs = _inputs(case)
    if case.out_dtype is not None:
        model.calibrate_output(*inputs, case.out_dtype)

    result = compile_with_passes(model, *inputs)

    assert result.counts == {f"{QLINEAR}_count": 1, f"{QLINEAR}_nodes": case.nodes}
    assert result.lowered == {"static_quant_qlinear_lower_count": 1}
    (FileCheck().check("torch.ops.onednn.qlinear_pointwise").check_same(case.post_op)
     .check_not("extern_kernels.mm").check_not("extern_kernels.addmm").run(result.code))
    _check_numerics(model, result, inputs, case.dtype)


def test_runtime_activation_qparams_use_the_tensor_overload():
    """Activation scale / zero point arriving as tensors at run time (not constants)."""
    model = QLinear(lambda y, o: F.relu(y))

    def program(x_codes, x_scale, x_zero_point):
        x = sq.dequantize_per_tensor(x_codes, x_scale, x_zero_point)
        w = sq.dequantize_per_channel(model.w_codes, model.w_scales, model.w_zero_points, 0)
        return F.relu(F.linear(x, w, model.bias))

    codes = uint8_codes(4, IN_FEATURES)
    result = compile_with_passes(program, codes, torch.tensor(0.05), torch.tensor(128))

    assert result.counts == {f"{QLINEAR}_count": 1, f"{QLINEAR}_nodes": 5}
    FileCheck().check("torch.ops.onednn.qlinear_pointwise.tensor").check_same("'relu'").run(result.code)
    assert sqnr_db(model.reference(codes, torch.zeros(4, OUT_FEATURES)), result.out) >= FLOOR_DB[torch.float32]


def test_fused_add_whose_result_has_two_users_lowers():
    """The added tensor is computed (o * 3, a pointwise Inductor fuses) and the fused
    result feeds two consumers: the oneDNN call must still get a realized operand."""
    model = QLinear(lambda y, o: (lambda z: (z, z * 2))(y + o * 3))
    result = compile_with_passes(model, *_inputs(CASES[0]))
    assert result.counts == {f"{QLINEAR}_count": 1, f"{QLINEAR}_nodes": 5}
    FileCheck().check("torch.ops.onednn.qlinear_pointwise").check_same("'add'").run(result.code)
    torch.testing.assert_close(result.out, result.eager)


def test_activation_flattened_by_the_user_is_flattened_as_codes():
    """linear(x.reshape(M, K)) with the (M, N) result used as is: the codes are flattened."""
    model = QLinear(lambda y, o: y)

    def program(x_codes):
        x = sq.dequantize_per_tensor(x_codes, *model.x_qparams)
        w = sq.dequantize_per_channel(model.w_codes, model.w_scales, model.w_zero_points, 0)
        return F.linear(x.reshape(-1, IN_FEATURES), w, model.bias)

    codes = uint8_codes(2, 3, IN_FEATURES)
    result = compile_with_passes(program, codes)

    assert result.counts == {f"{QLINEAR}_count": 1, f"{QLINEAR}_nodes": 5}
    FileCheck().check("torch.ops.onednn.qlinear_pointwise").run(result.code)
    assert result.out.shape == (6, OUT_FEATURES)
    reference = model.reference(codes, torch.zeros(())).reshape(6, OUT_FEATURES)
    assert sqnr_db(reference, result.out) >= FLOOR_DB[torch.float32]


def test_dynamic_batch_compiles_once_and_fuses():
    model = QLinear(lambda y, o: F.relu(y + o))
    codes, other = _inputs(Case("d", model.post, 0, "", rows=(2, 3)))
    model.calibrate_output(codes, other, torch.uint8)
    more = (uint8_codes(2, 5, IN_FEATURES, seed=7), randn(2, 5, OUT_FEATURES, seed=8))

    result = compile_with_passes(model, codes, other, dynamic=True, more_inputs=(more,))

    assert result.frames == 1
    assert result.counts == {f"{QLINEAR}_count": 1, f"{QLINEAR}_nodes": 9}
    ((out, eager),) = result.more
    assert out.shape == (2, 5, OUT_FEATURES) and (out.int() - eager.int()).abs().max() <= 1
    FileCheck().check("torch.ops.onednn.qlinear_pointwise").check_same("'add'").run(result.code)


def test_shared_activation_is_promoted_so_both_linears_fuse():
    first, second = QLinear(lambda y, o: y), QLinear(lambda y, o: y)

    def program(x_codes):
        x = sq.dequantize_per_tensor(x_codes, 0.05, 128)
        w1 = sq.dequantize_per_channel(first.w_codes, first.w_scales, first.w_zero_points, 0)
        w2 = sq.dequantize_per_channel(second.w_codes, second.w_scales, second.w_zero_points, 0)
        return F.linear(x, w1) + F.linear(x, w2) * 2

    result = compile_with_passes(program, uint8_codes(4, IN_FEATURES))

    assert result.counts == {
        "static_quant_dequant_promotion_matcher_count": 1,
        "static_quant_dequant_promotion_matcher_nodes": 1,
        # the second linear's `* 2` is no post-op; the first absorbs the `+` of the
        # second's scaled result as a binary post-op
        f"{QLINEAR}_count": 2,
        f"{QLINEAR}_nodes": 4 + 4 + 1,
    }
    assert result.lowered == {"static_quant_qlinear_lower_count": 2}
    FileCheck().check_count("torch.ops.onednn.qlinear_pointwise", 2, exactly=True).run(result.code)
    torch.testing.assert_close(result.out, result.eager)


# ------------------------------------------------------------------------- near misses


def _assert_untouched(result, expected_counts=None) -> None:
    assert result.counts == (expected_counts or {})
    assert result.lowered == ({"static_quant_qlinear_lower_count": 1} if expected_counts else {})
    torch.testing.assert_close(result.out, result.eager)


def test_without_freezing_weights_are_inputs_and_nothing_fuses():
    model = QLinear(lambda y, o: F.relu(y))
    result = compile_with_passes(model, *_inputs(CASES[0]), freezing=False)
    _assert_untouched(result)
    FileCheck().check_not("onednn").run(result.code)


def test_weight_with_nonzero_zero_point_is_not_fused():
    """oneDNN's int8 weights are symmetric; an asymmetric weight stays unfused."""
    model = QLinear(lambda y, o: y, weight_zero_point=3)
    _assert_untouched(compile_with_passes(model, *_inputs(CASES[0])))


@pytest.mark.skipif(not int8_products_saturate(), reason="this CPU has VNNI: oneDNN int8 pair sums cannot saturate")
def test_full_range_weight_is_not_fused_where_int8_pairs_saturate():
    """Without VNNI, oneDNN sums u8 x s8 pairs in saturating int16: codes beyond +-64 would
    give wrong results (measured: off by up to 3 on this linear), so nothing fuses."""
    model = QLinear(lambda y, o: y)
    weight = randn(OUT_FEATURES, IN_FEATURES, seed=1)
    scales, zero_points = sq.choose_qparams_per_channel(weight)  # full range: codes up to 127
    model.w_codes = sq.quantize_per_channel(weight, scales, zero_points, 0)
    model.w_scales = scales
    assert int(model.w_codes.abs().max()) > SATURATION_FREE_WEIGHT_CODE
    _assert_untouched(compile_with_passes(model, *_inputs(CASES[0])))


@pytest.mark.skipif(int8_products_saturate(), reason="this CPU lacks VNNI: full-range int8 weights stand down")
def test_full_range_weight_fuses_where_int8_pairs_cannot_saturate():
    model = QLinear(lambda y, o: y)
    weight = randn(OUT_FEATURES, IN_FEATURES, seed=1)
    scales, zero_points = sq.choose_qparams_per_channel(weight)
    model.w_codes = sq.quantize_per_channel(weight, scales, zero_points, 0)
    model.w_scales = scales
    result = compile_with_passes(model, *_inputs(CASES[0]))
    assert result.counts[f"{QLINEAR}_count"] == 1
    assert sqnr_db(model.reference(*_inputs(CASES[0])), result.out) >= FLOOR_DB[torch.float32]


def test_per_channel_activation_is_not_fused():
    model = QLinear(lambda y, o: y)

    def program(x_codes):
        x = sq.dequantize_per_channel(x_codes, torch.full((4,), 0.05), torch.full((4,), 128), 0)
        w = sq.dequantize_per_channel(model.w_codes, model.w_scales, model.w_zero_points, 0)
        return F.linear(x, w, model.bias)

    _assert_untouched(compile_with_passes(program, uint8_codes(4, IN_FEATURES)))


def test_post_op_whose_input_is_used_elsewhere_stays_unfused():
    """relu(y) and y both returned: the linear fuses, the relu cannot."""
    model = QLinear(lambda y, o: (F.relu(y), y))
    result = compile_with_passes(model, *_inputs(CASES[0]))
    _assert_untouched(result, {f"{QLINEAR}_count": 1, f"{QLINEAR}_nodes": 4})
    FileCheck().check("torch.ops.onednn.qlinear_pointwise").check_same("'none'").run(result.code)


def test_quantize_with_runtime_scale_is_left_out_of_the_fusion():
    """The output scale must be a constant (oneDNN takes a float); relu still fuses."""
    model = QLinear(lambda y, o: F.relu(y))

    def program(x_codes, out_scale):
        return sq.quantize_per_tensor(model(x_codes, torch.zeros(())), out_scale, 3)

    result = compile_with_passes(program, uint8_codes(4, IN_FEATURES), torch.tensor(0.1))
    assert result.counts == {f"{QLINEAR}_count": 1, f"{QLINEAR}_nodes": 5}
    assert (result.out.int() - result.eager.int()).abs().max() <= 1
