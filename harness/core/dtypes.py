"""Dtype names a suite may use, their aliases, and the per-dtype default tolerances."""

from __future__ import annotations

import torch

#: Canonical name -> torch dtype. Canonical names are what test ids and golden file names use.
DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float8_e4m3fn": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}

#: The placeholder an input uses to mean "the dtype of the matrix cell".
MATRIX_DTYPE = "@dtype"

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
