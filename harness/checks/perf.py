"""The perf check of a cell: its time against its perf golden and its ``faster_than``
baseline (harness/perf.py); each timed cell's line goes to the session's perf section."""

from __future__ import annotations

from ..case import Case
from ..matrix import MatrixCell
from ..perf import check_perf, perf_applies
from ..report import update_command
from .context import PERF_PROPERTY, CheckContext


class PerfCheck:
    """``checks.perf``: a cell timed by its device's timer (the run took the site's timer)."""

    name = "perf"
    per_example = False  # a time compares only at fixed shapes

    def applies(self, case: Case, cell: MatrixCell) -> bool:
        return perf_applies(case, cell)

    def run(self, ctx: CheckContext) -> list[str]:
        site, run = ctx.site, ctx.run
        if site.not_timed is not None:
            site.record(PERF_PROPERTY, f"{site.nodeid}: not timed: {site.not_timed}")
            return []
        if site.timer is None or run.perf is None:
            return []
        settings = site.settings
        verdict = check_perf(
            run.perf, site.timer, ctx.case, ctx.cell, golden_root=settings.golden_root,
            suite_key=settings.project.suite_key(ctx.case.suite_path), shown=settings.shown,
            write=settings.update_golden, write_if_missing=settings.add_missing_goldens,
            refresh_command=update_command(site.nodeid, settings.rerun_options), baseline=run.perf_baseline,
        )
        site.record(PERF_PROPERTY, f"{site.nodeid}: {verdict.note}")
        return [] if verdict.ok else [verdict.failure]
