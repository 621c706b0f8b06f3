"""impl/schemes/registry.py: a new weight-only scheme is a scheme module, a kernel module and
one ``register_scheme`` call, and every layer picks it up.

The scheme here lives in this file: int8 codes with one float32 scale per group of 32 along
K ("int8 per group"), registered by a module-scoped fixture. Nothing under ``impl/`` knows
it; ``quantize_linear_``, the fused op, the fusion pass and the CPU lowering must still
quantize, fuse, lower and compute it.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters
from torch._inductor import config as inductor_config
from torch._inductor.utils import run_and_get_code

import impl
from impl.hop import InvokeQuant
from impl.passes.woq_fusion import counter_key
from impl.schemes import quantize_linear_, registry
from impl.schemes.common import check_activation_dtype, check_choice, check_float_weight, check_packed

# --------------------------------------------------------------------------- the scheme module

INT8_PER_GROUP = "int8_per_group_test"
GROUP_SIZES = (32,)
_REGION = InvokeQuant()


def check_int8g_operands(qweight, scale, group_size: int, in_features: int, op: str) -> None:
    """qweight (N, K) int8, scale (N, K // G) float32, K = in_features a multiple of G."""
    check_choice(group_size, GROUP_SIZES, "group_size", op)
    if not isinstance(qweight, torch.Tensor) or qweight.dim() != 2:
        raise ValueError(f"{op}: qweight must be a 2-D tensor (N, K)")
    n = qweight.shape[0]
    if in_features % group_size:
        raise ValueError(f"{op}: in_features {in_features} is not a multiple of group_size {group_size}")
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
    """W[n, k] = qweight[n, k] * scale[n, k // G], in float32, then cast."""
    n = qweight.shape[0]
    grouped = qweight.to(torch.float32).reshape(n, -1, group_size) * scale[..., None]
    return grouped.reshape(n, -1)[:, :in_features].to(dtype)


def quantize_int8g(weight: torch.Tensor, group_size: int = 32) -> Int8GroupWeight:
    check_float_weight(weight, "quantize_int8g")
    n, k = weight.shape
    groups = weight.to(torch.float32).reshape(n, -1, group_size)
    scale = (groups.abs().amax(dim=-1) / 127).clamp(min=1e-12)
    qweight = torch.clamp(torch.round(groups / scale[..., None]), -127, 127).to(torch.int8).reshape(n, k)
    return Int8GroupWeight(qweight, scale, group_size, k)


def dequantize_int8g_packed(qweight, scale, *, group_size: int, in_features: int, dtype: torch.dtype) -> torch.Tensor:
    check_activation_dtype(dtype, "dequantize_int8g")
    check_int8g_operands(qweight, scale, group_size, in_features, "dequantize_int8g")

    def dequantize(qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return dequantize_int8g_values(qweight, scale, group_size, in_features, dtype)

    return _REGION(dequantize, qweight, scale, scheme=INT8_PER_GROUP)


def infer_group_size(out_shape: tuple, shapes: list):
    (n, k), (qweight, scale) = out_shape, shapes[:2]
    if len(scale) != 2 or scale[1] == 0 or k % scale[1]:
        return None
    group = k // scale[1]
    return (group,) if group in GROUP_SIZES else None


# --------------------------------------------------------------------------- the registry entry


def _int8_per_group() -> registry.WeightOnlyScheme:
    return registry.WeightOnlyScheme(
        name=INT8_PER_GROUP, short="int8g_test", aliases=("int8g",),
        weight_type=Int8GroupWeight, quantize=quantize_int8g, dequantize_region=dequantize_int8g_packed,
        buffers=("qweight", "scale"), statics=("group_size", "in_features"), derived={},
        operands=("qweight", "scale"), optional=0, ints=("group_size",),
        formula=dequantize_int8g_values, check=check_int8g_operands, infer_ints=infer_group_size,
        kernel="woq_mm_int8g_test",
    )


@pytest.fixture(scope="module")
def scheme():
    record = registry.register_scheme(_int8_per_group())
    yield record
    registry.unregister_scheme(record.name)


@pytest.fixture(autouse=True)
def _clear_counters():
    counters.clear()
    yield
    counters.clear()


N, K = 64, 96


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(K, N), torch.nn.ReLU(), torch.nn.Linear(N, N, bias=False))


def _reference(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """float64: each layer's W by the scheme's formula."""
    y = x.double()
    for layer in model:
        if isinstance(layer, impl.schemes.WeightOnlyLinear):
            w = dequantize_int8g_values(layer.qweight, layer.scale, 32, layer.in_features, torch.float64)
            y = F.linear(y, w, None if layer.bias is None else layer.bias.double())
        else:
            y = layer(y)
    return y


# --------------------------------------------------------------------------- the tests


def test_register_rejects_a_name_taken():
    with pytest.raises(ValueError, match=r"register_scheme\('int8_weight_only'\): int8, int8_weight_only already names a scheme"):
        registry.register_scheme(registry.INT8)


def test_the_builtin_records_keep_the_ops_schemas():
    assert [s.name for s in registry.all_schemes()][:3] == ["int8_weight_only", "int4_weight_only", "nf4"]
    for record in registry.all_schemes()[:3]:
        op = getattr(torch.ops.impl, record.op_name).default
        assert str(op._schema) == f"impl::{record.op_name}{record.schema()}"


def test_quantize_linear_takes_the_new_scheme(scheme):
    model = quantize_linear_(_model(), "int8g")  # by its alias
    layer = model[0]
    assert isinstance(layer, impl.schemes.WeightOnlyLinear) and layer.scheme == INT8_PER_GROUP
    assert set(dict(layer.named_buffers())) == {"qweight", "scale", "bias"}
    x = torch.randn(5, K)
    torch.testing.assert_close(model(x).double(), _reference(model, x), rtol=1e-5, atol=1e-5)


def test_the_new_scheme_gets_its_fused_op(scheme):
    op = getattr(torch.ops.impl, "woq_mm_int8g_test").default
    assert str(op._schema) == (
        "impl::woq_mm_int8g_test(Tensor x, Tensor qweight, Tensor scale, Tensor? bias, SymInt group_size) -> Tensor")
    weight = quantize_int8g(torch.randn(N, K) * 0.05)
    x, bias = torch.randn(3, K), torch.randn(N)
    expected = F.linear(x.double(), dequantize_int8g_values(weight.qweight, weight.scale, 32, K, torch.float64),
                        bias.double())
    torch.testing.assert_close(op(x, weight.qweight, weight.scale, bias, 32).double(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="woq_mm_int8g_test: group_size 64 is not one of 32"):
        op(x, weight.qweight, weight.scale, bias, 64)
    torch.library.opcheck(op, (x, weight.qweight, weight.scale, bias, 32), test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_pass_fuses_it_and_the_cpu_lowering_lowers_it(scheme, dtype):
    model = quantize_linear_(_model(), INT8_PER_GROUP).to(dtype)
    x = torch.randn(4, K, dtype=dtype)
    torch._dynamo.reset()
    with impl.installed(), inductor_config.patch(force_disable_caches=True):
        y, (code,) = run_and_get_code(torch.compile(model), x)
    assert counters["inductor"][counter_key(INT8_PER_GROUP, "matcher_count")] == 2
    # Lowered by the CPU lowering (the formula inlined: no call of the op from the output code).
    assert "woq_mm_int8g_test" not in code
    floor = {torch.float32: 1e-4, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(y.double(), _reference(model, x), rtol=floor, atol=floor)
