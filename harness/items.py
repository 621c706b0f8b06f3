"""pytest nodes: a suite file is a ``CaseFile``; each matrix cell of each case is a ``CaseItem``
(a ``FuzzItem`` for a fuzz case).

A ``CaseItem`` runs its cell and then the checks of harness/checks/ in their order,
collecting all failures into one report instead of stopping at the first. A ``FuzzItem``
runs the search of harness/fuzz.py over its cell, judging each example with the checks
that hold at any shape, and reports the smallest failing one.
"""

from __future__ import annotations

import re
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import pytest

from .case import Case, CaseFormatError, load_suite
from .checks import (
    GOLDEN,
    NOTE_PROPERTY,
    PERF,
    CellSite,
    CheckContext,
    Settings,
    display_path,
    run_checks,
)
from .fuzz import concretize, describe_example, pinned_case_yaml, search
from .matrix import MatrixCell, current_device_index, expand_matrix
from .perf import timer_for_cell
from .project import SUITE_SUFFIXES
from .report import SummaryRow, format_cell_failure, rerun_command
from .run import run_cell

ROW_PROPERTY = "quantcheck_row"


SETTINGS_KEY = pytest.StashKey[Settings]()
CELL_RESULT_KEY = pytest.StashKey[dict]()


class CellFailure(Exception):
    """A cell whose checks failed; its message is the complete report."""


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
            if PERF.applies(self.case, self.cell) else (None, None)
        )
        run = run_cell(self.case, self.cell, timer=timer)
        site = CellSite(
            settings=settings, nodeid=self.nodeid, case_nodeid=self.case_nodeid, record=self._record,
            writes_golden=self.writes_golden, golden_writer=self.golden_writer,
            case_names=getattr(self.parent, "case_names", frozenset()), timer=timer, not_timed=not_timed,
        )
        ctx = CheckContext(self.case, self.cell, run, dump=self._dump_artifact, note=self._note, site=site)
        sections = run_checks(ctx)
        self.stash[CELL_RESULT_KEY] = {
            "max_abs": max((c.max_abs for c in ctx.comparisons), default=None),
            "max_rel": max((c.max_rel for c in ctx.comparisons), default=None),
            "seconds": sum(run.seconds.values()),
            "perf_us": run.perf.median_us if run.perf is not None else None,
            "run": run,  # for diagnostics.py (report pictures); it drops it once the cell is reported
        }
        if sections:
            title = f"{self.case.display_path}:{self.case.line}: case {self.case.name!r} [{self.cell.id}] failed"
            raise CellFailure(format_cell_failure(title, sections, self.nodeid, self.case_nodeid, ctx.eager_moved, settings.rerun_options))

    def _record(self, name: str, line: str) -> None:
        """A line for one of the session's sections (goldens written, perf, notes): a user
        property, so that it reaches the xdist controller with the report."""
        self.user_properties.append((name, line))

    def _note(self, note: str) -> None:
        """A line for the session's notes (a FileCheck target this machine cannot produce, say)."""
        self._record(NOTE_PROPERTY, f"{self.nodeid}: {note}")

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
        try:
            run = run_cell(case, self.cell)
        except Exception as exc:  # a crash is a failure of this example, and shrinks like one
            return [f"raised {type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc)[-6:])]
        ctx = CheckContext(case, self.cell, run, dump=self._dump_artifact, note=self._note, reference=reference)
        return run_checks(ctx, per_example=True)


def assign_golden_writers(items: list[pytest.Item]) -> None:
    """The first collected cell of each (suite, case, device, dtype) writes that golden under
    --update-golden, and its report shows the eager vs golden table for every cell of the key."""
    writers: dict[tuple[str, str, str, str], str] = {}
    for item in items:
        runs = not item.cell.skip_reason and item.get_closest_marker("skip") is None if isinstance(item, CaseItem) else False
        if isinstance(item, CaseItem) and GOLDEN.applies(item.case, item.cell) and runs:
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
