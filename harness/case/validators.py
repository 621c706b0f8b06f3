"""Where a value sits (:class:`At`) and the checks of single values: each returns the value or
raises the one-line :class:`CaseFormatError` naming file, line and field."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Optional, Sequence

from .. import filecheck
from ..core.dtypes import DTYPES, MATRIX_DTYPE, canonical_dtype_name
from .errors import CaseFormatError, show
from .model import BACKENDS, DEVICES, When
from .yaml_lines import YamlMap, as_yaml_map


@dataclasses.dataclass(frozen=True)
class At:
    """Where a value sits: file, line and dotted field path, for error messages."""

    path: str
    line: int
    field: str

    def child(self, name: Any, line: int) -> "At":
        return At(self.path, line, f"{self.field}.{name}" if self.field else str(name))

    def key(self, mapping: "YamlMap", key: Any, lines: Optional[dict] = None) -> "At":
        """Where ``mapping[key]`` sits (``lines``: the table to take the line from, default its
        value's): a child of this field, or the defaults block it was merged from."""
        line = (mapping.value_lines if lines is None else lines).get(key, self.line)
        field = getattr(mapping, "key_fields", {}).get(key)
        return At(self.path, line, field) if field else self.child(key, line)

    def item(self, seq: list, index: int) -> "At":
        """Where ``seq[index]`` sits (a list merged from ``defaults:`` names the block it came from)."""
        lines = getattr(seq, "item_lines", None)
        fields = getattr(seq, "item_fields", None)
        return At(self.path, lines[index] if lines else self.line, fields[index] if fields else f"{self.field}[{index}]")

    def error(self, problem: str, got: Any = dataclasses.MISSING, allowed: Optional[Iterable[Any]] = None) -> CaseFormatError:
        return CaseFormatError(self.path, self.line, self.field, problem, got, allowed)


def entries(mapping: YamlMap, at: At) -> Iterable[tuple[str, Any, At]]:
    for key, value in mapping.items():
        yield key, value, at.key(mapping, key)


def require_map(value: Any, at: At, allowed_keys: Optional[Sequence[str]] = None) -> YamlMap:
    if not isinstance(value, dict):
        raise at.error("must be a mapping", got=value)
    if not isinstance(value, YamlMap):  # a programmatic dict: give it empty line tables
        value = as_yaml_map(value, at.line)
    if allowed_keys is not None:
        for key in value:
            if key not in allowed_keys:
                raise at.key(value, key, value.key_lines).error("unknown key", got=key, allowed=allowed_keys)
    return value


def require_list(value: Any, at: At, allow_empty: bool = False) -> list:
    if not isinstance(value, list):
        raise at.error("must be a list", got=value)
    if not value and not allow_empty:
        raise at.error("must not be empty", got=value)
    return value


def list_items(value: Any, at: At) -> list[tuple[Any, At]]:
    """A non-empty list's items, each with where it sits."""
    items = require_list(value, at)
    return [(item, at.item(items, i)) for i, item in enumerate(items)]


def matches_types(value: Any, types: Any) -> bool:
    """isinstance, except that a YAML true/false is no int or float unless bool is listed."""
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def require_str(value: Any, at: At, non_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise at.error("must be a string", got=value)
    if non_empty and not value.strip():
        raise at.error("must not be empty", got=value)
    return value


def require_bool(value: Any, at: At) -> bool:
    if not isinstance(value, bool):
        raise at.error("must be true or false", got=value)
    return value


def require_int(value: Any, at: At, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise at.error("must be an integer", got=value)
    if minimum is not None and value < minimum:
        raise at.error(f"must be >= {minimum}", got=value)
    if maximum is not None and value > maximum:
        raise at.error(f"must be <= {maximum:g}", got=value)
    return value


def require_number(value: Any, at: At, minimum: Optional[float] = None, allow_nan: bool = False, maximum: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise at.error("must be a number", got=value)
    if math.isnan(value) and not allow_nan:
        raise at.error("must be a number, not NaN (every comparison with NaN is false)", got=value)
    if minimum is not None and value < minimum:
        raise at.error(f"must be >= {minimum}", got=value)
    if maximum is not None and value > maximum:
        raise at.error(f"must be <= {maximum:g}", got=value)
    return float(value)


def require_tolerance(value: Any, at: At, key: str) -> float:
    """A tolerance: >= 0, not NaN (it would pass anything), finite except ``atol: .inf`` (the
    documented way to switch the elementwise check off)."""
    number = require_number(value, at, minimum=0.0)
    if math.isinf(number) and key != "atol":
        raise at.error("must be finite (only atol may be .inf, which switches the elementwise check off)", got=value)
    return number


def require_choice(value: Any, at: At, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise at.error(f"{show(value)} is not one of the allowed values", got=value, allowed=allowed)
    return value


def require_dtype(value: Any, at: At, allow_matrix: bool = False) -> str:
    allowed = ([MATRIX_DTYPE] if allow_matrix else []) + list(DTYPES)
    if allow_matrix and value == MATRIX_DTYPE:
        return value
    canonical = canonical_dtype_name(value) if isinstance(value, str) else None
    if canonical is None:
        raise at.error(f"{show(value)} is not a dtype", got=value, allowed=allowed)
    return canonical


def choice_list(value: Any, at: At, allowed: Sequence[str], normalize: Callable[[Any, At], str] | None = None) -> tuple[str, ...]:
    out = [normalize(item, item_at) if normalize else require_choice(item, item_at, allowed) for item, item_at in list_items(value, at)]
    if len(set(out)) != len(out):
        raise at.error("lists a value twice", got=list(value))
    return tuple(out)


def optional_when(mapping: YamlMap, at: At) -> When:
    """``mapping``'s ``when:`` (``at``: where the mapping sits), or every cell when it has none."""
    return parse_when(mapping["when"], at.key(mapping, "when")) if "when" in mapping else When()


def parse_when(value: Any, at: At) -> When:
    """A ``when:`` (backends, devices, dtypes a check, mark or perf spec applies to)."""
    mapping = require_map(value, at, ("backends", "devices", "dtypes"))
    fields: dict[str, tuple[str, ...]] = {}
    for key, item, item_at in entries(mapping, at):
        if key == "backends":
            fields[key] = choice_list(item, item_at, BACKENDS)
        elif key == "devices":
            fields[key] = choice_list(item, item_at, DEVICES)
        else:
            fields[key] = choice_list(item, item_at, list(DTYPES), lambda v, a: require_dtype(v, a))
    return When(**fields)


def check_directives(check: str, at: At, first_line: int, bases: Sequence[str] = ("CHECK",)) -> None:
    """A block with no directive, or a line starting like a misspelled one, would check
    nothing and pass; both are load errors (LLVM FileCheck warns about the first)."""
    found, problems = filecheck.directive_problems(check, filecheck.every_prefix(list(BACKENDS), list(DEVICES), bases))
    base = "/".join(bases)
    allowed = f"{base}, {base}-<DEVICE>, {base}-<BACKEND>, {base}-<DEVICE>-<BACKEND>, each plain or with -NEXT, -SAME, -NOT, -DAG, -LABEL, -EMPTY, -COUNT-<n>"
    if problems:
        index, word = problems[0]
        line_at = At(at.path, first_line + index, at.field)
        raise line_at.error(f"{word + ':'!r} is not a FileCheck directive, so this line would check nothing", got=word, allowed=[allowed])
    if not found:
        raise at.error(f"no FileCheck directive in the block, so it would check nothing (a line needs one of {allowed}, then ':')")
