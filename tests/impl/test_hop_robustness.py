"""Our op where PyTorch's fails: views, several outputs, aliasing, integer unpacking, tables,
empty and strided inputs, dynamic shapes, backward; plus the op's contract itself."""

from __future__ import annotations

import dataclasses
import itertools
import unittest.mock

import pytest
import torch

import impl
from impl import InvokeQuant, invoke_quant, invoke_quant_packed
from impl.hop import QUANT_OPTIONS_META_KEY

BACKENDS = ["aot_eager", "inductor"]
DTYPES = [torch.float32, torch.bfloat16]
# cuda joins the matrix where it exists (the GPU run); no skip noise where it does not.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NF4_LEVELS = [-1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0,
              0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield


def _int8_and_scale(dtype, shape=(8, 16)):
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(-127, 128, shape, dtype=torch.int8, generator=gen)
    return q, torch.rand(shape[0], 1, generator=gen).to(dtype)


def _packed_nibbles(dtype):
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (8, 8), dtype=torch.uint8, generator=gen), torch.rand(8, 1, generator=gen).to(dtype)


def dequant_reshape(q, s):
    return (q.to(s.dtype) * s).reshape(-1)


def dequant_transpose(q, s):
    return (q.to(s.dtype) * s).t()


def dequant_slice(q, s):
    return (q.to(s.dtype) * s)[:, 1:7]


def dequant_two_outputs(q, s):
    return q.to(s.dtype) * s, s * 2


def dequant_and_input(q, s):
    return q.to(s.dtype) * s, s


def dequant_and_input_view(q, s):
    return q.to(s.dtype) * s, s.t()


def dequant_and_own_view(q, s):
    w = q.to(s.dtype) * s
    return w, w.t()


def unpack_int4_stack(packed, s):
    low = (packed & 0xF).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1).to(s.dtype) * s


def unpack_int4_cat(packed, s):
    low = (packed & 0xF).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.cat([low, high], dim=1).to(s.dtype) * s


def nf4_lookup(packed, absmax, table):
    codes = torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(packed.shape[0], -1)
    return table[codes.long()] * absmax


def nf4_table_built_inside(packed, absmax):
    # The region makes its own constant: Inductor inlines a small table into the kernel.
    table = torch.tensor(NF4_LEVELS, device=packed.device, dtype=absmax.dtype)
    return nf4_lookup(packed, absmax, table)


def large_table_built_inside(packed, absmax):
    # Too large to inline: the constant becomes a buffer of the compiled graph.
    # (float32 then cast: a bf16 linspace rounds differently in eager and in Inductor)
    table = torch.linspace(-1.0, 1.0, 4096, device=packed.device).to(absmax.dtype)
    codes = packed.to(torch.int64) * 16 + 7
    return table[codes] * absmax


ROBUSTNESS_CASES = {
    "nf4_table_built_inside": (nf4_table_built_inside, _packed_nibbles),
    "large_table_built_inside": (large_table_built_inside, _packed_nibbles),
    "view_reshape": (dequant_reshape, _int8_and_scale),
    "view_transpose": (dequant_transpose, _int8_and_scale),
    "view_slice": (dequant_slice, _int8_and_scale),
    "two_outputs": (dequant_two_outputs, _int8_and_scale),
    "output_is_input": (dequant_and_input, _int8_and_scale),
    "output_views_input": (dequant_and_input_view, _int8_and_scale),
    "outputs_alias_each_other": (dequant_and_own_view, _int8_and_scale),
    "int4_unpack_stack": (unpack_int4_stack, _packed_nibbles),
    "int4_unpack_cat": (unpack_int4_cat, _packed_nibbles),
    "nf4_table_lookup": (nf4_lookup, lambda dt: (*_packed_nibbles(dt), torch.tensor(NF4_LEVELS).to(dt))),
    "empty": (dequant_transpose, lambda dt: _int8_and_scale(dt, shape=(0, 16))),
    "non_contiguous": (
        dequant_transpose,
        lambda dt: (_int8_and_scale(dt, shape=(16, 8))[0].t(), torch.rand(8, 2).to(dt)[:, :1]),
    ),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(ROBUSTNESS_CASES))
def test_region_compiles_as_one_graph_and_matches_eager(case, dtype, backend, device):
    region, make_inputs = ROBUSTNESS_CASES[case]
    inputs = [t.to(device) for t in make_inputs(dtype)]

    def program(*args):
        return InvokeQuant()(region, *args, scheme="int8")

    compiled = torch.compile(program, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(*inputs), region(*inputs))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["view_transpose", "int4_unpack_stack", "two_outputs"])
