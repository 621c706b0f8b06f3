"""Programs a case can name: built-ins with parameters, or any ``module:function``.

A program is a callable taking the case's inputs positionally and returning a tensor or a
(nested) tuple/list/dict of tensors. Built-ins cover the common shapes of a numerics case
so that most new cases need no Python; each declares its parameters (name -> type and
default) so that the loader can reject a typo with its line number.

To add a built-in: write a ``build_<name>(**params) -> callable`` and register a
:class:`BuiltinProgram` with :func:`register_builtin_program`. The harness's own built-ins
are built by :mod:`harness.portable` (listed in its ``BUILTIN_BUILDERS``), so that a repro
script builds them with the same code.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

# The built-ins' build functions and ``module:function`` resolution live where repro
# scripts can carry them (ProgramImportError and describe_exception are re-exported).
from .portable import (
    POINTWISE_OP_NAMES,
    REDUCTIONS,
    ProgramImportError,  # noqa: F401
    build_constant_pad_nd_mm,
    build_linear,
    build_matmul,
    build_pointwise_chain,
    build_reduce,
    describe_exception,  # noqa: F401
    import_program,
)


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One parameter of a built-in program: accepted Python type(s), default, and meaning."""

    types: tuple[type, ...]
    default: Any
    help: str


@dataclasses.dataclass(frozen=True)
class BuiltinProgram:
    name: str
    build: Callable[..., Callable[..., Any]]
    params: Mapping[str, ParamSpec]
    description: str


_BUILTINS: dict[str, BuiltinProgram] = {}


def register_builtin_program(program: BuiltinProgram) -> BuiltinProgram:
    _BUILTINS[program.name] = program
    return program


def builtin_program(name: str) -> BuiltinProgram | None:
    return _BUILTINS.get(name)


def builtin_program_names() -> list[str]:
    return sorted(_BUILTINS)


def make_program(target: str, params: Mapping[str, Any]) -> Callable[..., Any]:
    """The callable a case runs: a built-in built with ``params``, or the imported function with
    ``params`` bound as keyword arguments (they must be Python constants under compilation)."""
    builtin = builtin_program(target)
    if builtin is not None:
        resolved = {name: params.get(name, spec.default) for name, spec in builtin.params.items()}
        return builtin.build(**resolved)
    function = import_program(target)
    return functools.partial(function, **params) if params else function


# --------------------------------------------------------------------------- built-ins

register_builtin_program(BuiltinProgram("matmul", build_matmul, {}, "a @ b"))
register_builtin_program(BuiltinProgram("linear", build_linear, {}, "F.linear(x, weight[, bias])"))
register_builtin_program(
    BuiltinProgram(
        "pointwise_chain",
        build_pointwise_chain,
        {"ops": ParamSpec((list,), [], f"ops applied in order, each one of {', '.join(POINTWISE_OP_NAMES)}")},
        "sum of the inputs followed by a chain of pointwise ops",
    )
)
register_builtin_program(
    BuiltinProgram(
        "constant_pad_nd_mm",
        build_constant_pad_nd_mm,
        {
            "pad": ParamSpec((list,), [0, 8, 0, 0], "aten.constant_pad_nd pad list (last dim first)"),
            "value": ParamSpec((int, float), 0.0, "fill value of the padding"),
            "add_before": ParamSpec((int, float, type(None)), None, "add this scalar before padding (pads an intermediate)"),
        },
        "constant_pad_nd(a [+ add_before], pad, value) @ b",
    )
)
register_builtin_program(
    BuiltinProgram(
        "reduce",
        build_reduce,
        {
            "op": ParamSpec((str,), "sum", f"one of {', '.join(REDUCTIONS)}"),
            "dim": ParamSpec((int,), -1, "reduced dimension"),
        },
        "a reduction over one dimension",
    )
)
