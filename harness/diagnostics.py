"""What a failing (or any) cell leaves behind: repro scripts, ``--bisect``, ``--report DIR``.

A per-session plugin object, registered by plugin.py, so that the plugin module keeps only
hooks and options. On the process that ran the cell (an xdist worker or the only one):

- a failing cell (not one marked xfail) writes its repro script (:mod:`harness.repro`)
  and, with ``--bisect``, reruns itself through :mod:`harness.bisect`; both go at the end
  of its failure message. A passing cell removes its stale script;
- with ``--report``, every cell attaches its record (:mod:`harness.report_html`) to its
  report as a user property, which xdist carries to the controller.

On the controller, the records are gathered and the page is written at the end. A cell
that killed its xdist worker (a fatal signal, the hard stop, an OOM kill, ``os._exit``) is
reported there too, as ``crashed``: its signal and last stack (:func:`harness.guard.read_crash`),
its summary row and report record, and its repro script, written by the controller from the
suite file, since the worker is gone.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Optional

import pytest
import torch

from .bisect import bisect_cell
from .case import Case, load_suite
from .golden import GoldenError, load_golden
from .guard import CRASH_DIR_KEY, Crash, crash_record_path, read_crash, worker_exit_code
from .items import CELL_RESULT_KEY, ROW_PROPERTY, SETTINGS_KEY, CaseItem, display_path, outcome_of
from .matrix import MatrixCell, expand_matrix
from .report import SummaryRow, rerun_command
from .repro import DEFAULT_DIR, remove_repro, write_repro
from .report_html import DETAIL_PROPERTY, cell_detail, write_report

BENCHMARKS_DIR = "benchmarks"


def benchmarks_for_gpu(rootdir: Path, device_name: str) -> Optional[Path]:
    """``benchmarks/woq_<kind>.json`` measured on the GPU kind the cells ran on
    (``woq_h200.json`` for an "NVIDIA H200"), or None: another GPU's table would be drawn
    as if it were this one's."""
    words = device_name.lower().split()
    return next((path for path in sorted((rootdir / BENCHMARKS_DIR).glob("woq_*.json"))
                 if path.stem.removeprefix("woq_") in words), None)


def _gpu_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else ""


