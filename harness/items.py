"""pytest nodes: a suite file is a ``CaseFile``; each matrix cell of each case is a ``CaseItem``
(a ``FuzzItem`` for a fuzz case).

A ``CaseItem`` runs its cell and then every check the case declares, collecting all
failures (golden, eager, FileCheck, counters, graphs) into one report instead of
stopping at the first. A ``FuzzItem`` runs the search of harness/fuzz.py over its cell,
judging each example with the same checks, and reports the smallest failing one.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import pytest

from .case import Case, CaseFormatError, load_suite
from .compare import Comparison, check_sampled_shapes, compare_outputs
from .checks import compare_with_eager, compare_with_reference, compare_with_references, counter_sections, filecheck_sections
from .core.sample import sample_for_golden
from .fuzz import concretize, describe_example, pinned_case_yaml, search
from .golden import (
    GoldenError,
    obtained_path,
    write_obtained,
    GoldenMissing,
    GoldenPaths,
    GoldenWriteError,
    golden_paths,
    load_golden,
    read_sidecar,
    sidecar_for,
    write_golden,
)
from .matrix import MatrixCell, Narrowing, current_device_index, expand_matrix
from .perf import check_perf, perf_applies, timer_for_cell
from .project import SUITE_SUFFIXES, Project
from .report import SummaryRow, format_cell_failure, golden_verdict, rerun_command, update_command
from .run import CellRun, run_cell

GOLDEN_PROPERTY = "quantcheck_golden"
REPAIR_PROPERTY = "quantcheck_golden_repair"  # an interrupted write, finished or undone by this cell
ROW_PROPERTY = "quantcheck_row"
PERF_PROPERTY = "quantcheck_perf"
NOTE_PROPERTY = "quantcheck_note"  # a check that did not run in this cell, and why


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the command line and ini file decided for this session (see plugin.py)."""

    rootdir: Path
    golden_root: Path
    narrowing: Narrowing
    update_golden: bool
    project: Project
    add_missing_goldens: bool = False  # write goldens that do not exist yet, compare the rest
    perf: bool = True  # time the cells of cases with checks.perf (--no-perf: not)
    rerun_options: tuple[str, ...] = ()  # the user's own options, repeated in rerun hints
    update_checks: bool = False  # --update-checks: FileCheck blocks' checks files written from this run

    def golden_paths(self, case: Case, device: str, dtype: str) -> GoldenPaths:
        return golden_paths(self.golden_root, self.project.suite_key(case.suite_path), case.name, device, dtype)


SETTINGS_KEY = pytest.StashKey[Settings]()
CELL_RESULT_KEY = pytest.StashKey[dict]()


class CellFailure(Exception):
    """A cell whose checks failed; its message is the complete report."""


def display_path(path: Path, rootdir: Path) -> str:
    try:
        return str(path.relative_to(rootdir))
    except ValueError:
        return str(path)


def harness_command() -> str:
    """How this process's harness is run: ``python -m quantcheck`` installed, ``python -m harness`` in a checkout."""
    return "python -m quantcheck" if __package__.startswith("quantcheck.") else f"python -m {__package__}"


class CaseFile(pytest.File):
    def collect(self):
        settings = self.config.stash[SETTINGS_KEY]
        shown = display_path(self.path, settings.rootdir)
        try:
            _check_golden_key(self.path, shown, settings)
            suite = load_suite(self.path, shown)
        except CaseFormatError as exc:
            # One error item, not a collection error: pytest stops the whole session at a
            # collection error, and one bad suite must not keep the others from running.
            yield SuiteError.from_parent(self, name=SuiteError.NAME, error=exc)
            return
        self.case_names = frozenset(case.name for case in suite.cases)
        for case in suite.cases:
            item_class = CaseItem if case.fuzz is None else FuzzItem
            for cell in expand_matrix(case, settings.narrowing):
                name = f"{case.name}[{cell.id}]"
                # The node id given as a string: pytest >= 9.2 parses it into (path, names,
                # params) as it does a parametrized function's, which is how --lf matches
                # the ids it stored; a name with brackets alone would not compare equal.
                yield item_class.from_parent(self, name=name, nodeid=f"{self.nodeid}::{name}", case=case, cell=cell)


