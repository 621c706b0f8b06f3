"""What the weight-only schemes share: input checks, K padding, nibble packing, SQNR.

Nibble order (int4 and nf4): byte j of a row holds k = 2j in its LOW nibble
(bits 0..3) and k = 2j + 1 in its HIGH nibble (bits 4..7).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

FLOAT_WEIGHT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
ACTIVATION_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Smallest scale a quantizer picks: an all-zero row or group still gets a positive scale
# (its codes then decode to exactly 0); any non-zero magnitude stays representable.
MIN_SCALE = float(torch.finfo(torch.float32).tiny)


def check_float_weight(weight: torch.Tensor, op: str) -> None:
    """A finite floating (N, K) weight, or one error naming what is wrong."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{op}: weight must be a torch.Tensor; got {type(weight).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"{op}: weight must be 2-D (N, K); got shape {tuple(weight.shape)}")
    if weight.dtype not in FLOAT_WEIGHT_DTYPES:
        allowed = ", ".join(str(d) for d in FLOAT_WEIGHT_DTYPES)
        raise TypeError(f"{op}: weight dtype {weight.dtype} is not one of {allowed}")
    if weight.numel() == 0:
        raise ValueError(f"{op}: weight must not be empty; got shape {tuple(weight.shape)}")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError(f"{op}: weight holds {int((~torch.isfinite(weight)).sum())} non-finite values")


def check_choice(value: object, allowed: tuple, name: str, op: str) -> None:
    if value not in allowed:
        raise ValueError(f"{op}: {name} {value!r} is not one of {', '.join(map(str, allowed))}")


def check_packed(tensor: torch.Tensor, name: str, shape: tuple, dtype: torch.dtype, op: str) -> None:
    """Shape and dtype of one packed-weight tensor, as the layout contract states them."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor; got {type(tensor).__name__}")
    if tensor.dtype != dtype:
        raise TypeError(f"{op}: {name} must be {dtype}; got {tensor.dtype}")
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}; got {tuple(tensor.shape)}")


def check_activation_dtype(dtype: torch.dtype, op: str) -> None:
    if dtype not in ACTIVATION_DTYPES:
        allowed = ", ".join(str(d) for d in ACTIVATION_DTYPES)
        raise TypeError(f"{op}: dtype {dtype} is not one of {allowed}")


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


def pad_columns(weight: torch.Tensor, multiple: int) -> torch.Tensor:
    """(N, K) -> (N, K_pad) float32, K_pad = K rounded up to ``multiple``, zero-filled."""
    k = weight.shape[1]
    return torch.nn.functional.pad(weight.to(torch.float32), (0, round_up(k, multiple) - k))


def nibble_block_size(out_shape: tuple, qweight_shape: tuple, blocks_shape: tuple, sizes: tuple) -> Optional[int]:
    """The block (group) size of a nibble-packed weight read off static shapes: W (N, K) =
    ``out_shape``, qweight (N, K_pad // 2), per-block tensor (N, nb); None unless the block
    K_pad // nb is one of ``sizes`` and K_pad is K rounded up to it."""
    n, k = out_shape
    if len(qweight_shape) != 2 or len(blocks_shape) != 2 or qweight_shape[0] != n or blocks_shape[0] != n \
            or blocks_shape[1] == 0:
        return None
    k_pad = 2 * qweight_shape[1]
    block, rest = divmod(k_pad, blocks_shape[1])
    if rest or block not in sizes or not (k_pad - block < k <= k_pad):
        return None
    return block


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """codes (N, K_pad) integers in [0, 15], K_pad even -> (N, K_pad // 2) uint8.

    Byte j of row n = codes[n, 2j] | codes[n, 2j + 1] << 4.
    """
    if codes.shape[-1] % 2:
        raise ValueError(f"pack_nibbles: K_pad must be even; got {codes.shape[-1]}")
    codes = codes.to(torch.uint8)
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_nibbles(qweight: torch.Tensor) -> torch.Tensor:
    """qweight (N, K_pad // 2) uint8 -> codes (N, K_pad) uint8 in [0, 15].

    Written as one broadcast shift, (N, K_pad // 2, 1) >> (0, 4), so that Inductor makes it
    a single pointwise loop (a ``torch.stack`` of the two nibbles becomes a ``cat`` that
    materializes both halves).
    """
    shifts = torch.arange(2, device=qweight.device, dtype=torch.uint8) * 4
    return ((qweight[..., None] >> shifts) & 15).reshape(qweight.shape[0], -1)


def unpack_nibbles_reference(qweight: torch.Tensor) -> torch.Tensor:
    """The same as ``unpack_nibbles`` by integer division (int64), for the references."""
    q = qweight.to(torch.int64)
    codes = torch.empty(q.shape[0], 2 * q.shape[1], dtype=torch.int64, device=q.device)
    codes[:, 0::2] = q % 16
    codes[:, 1::2] = q // 16
    return codes


def compute_sqnr(reference: torch.Tensor, approximation: torch.Tensor) -> float:
    """SQNR in dB: 20 log10(||reference|| / ||reference - approximation||), in float64.

    +inf when the two are equal.
    """
    reference = reference.to(torch.float64)
    error = torch.linalg.vector_norm(reference - approximation.to(torch.float64)).item()
    signal = torch.linalg.vector_norm(reference).item()
    if error == 0.0:
        return math.inf
    return 20.0 * math.log10(signal / error)
