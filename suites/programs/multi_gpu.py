"""Programs for suites/multi_gpu.yaml: one quantized weight used on two GPUs in one program.

The weight is built on the cell's device (the worker's GPU under xdist), moved to cuda:0
and to cuda:1, and the weight-only matmul (the scheme's region feeding ``mm``, which
``impl.install()``'s pass fuses into ``torch.ops.impl.woq_mm_<scheme>``) runs on each; both
results come back to the cell's device, so the golden and eager comparisons see whether
either GPU computed something else.
"""

from __future__ import annotations

import torch

from suites.programs.woq_fusion import mm_t

GPU_INDEXES = (0, 1)


def woq_mm_on_each_gpu(x: torch.Tensor, weight: tuple, scheme: str = "int8", block: int = 64) -> tuple:
    """(x @ W.T computed on cuda:0, the same on cuda:1), both on x's device. x (M, K); W (N, K)."""
    results = []
    for index in GPU_INDEXES:
        device = torch.device(x.device.type, index) if x.device.type == "cuda" else x.device
        moved = tuple(t.to(device) for t in weight)
        results.append(mm_t(x.to(device), moved, scheme, block).to(x.device))
    return tuple(results)
