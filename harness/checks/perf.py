"""The perf check of a cell: its time against its perf golden and its ``faster_than``
baseline (harness/perf.py); each timed cell's line goes to the session's perf section."""

from __future__ import annotations

from typing import Any

from ..case import Case
from ..case.check_sections import VARIANT_KEYS, CheckKey, CheckSection
from ..case.model import PERF_TIMERS, FasterThan, PerfSpec
from ..case.validators import At, entries, parse_when, require_bool, require_choice, require_int, require_map, require_number
from ..matrix import MatrixCell
from ..perf import PerfGoldenStore, check_perf, perf_applies
from ..report import update_command
from .context import PERF_PROPERTY, CheckContext


PERF_KEYS = ("band", "warmup", "reps", "cuda_graph", "l2_flush", "when", "timer", "golden", "faster_than")


def _parse_perf(value: Any, at: At, section: CheckSection) -> PerfSpec:
    spec = require_map(value, at, PERF_KEYS)
    fields: dict[str, Any] = {"line": at.line}
    for key, item, item_at in entries(spec, at):
        if key == "band":
            fields[key] = require_number(item, item_at, minimum=0.0)
        elif key in ("warmup", "reps"):
            fields[key] = require_int(item, item_at, minimum=0 if key == "warmup" else 1)
        elif key in ("cuda_graph", "l2_flush", "golden"):
            fields[key] = require_bool(item, item_at)
        elif key == "timer":
            fields[key] = require_choice(item, item_at, PERF_TIMERS)
        elif key == "faster_than":
            baseline, mapping = section.variant(item, item_at, VARIANT_KEYS + ("by",))
            if "by" not in mapping:
                raise item_at.error("missing key 'by' (how many times faster than the baseline the case must be, e.g. 1.2)")
            by = require_number(mapping["by"], item_at.key(mapping, "by"), minimum=0.0)
            if not by > 0:
                raise item_at.key(mapping, "by").error("must be > 0", got=by)
            fields[key] = FasterThan(baseline=baseline, by=by, line=item_at.line)
        else:
            fields[key] = parse_when(item, item_at)
    if "timer" in fields and "cuda_graph" in fields and fields["cuda_graph"] != (fields["timer"] == "graph"):
        raise at.key(spec, "cuda_graph").error(f"contradicts timer: {fields['timer']} (cuda_graph: true is timer: graph; give one of them)")
    if fields.get("cuda_graph"):
        fields["timer"] = "graph"
    fields["cuda_graph"] = fields.get("timer") == "graph"
    if "golden" not in fields:
        fields["golden"] = "faster_than" not in fields  # a ratio needs no golden unless asked
    if not fields["golden"] and "faster_than" not in fields:
        raise at.error("checks nothing: golden: false and no faster_than (give a baseline, or keep the perf golden)")
    return PerfSpec(**fields)


class PerfCheck:
    """``checks.perf``: a cell timed by its device's timer (the run took the site's timer)."""

    name = "perf"
    per_example = False  # a time compares only at fixed shapes
    keys = {"perf": CheckKey(_parse_perf)}

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
        store = PerfGoldenStore(
            golden_root=settings.golden_root, suite_key=settings.project.suite_key(ctx.case.suite_path),
            shown=settings.shown, write=settings.update_golden, write_if_missing=settings.add_missing_goldens,
            refresh_command=update_command(site.nodeid, settings.rerun_options),
        )
        verdict = check_perf(run.perf, site.timer, ctx.case, ctx.cell, store, baseline=run.perf_baseline)
        site.record(PERF_PROPERTY, f"{site.nodeid}: {verdict.note}")
        return [] if verdict.ok else [verdict.failure]
