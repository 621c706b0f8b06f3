"""The weight-only schemes, one record each: what every layer of the stack asks of a scheme.

    SCHEMES["int4_weight_only"].short                     -> "int4"
    lookup("int4").op_name                                -> "woq_mm_int4"   (name or alias)
    [s.name for s in all_schemes()]                       -> registration order

A record holds the scheme's names (``name``: the ``invoke_quant`` region's ``scheme=``
keyword, the one spelling keys use; ``short``: op, counter and kernel names; ``aliases``:
what ``quantize_linear_`` also accepts), its module-level API (weight dataclass, quantize,
the dequantize region, buffers), the fused op's operands and their one check, the eager
formula, and the name of its Triton kernel module. Who loops over it:

- ``impl.schemes.linear``: ``WeightOnlyLinear`` (quantize, buffers, dequantize region);
- ``impl.woq_mm``: one ``torch.ops.impl.woq_mm_<short>`` per record (schema, check, formula);
- ``impl.passes.woq_fusion``: one pattern pass per record (region layout, formula probe);
- ``impl.lowerings``: the CPU decomposition (formula) and the CUDA launch (kernel module);
- ``impl.kernels.ops``: one ``torch.ops.impl.woq_mm_<short>_triton`` per record.

A new weight-only scheme is its own module here (quantize / dequantize / check / formula),
its own kernel module (``impl/kernels/woq_mm_<short>.py``: ``op_body``), and one
``register_scheme`` call (below, or from the scheme's own package at import time).

The fused op is ``woq_mm_<short>(x, *operands, bias, *ints)``: ``operands`` the weight
tensors in the region's operand order (the last ``optional`` of them may be None, and a
region may leave them out), ``ints`` the trailing static ints (group size, block size).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import torch

from . import int4, int8, nf4
from .common import nibble_block_size


@dataclasses.dataclass(frozen=True)
class WeightOnlyScheme:
    """One weight-only scheme. Callables, with K = in_features:

    - ``quantize(weight, **options) -> weight_type``;
    - ``dequantize_region(*buffers, dtype=, **statics, **derived) -> W (N, K)``: one
      ``invoke_quant`` region (what a ``WeightOnlyLinear`` of the scheme runs);
    - ``formula(*operands, *ints, K, dtype) -> W (N, K)``: the region's body as a plain
      function; the fused op's eager path, the fusion pass's probe and the lowerings'
      decomposition all compute it;
    - ``check(*operands, *ints, K, op)``: the one operand check; raises ValueError /
      TypeError naming the operand;
    - ``infer_ints(out_shape, operand_shapes) -> ints or None``: ``ints`` read off a region's
      static shapes (its output (N, K), its operands), None when they fit no size of the scheme.
    """

    name: str
    short: str
    aliases: tuple[str, ...]
    weight_type: type  # a dataclass with in_features and out_features
    quantize: Callable[..., Any]
    dequantize_region: Callable[..., torch.Tensor]
    buffers: tuple[str, ...]  # weight_type fields held as a module's buffers, in operand order
    statics: tuple[str, ...]  # weight_type fields passed to dequantize_region as keywords
    derived: dict[str, Callable[[torch.device], torch.Tensor]]  # non-persistent operands, by keyword
    operands: tuple[str, ...]
    optional: int  # how many trailing operands may be None (NF4: absmax_scale, absmax_offset)
    ints: tuple[str, ...]
    formula: Callable[..., torch.Tensor]
    check: Callable[..., None]
    infer_ints: Callable[[tuple, list], Optional[tuple]]
    kernel: str  # module of ``impl.kernels`` holding the scheme's Triton kernel and launcher

    @property
    def op_name(self) -> str:
        return f"woq_mm_{self.short}"

    @property
    def bias_index(self) -> int:
        """Position of ``bias`` in the fused op's arguments (x first)."""
        return 1 + len(self.operands)

    def region(self, operands: tuple, ints: tuple, in_features: int, dtype: torch.dtype) -> torch.Tensor:
        """The scheme's ``invoke_quant`` region on the fused op's weight operands (a trailing
        optional one may be left out) and ints: what a user's program dequantizes with."""
        named = dict(zip(self.operands, (*operands, *[None] * (len(self.operands) - len(operands)))))
        named.update(zip(self.ints, ints), in_features=in_features)
        return self.dequantize_region(*(named[name] for name in self.buffers), dtype=dtype,
                                      **{name: named[name] for name in (*self.statics, *self.derived)})

    def schema(self) -> str:
        """The fused op's schema: bias defaults to None where no int follows it."""
        tensors = [f"Tensor {name}" for name in self.operands[: len(self.operands) - self.optional]]
        tensors += [f"Tensor? {name}" for name in self.operands[len(self.operands) - self.optional:]]
        bias = "Tensor? bias" if self.ints else "Tensor? bias=None"
        return f"(Tensor x, {', '.join(tensors)}, {bias}{''.join(f', SymInt {i}' for i in self.ints)}) -> Tensor"


