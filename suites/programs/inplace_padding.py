"""Programs of suites/inplace_padding.yaml (PyTorch's inplace-padding tests, seed 004).

Inductor's inplace padding: when ``aten.constant_pad_nd`` pads the last dimension of a
buffer whose row stride already has room for the padding, the lowering writes the pad
value into that room instead of copying the buffer, and bumps
``counters["inductor"]["inplace_padding"]``. Each program here is one situation where it
must (or must not) happen; the YAML says which.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

aten = torch.ops.aten
PAD_VALUE = 12345.0  # far from the data, so a wrongly padded element shows in the comparison


def pad_then_sum(x: torch.Tensor) -> torch.Tensor:
    """x (M, N) -> pad 8 columns -> row sums (M,). The pad fuses into the reduction: no inplace padding."""
    padded = aten.constant_pad_nd(x, (0, 8, 0, 0), PAD_VALUE)
    return padded.sum(dim=-1)


def pad_then_mm(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x (M, N) padded to (M, N + 8), @ y (N + 8, M) -> (M, M)."""
    padded = aten.constant_pad_nd(x, (0, 8, 0, 0), PAD_VALUE)
    return padded @ y


def add_pad_self_mm(x: torch.Tensor) -> torch.Tensor:
    """(x + 1) (M, N) padded to (M, N + 1), @ itself (needs M == N + 1) -> (M, M).

    ``x + 1`` is an intermediate Inductor allocates: with an odd N its row stride is padded
    to N + 1, and the buffer is over-allocated by one element so that padding in place
    never writes past the end.
    """
    shifted = x + 1
    padded = aten.constant_pad_nd(shifted, (0, 1, 0, 0), PAD_VALUE)
    return padded @ padded


def pad_mm_then_mutate_input(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pad x (M, N) to (M, N + 8), then x += 5 in place, then padded @ y (N + 8, M).

    The result must use x *before* the mutation, even when the padding is done in x's
    own storage.
    """
    padded = aten.constant_pad_nd(x, (0, 8, 0, 0), PAD_VALUE)
    x.add_(5)
    return padded @ y


def pad_mutate_then_mm(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pad x (M, N) to (M, N + 8), add 1 to the padded tensor in place, @ y (N + 8, M)."""
    padded = aten.constant_pad_nd(x, (0, 8, 0, 0), PAD_VALUE)
    padded.add_(1)
    return padded @ y


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of F.linear(x (B*T, C), weight (V, C), bias (V,)) against target (B*T,).

    With V = 50257 (GPT-2's vocabulary), an odd size, the logits' row stride is padded.
    """
    return F.cross_entropy(F.linear(x, weight, bias), target)
