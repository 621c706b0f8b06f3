"""The golden's fixed sample: the elements of a big output a golden stores."""

from __future__ import annotations

from typing import Optional

import torch


_SAMPLE_MULTIPLIER = 2654435761  # a prime near 2**32 / golden ratio: spreads k * m mod n over [0, n)


def sample_indices(numel: int, count: int) -> torch.Tensor:
    """``count`` distinct-as-possible flat indices spread over ``[0, numel)``, the same on every
    torch version and machine (plain integer arithmetic, no RNG), sorted."""
    k = torch.arange(count, dtype=torch.int64)
    return torch.unique((k * _SAMPLE_MULTIPLIER) % numel)


def sample_for_golden(tensors: dict[str, torch.Tensor], count: Optional[int]) -> dict[str, torch.Tensor]:
    """Outputs with more than ``count`` elements replaced by a fixed 1-D sample of them.

    Big outputs (a 2048 x 2048 matmul is 16 MB) would bloat the repository; a few
    thousand fixed elements still catch a changed constant, while the full tensors are
    compared with eager in the same run.
    """
    if count is None:
        return tensors
    out = {}
    for name, tensor in tensors.items():
        if tensor.numel() > count:
            flat = tensor.detach().reshape(-1)
            out[name] = flat[sample_indices(flat.numel(), count).to(flat.device)]
        else:
            out[name] = tensor
    return out
