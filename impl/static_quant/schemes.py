"""Scheme names of the static int8 quantize / dequantize regions, all in one place.

A region is one ``invoke_quant`` call whose ``scheme`` says what it computes. The name is

    static_<direction>_<granularity>_<qdtype>[_bf16]

- direction: ``quant`` (float -> int8 codes) or ``dequant`` (int8 codes -> float);
- granularity: ``per_tensor`` (one scale / zero point) or ``per_channel`` (one per slice
  along an axis);
- qdtype: ``u8`` (torch.uint8, codes 0..255) or ``s8`` (torch.int8, codes -128..127);
- ``_bf16``: the int8-mixed-bf16 variant. A bf16 ``dequant`` region returns bfloat16 (the
  float32 result converted with ``to(bfloat16)``); a bf16 ``quant`` region takes a
  bfloat16 input (converted ``to(float32)`` first). The arithmetic is float32 either way.

So ``static_quant_per_tensor_u8`` quantizes a float32 activation to uint8 codes and
``static_dequant_per_channel_s8_bf16`` turns int8 weight codes into bfloat16.

Every region's operands are ``(codes_or_input, scale, zero_point)``: ``scale`` float32 and
``zero_point`` int32, 0-d for per-tensor and shaped to broadcast along the channel axis for
per-channel (see :mod:`impl.static_quant.primitives`). The passes rely on that contract,
and on these names being produced by the primitives only: treat the ``static_`` scheme
prefix as reserved.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
from typing import Optional

import torch


class Direction(enum.Enum):
    QUANTIZE = "quant"
    DEQUANTIZE = "dequant"


class Granularity(enum.Enum):
    PER_TENSOR = "per_tensor"
    PER_CHANNEL = "per_channel"


QDTYPE_TAGS = {torch.uint8: "u8", torch.int8: "s8"}
FLOAT_DTYPES = (torch.float32, torch.bfloat16)


@dataclasses.dataclass(frozen=True)
class StaticScheme:
    """What one scheme name means.

    ``float_dtype`` is the dtype on the float side of the region: the output of a
    dequantize, the input of a quantize.
    """

    direction: Direction
    granularity: Granularity
    qdtype: torch.dtype
    float_dtype: torch.dtype

    @property
    def name(self) -> str:
        suffix = "_bf16" if self.float_dtype == torch.bfloat16 else ""
        return f"static_{self.direction.value}_{self.granularity.value}_{QDTYPE_TAGS[self.qdtype]}{suffix}"

    @property
    def qmin(self) -> int:
        return torch.iinfo(self.qdtype).min

    @property
    def qmax(self) -> int:
        return torch.iinfo(self.qdtype).max

    @property
    def is_dequantize(self) -> bool:
        return self.direction is Direction.DEQUANTIZE

    @property
    def is_quantize(self) -> bool:
        return self.direction is Direction.QUANTIZE

    @property
    def per_tensor(self) -> bool:
        return self.granularity is Granularity.PER_TENSOR


SCHEMES: dict[str, StaticScheme] = {
    scheme.name: scheme
    for scheme in (
        StaticScheme(direction, granularity, qdtype, float_dtype)
        for direction, granularity, qdtype, float_dtype in itertools.product(
            Direction, Granularity, QDTYPE_TAGS, FLOAT_DTYPES
        )
    )
}


def scheme_of(
    direction: Direction, granularity: Granularity, qdtype: torch.dtype, float_dtype: torch.dtype
) -> StaticScheme:
    """The scheme for these four choices; a ValueError names the unsupported dtype."""
    if qdtype not in QDTYPE_TAGS:
        raise ValueError(
            f"static quantization: dtype {qdtype} is not supported (allowed: torch.uint8, torch.int8)"
        )
    if float_dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"static quantization: float dtype {float_dtype} is not supported "
            "(allowed: torch.float32, torch.bfloat16)"
        )
    return StaticScheme(direction, granularity, qdtype, float_dtype)


def lookup_scheme(name: object) -> Optional[StaticScheme]:
    """The scheme a region's ``scheme`` keyword names, or None for anything not ours."""
    return SCHEMES.get(name) if isinstance(name, str) else None
