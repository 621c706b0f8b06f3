"""impl/lowerings/woq_mm_cuda.py on the CPU: the traced kernel launch keeps the launch.

The CUDA lowering traces our kernel's launch and lowers the trace's nodes in place of the
fused op. The launch is a ``triton_kernel_wrapper_mutation`` node that writes the output
buffer and returns nothing, so the usual trace clean-up (dead-code elimination) drops it:
the H200 run's woq_fusion cells came back with the output unwritten (NaN, garbage) and no
kernel in the output code. Here the same trace is made on fake CUDA tensors (no GPU needed:
the launch is recorded, not run), in a subprocess without ``TRITON_INTERPRET`` so the
kernels are ``JITFunction``s as on a GPU. The GPU run checks the lowering end to end.
"""

from __future__ import annotations


import pytest

pytest.importorskip("triton", reason="the kernels need triton")

from tests.impl.compiled_kernels_support import run_with_compiled_kernels  # noqa: E402


_TRACE = r"""
import json, sys
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from impl.kernels import common, woq_mm_int4, woq_mm_int8, woq_mm_nf4
from impl.lowerings.woq_mm_cpu import trace_to_aten
from impl.lowerings.woq_mm_cuda import kernel_call

for module in (common, woq_mm_int8, woq_mm_int4, woq_mm_nf4):  # no GPU to ask for its SM count
    module.sm_count = lambda device: 132
    if hasattr(module, "tuned_config"):
        module.tuned_config = lambda *args, **kwargs: None
M, N, K = 3, 32, 128
eliminate_dead_code = sys.argv[1] == "1"
result = {}
with FakeTensorMode():
    x = torch.empty(M, K, dtype=torch.float16, device="cuda")
    operands = {
        "int8_weight_only": ([None] * 4, [x, torch.empty(N, K, dtype=torch.int8, device="cuda"),
                                          torch.empty(N, dtype=torch.float32, device="cuda")]),
        "int4_weight_only": ([None] * 5 + [64], [x, torch.empty(N, K // 2, dtype=torch.uint8, device="cuda"),
                                                 torch.empty(N, K // 64, device="cuda"), torch.empty(N, K // 64, device="cuda")]),
        "nf4": ([None] * 7 + [64], [x, torch.empty(N, K // 2, dtype=torch.uint8, device="cuda"),
                                    torch.empty(N, K // 64, device="cuda"), torch.empty(16, device="cuda")]),
    }
    for scheme, (fx_args, tensors) in operands.items():
        positions, launch = kernel_call(scheme, fx_args)
        padded = len(positions) - 1 - len(tensors)  # optional operands and bias: None
        gm = trace_to_aten(lambda *t: launch(*t, *([None] * (padded + 1))), tensors,
                           eliminate_dead_code=eliminate_dead_code)
        result[scheme] = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
json.dump(result, sys.stdout)
"""


def _trace(eliminate_dead_code: bool) -> dict:
    return run_with_compiled_kernels(_TRACE, "1" if eliminate_dead_code else "0")


def test_the_lowering_trace_keeps_every_schemes_launch():
    for scheme, targets in _trace(eliminate_dead_code=False).items():
        assert targets.count("triton_kernel_wrapper_mutation") == 1, (scheme, targets)


def test_dead_code_elimination_would_drop_the_launch():
    """What the lowering did before: the trace keeps only the output's allocation."""
    for scheme, targets in _trace(eliminate_dead_code=True).items():
        assert "triton_kernel_wrapper_mutation" not in targets, (scheme, targets)


def test_contest_weights_are_copied_past_l2(monkeypatch):
    """copies_past_l2: copies of a weight that together are twice the GPU's L2."""
    import torch

    from impl.lowerings import woq_mm_cuda

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: type("P", (), {"L2_cache_size": 60 << 20}))
    cuda = torch.device("cuda")
    assert woq_mm_cuda.copies_past_l2(32 << 20, cuda) == 4      # 8192 x 8192 int4
    assert woq_mm_cuda.copies_past_l2(235 << 20, cuda) == 1     # 28672 x 8192 int8: past L2 already
    assert woq_mm_cuda.copies_past_l2(1 << 20, cuda) == 8       # capped
    assert woq_mm_cuda.copies_past_l2(1 << 20, torch.device("cpu")) == 1
