"""The counters check of a cell: ``checks.counters``, ``graphs`` and ``graph_breaks``
(harness/counters.py) and ``recompiles``, reported as one section."""

from __future__ import annotations

from ..case import Case
from ..counters import check_counters, check_graphs
from ..matrix import MatrixCell
from ..run import CellRun
from .context import CheckContext


def counter_sections(case: Case, cell: MatrixCell, run: CellRun) -> list[str]:
    """The ``checks.counters``, ``graphs`` and ``graph_breaks`` failures, as one section."""
    failures = check_counters(case.checks.counters, run.counters, cell, case.display_path)
    failures += check_graphs(case.checks, run.graphs, run.graph_breaks, run.graph_break_reasons, case.line, case.display_path)
    failures += recompile_failures(case, cell, run)
    return ["counters and graphs:\n" + "\n".join("  " + f for f in failures)] if failures else []


def recompile_failures(case: Case, cell: MatrixCell, run: CellRun) -> list[str]:
    """``checks.recompiles`` of the cell's ``dynamic:`` mode against the calls that compiled anew."""
    mode = getattr(cell, "dynamic", None)
    failures = []
    for bound in case.checks.recompiles:
        if bound.dynamic is not None and bound.dynamic != mode:
            continue
        if not bound.holds(run.recompiles):
            compiled_by = sorted({index for index, _ in run.graph_codes})
            failures.append(
                f"{case.display_path}:{bound.line}: recompiles: {run.recompiles}, expected {bound.op} {bound.count} "
                f"(calls that compiled, counting from 0: {', '.join(map(str, compiled_by)) or 'none'})"
            )
    return failures


class CountersCheck:
    """Counters, graphs, graph breaks and recompiles: every cell (``graphs`` and
    ``graph_breaks`` have defaults, so each cell asserts how it compiled)."""

    name = "counters"
    per_example = True

    def applies(self, case: Case, cell: MatrixCell) -> bool:
        return True

    def run(self, ctx: CheckContext) -> list[str]:
        return counter_sections(ctx.case, ctx.cell, ctx.run)
