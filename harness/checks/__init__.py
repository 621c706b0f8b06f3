"""The checks of one cell's run, as one ordered list.

Each check is a small object (:class:`~harness.checks.context.Check`): ``applies(case,
cell)`` says whether the case asks for it in that cell, ``run(ctx)`` judges the run and
returns its failures as report sections. ``CaseItem`` runs :data:`CHECKS` in order;
``FuzzItem`` runs those that hold at any shape (``per_example``) on each example;
``--bisect`` reruns a cell against the eager check alone (:func:`compare_with_eager`).

A new kind of check is one module here and one entry in :data:`CHECKS`: the module holds
its ``keys`` (each ``checks:`` key it reads: parser and default) beside ``applies`` and
``run``. The loader sits below this package, so it cannot import the checks; this package
hands it :data:`CHECKS` instead (``read_keys_from``, below), read afresh at each load.

The order is the report's: compiled vs eager, a fuzz case's reference, the golden (with
what it says of eager), ``references``, FileCheck, counters and graphs, perf.
"""

from __future__ import annotations

from ..case.check_sections import read_keys_from
from .context import (  # noqa: F401
    GOLDEN_PROPERTY,
    NOTE_PROPERTY,
    PERF_PROPERTY,
    REPAIR_PROPERTY,
    CellSite,
    Check,
    CheckContext,
    Settings,
    display_path,
)
from .counters import CountersCheck, counter_sections, recompile_failures  # noqa: F401
from .filecheck import FileCheckCheck, filecheck_sections, writes_check_file  # noqa: F401
from .golden import GoldenCheck
from .numeric import (  # noqa: F401
    EagerCheck,
    FuzzReferenceCheck,
    ReferencesCheck,
    compare_eager_with_float64,
    compare_with_eager,
    compare_with_reference,
    compare_with_references,
)
from .perf import PerfCheck

GOLDEN = GoldenCheck()
PERF = PerfCheck()
CHECKS: tuple[Check, ...] = (
    EagerCheck(), FuzzReferenceCheck(), GOLDEN, ReferencesCheck(), FileCheckCheck(), CountersCheck(), PERF,
)
read_keys_from(lambda: CHECKS)  # the list as it is at each load: a test may swap it


def run_checks(ctx: CheckContext, per_example: bool = False) -> list[str]:
    """Every check of :data:`CHECKS` that applies to the cell (``per_example``: that judges a
    fuzz example), in order; their failure sections. The list is read at each call."""
    sections: list[str] = []
    for check in CHECKS:
        if per_example and not check.per_example:
            continue
        if check.applies(ctx.case, ctx.cell):
            sections += check.run(ctx)
    return sections