def test_dynamic_shapes_compile_once_for_two_sizes(case, backend):
    region, _ = ROBUSTNESS_CASES[case]
    import torch._dynamo.testing as dynamo_testing

    frames = dynamo_testing.CompileCounterWithBackend(backend)
    compiled = torch.compile(lambda *a: InvokeQuant()(region, *a, scheme="s"), backend=frames, dynamic=True, fullgraph=True)
    for rows in (8, 12):
        q = torch.randint(0, 127, (rows, 16), dtype=torch.int8 if "int4" not in case else torch.uint8)
        s = torch.rand(rows, 1)
        torch.testing.assert_close(compiled(q, s), region(q, s))
    assert frames.frame_count == 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_reaches_op_inputs_and_activations(backend, dtype, device):
    q, s = (t.to(device) for t in _int8_and_scale(dtype))
    s.requires_grad_(True)
    x = torch.randn(4, 16, dtype=dtype, device=device, requires_grad=True)

    def program(x, q, s):
        return (x @ InvokeQuant()(dequant_transpose, q, s, scheme="int8")).square().sum()

    torch.compile(program, backend=backend, fullgraph=True)(x, q, s).backward()
    compiled_grads = (x.grad.clone(), s.grad.clone())
    x.grad = s.grad = None
    program(x, q, s).backward()
    torch.testing.assert_close(compiled_grads, (x.grad, s.grad))


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_through_several_outputs(backend):
    a = torch.randn(5, requires_grad=True)
    b = torch.randn(5, requires_grad=True)

    def region(a, b):
        return a * b + b, (a - b).sin()

    def program(a, b):
        first, second = InvokeQuant()(region, a, b, scheme="x")
        return (first * 3 + second).sum()

    torch.compile(program, backend=backend, fullgraph=True)(a, b).backward()
    compiled_grads = (a.grad.clone(), b.grad.clone())
    a.grad = b.grad = None
    program(a, b).backward()
    torch.testing.assert_close(compiled_grads, (a.grad, b.grad))


# --- the op's contract -----------------------------------------------------------------


def test_outside_compilation_the_function_is_called_directly():
    calls = []

    def region(x, *, offset):
        calls.append(x)
        return x + offset

    x = torch.ones(3)
    out = InvokeQuant()(region, x, scheme="nf4", offset=2.0)
    torch.testing.assert_close(out, torch.full((3,), 3.0))
    assert len(calls) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_keyword_arguments_reach_the_region_under_compilation(backend):
    def region(q, s, *, group_size):
        return (q.reshape(q.shape[0], -1, group_size).float() * s[..., None]).reshape(q.shape[0], -1)

    def program(x, q, s):
        return x @ InvokeQuant()(region, q, s, scheme="int4", group_size=4).t()

    x, q, s = torch.randn(3, 8), torch.randint(-8, 8, (5, 8), dtype=torch.int8), torch.rand(5, 2)
    compiled = torch.compile(program, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(x, q, s), program(x, q, s))


def test_quant_options_must_be_invoke_quant():
    with pytest.raises(TypeError, match="quant_options must be an impl.InvokeQuant"):
        InvokeQuant()(torch.neg, torch.ones(2), quant_options=True)


