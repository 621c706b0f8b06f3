"""impl/lowerings/woq_mm_cuda.py's max-autotune contest on the CPU, on a real model's inputs.

In a real model x reaches the fused op as a view of a computed buffer (the norm's output
reshaped to 3-D), not as a graph input: the H100 run of a Llama model under max-autotune
failed there (``LoweringException: NotImplementedError: View``) while the suites, whose x
are graph inputs, passed. The contest's preparation and Inductor's side of it run on any
device: here the CPU lowering is routed through the contest, the timing says Inductor's
decomposition won (our kernel cannot run in CPU code), and the compiled result must match
eager. The GPU tests run the whole contest on a Llama-shaped model.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters
from torch._inductor import config as inductor_config

pytest.importorskip("triton", reason="the CUDA lowering imports the kernels")

import impl  # noqa: E402
from impl.lowerings import woq_mm_cpu, woq_mm_cuda  # noqa: E402
from impl.schemes import nf4_levels, quantize_int4, quantize_int8, quantize_nf4  # noqa: E402

K, N = 256, 64


def _op_call(scheme: str):
    torch.manual_seed(0)
    w = torch.randn(N, K) * 0.05
    if scheme == "int8":
        q = quantize_int8(w)
        return lambda h: torch.ops.impl.woq_mm_int8(h, q.qweight, q.scale, None)
    if scheme == "int4":
        q = quantize_int4(w, 64)
        return lambda h: torch.ops.impl.woq_mm_int4(h, *q.tensors(), None, 64)
    q = quantize_nf4(w, 64, double_quant=True)
    levels = nf4_levels()
    return lambda h: torch.ops.impl.woq_mm_nf4(h, q.qweight, q.absmax, levels, q.absmax_scale, q.absmax_offset,
                                               None, 64)


class _ThroughTheContest:
    """Stands in for the CPU lowering: the CUDA lowering's path instead."""

    def __init__(self, scheme: str, args: tuple) -> None:
        self.scheme, self.args = scheme, args

    def lower(self):
        return woq_mm_cuda.lower_through_triton(self.scheme, self.args)


@pytest.mark.parametrize("scheme", ["int8", "int4", "nf4"])
def test_contest_takes_x_that_is_a_view_of_a_computed_buffer(scheme, monkeypatch):
    monkeypatch.setattr(woq_mm_cpu, "_Lowering", _ThroughTheContest)
    monkeypatch.setattr(woq_mm_cuda, "_time_fairly", lambda ours, theirs: (2.0, 1.0))  # Inductor's side won
    linear = _op_call(scheme)

    def model(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # RMSNorm, then the linear
        x32 = x.float()
        h = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype) * weight
        return linear(h)

    torch.manual_seed(1)
    x, weight = torch.randn(2, 1, K, dtype=torch.bfloat16), torch.randn(K, dtype=torch.bfloat16)
    torch._dynamo.reset()
    counters.clear()
    with impl.installed(), inductor_config.patch(max_autotune=True, force_disable_caches=True):
        out = torch.compile(model)(x, weight)
    assert counters["inductor"][f"woq_mm_{scheme}_autotune_inductor"] == 1, dict(counters["inductor"])
    ref = model(x, weight).float()
    assert out.shape == (2, 1, N)
    assert ((out.float() - ref).norm() / ref.norm()).item() < 1e-2
