"""impl/schemes/registry.py: a new weight-only scheme is a scheme module, a kernel module and
one ``register_scheme`` call, and every layer picks it up.

The scheme is ``tests/impl/int8g_scheme.py`` (int8 codes, one float32 scale per group of 32
along K), its kernel ``tests/impl/int8g_kernel.py``, its registry entry ``registry_entry``
there, registered by a module-scoped fixture. Nothing under ``impl/`` knows it;
``quantize_linear_``, the fused op, the fusion pass, the CPU lowering and the Triton op (under
Triton's interpreter) must still quantize, fuse, lower and compute it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters
from torch._inductor import config as inductor_config
from torch._inductor.utils import run_and_get_code

import impl
from impl.passes.woq_fusion import counter_key
from impl.schemes import quantize_linear_, registry
from tests.impl.int8g_scheme import INT8_PER_GROUP, dequantize_int8g_values, quantize_int8g, registry_entry


@pytest.fixture(scope="module")
def scheme():
    record = registry.register_scheme(registry_entry())
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


def test_the_triton_op_runs_its_kernel(scheme):
    """``torch.ops.impl.woq_mm_int8g_test_triton`` exists and, through the fused op's CUDA
    route (``op_arguments``), computes the formula: on a GPU, or under Triton's interpreter
    on the CPU (which the kernel tests switch this process to anyway)."""
    pytest.importorskip("triton")
    from impl import compat, kernels

    device = torch.device("cuda" if torch.cuda.is_available() and not kernels.interpreter_active() else "cpu")
    if device.type == "cpu":
        numpy = pytest.importorskip("numpy")
        if tuple(int(p) for p in numpy.__version__.split(".")[:2]) >= (2, 3):
            pytest.skip("Triton 3.6's interpreter needs numpy < 2.3")
        if not compat.wrap_triton_takes_interpreted_kernels():
            pytest.skip("this torch's wrap_triton rejects kernels built by Triton's interpreter")
        kernels.use_interpreter()  # reloads the registered schemes' kernel modules too
    from impl.kernels import ops

    weight = quantize_int8g(torch.randn(N, K) * 0.05)
    x = torch.randn(5, K).to(torch.bfloat16)
    operands = (weight.qweight.to(device), weight.scale.to(device))
    y = ops.op_of("int8g_test")(x.to(device), *ops.op_arguments("int8g_test", operands, (32,)))
    assert str(torch.ops.impl.woq_mm_int8g_test_triton.default._schema) == (
        "impl::woq_mm_int8g_test_triton(Tensor x, Tensor qweight, Tensor scale, SymInt group_size) -> Tensor")
    expected = x.double() @ dequantize_int8g_values(weight.qweight, weight.scale, 32, K, torch.float64).T
    torch.testing.assert_close(y.cpu().double(), expected, rtol=2e-2, atol=2e-2)
