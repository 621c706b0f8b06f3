"""Programs for suites/woq_fusion.yaml: a scheme's dequantization region feeding a matmul.

Weights are quantized by the schemes themselves (``impl.schemes.quantize_<scheme>``); the
input builders return the region's tensors as one tuple, which the programs hand to the
scheme's ``dequantize_<scheme>_packed`` (one ``impl_invoke_quant`` region) and then to the
matmul pattern under test. The harness's float64 run upcasts the float tensors of the tuple
too; the programs then evaluate the layout's formula in float64 (the scheme record's
``formula`` on float64 operands), the reference the SQNR floors are measured against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.core.inputs import BuildContext, InputSpec
from impl import InvokeQuant
from impl.install import InstalledPasses
from impl.schemes.registry import by_short
from impl.schemes import (
    nf4_levels,
    quantize_int4,
    quantize_nf4,
)
from suites.programs.woq import int8_weight  # noqa: F401  (kind: suites.programs.woq_fusion:int8_weight, one builder)

# --------------------------------------------------------------------------- passes


def installed_passes() -> InstalledPasses:
    """What ``impl.install()`` puts into ``post_grad_custom_pre_pass`` (nothing before it)."""
    return InstalledPasses()


# --------------------------------------------------------------------------- input builders


def int4_weight(spec: InputSpec, ctx: BuildContext) -> tuple:
    """(qweight (N, K_pad // 2) uint8, scale, zero (N, K_pad // G) float32)."""
    params = spec.param_dict
    weight = quantize_int4(
        ctx.sample(spec, tuple(spec.shape), torch.float32), params.get("group_size", 64),
        symmetric=params.get("symmetric", False),
    )
    return tuple(t.to(ctx.device) for t in weight.tensors())


int4_weight.PARAMS = {"group_size": int, "symmetric": bool}


def nf4_weight(spec: InputSpec, ctx: BuildContext) -> tuple:
    """(qweight, absmax, levels[, absmax_scale, absmax_offset]): the region's operand order."""
    params = spec.param_dict
    weight = quantize_nf4(
        ctx.sample(spec, tuple(spec.shape), torch.float32), params.get("block_size", 64),
        double_quant=params.get("double_quant", False),
    )
    qweight, absmax, *double = weight.tensors()
    return tuple(t.to(ctx.device) for t in (qweight, absmax, nf4_levels(), *double))


nf4_weight.PARAMS = {"block_size": int, "double_quant": bool}


# --------------------------------------------------------------------------- dequantization


def dequantize(scheme: str, weight: tuple, in_features: int, dtype: torch.dtype, block: int = 64) -> torch.Tensor:
    """W (N, K) in ``dtype``: the region of the scheme whose short name is ``scheme`` (its
    ints, group or block size, all ``block``), or its formula in float64 for the reference run."""
    record = by_short(scheme)
    ints = (block,) * len(record.ints)
    if dtype == torch.float64:
        operands = (*weight, *[None] * (len(record.operands) - len(weight)))
        return record.formula(*operands, *ints, in_features, torch.float64)
    return record.region(weight, ints, in_features, dtype)


# --------------------------------------------------------------------------- patterns


def linear(x: torch.Tensor, weight: tuple, bias: torch.Tensor, scheme: str = "int8", block: int = 64) -> torch.Tensor:
    """F.linear(x, W, bias), x (M, K) or (B, S, K): addmm (3-D: flattened around it)."""
    return F.linear(x, dequantize(scheme, weight, x.shape[-1], x.dtype, block), bias)


def mm_t(x: torch.Tensor, weight: tuple, scheme: str = "int8", block: int = 64) -> torch.Tensor:
    """torch.mm(x, W.t())."""
    return torch.mm(x, dequantize(scheme, weight, x.shape[-1], x.dtype, block).t())


def addmm(x: torch.Tensor, weight: tuple, bias: torch.Tensor, scheme: str = "int8", block: int = 64) -> torch.Tensor:
    """torch.addmm(bias, x, W.T)."""
    return torch.addmm(bias, x, dequantize(scheme, weight, x.shape[-1], x.dtype, block).T)


def bmm(x: torch.Tensor, weight: tuple, scheme: str = "int8", block: int = 64) -> torch.Tensor:
    """torch.bmm(x (B, S, K), W.t() expanded to (B, K, N))."""
    w = dequantize(scheme, weight, x.shape[-1], x.dtype, block)
    return torch.bmm(x, w.t().expand(x.shape[0], -1, -1))


# --------------------------------------------------------------------------- near misses


def unknown_scheme(x: torch.Tensor, weight: tuple) -> torch.Tensor:
    """int8 tensors and formula, but a region whose scheme no pass knows: stays unfused."""
    if x.dtype == torch.float64:
        w = dequantize("int8", weight, x.shape[-1], torch.float64)
    else:
        w = InvokeQuant()(lambda q, s: (q.to(torch.float32) * s[:, None]).to(x.dtype), *weight, scheme="int8_custom")
    return x @ w.t()


def two_consumers(x: torch.Tensor, weight: tuple, scheme: str = "int8", block: int = 64) -> tuple:
    """The dequantized weight feeds the matmul and a reduction: fusing would dequantize twice."""
    w = dequantize(scheme, weight, x.shape[-1], x.dtype, block)
    return x @ w.t(), w.sum(dim=1)


def untransposed(x: torch.Tensor, weight: tuple) -> torch.Tensor:
    """x (M, N) @ W (N, K) for an int8 W: the weight used as it is, not transposed."""
    return x @ dequantize("int8", weight, weight[0].shape[1], x.dtype)