def add_options(group: Any) -> None:
    group.addoption("--bisect", action="store_true", help="rerun each failing cell through CompilerBisector and with each pass and lowering that ran disabled in turn; the failure names where it diverges")
    group.addoption("--repro-dir", default=None, metavar="DIR", help=f"where failing cells write their standalone repro scripts (default: {DEFAULT_DIR} under the rootdir)")
    group.addoption("--report", default=None, metavar="DIR", help="write DIR/index.html and DIR/report.json: every cell, error pictures of numeric failures, kernel bandwidth")
    group.addoption("--report-benchmarks", default=None, metavar="PATH", help=f"benchmark JSON drawn in the report (default: when GPU cells ran, {BENCHMARKS_DIR}/woq_<gpu>.json under the rootdir for that GPU, e.g. woq_h200.json)")


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
        self.benchmarks = Path(bench).resolve() if bench else None
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
                suite_key = item.config.stash[SETTINGS_KEY].project.suite_key(item.case.suite_path)
                remove_repro(suite_key, item.case, item.cell, self.repro_dir)
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
        lines = []
        if self.bisect:
            lines.append(bisect_cell(item.case, item.cell).render())
        lines.append(self._repro_line(item.case, item.cell, item.nodeid, message))
        return "\n".join(lines)

    def _repro_line(self, case: Case, cell: MatrixCell, nodeid: str, message: str) -> str:
        settings = self.config.stash[SETTINGS_KEY]
        try:
            path = write_repro(
                case, cell, directory=self.repro_dir, rootdir=settings.rootdir,
                suite_key=settings.project.suite_key(case.suite_path),
                golden_data=settings.golden_paths(case, cell.device, cell.dtype).data,
                nodeid=nodeid, why=message,
            )
            return f"repro script:          python {display_path(path, settings.rootdir)}"
        except Exception as exc:  # the cell's own failure matters more than its script
            return f"repro script: not written ({type(exc).__name__}: {exc})"

    def _detail(self, item: CaseItem, outcome: str, run: Any, message: str) -> dict[str, Any]:
        row = dataclasses.asdict(item.summary_row(outcome))
        row["nodeid"] = item.nodeid
        golden = None
        failed = outcome in ("failed", "error", "xfailed")
        if failed and run is not None and item.case.checks.golden:
            settings = item.config.stash[SETTINGS_KEY]
            paths = settings.golden_paths(item.case, item.cell.device, item.cell.dtype)
            try:
                golden = {n: t.to(item.cell.device) for n, t in load_golden(paths, suite=item.case.display_path).items()}
            except GoldenError:  # GoldenMissing included: no picture against it
                golden = None
        return cell_detail(row, run, item.case.tolerance_for(item.cell.dtype), failed, message, golden)

    # ------------------------------------------------------------- the controller

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched: Any) -> None:
        """A worker died in ``crashitem``: make it a ``crashed`` cell with its cause, stack and repro."""
        if ".yaml::" not in crashitem and ".yml::" not in crashitem:
            return
        crash_dir = self.config.stash.get(CRASH_DIR_KEY, None)
        record = crash_record_path(crash_dir, crashitem) if crash_dir is not None else None
        crash = read_crash(record, worker_exit_code(getattr(report, "node", None)))
        if record is not None:
            record.unlink(missing_ok=True)
        located = self._locate(crashitem)
        row = self._crash_row(crashitem, located, crash)
        where = f"{row.suite}:{row.line}: " if located else ""
        lines = [str(report.longrepr), "", f"{where}case {row.case!r} [{row.backend}-{row.device}-{row.dtype}] crashed: {crash.cause}"]
        if crash.hard_stop:
            lines.append(
                "the cell ran past its timeout inside code that never returned to Python "
                "(C code, a deadlock, signals blocked), so the harness ended its worker; every thread's stack then:"
            )
        elif crash.stack:
            lines.append("the last stack the harness saw in it (most recent call first):")
        if crash.stack:
            lines.append(crash.stack)
        lines += ["", f"re-run this cell:      {rerun_command(crashitem, self.config.stash[SETTINGS_KEY].rerun_options)}"]
        if located:
            lines.append(self._repro_line(*located, crashitem, "\n".join(lines)))
        report.longrepr = "\n".join(lines)
        properties = [(ROW_PROPERTY, row.to_json())]
        if self.report_dir is not None:
            detail = dict(dataclasses.asdict(row), nodeid=crashitem, message=report.longrepr, picture=None,
                          crash={"cause": crash.cause, "signal": crash.signal, "stack": crash.stack})
            properties.append((DETAIL_PROPERTY, json.dumps(_json_safe(detail))))
        report.user_properties = [*report.user_properties, *properties]

    def _locate(self, nodeid: str) -> Optional[tuple[Case, MatrixCell]]:
        """The case and cell of ``nodeid``, loaded again from the suite file (the controller collects nothing)."""
        settings = self.config.stash[SETTINGS_KEY]
        suite_path, _, rest = nodeid.partition("::")
        name, _, cell_id = rest.partition("[")
        try:
            suite = load_suite(settings.rootdir / suite_path, suite_path)
            case = next(c for c in suite.cases if c.name == name)
            cell = next(c for c in expand_matrix(case, settings.narrowing) if c.id == cell_id.rstrip("]"))
        except Exception:  # noqa: BLE001 - a crash report must not fail; the row falls back to the node id
            return None
        return case, cell

    @staticmethod
    def _crash_row(nodeid: str, located: Optional[tuple[Case, MatrixCell]], crash: Crash) -> SummaryRow:
        if located is not None:
            case, cell = located
            return SummaryRow(suite=case.display_path, case=case.name, backend=cell.variant, device=cell.device,
                              dtype=cell.dtype, line=case.line, outcome="crashed", detail=crash.cause)
        suite, _, rest = nodeid.partition("::")
        name, _, cell_id = rest.partition("[")
        # MatrixCell.id: backend-device-dtype[-dynamic]; no part holds a "-" itself.
        backend, device, dtype, *dynamic = cell_id.rstrip("]").split("-") + ["?"] * max(0, 3 - cell_id.count("-") - 1)
        variant = f"{backend}.{dynamic[0]}" if dynamic else backend
        return SummaryRow(suite=suite, case=name, backend=variant, device=device, dtype=dtype, line=0, outcome="crashed", detail=crash.cause)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == DETAIL_PROPERTY:
                self.details.append(json.loads(value))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.report_dir is None or hasattr(self.config, "workerinput"):
            return
        # The benchmarks were measured on a GPU: drawn when asked for, or when GPU cells ran.
        ran_on_gpu = any(d.get("device") != "cpu" and d.get("outcome") not in ("skipped", None) for d in self.details)
        rootdir = Path(self.config.rootpath)
        bench = self.benchmarks if self.benchmarks_asked else (benchmarks_for_gpu(rootdir, _gpu_name()) if ran_on_gpu else None)
        page = write_report(self.report_dir, self.details, bench, rootdir)
        terminalreporter.write_line(f"quantcheck report: {page} ({len(self.details)} cells)")
