"""The ``checks:`` part of a case: each key parsed by the check that reads it.

A check (``harness.checks``) names its own keys in ``keys``, a mapping from key to
:class:`CheckKey` (its parser and its default), beside its ``applies`` and ``run``. The
checks import the run and the stores, which import the case, so the loader cannot import
them; instead ``harness.checks`` hands this module its list once (:func:`read_keys_from`),
and :func:`parse_checks` reads every check's keys from the list as it is at each load. A
new kind of check is then its own module and one entry in ``harness.checks.CHECKS``.

Every parser takes ``(value, at, section)`` and returns the key's value or raises the
one-line ``path:line: field: problem`` error; ``section`` carries what a key needs of the
rest of the case (a baseline's or reference's program and inputs, the case's dtypes).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

from .model import Checks, Tolerance, Variant
from .validators import At, entries, require_bool, require_map
from .yaml_lines import YamlMap

VARIANT_KEYS = ("program", "params", "inputs")  # what a baseline or reference may give of its own


@dataclasses.dataclass(frozen=True)
class CheckSection:
    """What a ``checks:`` key may need of the rest of its case."""

    #: ``(value, at, keys) -> (Variant, mapping)``: a baseline or reference (the case's program
    #: and inputs unless it gives its own), and its mapping for the caller's own keys.
    variant: Callable[[Any, At, Sequence[str]], tuple[Variant, YamlMap]]
    #: ``(value, at) -> ((dtype, Tolerance), ...)``: a ``tolerances:`` for the case's dtypes.
    tolerances: Callable[[Any, At], tuple[tuple[str, Tolerance], ...]]


Parser = Callable[[Any, At, CheckSection], Any]


@dataclasses.dataclass(frozen=True)
class CheckKey:
    """One ``checks:`` key of a check: how its YAML value is read, and its value when absent."""

    parse: Parser
    default: Any = None


def parse_flag(value: Any, at: At, section: CheckSection) -> bool:
    """A key that is true or false (``golden``, ``eager``...)."""
    return require_bool(value, at)


# The list of checks, as a callable that returns it as it is now (a test may swap the list).
_checks: Optional[Callable[[], Sequence[Any]]] = None


def read_keys_from(checks: Callable[[], Sequence[Any]]) -> None:
    """Called once by ``harness.checks``: where the loader finds the checks whose keys it parses."""
    global _checks
    _checks = checks


def check_keys() -> dict[str, CheckKey]:
    """Every check's ``checks:`` keys, in the list's order (the order errors list them in)."""
    if _checks is None:
        raise RuntimeError("no checks to read the checks: keys of: import harness.checks before loading a suite (the plugin does)")
    keys: dict[str, CheckKey] = {}
    owners: dict[str, str] = {}
    for check in _checks():
        own: Mapping[str, CheckKey] = getattr(check, "keys", {})
        for key, spec in own.items():
            if key in keys:
                raise RuntimeError(f"checks key {key!r} is read by two checks: {owners[key]!r} and {check.name!r}")
            keys[key], owners[key] = spec, check.name
    return keys


def parse_checks(value: Any, at: At, section: CheckSection) -> Checks:
    """A case's ``checks:`` (None: every default) -> its :class:`Checks`, a value for every key."""
    keys = check_keys()
    values = {key: spec.default for key, spec in keys.items()}
    if value is not None:
        mapping = require_map(value, at, tuple(keys))
        values.update({key: keys[key].parse(item, item_at, section) for key, item, item_at in entries(mapping, at)})
    return Checks(tuple(values.items()))
