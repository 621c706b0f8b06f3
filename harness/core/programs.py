"""Programs a case can name: built-ins with parameters, or any ``module:function``.

A program is a callable taking the case's inputs positionally and returning a tensor or a
(nested) tuple/list/dict of tensors. Built-ins cover the common shapes of a numerics case
so that most new cases need no Python; each declares its parameters (name -> type and
default) so that the loader can reject a typo with its line number.

To add a built-in: write a ``build_<name>(**params) -> callable`` and register a
:class:`BuiltinProgram` with :func:`register_builtin_program`. The built-ins of this module
are what a repro script has (it carries this source); one registered elsewhere reaches a
script as its importable build function.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import traceback
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F


class ProgramImportError(LookupError):
    """A ``module:function`` program that cannot be imported or found; the message says which part failed."""


def import_program(target: str) -> Callable[..., Any]:
    """``'pkg.mod:func'`` -> the function (``func`` may be dotted: ``Class.method``)."""
    module_name, _, attr_path = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and missing and (module_name == missing or module_name.startswith(missing + ".")):
            # The program's own module is not on the import path: usually the project root,
            # which pytest adds only when told to.
            hint = "; is the project's root on the import path? set pythonpath = [\".\"] under [tool.pytest.ini_options] in pyproject.toml (pytest.ini: pythonpath = .)"
        raise ProgramImportError(f"cannot import module {module_name!r}: {exc}{hint}") from exc
    except (Exception, SystemExit) as exc:  # SystemExit too: a module calling sys.exit() must not end the session
        raise ProgramImportError(f"importing module {module_name!r} raised {describe_exception(exc)}") from exc
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise ProgramImportError(
                f"module {module_name!r} has no {attr_path!r} (callables there: {', '.join(public) or 'none'})"
            ) from None
    if not callable(obj):
        raise ProgramImportError(f"{target!r} is a {type(obj).__name__}, not a callable")
    return obj


def describe_exception(exc: BaseException) -> str:
    """``Type: message (file:line)`` of where ``exc`` was raised, the innermost frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({os.path.relpath(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}" + (f": {message[0]}" if message else "") + where


# ------------------------------------------------------------------------------ registry


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


# --------------------------------------------------------------------- built-in programs

aten = torch.ops.aten


def build_matmul() -> Callable[..., torch.Tensor]:
    def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(M, K) @ (K, N) -> (M, N); batched shapes broadcast as in torch.matmul."""
        return a @ b

    return matmul


def build_linear() -> Callable[..., torch.Tensor]:
    def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x (M, K), weight (N, K), optional bias (N,) -> (M, N) = x @ weight.T + bias."""
        return F.linear(x, weight, bias)

    return linear


_UNARY_OPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "abs": torch.abs,
    "cos": torch.cos,
    "exp": torch.exp,
    "gelu": F.gelu,
    "neg": torch.neg,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "sin": torch.sin,
    "square": torch.square,
    "tanh": torch.tanh,
}
_SCALAR_OPS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "add": torch.add,
    "mul": torch.mul,
    "sub": torch.sub,
    "div": torch.div,
    "pow": torch.pow,
}
POINTWISE_OP_NAMES = tuple(sorted(_UNARY_OPS)) + tuple(sorted(_SCALAR_OPS))


def parse_pointwise_op(op: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """``'sin'`` or ``{'mul': 2.0}`` -> a one-argument tensor function. Raises ValueError with the allowed names."""
    if isinstance(op, str) and op in _UNARY_OPS:
        return _UNARY_OPS[op]
    if isinstance(op, Mapping) and len(op) == 1:
        ((name, scalar),) = op.items()
        if name in _SCALAR_OPS and isinstance(scalar, (int, float)) and not isinstance(scalar, bool):
            binary = _SCALAR_OPS[name]
            return lambda t: binary(t, scalar)
    raise ValueError(
        f"pointwise op {op!r} is neither a unary name ({', '.join(sorted(_UNARY_OPS))}) "
        f"nor a one-key mapping {{op: number}} with op in {', '.join(sorted(_SCALAR_OPS))}"
    )


def build_pointwise_chain(ops: list) -> Callable[..., torch.Tensor]:
    steps = [parse_pointwise_op(op) for op in ops]

    def pointwise_chain(*tensors: torch.Tensor) -> torch.Tensor:
        """Sum of the inputs (broadcast), then each op in order: one fusable pointwise kernel."""
        out = tensors[0]
        for t in tensors[1:]:
            out = out + t
        for step in steps:
            out = step(out)
        return out

    return pointwise_chain


def build_constant_pad_nd_mm(pad: list, value: float, add_before: float | None) -> Callable[..., torch.Tensor]:
    pad_tuple = tuple(int(p) for p in pad)

    def constant_pad_nd_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a (M, K) [+ add_before], padded by ``pad`` with ``value`` to (M, K'), then @ b (K', N)."""
        if add_before is not None:
            a = a + add_before
        return aten.constant_pad_nd(a, pad_tuple, value) @ b

    return constant_pad_nd_mm


REDUCTIONS = {"sum": torch.sum, "mean": torch.mean, "amax": torch.amax, "amin": torch.amin}


def build_reduce(op: str, dim: int) -> Callable[..., torch.Tensor]:
    if op not in REDUCTIONS:
        raise ValueError(f"reduce op {op!r} is not one of {', '.join(REDUCTIONS)}")
    reduction = REDUCTIONS[op]

    def reduce(x: torch.Tensor) -> torch.Tensor:
        """x reduced over ``dim`` with ``op``."""
        return reduction(x, dim=dim)

    return reduce


# Parameters and descriptions: what the loader checks a case's params: against.
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

#: The built-ins registered above, by name: what every repro script has (it carries this
#: module); one registered elsewhere reaches a script as its importable build function.
CORE_BUILTINS: dict[str, BuiltinProgram] = dict(_BUILTINS)
