"""Input specs, the input-kind registry, and deterministic input construction.

An input is built on the CPU from its own seeded generator, cast to its dtype, then moved to
the cell's device: the same case gives the same values on every device and in every run.

Kinds. ``kind: tensor`` (the default) is a plain tensor. Other kinds (a quantized weight
made by its scheme, say) register themselves with :func:`register_input_kind`; their
extra settings sit under the input's ``params:`` mapping, checked against the names the
kind declares. A kind's builder may return a tensor or a tuple of tensors; a tuple is
passed to the program as one argument.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import torch

# The builder interface (InputSpec, BuildContext), the distributions and the plain tensor
# live where repro scripts can carry them; re-exported, since builders import them from here.
from .portable import (  # noqa: F401
    DISTRIBUTIONS,
    BuildContext,
    InputSpec,
    build_plain_tensor,
    build_with,
    resolve_input_dtype,
    sample_distribution,
)
from .programs import import_program

#: Settings a distribution cannot go without (the loader requires them).
REQUIRED_DISTRIBUTION_SETTINGS: dict[str, tuple[str, ...]] = {"randint": ("high",), "fill": ("value",)}


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
