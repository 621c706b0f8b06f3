"""impl/schemes/linear.py: quantize_linear_ / WeightOnlyLinear on nn.Linear models, eager
against the float64 references, and compiled (one region feeding each addmm / mm)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo.testing
import torch.nn.functional as F

from impl.schemes import (
    INT4_WEIGHT_ONLY,
    INT8_WEIGHT_ONLY,
    NF4,
    WeightOnlyLinear,
    compute_sqnr,
    dequantize_int4_reference,
    dequantize_int8_reference,
    dequantize_nf4_reference,
    quantize_int4,
    quantize_int8,
    quantize_linear_,
    quantize_nf4,
)
from tests.impl.schemes_support import region_nodes, traced_forward

# scheme, options, quantizer, float64 reference: the module must compute F.linear with it.
CASES = {
    "int8": (INT8_WEIGHT_ONLY, {}, quantize_int8, dequantize_int8_reference),
    "int4": (INT4_WEIGHT_ONLY, {"group_size": 32, "symmetric": True}, quantize_int4, dequantize_int4_reference),
    "nf4": (NF4, {"block_size": 32, "double_quant": True}, quantize_nf4, dequantize_nf4_reference),
}


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(72, 48),
        torch.nn.GELU(),
        torch.nn.Sequential(torch.nn.Linear(48, 40, bias=False), torch.nn.ReLU()),
        torch.nn.Linear(40, 8),
    )


@pytest.mark.parametrize("name", CASES)
def test_forward_is_linear_with_the_reference_weight(name):
    scheme, options, quantize, reference = CASES[name]
    linear = mlp()[0]
    module = WeightOnlyLinear.from_linear(linear, name, **options)
    assert module.scheme == scheme and (module.in_features, module.out_features) == (72, 48)
    x = torch.randn(3, 5, 72, generator=torch.Generator().manual_seed(1))
    expected = F.linear(x.double(), reference(quantize(linear.weight.detach(), **options)), linear.bias.double())
    assert torch.allclose(module(x).double(), expected, rtol=1e-5, atol=1e-5)
    assert compute_sqnr(linear(x), module(x)) > 15


def test_quantize_linear_swaps_every_nested_linear_in_place():
    model = mlp()
    x = torch.randn(4, 72, generator=torch.Generator().manual_seed(2))
    expected = model(x)
    assert quantize_linear_(model, "int8") is model
    assert [type(m).__name__ for m in (model[0], model[2][0], model[3])] == ["WeightOnlyLinear"] * 3
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert compute_sqnr(expected, model(x)) > 30


def test_filter_fn_picks_layers_and_schemes_mix():
    model = mlp()
    quantize_linear_(model, "nf4", filter_fn=lambda name, m: name == "2.0", block_size=32)
    quantize_linear_(model, "int4", group_size=32)
    assert (model[0].scheme, model[2][0].scheme, model[3].scheme) == (INT4_WEIGHT_ONLY, NF4, INT4_WEIGHT_ONLY)
    assert model[2][0].statics == {"block_size": 32, "in_features": 48}


def test_a_bare_linear_is_returned_replaced():
    linear = torch.nn.Linear(64, 16)
    module = quantize_linear_(linear, "int4_weight_only", group_size=64)
    assert isinstance(module, WeightOnlyLinear) and isinstance(linear, torch.nn.Linear)
    assert "scheme=int4_weight_only, group_size=64" in repr(module)


def test_multihead_attention_out_proj_is_left_alone():
    attention = torch.nn.MultiheadAttention(32, 4)
    quantize_linear_(attention, "int8")
    assert type(attention.out_proj) is torch.nn.modules.linear.NonDynamicallyQuantizableLinear


def test_buffers_state_dict_and_dtype_moves():
    module = WeightOnlyLinear.from_linear(torch.nn.Linear(40, 8), "nf4", block_size=32, double_quant=True)
    assert sorted(module.state_dict()) == ["absmax", "absmax_offset", "absmax_scale", "bias", "qweight"]
    x = torch.randn(2, 40)
    before = module(x)
    module.to(torch.bfloat16)  # the packed tensors keep their dtypes; the bias follows
    assert (module.absmax_scale.dtype, module.levels.dtype, module.bias.dtype) == (torch.float32,) * 2 + (torch.bfloat16,)
    after = module(x.bfloat16())
    assert after.dtype == torch.bfloat16 and compute_sqnr(before, after) > 35


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_input_with_float32_bias(dtype):
    module = WeightOnlyLinear.from_linear(torch.nn.Linear(64, 16), "int4", group_size=64)
    x = torch.randn(3, 64)
    out = module(x.to(dtype))
    assert out.dtype == dtype and compute_sqnr(module(x), out) > 35


def test_errors_name_the_argument():
    linear = torch.nn.Linear(64, 16)
    with pytest.raises(ValueError, match="scheme 'int3' is not one of int8_weight_only, int4_weight_only, nf4, int8, int4"):
        quantize_linear_(linear, "int3")
    with pytest.raises(TypeError, match=r"scheme 'nf4': options \['group_size'\] do not fit; it takes \['block_size', 'double_quant'\]"):
        quantize_linear_(linear, "nf4", group_size=64)
    with pytest.raises(TypeError, match="from_linear: linear must be a torch.nn.Linear; got Conv1d"):
        WeightOnlyLinear.from_linear(torch.nn.Conv1d(2, 2, 1), "int8")
    with pytest.raises(TypeError, match="quantize_linear_: model must be a torch.nn.Module; got dict"):
        quantize_linear_({}, "int8")
    with pytest.raises(TypeError, match=r"WeightOnlyLinear\(nf4\): quantized must be a NF4Weight; got Int8Weight"):
        WeightOnlyLinear("nf4", quantize_int8(linear.weight.detach()), None)
    module = WeightOnlyLinear.from_linear(linear, "int8")
    with pytest.raises(ValueError, match=r"WeightOnlyLinear\(int8_weight_only\): input must end in in_features=64; got shape \(2, 63\)"):
        module(torch.randn(2, 63))
    with pytest.raises(TypeError, match=r"WeightOnlyLinear\(int8_weight_only\): input: dtype torch.float64 is not one of"):
        module(torch.randn(2, 64, dtype=torch.float64))


def test_compiled_model_has_one_region_per_linear_feeding_its_matmul():
    model = mlp()
    quantize_linear_(model, "int8", filter_fn=lambda name, m: name == "0")
    quantize_linear_(model, "int4", filter_fn=lambda name, m: name == "2.0", group_size=32)
    quantize_linear_(model, "nf4", block_size=32)
    x = torch.randn(2, 3, 72, generator=torch.Generator().manual_seed(3))
    graph, _ = traced_forward(model, x)
    regions = region_nodes(graph)
    assert [node.kwargs["scheme"] for node in regions] == [INT8_WEIGHT_ONLY, INT4_WEIGHT_ONLY, NF4]
    for node, k in zip(regions, (72, 48, 40)):
        assert node.meta["val"].shape[1] == k and node.meta["val"].dtype == torch.float32
        (user,) = node.users  # the weight's transpose, read by the matmul
        (matmul,) = user.users
        assert (user.target, matmul.target) in {
            (torch.ops.aten.t.default, torch.ops.aten.addmm.default),
            (torch.ops.aten.t.default, torch.ops.aten.mm.default),
        }


def test_inductor_matches_eager_for_a_model_of_all_three_schemes():
    model = mlp()
    quantize_linear_(model, "int8", filter_fn=lambda name, m: name == "0")
    quantize_linear_(model, "int4", filter_fn=lambda name, m: name == "2.0", group_size=32)
    quantize_linear_(model, "nf4", block_size=32, double_quant=True)
    x = torch.randn(5, 72, generator=torch.Generator().manual_seed(4))
    torch._dynamo.reset()
    with torch.no_grad():
        expected = model(x)
        actual = torch.compile(copy.deepcopy(model), backend="inductor", fullgraph=True)(x)
    # Inductor's matmul and GELU may round differently from eager's; the dequantized weights
    # are bit-identical (tests/impl/test_schemes_*.py), so the outputs agree to float32 noise.
    assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_dynamic_batch_compiles_once():
    model = quantize_linear_(mlp(), "int4", group_size=32)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counter, dynamic=True, fullgraph=True)
    with torch.no_grad():
        for batch in (3, 7, 12):
            x = torch.randn(batch, 72, generator=torch.Generator().manual_seed(batch))
            assert torch.allclose(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    assert counter.frame_count == 1