class SuiteError(pytest.Item):
    """A suite file that does not load: reported as one error (its lines), the session goes on."""

    NAME = "load"

    def __init__(self, *, error: CaseFormatError, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def setup(self) -> None:
        # In setup, so that pytest counts it an error, not a failed test; pytrace=False: the lines alone.
        pytest.fail(str(self.error), pytrace=False)

    def runtest(self) -> None:
        raise AssertionError("unreachable: setup raised")

    def reportinfo(self):
        return self.path, self.error.line - 1, f"{self.path.name}: does not load"


def _check_golden_key(path: Path, shown: str, settings: Settings) -> None:
    """A suite needs a golden directory of its own: inside the suites root, no twin suffix."""
    project = settings.project
    try:
        key = project.suite_key(path)
    except ValueError:
        raise CaseFormatError(
            shown, 1, "file",
            f"outside the suites root {display_path(project.suites_root, settings.rootdir)}/, so its goldens have no path; "
            "set quantcheck_suites_root (ini) or suites_root in [tool.quantcheck]",
        ) from None
    twins = [p for p in project.suite_files_for_key(key) if p.resolve() != path.resolve()]
    if twins:
        golden_dir = display_path(settings.golden_root / key, settings.rootdir)
        raise CaseFormatError(
            shown, 1, "file",
            f"shares its golden directory {golden_dir}/ with {display_path(twins[0], settings.rootdir)}; "
            f"rename one of them (one suite per name and directory, {' or '.join(SUITE_SUFFIXES)})",
        )


class CaseItem(pytest.Item):
    def __init__(self, *, case: Case, cell: MatrixCell, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.cell = cell
        self.writes_golden = False  # set at collection end: one writer per golden file
        self.golden_writer = ""  # that writer's node id: its report holds the eager vs golden table
        self._add_marks()

    def _add_marks(self) -> None:
        if self.cell.skip_reason:
            self.add_marker(pytest.mark.skip(reason=self.cell.skip_reason))
        for mark in self.case.marks:
            if not mark.when.applies(self.cell.backend, self.cell.device, self.cell.dtype):
                continue
            if mark.kind == "slow":
                self.add_marker(pytest.mark.slow)
            elif mark.kind == "skip":
                self.add_marker(pytest.mark.skip(reason=mark.reason))
            elif mark.kind == "xfail":
                self.add_marker(pytest.mark.xfail(reason=mark.reason, strict=mark.strict))

    @property
    def case_nodeid(self) -> str:
        return f"{self.parent.nodeid}::{self.case.name}"

    @property
    def golden_key(self) -> tuple[str, str, str, str]:
        return (str(self.case.suite_path), self.case.name, self.cell.device, self.cell.dtype)

    def reportinfo(self):
        return self.path, self.case.line - 1, f"{self.case.name}[{self.cell.id}]"

    # ----------------------------------------------------------------- the checks

    def runtest(self) -> None:
        settings = self.config.stash[SETTINGS_KEY]
        timer, not_timed = (
            timer_for_cell(self.case, self.cell, settings.perf, self._xdist("workercount", 0))
            if perf_applies(self.case, self.cell) else (None, None)
        )
        run = run_cell(self.case, self.cell, timer=timer)
        tolerance = self.case.tolerance_for(self.cell.dtype)
        sections: list[str] = []
        comparisons: list[Comparison] = []
        eager_moved = False  # eager itself differs from the golden: the one case a new golden may be due
        eager_vs_golden = None
        golden_note = ""

        if self.case.checks.eager:
            comparisons.append(
                compare_with_eager(self.case, self.cell, run, label=f"compiled ({self.cell.backend}) vs eager, same run, same inputs")
            )
        compiled_matches_eager = bool(comparisons) and comparisons[0].ok
        if self.case.checks.golden:
            golden_sections, golden_comparisons = self._check_golden(run, settings, tolerance)
            sections += golden_sections
            comparisons += golden_comparisons
            if golden_comparisons:  # a missing or damaged golden has none
                eager_vs_golden, compiled_vs_golden = golden_comparisons
                eager_moved = not eager_vs_golden.ok
                checked_eager = compiled_matches_eager if self.case.checks.eager else None
                golden_note = golden_verdict(eager_vs_golden.ok, compiled_vs_golden.ok, checked_eager)
        sections += [self._shown(c, eager_vs_golden) for c in comparisons if not c.ok]
        # Not in the summary's worst error: a reference (the dense model) differs by design.
        sections += [c.report for c in compare_with_references(self.case, self.cell, run) if not c.ok]
        if golden_note:
            sections.append(golden_note)
        sections += filecheck_sections(
            self.case, self.cell, run, self._dump_artifact, self._note, update_checks=settings.update_checks, source=self.nodeid,
        )
        sections += counter_sections(self.case, self.cell, run)
        sections += self._check_perf(run, timer, not_timed, settings)

        self.stash[CELL_RESULT_KEY] = {
            "max_abs": max((c.max_abs for c in comparisons), default=None),
            "max_rel": max((c.max_rel for c in comparisons), default=None),
            "seconds": sum(run.seconds.values()),
            "perf_us": run.perf.median_us if run.perf is not None else None,
            "run": run,  # for diagnostics.py (report pictures); it drops it once the cell is reported
        }
        if sections:
            title = f"{self.case.display_path}:{self.case.line}: case {self.case.name!r} [{self.cell.id}] failed"
            raise CellFailure(format_cell_failure(title, sections, self.nodeid, self.case_nodeid, eager_moved, settings.rerun_options))

    def _shown(self, comparison: Comparison, eager_vs_golden: Optional[Comparison]) -> str:
        """A failed comparison's table; eager vs golden's only in the golden's writer cell (it is
        the same in every backend's cell of the case), elsewhere its first line and where the table is."""
        if comparison is not eager_vs_golden or self.golden_writer in ("", self.nodeid):
            return comparison.report
        lines = comparison.report.splitlines()
        first = lines[1].strip() if len(lines) > 1 else ""
        return f"{comparison.label}: {first}\n  (eager is the same in every backend's cell: the table is in the report of {self.golden_writer})"

    def _check_golden(self, run: CellRun, settings: Settings, tolerance) -> tuple[list[str], list[Comparison]]:
        """Failure sections and the (eager vs golden, compiled vs golden) comparisons; writes
        the golden first under --update-golden / --add-missing-goldens."""
        paths = settings.golden_paths(self.case, self.cell.device, self.cell.dtype)
        shown = display_path(paths.data, settings.rootdir)
        sample = self.case.checks.golden_sample
        eager = sample_for_golden(run.eager, sample)
        compiled = sample_for_golden(run.compiled, sample)
        if sample is not None:
            shown_label = f"{shown} ({sample} fixed elements of outputs larger than that)"
        else:
            shown_label = shown
        update = update_command(self.case_nodeid, settings.rerun_options)
        notes: list[str] = []
        missing = not paths.data.exists() and not paths.sidecar.exists()
        if settings.update_golden or (settings.add_missing_goldens and missing):
            if not self.writes_golden:
                return [], []  # the writer cell of this golden compares; reading now could race its write
            sidecar = sidecar_for(
                eager, run.strides, suite=self.case.display_path, case=self.case.name,
                device=self.cell.device, dtype=self.cell.dtype, backend="eager",
                sampled_from={n: list(run.eager[n].shape) for n in eager if eager[n].shape != run.eager[n].shape},
            )
            try:
                written = write_golden(paths, eager, sidecar)
            except GoldenWriteError as exc:
                return [f"golden not written: {self._shown_error(exc, settings)}"], []
            notes += written.recovered
            self.user_properties.append((GOLDEN_PROPERTY, f"{self.case_nodeid}: {written.describe().replace(str(paths.data), shown)}"))
        try:
            golden = load_golden(paths, suite=self.case.display_path, notes=notes)
        except GoldenMissing:
            return [f"golden missing: {shown}{self._renamed_hint(paths, settings)}\n  make it (from eager on {self.cell.device}) with:\n    {update}"], []
        except GoldenError as exc:
            return [f"golden unusable: {self._shown_error(exc, settings)}\n  nothing was overwritten; to regenerate it:\n    {update}"], []
        finally:
            for note in notes:
                self.user_properties.append((REPAIR_PROPERTY, note.replace(str(settings.rootdir) + os.sep, "")))
        device_golden = {name: t.to(self.cell.device) for name, t in golden.items()}
        sampled_from = {n: e["sampled_from"] for n, e in read_sidecar(paths.sidecar)["tensors"].items() if "sampled_from" in e}
        comparisons = [
            check_sampled_shapes(sampled_from, run.eager, f"eager vs golden {shown_label}")
            or compare_outputs(device_golden, eager, tolerance, label=f"eager vs golden {shown_label}"),
            check_sampled_shapes(sampled_from, run.compiled, f"compiled ({self.cell.backend}) vs golden {shown_label}")
            or compare_outputs(device_golden, compiled, tolerance, label=f"compiled ({self.cell.backend}) vs golden {shown_label}"),
        ]
        return self._keep_obtained(paths, settings, {None: (eager, comparisons[0].ok), self.cell.backend: (compiled, comparisons[1].ok)}), comparisons

    def _keep_obtained(self, paths: GoldenPaths, settings: Settings, sides: dict) -> list[str]:
        """Beside a golden that a side (eager: None, or a backend) failed, that side's outputs as
        ``.obtained`` files; a side that matches removes its old one. Eager's is the writer cell's."""
        lines = []
        for backend, (outputs, ok) in sides.items():
            if backend is None and self.golden_writer not in ("", self.nodeid):
                continue
            path = obtained_path(paths, backend)
            if ok:
                path.unlink(missing_ok=True)
                continue
            problem = write_obtained(path, outputs)
            shown = display_path(path, settings.rootdir)
            what = "eager's outputs" if backend is None else f"the {backend} outputs"
            diff = f"{harness_command()} golden diff {display_path(paths.data, settings.rootdir)}" + ("" if backend is None else f" --backend {backend}")
            lines.append(f"obtained: {problem}" if problem else f"obtained ({what}): {shown}\n  compare: {diff}")
        return lines

    def _renamed_hint(self, paths: GoldenPaths, settings: Settings) -> str:
        """A missing golden beside one of a case the suite no longer has: the case was likely renamed."""
        suite_dir = paths.case_dir.parent
        names = getattr(self.parent, "case_names", frozenset())
        try:
            others = sorted(d for d in suite_dir.iterdir() if d.is_dir() and not d.is_symlink() and d.name not in names)
        except OSError:
            return ""
        orphans = [d for d in others if (d / paths.data.name).is_file()]
        if not orphans:
            return ""
        old = orphans[0]
        return (
            f"\n  renamed? {display_path(old / paths.data.name, settings.rootdir)} is the golden of case {old.name!r}, "
            f"which {self.case.display_path} no longer has; to keep it: "
            f"mv {display_path(old, settings.rootdir)} {display_path(paths.case_dir, settings.rootdir)}"
        )

    def _check_perf(self, run: CellRun, timer, not_timed: Optional[str], settings: Settings) -> list[str]:
        """The perf golden of this cell (harness/perf.py); notes go to the session's perf section."""
        if not_timed is not None:
            self.user_properties.append((PERF_PROPERTY, f"{self.nodeid}: not timed: {not_timed}"))
            return []
        if timer is None or run.perf is None:
            return []
        verdict = check_perf(
            run.perf, timer, self.case, self.cell, golden_root=settings.golden_root,
            suite_key=settings.project.suite_key(self.case.suite_path),
            shown=lambda path: display_path(path, settings.rootdir),
            write=settings.update_golden, write_if_missing=settings.add_missing_goldens,
            refresh_command=update_command(self.nodeid, settings.rerun_options), baseline=run.perf_baseline,
        )
        self.user_properties.append((PERF_PROPERTY, f"{self.nodeid}: {verdict.note}"))
        return [] if verdict.ok else [verdict.failure]

    @staticmethod
    def _shown_error(exc: GoldenError, settings: Settings) -> str:
        return str(exc).replace(str(exc.path), display_path(exc.path, settings.rootdir))

    def _note(self, note: str) -> None:
        """A line for the session's notes (a FileCheck target this machine cannot produce, say)."""
        self.user_properties.append((NOTE_PROPERTY, f"{self.nodeid}: {note}"))

    def _dump_artifact(self, target: str, text: str) -> str:
        """Write the FileCheck input where a person can open it; returns the path."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.nodeid)
        directory = self._run_temp_dir() / safe
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{target}.txt"
        path.write_text(text, encoding="utf-8")
        return str(path)

    def _run_temp_dir(self) -> Path:
        """This run's own temporary directory (pytest's basetemp: one per run, per xdist worker,
        the last few kept), so that projects and runs never share or mix their files."""
        factory = getattr(self.config, "_tmp_path_factory", None)
        if factory is not None:
            return factory.getbasetemp() / "quantcheck"
        directory = getattr(self.config, "_quantcheck_tmp", None)
        if directory is None:  # the tmpdir plugin disabled (-p no:tmpdir)
            directory = self.config._quantcheck_tmp = Path(tempfile.mkdtemp(prefix="quantcheck-"))
        return directory

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, CellFailure):
            return str(excinfo.value)
        # The program or the compiler raised: say which cell, then a short traceback without
        # pytest's and pluggy's frames (unless --tb asks for another style).
        if style is None and self.config.getoption("tbstyle", "auto") == "auto":
            style = "short"
        header = (
            f"{self.case.display_path}:{self.case.line}: case {self.case.name!r} [{self.cell.id}] raised "
            f"{type(excinfo.value).__name__}: {excinfo.value}"
        )
        rerun = rerun_command(self.nodeid, self.config.stash[SETTINGS_KEY].rerun_options)
        return f"{header}\n\n{super().repr_failure(excinfo, style=style)}\n\nre-run this cell:      {rerun}"

    def _traceback_filter(self, excinfo):
        def ours_or_torch(entry) -> bool:
            path = str(entry.path)
            return "/_pytest/" not in path and "/pluggy/" not in path

        return excinfo.traceback.filter(ours_or_torch)

    def summary_row(self, outcome: str) -> SummaryRow:
        result = self.stash.get(CELL_RESULT_KEY, {})
        return SummaryRow(
            suite=self.case.display_path, case=self.case.name, backend=self.cell.variant, device=self.cell.device,
            dtype=self.cell.dtype, line=self.case.line, outcome=outcome, max_abs=result.get("max_abs"), max_rel=result.get("max_rel"),
            seconds=result.get("seconds", 0.0), detail=self.cell.skip_reason or "",
            device_index=None if outcome == "skipped" else current_device_index(self.cell.device),
            worker=self._xdist("workerid", ""), perf_us=result.get("perf_us"),
        )

    def _xdist(self, key: str, default: Any) -> Any:
        """``workerid`` / ``workercount`` of this pytest-xdist worker (``default`` outside xdist)."""
        return getattr(self.config, "workerinput", {}).get(key, default)


class FuzzItem(CaseItem):
    """A fuzz case's cell: examples drawn and shrunk by harness.fuzz.search, each judged like a
    plain cell (no golden: the shapes vary)."""

    def runtest(self) -> None:
        symbolic = self.case
        fuzz = symbolic.fuzz
        start = time.monotonic()
        outcome = search(fuzz, symbolic.seed, lambda example: self._example_failures(concretize(symbolic, example), fuzz.reference))
        if outcome.failure is None:
            return
        example, sections = outcome.failure
        concrete = concretize(symbolic, example)
        self.case = concrete  # the repro script and report describe the example that failed
        minimal = "" if not outcome.budget_hit else f" (shrinking stopped at max_seconds {fuzz.max_seconds:g}: may not be minimal)"
        pinned = pinned_case_yaml(concrete, self.cell.dtype, f"{symbolic.name}_pinned")
        message = [
            f"{symbolic.display_path}:{symbolic.line}: fuzz case {symbolic.name!r} [{self.cell.id}] failed",
            "",
            f"fuzz: {outcome.tried} example(s) run in {time.monotonic() - start:.1f} s; the first failure was run "
            f"{outcome.found_at}, then shrunk{minimal}",
            f"smallest failing example: {describe_example(fuzz, example)}",
            "",
            *[s.rstrip() + "\n" for s in sections],
            f"pin it as a plain case (under cases: in {symbolic.display_path}):",
            pinned,
            "",
            f"re-run this cell:      {rerun_command(self.nodeid, self.config.stash[SETTINGS_KEY].rerun_options)}",
        ]
        raise CellFailure("\n".join(message))

    def _example_failures(self, case: Case, reference: Optional[str]) -> list[str]:
        """Run one concrete example in this cell; the failed checks' texts (empty: it passed)."""
        cell = self.cell
        try:
            run = run_cell(case, cell)
        except Exception as exc:  # a crash is a failure of this example, and shrinks like one
            return [f"raised {type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc)[-6:])]
        comparisons = []
        if case.checks.eager:
            comparisons.append(compare_with_eager(case, cell, run, label=f"compiled ({cell.backend}) vs eager, same inputs"))
        if reference is not None:
            comparisons += compare_with_reference(case, cell, run, reference)
        sections = [c.report for c in comparisons if not c.ok]
        sections += counter_sections(case, cell, run)
        sections += filecheck_sections(case, cell, run, self._dump_artifact, self._note)
        return sections


def assign_golden_writers(items: list[pytest.Item]) -> None:
    """The first collected cell of each (suite, case, device, dtype) writes that golden under
    --update-golden, and its report shows the eager vs golden table for every cell of the key."""
    writers: dict[tuple[str, str, str, str], str] = {}
    for item in items:
        runs = not item.cell.skip_reason and item.get_closest_marker("skip") is None if isinstance(item, CaseItem) else False
        if isinstance(item, CaseItem) and item.case.checks.golden and runs:
            if item.golden_key not in writers:
                writers[item.golden_key] = item.nodeid
                item.writes_golden = True
    for item in items:
        if isinstance(item, CaseItem):
            item.golden_writer = writers.get(item.golden_key, "")


def outcome_of(report: pytest.TestReport) -> Optional[str]:
    """'passed', 'failed', 'skipped', 'xfailed', 'xpassed' or 'error' for the report that decides a cell; else None."""
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            return "xfailed" if report.skipped else "xpassed"
        return report.outcome
    if report.when == "setup" and not report.passed:
        return "skipped" if report.skipped else "error"
    return None
