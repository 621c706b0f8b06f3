"""What a failing (or any) cell leaves behind: repro scripts, ``--bisect``, ``--report DIR``.

A per-session plugin object, registered by plugin.py, so that the plugin module keeps only
hooks and options. On the process that ran the cell (an xdist worker or the only one):

- a failing cell (not one marked xfail) writes its repro script (:mod:`harness.repro`)
  and, with ``--bisect``, reruns itself through :mod:`harness.bisect`; both go at the end
  of its failure message. A passing cell removes its stale script;
- with ``--report``, every cell attaches its record (:mod:`harness.report_html`) to its
  report as a user property, which xdist carries to the controller.

On the controller, the records are gathered and the page is written at the end.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from .bisect import bisect_cell
from .golden import GoldenError, golden_paths, load_golden
from .items import CELL_RESULT_KEY, SETTINGS_KEY, CaseItem, display_path, outcome_of
from .repro import DEFAULT_DIR, remove_repro, write_repro
from .report_html import DETAIL_PROPERTY, cell_detail, write_report

DEFAULT_BENCHMARKS = "benchmarks/woq_h100.json"


def add_options(group: Any) -> None:
    group.addoption("--bisect", action="store_true", help="rerun each failing cell through CompilerBisector and with our passes/lowerings disabled one at a time; the failure names where it diverges")
    group.addoption("--repro-dir", default=None, metavar="DIR", help=f"where failing cells write their standalone repro scripts (default: {DEFAULT_DIR} under the rootdir)")
    group.addoption("--report", default=None, metavar="DIR", help="write DIR/index.html and DIR/report.json: every cell, error pictures of numeric failures, kernel bandwidth")
    group.addoption("--report-benchmarks", default=None, metavar="PATH", help=f"benchmark JSON drawn in the report (default: {DEFAULT_BENCHMARKS} under the rootdir, drawn only when GPU cells ran)")


def _json_safe(value: Any) -> Any:
    """inf and nan as strings: the report's JSON stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _expected_to_fail(item: pytest.Item) -> bool:
    return item.get_closest_marker("xfail") is not None and not item.config.option.runxfail


class Diagnostics:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        rootdir = Path(config.rootpath)
        repro = config.getoption("repro_dir")
        self.repro_dir = Path(repro).resolve() if repro else rootdir / DEFAULT_DIR
        self.bisect = config.getoption("bisect")
        report = config.getoption("report")
        self.report_dir = Path(report).resolve() if report else None
        bench = config.getoption("report_benchmarks")
        self.benchmarks_asked = bool(bench)
        self.benchmarks = Path(bench).resolve() if bench else rootdir / DEFAULT_BENCHMARKS
        self.details: list[dict[str, Any]] = []

    # ------------------------------------------------------------- where the cell ran

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        if not isinstance(item, CaseItem):
            return report
        run = None
        if report.when == "call":
            run = item.stash.get(CELL_RESULT_KEY, {}).pop("run", None)  # tensors: do not keep them for the session
            if report.failed and not _expected_to_fail(item):
                report.longrepr = f"{report.longrepr}\n\n{self._diagnose(item, str(report.longrepr))}"
            elif report.passed:
                remove_repro(item.case, item.cell, self.repro_dir)
        outcome = outcome_of(report)
        if self.report_dir is not None and outcome is not None:
            failing = report.failed or outcome == "xfailed"  # an expected failure still gets its picture
            message = str(report.longrepr or "") if failing else ""
            try:
                detail = self._detail(item, outcome, run, message)
            except Exception as exc:  # a report problem must not end the session
                detail = dict(dataclasses.asdict(item.summary_row(outcome)), nodeid=item.nodeid, message=message,
                              picture=None, report_problem=f"{type(exc).__name__}: {exc}")
            report.user_properties = [*report.user_properties, (DETAIL_PROPERTY, json.dumps(_json_safe(detail)))]
        return report

    def _diagnose(self, item: CaseItem, message: str) -> str:
        settings = item.config.stash[SETTINGS_KEY]
        lines = []
        if self.bisect:
            lines.append(bisect_cell(item.case, item.cell).render())
        try:
            path = write_repro(
                item.case, item.cell, directory=self.repro_dir, rootdir=settings.rootdir,
                golden_root=settings.golden_root, nodeid=item.nodeid, why=message,
            )
            lines.append(f"repro script:          python {display_path(path, settings.rootdir)}")
        except Exception as exc:  # the cell's own failure matters more than its script
            lines.append(f"repro script: not written ({type(exc).__name__}: {exc})")
        return "\n".join(lines)

    def _detail(self, item: CaseItem, outcome: str, run: Any, message: str) -> dict[str, Any]:
        row = dataclasses.asdict(item.summary_row(outcome))
        row["nodeid"] = item.nodeid
        golden = None
        failed = outcome in ("failed", "error", "xfailed")
        if failed and run is not None and item.case.checks.golden:
            settings = item.config.stash[SETTINGS_KEY]
            paths = golden_paths(settings.golden_root, item.case.suite_stem, item.case.name, item.cell.device, item.cell.dtype)
            try:
                golden = {n: t.to(item.cell.device) for n, t in load_golden(paths).items()}
            except GoldenError:  # GoldenMissing included: no picture against it
                golden = None
        return cell_detail(row, run, item.case.tolerance_for(item.cell.dtype), failed, message, golden)

    # ------------------------------------------------------------- the controller

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == DETAIL_PROPERTY:
                self.details.append(json.loads(value))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.report_dir is None or hasattr(self.config, "workerinput"):
            return
        # The benchmarks were measured on a GPU: drawn when asked for, or when GPU cells ran.
        ran_on_gpu = any(d.get("device") != "cpu" and d.get("outcome") not in ("skipped", None) for d in self.details)
        bench = self.benchmarks if self.benchmarks_asked or ran_on_gpu else None
        page = write_report(self.report_dir, self.details, bench, Path(self.config.rootpath))
        terminalreporter.write_line(f"quantcheck report: {page} ({len(self.details)} cells)")
