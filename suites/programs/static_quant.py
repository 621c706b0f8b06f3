"""Static int8 activation quantization programs (suites/static_quant.yaml).

Each program is the seed's quantized-model shape (PyTorch test/inductor/
test_mkldnn_pattern_matcher.py, seed 003) written with our regions
(:mod:`impl.static_quant.primitives`): the float activation is quantized to uint8 codes
(or int8), dequantized, fed to linear / conv2d with an int8 per-channel weight, followed by
the post-ops under test and optionally an output quantize. Quantized outputs are returned
dequantized by plain arithmetic, so the harness compares values with a tolerance of one
output step (the fused kernel may round one code differently from the unfused one).

The activation's dtype picks the variant: float32, or bfloat16 for int8-mixed-bf16 (every
region converts with ``to(bfloat16)``, as the seed's autocast models do). Under the
harness's float64 run (``float64_factor``) the activation is float64 and the program
computes the same math in float64 without regions: the reference the compiled result is
held to.

Two things the oneDNN passes need, which every program here provides:

- freezing: the weight is an ``nn.Module`` (from the ``int8_weight`` input builder) whose
  buffers Inductor folds into constants, but only when compiling with grad disabled: the
  suite sets ``no_grad: true``, so the harness calls (and Dynamo compiles) every program
  under ``torch.no_grad()``;
- exact int8 products: weight codes within +-63 (``reduce_range``), which oneDNN computes
  exactly on every x86 CPU, VNNI or not (see :mod:`impl.static_quant.prepack`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import pytest
import torch
import torch.nn.functional as F

import impl.static_quant as sq
from harness.core.inputs import BuildContext, InputSpec
from impl.static_quant.passes import StaticQuantPass, onednn_unavailable_reason

QDTYPES = {"u8": torch.uint8, "s8": torch.int8}


# ------------------------------------------------------------------------------ the pass


def static_quant_pass() -> StaticQuantPass:
    """The passes as the harness installs them (post_grad_custom_pre_pass)."""
    return StaticQuantPass()


def static_quant_pass_onednn() -> StaticQuantPass:
    """The same, for cases that need the oneDNN kernels: where they are missing the passes
    stand down, so the cell is skipped with the reason instead of failing its counters."""
    reason = onednn_unavailable_reason()
    if reason is not None:
        pytest.skip(f"qlinear / qconv2d stand down: {reason}")
    return StaticQuantPass()


# --------------------------------------------------------------------------- the weight


class Int8Weight(torch.nn.Module):
    """Symmetric per-output-channel int8 weight codes, scales (O,), zero points (O,)."""

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)
        self.register_buffer("zero_points", zero_points)

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype == torch.float64:
            shape = (-1,) + (1,) * (self.codes.dim() - 1)
            return (self.codes.double() - self.zero_points.reshape(shape)) * self.scales.double().reshape(shape)
        return sq.dequantize_per_channel(self.codes, self.scales, self.zero_points, 0, out_dtype=dtype)


def int8_weight(spec: InputSpec, ctx: BuildContext) -> Int8Weight:
    """``kind: suites.programs.static_quant:int8_weight``: a float weight of the spec's shape
    (O, I) or (O, I / groups, kH, kW), quantized per output channel, symmetric.

    ``full_range: true`` uses codes up to 127 (oneDNN sums them exactly only with VNNI);
    the default reduced range (up to 63) is exact on every x86 CPU.
    """
    weight = ctx.sample(spec, tuple(spec.shape), torch.float32)
    reduce_range = not spec.param_dict.get("full_range", False)
    scales, zero_points = sq.choose_qparams_per_channel(weight, reduce_range=reduce_range)
    codes = sq.quantize_per_channel(weight, scales, zero_points, 0)
    return Int8Weight(codes, scales, zero_points).to(ctx.device)


int8_weight.PARAMS = {"full_range": bool}


# ------------------------------------------------------------------------ the regions


def quantize(x: torch.Tensor, qparams: Sequence, qdtype: str = "u8") -> torch.Tensor:
    """Per-tensor quantize; in float64, the same arithmetic without a region."""
    scale, zero_point = qparams
    dtype = QDTYPES[qdtype]
    if x.dtype == torch.float64:
        info = torch.iinfo(dtype)
        return torch.clamp(torch.round(x / scale) + zero_point, info.min, info.max).to(dtype)
    return sq.quantize_per_tensor(x, scale, zero_point, dtype)


def dequantize(codes: torch.Tensor, qparams: Sequence, dtype: torch.dtype) -> torch.Tensor:
    """Per-tensor dequantize to ``dtype``; in float64, without a region."""
    scale, zero_point = qparams
    if dtype == torch.float64:
        return (codes.double() - zero_point) * scale
    return sq.dequantize_per_tensor(codes, scale, zero_point, out_dtype=dtype)


def as_values(codes: torch.Tensor, qparams: Sequence, dtype: torch.dtype) -> torch.Tensor:
    """Output codes as values by plain arithmetic (no region: nothing here is fused)."""
    scale, zero_point = qparams
    values = (codes.to(torch.float64 if dtype == torch.float64 else torch.float32) - zero_point) * scale
    return values.to(dtype)


def quant_dequant_input(x: torch.Tensor, qparams: Sequence, qdtype: str) -> torch.Tensor:
    """The quantized activation as the fused op sees it: dequant(quant(x))."""
    return dequantize(quantize(x, qparams, qdtype), qparams, x.dtype)


# ------------------------------------------------------------------------------ post-ops


UNARY = {
    "none": lambda y: y,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"),
    "hardtanh": lambda y: F.hardtanh(y, -0.5, 0.75),
    "silu": F.silu,
    "hardswish": F.hardswish,
}


def _epilogue(y: torch.Tensor, other: Optional[torch.Tensor], unary: str, binary: Optional[str],
              out_qparams: Optional[Sequence], qdtype: str) -> torch.Tensor:
    """[y + other] -> unary -> [quantize, returned as values]."""
    if binary == "add":
        y = y + other
    elif binary == "add_self_first":
        y = other + y
    y = UNARY[unary](y)
    if out_qparams is None:
        return y
    return as_values(quantize(y, out_qparams, qdtype), out_qparams, y.dtype)


# --------------------------------------------------------------------------------- qlinear


def qlinear(x: torch.Tensor, weight: Int8Weight, bias: Optional[torch.Tensor] = None,
            other: Optional[torch.Tensor] = None, *, unary: str = "none", binary: Optional[str] = None,
            x_qparams: Sequence = (0.05, 128), act: str = "u8", out_qparams: Optional[Sequence] = None,
            out_act: str = "u8") -> torch.Tensor:
    """x (..., K) float -> quantize -> dequantize -> linear(int8 weight (N, K), bias) ->
    [+ other (..., N)] -> unary -> [quantize -> values]."""
    x_values = quant_dequant_input(x, x_qparams, act)
    y = F.linear(x_values, weight.dequantize(x.dtype), bias)
    return _epilogue(y, other, unary, binary, out_qparams, out_act)


def qlinear_shared_input(x: torch.Tensor, first: Int8Weight, second: Int8Weight) -> torch.Tensor:
    """One dequantized activation read by two linears: promotion gives each its own copy."""
    x_values = quant_dequant_input(x, (0.05, 128), "u8")
    return F.relu(F.linear(x_values, first.dequantize(x.dtype))) + F.linear(x_values, second.dequantize(x.dtype)) * 2


def qlinear_output_also_returned(x: torch.Tensor, weight: Int8Weight, bias: torch.Tensor) -> tuple:
    """relu(y) and y both returned: the linear fuses, the relu (whose input escapes) cannot."""
    y = F.linear(quant_dequant_input(x, (0.05, 128), "u8"), weight.dequantize(x.dtype), bias)
    return F.relu(y), y


def qlinear_runtime_out_scale(x: torch.Tensor, weight: Int8Weight, bias: torch.Tensor,
                              out_scale: torch.Tensor) -> torch.Tensor:
    """The output quantize's scale is a runtime tensor: oneDNN takes a constant, so the
    quantize stays out of the fusion (the relu still fuses)."""
    y = F.relu(F.linear(quant_dequant_input(x, (0.05, 128), "u8"), weight.dequantize(x.dtype), bias))
    if x.dtype == torch.float64:
        return as_values(quantize(y, (float(out_scale), 0)), (float(out_scale), 0), y.dtype)
    codes = sq.quantize_per_tensor(y, out_scale, 0)
    return (codes.to(torch.float32) * out_scale.float()).to(y.dtype)


# ---------------------------------------------------------------------------------- qconv


def qconv2d(x: torch.Tensor, weight: Int8Weight, bias: Optional[torch.Tensor] = None,
            other: Optional[torch.Tensor] = None, *, unary: str = "none", binary: Optional[str] = None,
            stride: int = 1, padding: int = 1, groups: int = 1, x_qparams: Sequence = (0.05, 128),
            act: str = "u8", out_qparams: Optional[Sequence] = None,
            residual_qparams: Optional[Sequence] = None) -> torch.Tensor:
    """x (B, C, H, W) float -> quantize -> dequantize -> conv2d(int8 weight, bias) ->
    [+ other] -> unary -> [quantize -> values].

    ``residual_qparams``: the added tensor is itself quantized and dequantized with these
    (a residual in the quantized model): with an output quantize of the same int8 type,
    oneDNN sums into its codes.
    """
    x_values = quant_dequant_input(x, x_qparams, act)
    y = F.conv2d(x_values, weight.dequantize(x.dtype), bias, stride=stride, padding=padding, groups=groups)
    if other is not None and residual_qparams is not None:
        other = quant_dequant_input(other, residual_qparams, "u8")
    return _epilogue(y, other, unary, binary, out_qparams, "u8")


# ---------------------------------------------------------------- qmaxpool2d, qcat, qreshape


def _requant(values: torch.Tensor, qparams: Sequence, as_codes: bool) -> torch.Tensor:
    codes = quantize(values, qparams)
    return codes if as_codes else as_values(codes, qparams, values.dtype)


def qmaxpool2d(x: torch.Tensor, *, kernel: int = 3, stride: int = 2, padding: int = 1,
               qparams: Sequence = (0.05, 128), out_qparams: Optional[Sequence] = None) -> torch.Tensor:
    """quantize -> dequantize -> max_pool2d -> quantize (codes returned: compared exactly)."""
    pooled = F.max_pool2d(quant_dequant_input(x, qparams, "u8"), kernel, stride, padding)
    return _requant(pooled, out_qparams or qparams, as_codes=True)


def qmaxpool2d_values_escape(x: torch.Tensor, *, qparams: Sequence = (0.05, 128)) -> tuple:
    """The pooled float values are returned too: the quantize is not the pool's only user."""
    pooled = F.max_pool2d(quant_dequant_input(x, qparams, "u8"), 3, 2, 1)
    return _requant(pooled, qparams, as_codes=True), pooled


