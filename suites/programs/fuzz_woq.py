"""float64 references for the fuzz cases of suites/fuzz_woq.yaml: the layout formulas, no region.

The programs under test are suites/programs/woq.py's (an InvokeQuant dequantization region,
then a matmul); these compute the same y = x @ W.T with W decoded by the layout formula in
float64, as the oracle the fuzz examples are checked against.
"""

from __future__ import annotations

import torch


def _nibbles(qweight: torch.Tensor) -> torch.Tensor:
    q = qweight.to(torch.int64)
    return torch.stack((q % 16, q // 16), dim=-1).reshape(q.shape[0], -1)


def int8_reference(x: torch.Tensor, weight: tuple) -> torch.Tensor:
    qweight, scale = weight
    w = qweight.to(torch.float64) * scale.to(torch.float64)[:, None]
    return x.to(torch.float64) @ w.T


def int4_reference(x: torch.Tensor, weight: tuple, group_size: int = 64) -> torch.Tensor:
    qweight, scale, zero = weight
    u = _nibbles(qweight).to(torch.float64)
    expand = lambda t: t.to(torch.float64).repeat_interleave(group_size, dim=1)  # noqa: E731
    w = ((u - expand(zero)) * expand(scale))[:, : x.shape[-1]]
    return x.to(torch.float64) @ w.T
