"""Input specs, the input-kind registry, and deterministic input construction.

An input is built on the CPU from its own seeded generator, cast to its dtype, then moved to
the cell's device: the same case gives the same values on every device and in every run.

Kinds. ``kind: tensor`` (the default) is a plain tensor. Other kinds (a quantized weight
made by its scheme, say) register themselves with :func:`register_input_kind`; their
extra settings sit under the input's ``params:`` mapping, checked against the names the
kind declares. A kind's builder, ``build(spec: InputSpec, ctx: BuildContext)``, may return
a tensor or a tuple of tensors; a tuple is passed to the program as one argument.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional

import torch
import torch.utils._pytree as pytree

from .dtypes import DTYPES, MATRIX_DTYPE
from .programs import import_program

#: Distributions and the settings each one reads (all others must be absent).
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "normal": ("mean", "std"),
    "uniform": ("low", "high"),
    "randint": ("low", "high"),
    "ones": (),
    "zeros": (),
    "fill": ("value",),
    "arange": (),
}

#: Settings a distribution cannot go without (the loader requires them).
REQUIRED_DISTRIBUTION_SETTINGS: dict[str, tuple[str, ...]] = {"randint": ("high",), "fill": ("value",)}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One program argument, as a suite declares it.

    ``shape``: logical sizes, e.g. (M, K). ``strides``: explicit strides; the storage is
    the smallest that holds them (like ``torch._dynamo.testing.rand_strided``).
    ``pad_last_dim``: allocate (..., K + pad) contiguous and view (..., K): padded row
    strides *and* storage room after the last row. ``dtype`` is a canonical dtype name or
    ``"@dtype"`` (the cell's dtype). ``seed`` None means "derived from the case seed".
    """

    name: str
    kind: str = "tensor"
    shape: tuple[int, ...] = ()
    dtype: str = "@dtype"
    strides: Optional[tuple[int, ...]] = None
    pad_last_dim: int = 0
    distribution: str = "normal"
    mean: float = 0.0
    std: float = 1.0
    low: Optional[float] = None
    high: Optional[float] = None
    value: Optional[float] = None
    seed: Optional[int] = None
    requires_grad: bool = False
    params: tuple[tuple[str, Any], ...] = ()
    line: int = 0

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a kind's builder gets besides the spec: where, which dtype, and the seeded generator."""

    device: str
    dtype: torch.dtype
    generator: torch.Generator

    def sample(self, spec: InputSpec, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A contiguous CPU tensor of ``shape`` drawn from the spec's distribution, cast to ``dtype``."""
        return sample_distribution(spec, shape, dtype, self.generator)


def sample_distribution(
    spec: InputSpec, shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator
) -> torch.Tensor:
    """Values for ``shape`` on the CPU. Floats are drawn in float32 and then cast, so that a
    bfloat16 cell sees exactly the float32 cell's values rounded."""
    draw_dtype = torch.float32 if (dtype.is_floating_point or dtype == torch.bool) else dtype
    d = spec.distribution
    if d == "normal":
        values = torch.randn(shape, generator=generator, dtype=torch.float32) * spec.std + spec.mean
    elif d == "uniform":
        low = 0.0 if spec.low is None else spec.low
        high = 1.0 if spec.high is None else spec.high
        values = torch.rand(shape, generator=generator, dtype=torch.float32) * (high - low) + low
    elif d == "randint":
        low = 0 if spec.low is None else int(spec.low)
        values = torch.randint(low, int(spec.high), shape, generator=generator, dtype=torch.int64)
    elif d == "ones":
        values = torch.ones(shape, dtype=draw_dtype)
    elif d == "zeros":
        values = torch.zeros(shape, dtype=draw_dtype)
    elif d == "fill":
        values = torch.full(shape, spec.value, dtype=torch.float32 if draw_dtype.is_floating_point else torch.float64)
    elif d == "arange":
        values = torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape)
    else:  # the loader rejects other names; this guards programmatic misuse
        raise ValueError(f"unknown distribution {d!r}; allowed {', '.join(DISTRIBUTIONS)}")
    return values.to(dtype)


def _storage_numel(shape: tuple[int, ...], strides: tuple[int, ...]) -> int:
    if any(s == 0 for s in shape):
        return 0
    return 1 + sum((size - 1) * stride for size, stride in zip(shape, strides))


def build_plain_tensor(spec: InputSpec, ctx: BuildContext) -> torch.Tensor:
    """``kind: tensor``: sample, lay out with the declared strides or padding, move to the device."""
    if spec.strides is not None:
        flat = ctx.sample(spec, (_storage_numel(spec.shape, spec.strides),), ctx.dtype)
        tensor = flat.to(ctx.device).as_strided(spec.shape, spec.strides)
    elif spec.pad_last_dim:
        padded_shape = (*spec.shape[:-1], spec.shape[-1] + spec.pad_last_dim)
        padded = ctx.sample(spec, padded_shape, ctx.dtype).to(ctx.device)
        tensor = padded[..., : spec.shape[-1]]
    else:
        tensor = ctx.sample(spec, spec.shape, ctx.dtype).to(ctx.device)
    if spec.requires_grad:
        tensor.requires_grad_(True)
    return tensor


