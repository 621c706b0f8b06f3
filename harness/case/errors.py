"""The one error a suite file gets: ``path:line: field: problem (got X; allowed A, B)``."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Optional

import pytest


class CaseFormatError(pytest.Collector.CollectError):
    """One problem in a suite file, located by file, line and field."""

    def __init__(
        self,
        path: str,
        line: int,
        field: str,
        problem: str,
        got: Any = dataclasses.MISSING,
        allowed: Optional[Iterable[Any]] = None,
    ) -> None:
        detail = []
        if got is not dataclasses.MISSING:
            detail.append(f"got {show(got)}")
        if allowed is not None:
            detail.append("allowed " + ", ".join(str(a) for a in allowed))
        suffix = f" ({'; '.join(detail)})" if detail else ""
        self.path, self.line, self.field, self.problem = path, line, field, problem
        super().__init__(f"{path}:{line}: {field}: {problem}{suffix}")


class SuiteErrors(CaseFormatError):
    """Every problem found in one suite file (one a case: a case's first error stops that case
    only), one line each, in file order; ``errors`` holds them, the attributes are the first's."""

    def __init__(self, errors: list[CaseFormatError]) -> None:
        first = errors[0]
        self.errors = list(errors)
        self.path, self.line, self.field, self.problem = first.path, first.line, first.field, first.problem
        pytest.Collector.CollectError.__init__(self, "\n".join(str(e) for e in errors))


def show(value: Any) -> str:
    """``value`` as an error message quotes it: a short list literally, a mapping or long list by kind."""
    if isinstance(value, dict):  # a YamlMap too
        return "a mapping"
    if isinstance(value, list):
        if len(value) <= 8 and all(isinstance(v, (str, int, float, bool, type(None))) for v in value):
            return repr(list(value))
        return "a list"
    return repr(value)
