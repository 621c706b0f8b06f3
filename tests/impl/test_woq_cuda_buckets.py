"""impl/lowerings/woq_mm_cuda.py's M buckets: guards added while lowering hold the compiled graph.

``rows_bucket`` places a symbolic M in its bucket by comparisons on the SymInt, during
Inductor's lowering, after dynamo has traced the frame. The CUDA lowering launches a config
(and split-K counters) sized for the bucket, so a call outside the bucket must not reuse the
graph: the comparisons must become guards of the compiled frame. Here the CPU lowering asks
rows_bucket first (the guards do not depend on the device), under automatic dynamic shapes:
batch 1 (static), 8 (recompiled with a symbolic batch: bucket (4, 8]), 6 (same bucket: no
recompile), 16 (bucket (8, 16]: recompiled).
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._inductor.virtualized import V

pytest.importorskip("triton", reason="the CUDA lowering imports the kernels")

import impl  # noqa: E402
from impl.lowerings import woq_mm_cpu, woq_mm_cuda  # noqa: E402
from impl.schemes import quantize_int8  # noqa: E402

K, N = 64, 32


def test_bucket_guards_from_the_lowering_make_other_buckets_recompile(monkeypatch):
    bounds = []

    class Bucketed(woq_mm_cpu._Lowering):
        def __init__(self, scheme, args):
            bounds.append(woq_mm_cuda.rows_bucket(V.graph.current_node.args[0].meta["val"])[1])
            super().__init__(scheme, args)

    monkeypatch.setattr(woq_mm_cpu, "_Lowering", Bucketed)
    torch.manual_seed(0)
    q = quantize_int8(torch.randn(N, K) * 0.05)

    def linear(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.impl.woq_mm_int8(x, q.qweight, q.scale, None)

    counter = CompileCounterWithBackend("inductor")
    torch._dynamo.reset()
    compiled = torch.compile(linear, backend=counter)
    frames = []
    with impl.installed(), torch._inductor.config.patch(force_disable_caches=True):
        for batch in (1, 8, 6, 16):
            x = torch.randn(batch, 1, K)
            before = counter.frame_count
            out = compiled(x)
            frames.append(counter.frame_count - before)
            torch.testing.assert_close(out, linear(x), rtol=1e-4, atol=1e-4)
    torch._dynamo.reset()
    assert frames == [1, 1, 0, 1], (frames, bounds)
    assert bounds == [1, 8, 16], bounds


def test_a_static_batch_and_every_symbolic_bucket_fit_dynamos_recompile_limit():
    """A server's batch sizes may visit every bucket: with the static first compile they must
    not pass dynamo's recompile limit, past which the frame runs eagerly (unfused)."""
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    shape_env = ShapeEnv()
    bounds = set()
    for hint in (2, 3, 5, 9, 17, 65, 257, 1025, 5000):
        symbol = shape_env.create_symbol(hint, torch._dynamo.source.ConstantSource(f"m{hint}"))
        bounds.add(woq_mm_cuda.rows_bucket(_Rows(shape_env.create_symintnode(symbol, hint=hint)))[1])
    assert bounds == {2, 4, 8, 16, 64, 256, None}, bounds  # past 256 rows: one bucket, the largest config
    assert 1 + len(bounds) <= torch._dynamo.config.recompile_limit, bounds


class _Rows:
    """Stands in for x (M, K): rows_bucket reads only its shape."""

    def __init__(self, m) -> None:
        self.shape = (m, K)