def resolve_input_dtype(spec: InputSpec, matrix_dtype: torch.dtype) -> torch.dtype:
    return matrix_dtype if spec.dtype == MATRIX_DTYPE else DTYPES[spec.dtype]


def build_with(
    build: Callable[[InputSpec, BuildContext], Any], spec: InputSpec, *, device: str, matrix_dtype: torch.dtype, seed: int
) -> Any:
    """``build(spec, ctx)`` with a fresh generator seeded ``seed``: the same values on every device and run."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return build(spec, BuildContext(device=device, dtype=resolve_input_dtype(spec, matrix_dtype), generator=generator))


# ------------------------------------------------------------------------------- kinds


@dataclasses.dataclass(frozen=True)
class InputKind:
    """A named way to build an input. ``params`` maps each allowed ``params:`` key to its type(s)."""

    name: str
    build: Callable[[InputSpec, BuildContext], Any]
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""


_INPUT_KINDS: dict[str, InputKind] = {}


def register_input_kind(kind: InputKind) -> InputKind:
    """Make ``kind: <kind.name>`` usable in suites. Re-registering the same name replaces it."""
    _INPUT_KINDS[kind.name] = kind
    return kind


def input_kind(name: str) -> Optional[InputKind]:
    return _INPUT_KINDS.get(name)


def kind_from_builder(target: str) -> InputKind:
    """``kind: 'module:builder'`` without registration: ``builder(spec, ctx)`` builds the input.

    The builder may declare its ``params:`` as a ``PARAMS`` attribute (name -> type(s));
    without it every parameter is accepted. Raises programs.ProgramImportError.
    """
    builder = import_program(target)
    return InputKind(name=target, build=builder, params=getattr(builder, "PARAMS", _AnyParams()), description=builder.__doc__ or "")


class _AnyParams(dict):
    """``params`` of a builder that declares none: every name accepted, any type."""

    def get(self, key: Any, default: Any = None) -> Any:
        return object


def input_kind_names() -> list[str]:
    return sorted(_INPUT_KINDS)


register_input_kind(
    InputKind(
        name="tensor",
        build=build_plain_tensor,
        description="a plain tensor: shape, dtype, strides or pad_last_dim, distribution, seed",
    )
)


def build_input(spec: InputSpec, *, device: str, matrix_dtype: torch.dtype, seed: int) -> Any:
    """Build one input afresh (programs may mutate their inputs, so every run gets its own)."""
    kind = input_kind(spec.kind) or (kind_from_builder(spec.kind) if ":" in spec.kind else None)
    if kind is None:  # the loader checked this; a kind may have been unregistered since
        raise LookupError(f"input {spec.name!r}: unknown kind {spec.kind!r}; known {', '.join(input_kind_names())}")
    return build_with(kind.build, spec, device=device, matrix_dtype=matrix_dtype, seed=seed)


# --------------------------------------------------------------------- a call sequence


def derive_seed(spec: InputSpec, case_seed: int, index: int) -> int:
    """The seed of the ``index``-th input: its own, else derived from the case's."""
    return spec.seed if spec.seed is not None else case_seed * 1000 + index


@dataclasses.dataclass(frozen=True)
class CallSpecs:
    """What a cell's calls of its program take: each call's input specs, the inputs each call
    builds for itself (the others are built once and passed to every call, as a user calls one
    model, not copies), and the case's seed. A case without ``calls:`` is one call that builds
    every input."""

    calls: tuple[tuple[InputSpec, ...], ...]
    fresh: tuple[frozenset[str], ...]  # per call: the names it builds anew
    seed: int



def build_sequence(specs: CallSpecs, device: str, dtype: torch.dtype) -> list[list[Any]]:
    """Each call's arguments, built afresh (programs may mutate their inputs, so every run gets its own)."""
    shared: dict[str, Any] = {}
    sequence = []
    for call, fresh in zip(specs.calls, specs.fresh):
        args = []
        for index, spec in enumerate(call):
            seed = derive_seed(spec, specs.seed, index)
            if spec.name in fresh:
                args.append(build_input(spec, device=device, matrix_dtype=dtype, seed=seed))
            else:
                if spec.name not in shared:
                    shared[spec.name] = build_input(spec, device=device, matrix_dtype=dtype, seed=seed)
                args.append(shared[spec.name])
        sequence.append(args)
    return sequence


def upcast_to_float64(value: Any) -> Any:
    """Floating tensors in ``value`` (nested) as float64 copies, keeping requires_grad: the float64 run's inputs."""
    def upcast(t: Any) -> Any:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            out = t.detach().to(torch.float64)
            return out.requires_grad_(t.requires_grad)
        return t

    return pytree.tree_map(upcast, value)
