"""The golden check of a cell: eager's and the compiled outputs against the stored golden
(harness/golden.py), written first under --update-golden / --add-missing-goldens; what a
failing side got is kept beside it as ``.obtained`` files."""

from __future__ import annotations

import os
from typing import Any

from ..case import Case
from ..case.check_sections import CheckKey, CheckSection, parse_flag
from ..case.validators import At, require_int
from ..compare import Comparison, check_sampled_shapes, compare_outputs
from ..core.sample import sample_for_golden
from ..golden import (
    GoldenError,
    GoldenMissing,
    GoldenPaths,
    GoldenWriteError,
    load_golden,
    obtained_path,
    read_sidecar,
    sidecar_for,
    write_golden,
    write_obtained,
)
from ..matrix import MatrixCell
from ..report import golden_verdict, update_command
from .context import GOLDEN_PROPERTY, REPAIR_PROPERTY, CellSite, CheckContext, harness_command


def _sample_size(value: Any, at: At, section: CheckSection) -> int:
    return require_int(value, at, minimum=1)


class GoldenCheck:
    """``checks.golden``: the cell's outputs against the golden of its (case, device, dtype)."""

    name = "golden"
    per_example = False  # a fuzz example's shapes vary: there is no golden to hold it to
    keys = {
        "golden": CheckKey(parse_flag, default=True),
        "golden_sample": CheckKey(_sample_size),  # store only this many spread-out elements of larger outputs
    }

    def applies(self, case: Case, cell: MatrixCell) -> bool:
        return case.checks.golden

    def run(self, ctx: CheckContext) -> list[str]:
        site = ctx.site
        sections, comparisons = _check_golden(ctx, site)
        ctx.comparisons += comparisons
        if not comparisons:  # a missing or damaged golden has none
            return sections
        eager_vs_golden, compiled_vs_golden = comparisons
        ctx.eager_moved = not eager_vs_golden.ok
        sections += [_shown(c, eager_vs_golden is c, site) for c in comparisons if not c.ok]
        verdict = golden_verdict(eager_vs_golden.ok, compiled_vs_golden.ok, ctx.compiled_matches_eager)
        return sections + ([verdict] if verdict else [])


def _shown(comparison: Comparison, eager_side: bool, site: CellSite) -> str:
    """A failed comparison's table; eager vs golden's only in the golden's writer cell (it is
    the same in every backend's cell of the case), elsewhere its first line and where the table is."""
    if not eager_side or site.golden_writer in ("", site.nodeid):
        return comparison.report
    lines = comparison.report.splitlines()
    first = lines[1].strip() if len(lines) > 1 else ""
    return f"{comparison.label}: {first}\n  (eager is the same in every backend's cell: the table is in the report of {site.golden_writer})"


def _check_golden(ctx: CheckContext, site: CellSite) -> tuple[list[str], list[Comparison]]:
    """Failure sections and the (eager vs golden, compiled vs golden) comparisons; writes
    the golden first under --update-golden / --add-missing-goldens."""
    case, cell, run, settings = ctx.case, ctx.cell, ctx.run, site.settings
    paths = settings.golden_paths(case, cell.device, cell.dtype)
    shown = settings.shown(paths.data)
    sample = case.checks.golden_sample
    eager = sample_for_golden(run.eager, sample)
    compiled = sample_for_golden(run.compiled, sample)
    shown_label = f"{shown} ({sample} fixed elements of outputs larger than that)" if sample is not None else shown
    update = update_command(site.case_nodeid, settings.rerun_options)
    notes: list[str] = []
    missing = not paths.data.exists() and not paths.sidecar.exists()
    if settings.update_golden or (settings.add_missing_goldens and missing):
        if not site.writes_golden:
            return [], []  # the writer cell of this golden compares; reading now could race its write
        sidecar = sidecar_for(
            eager, run.strides, suite=case.display_path, case=case.name,
            device=cell.device, dtype=cell.dtype, backend="eager",
            sampled_from={n: list(run.eager[n].shape) for n in eager if eager[n].shape != run.eager[n].shape},
        )
        try:
            written = write_golden(paths, eager, sidecar)
        except GoldenWriteError as exc:
            return [f"golden not written: {_shown_error(exc, site)}"], []
        notes += written.recovered
        site.record(GOLDEN_PROPERTY, f"{site.case_nodeid}: {written.describe().replace(str(paths.data), shown)}")
    try:
        golden = load_golden(paths, suite=case.display_path, notes=notes)
    except GoldenMissing:
        return [f"golden missing: {shown}{_renamed_hint(paths, site, case)}\n  make it (from eager on {cell.device}) with:\n    {update}"], []
    except GoldenError as exc:
        return [f"golden unusable: {_shown_error(exc, site)}\n  nothing was overwritten; to regenerate it:\n    {update}"], []
    finally:
        for note in notes:
            site.record(REPAIR_PROPERTY, note.replace(str(settings.rootdir) + os.sep, ""))
    tolerance = case.tolerance_for(cell.dtype)
    device_golden = {name: t.to(cell.device) for name, t in golden.items()}
    sampled_from = {n: e["sampled_from"] for n, e in read_sidecar(paths.sidecar)["tensors"].items() if "sampled_from" in e}
    comparisons = [
        check_sampled_shapes(sampled_from, run.eager, f"eager vs golden {shown_label}")
        or compare_outputs(device_golden, eager, tolerance, label=f"eager vs golden {shown_label}"),
        check_sampled_shapes(sampled_from, run.compiled, f"compiled ({cell.backend}) vs golden {shown_label}")
        or compare_outputs(device_golden, compiled, tolerance, label=f"compiled ({cell.backend}) vs golden {shown_label}"),
    ]
    sides = {None: (eager, comparisons[0].ok), cell.backend: (compiled, comparisons[1].ok)}
    return _keep_obtained(paths, site, sides), comparisons


def _keep_obtained(paths: GoldenPaths, site: CellSite, sides: dict) -> list[str]:
    """Beside a golden that a side (eager: None, or a backend) failed, that side's outputs as
    ``.obtained`` files; a side that matches removes its old one. Eager's is the writer cell's."""
    lines = []
    for backend, (outputs, ok) in sides.items():
        if backend is None and site.golden_writer not in ("", site.nodeid):
            continue
        path = obtained_path(paths, backend)
        if ok:
            path.unlink(missing_ok=True)
            continue
        problem = write_obtained(path, outputs)
        what = "eager's outputs" if backend is None else f"the {backend} outputs"
        diff = f"{harness_command()} golden diff {site.settings.shown(paths.data)}" + ("" if backend is None else f" --backend {backend}")
        lines.append(f"obtained: {problem}" if problem else f"obtained ({what}): {site.settings.shown(path)}\n  compare: {diff}")
    return lines


def _renamed_hint(paths: GoldenPaths, site: CellSite, case: Case) -> str:
    """A missing golden beside one of a case the suite no longer has: the case was likely renamed."""
    try:
        others = sorted(d for d in paths.case_dir.parent.iterdir() if d.is_dir() and not d.is_symlink() and d.name not in site.case_names)
    except OSError:
        return ""
    orphans = [d for d in others if (d / paths.data.name).is_file()]
    if not orphans:
        return ""
    old, shown = orphans[0], site.settings.shown
    return (
        f"\n  renamed? {shown(old / paths.data.name)} is the golden of case {old.name!r}, "
        f"which {case.display_path} no longer has; to keep it: "
        f"mv {shown(old)} {shown(paths.case_dir)}"
    )


def _shown_error(exc: GoldenError, site: CellSite) -> str:
    return str(exc).replace(str(exc.path), site.settings.shown(exc.path))
