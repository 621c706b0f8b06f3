"""impl/kernels/ops.py: the kernels as torch.library.triton_ops.

CPU (interpreter): each op matches its float64 reference and passes torch.library.opcheck.
CUDA: under torch.compile the kernel appears in Inductor's output code."""

from __future__ import annotations

import re

import pytest
import torch

from tests.impl.test_kernels_common import (  # also switches to the interpreter without a GPU
    DEVICE,
    INTERPRETER_WARNINGS,
    ON_GPU,
    assert_matches_reference,
    gpu_only,
    random_activation,
)
from tests.impl.test_kernels_int4 import random_int4_weight
from tests.impl.test_kernels_int8 import random_int8_weight
from tests.impl.test_kernels_nf4 import random_nf4_weight

import impl.kernels.ops  # noqa: E402,F401  (registers torch.ops.impl.woq_mm_*_triton)
from impl.kernels import woq_mm_int4, woq_mm_int8, woq_mm_nf4  # noqa: E402
from impl.kernels.common import KernelConfig  # noqa: E402

pytestmark = INTERPRETER_WARNINGS

from impl import compat  # noqa: E402

needs_wrap_triton_of_interpreted_kernels = pytest.mark.skipif(
    not ON_GPU and not compat.wrap_triton_takes_interpreted_kernels(),
    reason="this torch's wrap_triton rejects kernels built by Triton's interpreter (torch 2.11); the GPU runs these",
)


def int8_case(M, N, K, dtype):
    x = random_activation(M, K, dtype, seed=1)
    qweight, scale = random_int8_weight(N, K, seed=2)
    return (torch.ops.impl.woq_mm_int8_triton, (x, qweight, scale),
            woq_mm_int8.woq_mm_int8_reference(x, qweight, scale),
            woq_mm_int8.dequantize_int8_reference(qweight, scale), "woq_mm_int8_kernel")


def int4_case(M, N, K, dtype):
    x = random_activation(M, K, dtype, seed=3)
    qweight, scale, zero = random_int4_weight(N, K, 64, seed=4)
    return (torch.ops.impl.woq_mm_int4_triton, (x, qweight, scale, zero, 64),
            woq_mm_int4.woq_mm_int4_reference(x, qweight, scale, zero, 64),
            woq_mm_int4.dequantize_int4_reference(qweight, scale, zero, 64, K), "woq_mm_int4_kernel")


def nf4_case(M, N, K, dtype):
    x = random_activation(M, K, dtype, seed=5)
    weight = random_nf4_weight(N, K, 64, seed=6)
    return (torch.ops.impl.woq_mm_nf4_triton, (x, weight["qweight"], weight["absmax"], 64),
            woq_mm_nf4.woq_mm_nf4_reference(x, **weight),
            woq_mm_nf4.dequantize_nf4_reference(K=K, **weight), "woq_mm_nf4_kernel")


def nf4_double_quant_case(M, N, K, dtype):
    """Double-quantized absmax handed to the op as codes (the kernel decodes them), with the
    levels operand the fused op passes (decoded into the kernel's tables on the device)."""
    from impl.schemes.nf4 import nf4_levels

    x = random_activation(M, K, dtype, seed=7)
    weight = random_nf4_weight(N, K, 64, seed=8, double_quant=True)
    levels = nf4_levels(x.device)
    return (torch.ops.impl.woq_mm_nf4_triton,
            (x, weight["qweight"], weight["absmax"], 64, levels, weight["absmax_scale"], weight["absmax_offset"]),
            woq_mm_nf4.woq_mm_nf4_reference(x, **weight),
            woq_mm_nf4.dequantize_nf4_reference(K=K, **weight), "woq_mm_nf4_kernel")


CASES = {"int8": int8_case, "int4": int4_case, "nf4": nf4_case, "nf4_double_quant": nf4_double_quant_case}


def scheme_of(case: str) -> str:
    """The kernel's scheme of a CASES key ("nf4_double_quant" -> "nf4")."""
    return case.split("_")[0]