SCHEMES: dict[str, WeightOnlyScheme] = {}
_LISTENERS: list[Callable[[WeightOnlyScheme], None]] = []


def on_register(listener: Callable[[WeightOnlyScheme], None]) -> None:
    """Call ``listener(scheme)`` for every scheme, registered already or later: how the layers
    above (the op, its lowering) add what a scheme needs without this module importing them."""
    _LISTENERS.append(listener)
    for scheme in tuple(SCHEMES.values()):
        listener(scheme)


def register_scheme(scheme: WeightOnlyScheme) -> WeightOnlyScheme:
    """Add ``scheme``; its name, short name and aliases must be new (one error naming the clash)."""
    taken = {key for s in SCHEMES.values() for key in (s.name, s.short, *s.aliases)}
    clash = sorted({scheme.name, scheme.short, *scheme.aliases} & taken)
    if clash:
        raise ValueError(f"register_scheme({scheme.name!r}): {', '.join(clash)} already names a scheme")
    SCHEMES[scheme.name] = scheme
    for listener in tuple(_LISTENERS):
        listener(scheme)
    return scheme


def unregister_scheme(name: str) -> None:
    """Remove a scheme from the registry (tests that register a scheme of their own take it
    out again); what listeners added for it (its op, its lowering) stays defined, unused."""
    del SCHEMES[name]


def all_schemes() -> tuple[WeightOnlyScheme, ...]:
    return tuple(SCHEMES.values())


def lookup(name: str) -> WeightOnlyScheme:
    """The scheme called ``name`` or one of its aliases; ValueError naming the choices."""
    for scheme in SCHEMES.values():
        if name == scheme.name or name in scheme.aliases:
            return scheme
    allowed = ", ".join([*SCHEMES, *(alias for s in SCHEMES.values() for alias in s.aliases)])
    raise ValueError(f"scheme {name!r} is not one of {allowed}")


def by_short(short: str) -> WeightOnlyScheme:
    """The scheme whose short name (op, counter and kernel names) is ``short``."""
    for scheme in SCHEMES.values():
        if scheme.short == short:
            return scheme
    raise ValueError(f"no scheme has the short name {short!r} (short names: {', '.join(s.short for s in SCHEMES.values())})")


def canonical_scheme(name: str) -> str:
    """The scheme name for ``name`` or one of its aliases; ValueError naming the choices."""
    return lookup(name).name


def _nibble_ints(sizes: tuple[int, ...]) -> Callable[[tuple, list], Optional[tuple]]:
    """infer_ints of a nibble-packed scheme: its block size from qweight (N, K_pad // 2) and
    the per-block tensor (N, nb) that follows it."""

    def infer(out_shape: tuple, shapes: list) -> Optional[tuple]:
        if len(shapes) < 2:
            return None
        block = nibble_block_size(out_shape, shapes[0], shapes[1], sizes)
        return None if block is None else (block,)

    return infer


INT8 = register_scheme(WeightOnlyScheme(
    name=int8.INT8_WEIGHT_ONLY, short="int8", aliases=("int8",),
    weight_type=int8.Int8Weight, quantize=int8.quantize_int8, dequantize_region=int8.dequantize_int8_packed,
    buffers=("qweight", "scale"), statics=(), derived={},
    operands=("qweight", "scale"), optional=0, ints=(),
    formula=int8.dequantize_int8_formula, check=int8.check_int8_operands, infer_ints=lambda out, shapes: (),
    kernel="woq_mm_int8",
))
INT4 = register_scheme(WeightOnlyScheme(
    name=int4.INT4_WEIGHT_ONLY, short="int4", aliases=("int4",),
    weight_type=int4.Int4Weight, quantize=int4.quantize_int4, dequantize_region=int4.dequantize_int4_packed,
    buffers=("qweight", "scale", "zero"), statics=("group_size", "in_features"), derived={},
    operands=("qweight", "scale", "zero"), optional=0, ints=("group_size",),
    formula=int4.dequantize_int4_values, check=int4.check_int4_operands, infer_ints=_nibble_ints(int4.GROUP_SIZES),
    kernel="woq_mm_int4",
))
NF4 = register_scheme(WeightOnlyScheme(
    name=nf4.NF4, short="nf4", aliases=(),
    weight_type=nf4.NF4Weight, quantize=nf4.quantize_nf4, dequantize_region=nf4.dequantize_nf4_packed,
    buffers=("qweight", "absmax", "absmax_scale", "absmax_offset"), statics=("block_size", "in_features"),
    derived={"levels": nf4.nf4_levels},
    operands=("qweight", "absmax", "levels", "absmax_scale", "absmax_offset"), optional=2, ints=("block_size",),
    formula=nf4.dequantize_nf4_values, check=nf4.check_nf4_operands, infer_ints=_nibble_ints(nf4.BLOCK_SIZES),
    kernel="woq_mm_nf4",
))

__all__ = ["SCHEMES", "WeightOnlyScheme", "all_schemes", "by_short", "canonical_scheme", "lookup", "on_register", "register_scheme",
           "unregister_scheme"]