def test_front_end_is_a_frozen_dataclass():
    options = InvokeQuant(codegen_low_precision=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.codegen_low_precision = True  # type: ignore[misc]
    assert InvokeQuant() == InvokeQuant(codegen_low_precision=True)


def test_our_ops_live_beside_pytorchs_own():
    from torch._higher_order_ops import invoke_quant as torch_invoke_quant
    from torch._higher_order_ops import invoke_quant_packed as torch_invoke_quant_packed

    assert torch.ops.higher_order.impl_invoke_quant is invoke_quant
    assert torch.ops.higher_order.impl_invoke_quant_packed is invoke_quant_packed
    assert {invoke_quant.name(), invoke_quant_packed.name()}.isdisjoint(
        {torch_invoke_quant.name(), torch_invoke_quant_packed.name()}
    )


def _post_grad_nodes(program, *inputs):
    """Run ``program`` under Inductor and return the unpacked op nodes seen by a post-grad pass."""
    seen = []

    def record(graph):
        seen.extend(graph.find_nodes(op="call_function", target=invoke_quant))

    with unittest.mock.patch("torch._inductor.config.post_grad_custom_post_pass", record):
        torch.compile(program, fullgraph=True)(*inputs)
    return seen


def test_options_and_scheme_reach_post_grad_passes():
    x, y = torch.randn(4), torch.randn(4)
    nodes = _post_grad_nodes(
        lambda x, y: InvokeQuant(codegen_low_precision=False)(torch.mul, x, y, scheme="int4") + 1, x, y
    )
    (node,) = nodes
    assert node.kwargs == {"scheme": "int4"}
    assert node.meta[QUANT_OPTIONS_META_KEY] == InvokeQuant(codegen_low_precision=False)
    subgraph = getattr(node.graph.owning_module, node.args[0].target)
    assert subgraph.meta[QUANT_OPTIONS_META_KEY] == {"codegen_low_precision": False}


def test_single_output_is_unwrapped_and_several_stay_a_tuple():
    x, y = torch.randn(4), torch.randn(4)
    (single,) = _post_grad_nodes(lambda x, y: InvokeQuant()(lambda a, b: (a * b,), x, y)[0] + 1, x, y)
    assert isinstance(single.meta["val"], torch.Tensor)
    torch._dynamo.reset()
    (double,) = _post_grad_nodes(lambda x, y: sum(InvokeQuant()(lambda a, b: (a * b, a + b), x, y)), x, y)
    assert isinstance(double.meta["val"], tuple) and len(double.meta["val"]) == 2


@pytest.mark.parametrize("low_precision", [True, False])
def test_lowering_marks_outputs_for_prologue_fusion(low_precision):
    from torch._inductor.graph import GraphLowering

    marked = {}
    original_run = GraphLowering.run

    def run_and_record(self, *args):
        result = original_run(self, *args)
        marked["invoke_quant_ops"] = set(self.invoke_quant_ops)
        marked["low_precision"] = set(self.low_precision_codegen_ops)
        return result

    q, s = _int8_and_scale(torch.float32)
    program = lambda q, s: InvokeQuant(codegen_low_precision=low_precision)(dequant_transpose, q, s) @ s.t().expand(8, 8)
    # An FX graph cache hit would skip lowering altogether.
    with unittest.mock.patch.object(GraphLowering, "run", run_and_record), torch._inductor.config.patch(
        fx_graph_cache=False
    ):
        torch.compile(program, fullgraph=True)(q, s)
    assert len(marked["invoke_quant_ops"]) == 1
    assert marked["low_precision"] == (marked["invoke_quant_ops"] if low_precision else set())


def test_options_key_the_fx_graph_cache(tmp_path, monkeypatch):
    """Two programs that differ only in options must not share a cached compilation."""
    from torch._dynamo.utils import counters
    from torch._inductor import config

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    x, y = torch.randn(4), torch.randn(4)
    counters.clear()
    with config.patch(fx_graph_cache=True, force_disable_caches=False):
        for low_precision in (True, False, True):
            torch._dynamo.reset()
            torch.compile(lambda a, b: InvokeQuant(codegen_low_precision=low_precision)(torch.mul, a, b))(x, y)
    assert counters["inductor"]["fxgraph_cache_miss"] == 2
    assert counters["inductor"]["fxgraph_cache_hit"] == 1  # the repeat of the first program


# --- PyTorch's own op, side by side ---------------------------------------------------------

TORCH_CRASHES = {
    "view_output": (lambda q, s: ((q.to(s.dtype) * s).t(),), "ReinterpretView"),
    "two_outputs": (lambda q, s: (q.to(s.dtype) * s, s * 2), "object has no attribute 'realize'"),
}


@pytest.mark.parametrize("case", sorted(TORCH_CRASHES))
def test_pytorchs_op_crashes_under_inductor(case):
    from torch._higher_order_ops import InvokeQuant as TorchInvokeQuant

    region, message = TORCH_CRASHES[case]
    q, s = _int8_and_scale(torch.float32)
    with pytest.raises(Exception, match=message):
        torch.compile(lambda q, s: TorchInvokeQuant()(region, q, s, scheme="int8"), fullgraph=True)(q, s)


@pytest.mark.parametrize("case", sorted(TORCH_CRASHES))
def test_our_op_passes_where_pytorchs_crashes(case):
    region, _ = TORCH_CRASHES[case]
    q, s = _int8_and_scale(torch.float32)
    out = torch.compile(lambda q, s: InvokeQuant()(region, q, s, scheme="int8"), fullgraph=True)(q, s)
    torch.testing.assert_close(out, region(q, s))
