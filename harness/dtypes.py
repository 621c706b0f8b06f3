"""Dtype names a suite may use, their aliases, and the per-dtype default tolerances."""

from __future__ import annotations

import torch

# DTYPES (canonical name -> torch dtype; canonical names are what test ids and golden file
# names use) and MATRIX_DTYPE (an input's "the dtype of the matrix cell") live where repro
# scripts can carry them.
from .portable import DTYPES, MATRIX_DTYPE  # noqa: F401  (re-exported)

#: Short spellings people type; they are normalized to the canonical name on load.
DTYPE_ALIASES: dict[str, str] = {
    "fp64": "float64",
    "double": "float64",
    "fp32": "float32",
    "float": "float32",
    "fp16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "long": "int64",
    "int": "int32",
}

#: Default (atol, rtol) per dtype: torch.testing.assert_close's defaults, so that a case
#: without tolerances is exactly as strict as assert_close.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-7),
    "float32": (1e-5, 1.3e-6),
    "float16": (1e-5, 1e-3),
    "bfloat16": (1e-5, 1.6e-2),
    "float8_e4m3fn": (1e-5, 1.25e-1),
    "float8_e5m2": (1e-5, 2.5e-1),
}


def canonical_dtype_name(name: str) -> str | None:
    """The canonical spelling of ``name`` ('bf16' -> 'bfloat16'), or None when it is no dtype."""
    if name in DTYPES:
        return name
    return DTYPE_ALIASES.get(name)


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32 (the reverse of DTYPES)."""
    return str(dtype).removeprefix("torch.")
