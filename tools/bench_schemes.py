"""The registered weight-only schemes as the benchmark tools quantize, size and launch them.

    shorts()                                      -> ("int8", "int4", "nf4", ...): registration order
    parse_schemes("int4,nf4", "bench_woq_gpu")    -> ("int4", "nf4"): short names, names or aliases
    operands, ints = quantize("int4", N, K, device, quantize_options("int4"))
    launcher("int4", config)(x, *launch_arguments("int4", operands, ints))   -> y (M, N)
    dequantize("int4", operands, ints, K, dtype)  -> W (N, K): the scheme's formula
    weight_bytes("int4", N, K, options)           -> bytes of one packed weight

Every tool loops over ``impl.schemes.registry``, so a scheme registered there (its scheme
module, its kernel module, one ``register_scheme``) is benched without editing a tool. The
tools name a scheme by its short name (their flags, rows and tables show it); their peers
(tinygemm, bitsandbytes, GemLite, ...) stay each tool's own variants.

``operands`` are the fused op's weight operands (``impl.woq_mm``'s order: the record's
``operands``, derived ones made, an absent optional one None), ``ints`` its trailing ints
(int4's group size, nf4's block size), read off the quantized weight.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch

from impl.schemes.registry import WeightOnlyScheme, all_schemes, by_short

# The quantize options of the committed tables (int4 group 128, nf4 block 64); a scheme not
# named here is quantized with its quantizer's defaults.
OPTIONS: dict[str, dict] = {"int4": {"group_size": 128}, "nf4": {"block_size": 64}}


def shorts() -> tuple[str, ...]:
    """The registered schemes' short names, in registration order."""
    return tuple(s.short for s in all_schemes())


def resolve(name: str) -> str:
    """The short name of the scheme called ``name`` (its short name, name or an alias)."""
    for scheme in all_schemes():
        if name in (scheme.short, scheme.name, *scheme.aliases):
            return scheme.short
    raise ValueError(f"{name!r} is not one of {', '.join(shorts())}")


def parse_schemes(text: str, tool: str) -> tuple[str, ...]:
    """'int8,int4_weight_only' -> ('int8', 'int4'); SystemExit naming the tool and the choices."""
    try:
        return tuple(resolve(part.strip()) for part in text.split(","))
    except ValueError as error:
        raise SystemExit(f"{tool}: --schemes: {error}") from None


def quantize_options(short: str, overrides: Optional[dict] = None) -> dict:
    """The quantizer's keyword options for ``short``: ``OPTIONS``, then a tool's ``overrides``
    ({short: {option: value}}) over them."""
    return {**OPTIONS.get(short, {}), **(overrides or {}).get(short, {})}


def fused_operands(scheme: WeightOnlyScheme, weight) -> tuple:
    """A quantized weight (the record's ``weight_type``) as the fused op's weight operands."""
    named = {name: getattr(weight, name) for name in scheme.buffers}
    device = named[scheme.buffers[0]].device
    named.update((name, make(device)) for name, make in scheme.derived.items())
    return tuple(named[name] for name in scheme.operands)


def quantize(short: str, N: int, K: int, device, options: dict, seed: int = 0) -> tuple[tuple, tuple]:
    """(operands, ints) of a random (N, K) weight, W ~ 0.02 N(0, 1), quantized by the scheme
    (timings do not depend on the values; the references are computed from these)."""
    scheme = by_short(short)
    generator = torch.Generator(device=device).manual_seed(seed)
    weight = scheme.quantize(torch.randn((N, K), generator=generator, device=device) * 0.02, **options)
    return fused_operands(scheme, weight), tuple(int(getattr(weight, name)) for name in scheme.ints)


def copies(operands: tuple, count: int) -> list[tuple]:
    """``count`` weight copies in memory of their own (the first the operands themselves):
    cycled through so that each launch reads its weight from HBM, not L2."""
    return [operands] + [tuple(None if t is None else t.clone() for t in operands) for _ in range(count - 1)]


@functools.lru_cache(maxsize=None)
def _one_row(short: str, K: int, options: tuple) -> tuple[int, tuple]:
    """(bytes, ints) of one quantized row of length K, on the CPU."""
    scheme = by_short(short)
    weight = scheme.quantize(torch.randn((1, K), generator=torch.Generator().manual_seed(0)), **dict(options))
    tensors = [getattr(weight, name) for name in scheme.buffers]
    nbytes = sum(t.numel() * t.element_size() for t in tensors if t is not None)
    return nbytes, tuple(int(getattr(weight, name)) for name in scheme.ints)


def weight_bytes(short: str, N: int, K: int, options: dict) -> int:
    """Bytes of one (N, K) weight's packed tensors (codes and scales; not the derived operands
    such as nf4's level table): N times one row's, so a tensor shared by all rows (nf4's
    double-quant offset) counts once a row."""
    return N * _one_row(short, K, tuple(sorted(options.items())))[0]


def scheme_ints(short: str, K: int, options: dict) -> tuple:
    """The fused op's ints (group or block size) for a weight of K columns quantized with ``options``."""
    return _one_row(short, K, tuple(sorted(options.items())))[1]


def layout(operands: tuple) -> tuple:
    """(shape, dtype name) a tensor operand, None an absent one: picklable, for worker processes."""
    return tuple(None if t is None else (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for t in operands)


def zeros_of(spec: tuple, device) -> tuple:
    """Zero-filled operands of a ``layout``."""
    return tuple(None if s is None else torch.zeros(s[0], dtype=getattr(torch, s[1]), device=device) for s in spec)


# --------------------------------------------------------------------------- our kernels (need triton)


def launch_arguments(short: str, operands: tuple, ints: tuple) -> tuple:
    """The operands and ints as the scheme's eager launcher takes them after x."""
    from impl.kernels import ops

    return ops.op_arguments(short, operands, ints)


def launcher(short: str, config=None) -> Callable[..., torch.Tensor]:
    """x, *launch_arguments -> y through the scheme's eager launcher (Triton's launch cached,
    launch plans replayed); ``config`` overrides its tile choice."""
    from impl.kernels import ops

    launch = ops.kernel_module(short).LAUNCHER.eager_launch
    return launch if config is None else functools.partial(launch, config=config)


def choose_config(short: str, M: int, N: int, K: int, ints: tuple, device):
    """The tile config the scheme's launcher picks (its tuned table, else its fallback)."""
    from impl.kernels import ops

    return ops.kernel_module(short).LAUNCHER.config_for(M, N, K, ints, device)


def dequantize(short: str, operands: tuple, ints: tuple, K: int, dtype: torch.dtype) -> torch.Tensor:
    """W (N, K) in ``dtype``: the scheme's formula, a plain PyTorch expression."""
    return by_short(short).formula(*operands, *ints, K, dtype)