def qcat(x: torch.Tensor, y: torch.Tensor, *, dim: int = 1, qparams: Sequence = (0.05, 128),
         y_qparams: Optional[Sequence] = None) -> torch.Tensor:
    """Two quantized tensors dequantized, concatenated, requantized (codes returned)."""
    joined = torch.cat([quant_dequant_input(x, qparams, "u8"), quant_dequant_input(y, y_qparams or qparams, "u8")], dim)
    return _requant(joined, qparams, as_codes=True)


def qreshape(x: torch.Tensor, *, shape: Sequence = (2, -1), qparams: Sequence = (0.05, 128),
             out_qparams: Optional[Sequence] = None) -> torch.Tensor:
    """dequantize -> reshape -> quantize (codes returned)."""
    reshaped = quant_dequant_input(x, qparams, "u8").reshape(list(shape))
    return _requant(reshaped, out_qparams or qparams, as_codes=True)


def qcat_and_reshape_shared(x: torch.Tensor, y: torch.Tensor, *, qparams: Sequence = (0.05, 128)) -> tuple:
    """One dequantized tensor read by a cat and a reshape: promotion lets both requantize."""
    x_values = quant_dequant_input(x, qparams, "u8")
    joined = torch.cat([x_values, quant_dequant_input(y, qparams, "u8")], 1)
    return _requant(joined, qparams, as_codes=True), _requant(x_values.reshape(x.shape[0], -1), qparams, as_codes=True)
