"""Names of the weight-only schemes, in one place.

Each name is the ``scheme=`` keyword of the ``invoke_quant`` region that dequantizes a
weight of that scheme (``impl.schemes.<scheme>.dequantize_*``), and the key the fusion
passes (``impl.passes.woq_fusion``) look up. A region carrying one of these names promises
the layout in that module's docstring (operands in the order of the scheme's dataclass,
output the dequantized weight (N, K)); treat the names as reserved.
"""

from __future__ import annotations

INT8_WEIGHT_ONLY = "int8_weight_only"
INT4_WEIGHT_ONLY = "int4_weight_only"
NF4 = "nf4"

WEIGHT_ONLY_SCHEMES = (INT8_WEIGHT_ONLY, INT4_WEIGHT_ONLY, NF4)

# Short spellings accepted by the user-facing module API (``quantize_linear_``).
SCHEME_ALIASES = {"int8": INT8_WEIGHT_ONLY, "int4": INT4_WEIGHT_ONLY}


def canonical_scheme(name: str) -> str:
    """The scheme name for ``name`` or one of its aliases; ValueError naming the choices."""
    canonical = SCHEME_ALIASES.get(name, name)
    if canonical not in WEIGHT_ONLY_SCHEMES:
        allowed = ", ".join((*WEIGHT_ONLY_SCHEMES, *SCHEME_ALIASES))
        raise ValueError(f"scheme {name!r} is not one of {allowed}")
    return canonical
