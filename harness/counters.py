"""Counter expectations (exact, >=, <= on any torch._dynamo.utils.counters key) and graph accounting.

A case also asserts that it compiled as declared: ``checks.graphs`` (default 1) is the
number of graphs Dynamo compiled (``counters["stats"]["unique_graphs"]``) and
``checks.graph_breaks`` (default 0) the number of graph breaks, so that a silent fallback
to eager or an unexpected break fails the cell with the break reasons.
"""

from __future__ import annotations

from .case import Checks, CounterExpectation
from .matrix import MatrixCell


def describe_bound(expectation: CounterExpectation) -> str:
    if expectation.equals is not None:
        return f"== {expectation.equals}"
    parts = []
    if expectation.at_least is not None:
        parts.append(f">= {expectation.at_least}")
    if expectation.at_most is not None:
        parts.append(f"<= {expectation.at_most}")
    return " and ".join(parts)


def counter_holds(expectation: CounterExpectation, value: int) -> bool:
    if expectation.equals is not None:
        return value == expectation.equals
    if expectation.at_least is not None and value < expectation.at_least:
        return False
    if expectation.at_most is not None and value > expectation.at_most:
        return False
    return True


def _nonzero_summary(snapshot: dict[str, dict[str, int]], group: str) -> str:
    values = snapshot.get(group, {})
    shown = [f"{group}.{name}={value}" for name, value in sorted(values.items()) if value]
    return ", ".join(shown[:12]) or f"no {group}.* counter moved"


def check_counters(
    expectations: tuple[CounterExpectation, ...],
    snapshot: dict[str, dict[str, int]],
    cell: MatrixCell,
    suite_path: str,
) -> list[str]:
    """One failure line per unmet expectation that applies to ``cell``."""
    failures = []
    for expectation in expectations:
        if not expectation.when.applies(cell.backend, cell.device, cell.dtype):
            continue
        value = snapshot.get(expectation.group, {}).get(expectation.name, 0)
        if not counter_holds(expectation, value):
            failures.append(
                f"{suite_path}:{expectation.line}: counter {expectation.key}: expected {describe_bound(expectation)}, "
                f"got {value} (in this cell: {_nonzero_summary(snapshot, expectation.group)})"
            )
    return failures


def check_graphs(checks: Checks, graphs: int, graph_breaks: int, reasons: list[str], case_line: int, suite_path: str) -> list[str]:
    failures = []
    if checks.graphs is not None and graphs != checks.graphs:
        hint = " (0 graphs: Dynamo compiled nothing and ran the program eagerly)" if graphs == 0 else ""
        failures.append(f"{suite_path}:{case_line}: graphs: expected {checks.graphs} compiled graph(s), got {graphs}{hint}")
    if checks.graph_breaks is not None and graph_breaks != checks.graph_breaks:
        why = "; ".join(reasons[:5]) or "no reason recorded"
        failures.append(
            f"{suite_path}:{case_line}: graph_breaks: expected {checks.graph_breaks}, got {graph_breaks} ({why})"
        )
    return failures

