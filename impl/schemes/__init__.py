"""Weight-only quantization schemes: pure functions, layouts in each module's docstring.

- :mod:`.int8`: per output channel, symmetric (``"int8_weight_only"``);
- :mod:`.int4`: group-wise along K (32 / 64 / 128), zero points or symmetric (``"int4_weight_only"``);
- :mod:`.nf4`: 16 normal-float levels, block-wise absmax, optional double quantization (``"nf4"``);
- :mod:`.linear`: ``quantize_linear_`` / ``WeightOnlyLinear``, the module-level API.

Each scheme has ``quantize_<s>`` (float weight -> dataclass of packed tensors),
``dequantize_<s>`` / ``dequantize_<s>_packed`` (one ``invoke_quant`` region whose ``scheme``
is the scheme's name) and ``dequantize_<s>_reference`` (float64). :mod:`.registry` holds one
record a scheme: what the op, the fusion pass, the lowerings and the kernels loop over.
"""

from __future__ import annotations

from .common import compute_sqnr
from .int4 import INT4_WEIGHT_ONLY, Int4Weight, dequantize_int4, dequantize_int4_packed, dequantize_int4_reference, quantize_int4
from .int8 import INT8_WEIGHT_ONLY, Int8Weight, dequantize_int8, dequantize_int8_packed, dequantize_int8_reference, quantize_int8
from .linear import WeightOnlyLinear, quantize_linear_
from .nf4 import (
    NF4,
    NF4_LEVELS,
    NF4Weight,
    dequantize_nf4,
    dequantize_nf4_packed,
    dequantize_nf4_reference,
    nf4_levels,
    quantize_nf4,
)
from .registry import SCHEMES, WeightOnlyScheme, canonical_scheme, register_scheme

__all__ = [
    "INT4_WEIGHT_ONLY",
    "INT8_WEIGHT_ONLY",
    "NF4",
    "NF4_LEVELS",
    "SCHEMES",
    "Int4Weight",
    "Int8Weight",
    "NF4Weight",
    "WeightOnlyScheme",
    "WeightOnlyLinear",
    "canonical_scheme",
    "compute_sqnr",
    "dequantize_int4",
    "dequantize_int4_packed",
    "dequantize_int4_reference",
    "dequantize_int8",
    "dequantize_int8_packed",
    "dequantize_int8_reference",
    "dequantize_nf4",
    "dequantize_nf4_packed",
    "dequantize_nf4_reference",
    "nf4_levels",
    "quantize_int4",
    "quantize_int8",
    "quantize_linear_",
    "quantize_nf4",
    "register_scheme",
]