@needs_wrap_triton_of_interpreted_kernels
@pytest.mark.parametrize("scheme", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_op_matches_float64_reference(scheme, dtype):
    op, args, reference, weight, _ = CASES[scheme](3, 33, 150, dtype)
    y = op(*args)
    assert_matches_reference(y, reference, args[0], weight, f"{scheme} triton_op")


@needs_wrap_triton_of_interpreted_kernels
@pytest.mark.parametrize("scheme", sorted(CASES))
def test_opcheck(scheme):
    op, args, *_ = CASES[scheme](2, 24, 64, torch.float16)
    # Schema everywhere; fake-tensor tracing only with compiled kernels (the interpreter
    # would run the kernel on the fake tensors' meta storage). No autograd: inference ops.
    checks = ("test_schema", "test_faketensor") if ON_GPU else ("test_schema",)
    torch.library.opcheck(op, args, test_utils=checks)


def test_ops_reject_bad_input_with_the_kernel_message():
    op, args, *_ = CASES["int8"](2, 24, 64, torch.float16)
    x, qweight, scale = args
    with pytest.raises(TypeError, match="scale must be torch.float32; got torch.float16"):
        op(x, qweight, scale.half())


@gpu_only
@pytest.mark.parametrize("scheme", sorted(CASES))
@pytest.mark.parametrize("M", [1, 16, 64])
def test_inductor_emits_the_kernel(scheme, M):
    from torch._inductor.utils import run_and_get_code

    op, args, reference, weight, kernel_name = CASES[scheme](M, 1000, 1024, torch.bfloat16)

    def linear(x, *rest):
        return op(x, *rest) + 1.0  # a consumer, so the op sits inside a compiled graph

    torch._dynamo.reset()
    y, code = run_and_get_code(torch.compile(linear, fullgraph=True), *args)
    # M = 1 may take the scheme's GEMV kernel (woq_mm_int4_gemv_kernel) where the tuned table says so
    emitted = re.compile(rf"def {kernel_name.removesuffix('_kernel')}_(gemv_)?kernel\(")
    assert any(emitted.search(source) for source in code), f"{kernel_name} not in Inductor's output code"
    assert_matches_reference(y - 1.0, reference, args[0], weight, f"{scheme} compiled")


DEQUANTIZE_FIRST = KernelConfig(16, 32, 128, dequantize_first=True)
CHOOSERS = {"int8": woq_mm_int8, "int4": woq_mm_int4, "nf4": woq_mm_nf4}


def prefill_route(monkeypatch, scheme: str) -> None:
    """Make the scheme's launches take the dequantize_first route whatever the shape."""
    monkeypatch.setattr(CHOOSERS[scheme_of(scheme)], "choose_config", lambda *args: DEQUANTIZE_FIRST)


@needs_wrap_triton_of_interpreted_kernels
@pytest.mark.parametrize("scheme", sorted(CASES))
def test_op_on_the_prefill_route_matches_float64_reference(scheme, monkeypatch):
    prefill_route(monkeypatch, scheme)
    op, args, reference, weight, _ = CASES[scheme](5, 40, 200, torch.bfloat16)
    assert_matches_reference(op(*args), reference, args[0], weight, f"{scheme} triton_op, dequantize_first")


@gpu_only
@pytest.mark.parametrize("scheme", sorted(CASES))
def test_inductor_emits_the_prefill_route(scheme, monkeypatch):
    """Compiled, the route is our dequantize kernel in the output code, then Inductor's mm."""
    from torch._inductor.utils import run_and_get_code

    prefill_route(monkeypatch, scheme)
    op, args, reference, weight, _ = CASES[scheme](300, 1000, 1024, torch.bfloat16)
    torch._dynamo.reset()
    y, code = run_and_get_code(torch.compile(lambda x, *rest: op(x, *rest) + 1.0, fullgraph=True), *args)
    source = "\n".join(code)
    assert f"def dequantize_{scheme_of(scheme)}_kernel(" in source, "our dequantize kernel not in Inductor's output code"
    assert re.search(r"extern_kernels\.mm\(|triton_tem_fused_mm|def triton_.*mm", source), "no dense GEMM after it"
    assert f"woq_mm_{scheme_of(scheme)}_kernel" not in source
    assert_matches_reference(y - 1.0, reference, args[0], weight, f"{scheme} compiled, dequantize_first")


def test_device_is_what_the_mode_expects():
    assert DEVICE.type == ("cuda" if ON_GPU else "cpu")


@pytest.mark.parametrize("short", ["int8", "int4", "nf4"])
def test_op_arguments_trace_in_one_graph(short):
    """A program calls ops.op_arguments under torch.compile (suites/programs/woq_kernels.py on
    CUDA): it must not break the graph (it did, at importlib.import_module: 50 cuda cells of
    woq_kernels.yaml with 4 graph breaks each)."""
    from impl.kernels import ops
    from impl.schemes.registry import by_short

    n_operands = len(by_short(short).operands)
    operands = (torch.randint(0, 255, (8, 32), dtype=torch.uint8), torch.rand(8, 1))[:n_operands]

    def arguments(*tensors):
        full = (*tensors, *[None] * (n_operands - len(tensors)))
        return ops.op_arguments(short, full, (32,) * len(by_short(short).ints))

    torch._dynamo.reset()
    eager = arguments(*operands)
    traced = torch.compile(arguments, backend="eager", fullgraph=True)(*operands)
    assert len(traced) == len(eager)
