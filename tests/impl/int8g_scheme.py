"""A weight-only scheme that lives outside impl/ (tests/impl/test_schemes_registry.py registers
it): int8 codes with one float32 scale per group of 32 along K, "int8 per group".

Layout, weight W (N, K) used as y = x @ W.T, group size G = 32, K a multiple of G:

    qweight (N, K)      int8 in [-127, 127]
    scale   (N, K // G) float32
    W[n, k] = qweight[n, k] * scale[n, k // G]
"""

from __future__ import annotations

import dataclasses

import torch

from impl.hop import InvokeQuant
from impl.schemes import registry
from impl.schemes.common import check_activation_dtype, check_choice, check_float_weight, check_packed

INT8_PER_GROUP = "int8_per_group_test"
GROUP_SIZES = (32,)
_REGION = InvokeQuant()


def check_int8g_operands(qweight, scale, group_size: int, in_features: int, op: str) -> None:
    """The layout of the module docstring, or one error naming the argument."""
    check_choice(group_size, GROUP_SIZES, "group_size", op)
    if not isinstance(qweight, torch.Tensor) or qweight.dim() != 2:
        raise ValueError(f"{op}: qweight must be a 2-D tensor (N, K)")
    if in_features % group_size:
        raise ValueError(f"{op}: in_features {in_features} is not a multiple of group_size {group_size}")
    n = qweight.shape[0]
    check_packed(qweight, "qweight", (n, in_features), torch.int8, op)
    check_packed(scale, "scale", (n, in_features // group_size), torch.float32, op)


@dataclasses.dataclass(frozen=True)
class Int8GroupWeight:
    qweight: torch.Tensor
    scale: torch.Tensor
    group_size: int
    in_features: int

    def __post_init__(self) -> None:
        check_int8g_operands(self.qweight, self.scale, self.group_size, self.in_features, "Int8GroupWeight")

    @property
    def out_features(self) -> int:
        return self.qweight.shape[0]


def dequantize_int8g_values(qweight, scale, group_size: int, in_features: int, dtype: torch.dtype) -> torch.Tensor:
    """The region's body (and the scheme's formula): W in float32, then cast to ``dtype``."""
    n = qweight.shape[0]
    grouped = qweight.to(torch.float32).reshape(n, -1, group_size) * scale[..., None]
    return grouped.reshape(n, -1)[:, :in_features].to(dtype)


def quantize_int8g(weight: torch.Tensor, group_size: int = 32) -> Int8GroupWeight:
    """weight (N, K) float -> Int8GroupWeight, scale = max |w| / 127 per group."""
    check_float_weight(weight, "quantize_int8g")
    n, k = weight.shape
    groups = weight.to(torch.float32).reshape(n, -1, group_size)
    scale = (groups.abs().amax(dim=-1) / 127).clamp(min=1e-12)
    qweight = torch.clamp(torch.round(groups / scale[..., None]), -127, 127).to(torch.int8).reshape(n, k)
    return Int8GroupWeight(qweight, scale, group_size, k)


def dequantize_int8g_packed(qweight, scale, *, group_size: int, in_features: int, dtype: torch.dtype) -> torch.Tensor:
    """(qweight, scale) -> W (N, K) in ``dtype``, as one invoke_quant region."""
    check_activation_dtype(dtype, "dequantize_int8g")
    check_int8g_operands(qweight, scale, group_size, in_features, "dequantize_int8g")

    def dequantize(qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return dequantize_int8g_values(qweight, scale, group_size, in_features, dtype)

    return _REGION(dequantize, qweight, scale, scheme=INT8_PER_GROUP)


def infer_group_size(out_shape: tuple, shapes: list):
    """(G,) read off a region's output (N, K) and its scale (N, K // G); None if G is no group size."""
    (_, k), scale = out_shape, shapes[1] if len(shapes) > 1 else ()
    if len(scale) != 2 or scale[1] == 0 or k % scale[1]:
        return None
    group = k // scale[1]
    return (group,) if group in GROUP_SIZES else None


def registry_entry() -> registry.WeightOnlyScheme:
    """The scheme's one registry entry (tests register it and take it out again)."""
    return registry.WeightOnlyScheme(
        name=INT8_PER_GROUP, short="int8g_test", aliases=("int8g",),
        weight_type=Int8GroupWeight, quantize=quantize_int8g, dequantize_region=dequantize_int8g_packed,
        buffers=("qweight", "scale"), statics=("group_size", "in_features"), derived={},
        operands=("qweight", "scale"), optional=0, ints=("group_size",),
        formula=dequantize_int8g_values, check=check_int8g_operands, infer_ints=infer_group_size,
        kernel="tests.impl.int8g_kernel",
    )
