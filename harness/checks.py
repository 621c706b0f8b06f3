"""The checks of one cell's run, written once: compiled vs eager, counters and graphs, FileCheck.

``CaseItem`` (items.py), the fuzz item (fuzz.py) and ``--bisect`` (bisect.py) all judge a
run through these, so a cell, each fuzz example of it and each bisect rerun are held to
the same rules. Each returns report sections (empty: the check passed); goldens stay with
the item (they need the session's golden directory and write mode).
"""

from __future__ import annotations

from typing import Callable

from .case import Case
from .compare import Comparison, compare_outputs
from .counters import check_counters, check_graphs
from .filecheck import prefixes_for, run_filecheck
from .matrix import MatrixCell
from .run import CellRun


def compare_with_eager(case: Case, cell: MatrixCell, run: CellRun, *, label: str, float64: bool = True) -> Comparison:
    """Compiled outputs against eager's of the same run, within the case's tolerance for the
    cell's dtype; ``float64``: with the ``float64_factor`` check where the case declares it."""
    return compare_outputs(
        run.eager, run.compiled, case.tolerance_for(cell.dtype), label=label,
        float64=run.float64 if float64 else None, eager=run.eager if float64 else None,
    )


def counter_sections(case: Case, cell: MatrixCell, run: CellRun) -> list[str]:
    """The ``checks.counters``, ``graphs`` and ``graph_breaks`` failures, as one section."""
    failures = check_counters(case.checks.counters, run.counters, cell, case.display_path)
    failures += check_graphs(case.checks, run.graphs, run.graph_breaks, run.graph_break_reasons, case.line, case.display_path)
    return ["counters and graphs:\n" + "\n".join("  " + f for f in failures)] if failures else []


def filecheck_sections(
    case: Case, cell: MatrixCell, run: CellRun, dump: Callable[[str, str], str], note: Callable[[str], None],
) -> list[str]:
    """One section per FileCheck block of the cell that fails; ``dump(target, text)`` saves the
    checked text where a person can open it and returns its path; ``note(text)`` hears of a
    block whose target this run could not produce (it is not run)."""
    failures = []
    for block in case.checks.filecheck:
        if not block.when.applies(cell.backend, cell.device, cell.dtype):
            continue
        if block.target in run.unavailable:
            note(f"FileCheck on {block.target} not run: {run.unavailable[block.target]}")
            continue
        text = run.artifacts[block.target]
        result = run_filecheck(
            block.check, text,
            prefixes=prefixes_for(cell.backend, cell.device),
            variables={"DEVICE": cell.device, "DTYPE": cell.dtype, "BACKEND": cell.backend},
            check_path=case.display_path,
            first_check_line=block.first_check_line,
            input_label=block.target,
            input_dump=None,
        )
        if not result.ok:
            failures.append(result.report + f"\n  the whole {block.target}: {dump(block.target, text)}")
    return failures
