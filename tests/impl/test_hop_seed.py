"""PyTorch's invoke_quant tests (seed 000), rewritten against our op.

The same cases run from YAML in suites/invoke_quant.yaml; this plain-pytest copy is what
tools/compare_harness_cost.py times the harness against.
"""

from __future__ import annotations

import contextlib
import io
import logging
import unittest.mock

import pytest
import torch
from torch._inductor.pattern_matcher import (
    Arg,
    CallFunction,
    Ignored,
    Match,
    PatternMatcherPass,
    register_graph_pattern,
)
from torch.testing import FileCheck

from impl import InvokeQuant

BACKENDS = ["eager", "aot_eager", "inductor"]
invoke_quant_tracer = InvokeQuant()


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def gn_tuple(x, y):
    return (torch.mul(x, y) + y,)


def gn(x, y):
    return torch.mul(x, y) + y


@pytest.mark.parametrize("backend", BACKENDS)
def test_simple(backend):
    def fn(x, y):
        return invoke_quant_tracer(
            gn_tuple, x, y, scheme="nf4", quant_options=invoke_quant_tracer
        )[0]

    x, y = torch.randn(8), torch.randn(8)
    torch.testing.assert_close(torch.compile(fn, backend=backend, fullgraph=True)(x, y), gn_tuple(x, y)[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_construct_inline(backend):
    def fn(x, y):
        return InvokeQuant(codegen_low_precision=False)(gn_tuple, x, y, scheme="nf4")[0]

    x, y = torch.randn(8), torch.randn(8)
    torch.testing.assert_close(torch.compile(fn, backend=backend, fullgraph=True)(x, y), gn_tuple(x, y)[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_inline(backend):
    def fn(x, y):
        return InvokeQuant()(gn_tuple, x, y, scheme="nf4")[0]

    x, y = torch.randn(8), torch.randn(8)
    torch.testing.assert_close(torch.compile(fn, backend=backend, fullgraph=True)(x, y), gn_tuple(x, y)[0])


@contextlib.contextmanager
def captured_post_grad_graphs():
    """Yield a StringIO that receives Inductor's post-grad graph log."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("torch._inductor")
    torch._logging.set_logs(post_grad_graphs=True)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        torch._logging.set_logs()


@pytest.mark.parametrize("backend", BACKENDS)
def test_multiple(backend):
    def fn(x, y, z):
        o1 = invoke_quant_tracer(gn, x, y, scheme="nf4")
        o2 = invoke_quant_tracer(gn, y, z, scheme="nf4")
        return o1 + o2

    x, y, z = torch.randn(8), torch.randn(8), torch.randn(8)
    # A cache hit skips post-grad passes and their log; compile for real.
    with torch._inductor.config.patch(force_disable_caches=True), captured_post_grad_graphs() as logs:
        res = torch.compile(fn, backend=backend, fullgraph=True)(x, y, z)
    torch.testing.assert_close(res, fn(x, y, z))
    if backend == "inductor":
        check = FileCheck().check("AFTER POST GRAD").check("subgraph0").check("subgraph1")
        for _ in range(2):
            check.check("torch.ops.higher_order.impl_invoke_quant(").check_same("nf4")
        check.run(logs.getvalue())


def test_pattern_matching():
    counter = 0
    test_pass = PatternMatcherPass()

    def my_pass(g):
        return test_pass.apply(g)

    @register_graph_pattern(
        CallFunction(
            torch.ops.aten.mm,
            CallFunction(
                torch.ops.higher_order.impl_invoke_quant, Ignored(), Ignored(), Ignored(), scheme="nf4"
            ),
            Arg(),
        ),
        pass_dict=test_pass,
    )
    def quant_matching(match: Match, *args, **kwargs):
        nonlocal counter
        counter += 1

    def fn(x, y, z):
        return invoke_quant_tracer(gn, x, y, scheme="nf4") @ z

    def fn_no_match(x, y, z):
        return invoke_quant_tracer(gn, x, y) @ z

    x, y, z = (torch.randn(64, 64) for _ in range(3))
    with unittest.mock.patch("torch._inductor.config.post_grad_custom_pre_pass", my_pass):
        torch.compile(fn)(x, y, z)
        assert counter == 1
        torch.compile(fn_no_match)(x, y, z)
        assert counter == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="prologue fusion into a Triton mm template needs a CUDA GPU")
def test_prologue():
    from torch._inductor import config
    from torch._inductor.utils import is_big_gpu, run_and_get_code

    if not is_big_gpu():
        pytest.skip("max-autotune needs a big GPU")

    def gn_prologue(x, y):
        return torch.mul(x, y) + (y - 1)

    def fn(x, y, z):
        return invoke_quant_tracer(gn_prologue, x, y, scheme="nf4", quant_options=invoke_quant_tracer) @ z

    x = torch.randn(64, 64, device="cuda", dtype=torch.float16)
    y = torch.ones(64, 64, device="cuda", dtype=torch.float16)  # a no-op multiply: equal numerics
    z = torch.randn(64, 64, device="cuda", dtype=torch.float16)
    ref = gn_prologue(x, y) @ z
    with torch.no_grad(), config.patch(prologue_fusion=True, max_autotune_gemm_backends="TRITON"):
        res, code = run_and_get_code(torch.compile(fn, mode="max-autotune-no-cudagraphs"), x, y, z)
    FileCheck().check("k_idx in range").check_not("tl.float32").check("tl.dot").run(code[0])
    torch.testing.assert_close(res, ref)
