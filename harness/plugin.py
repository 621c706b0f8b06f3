"""quantcheck's pytest plugin: hooks and options only.

Loaded by the ``pytest11`` entry point ``quantcheck = "harness.plugin"`` when the package is
installed, and from a project's root conftest.py otherwise. pytest refuses to register
one module under two names, so the conftest should go through :func:`register_once`::

    def pytest_addhooks(pluginmanager):
        from harness.plugin import register_once
        register_once(pluginmanager)
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Optional

import pytest

from .case import BACKENDS, DEVICES, load_suite
from .dtypes import DTYPES, canonical_dtype_name
from .diagnostics import Diagnostics
from .diagnostics import add_options as add_diagnostic_options
from .golden import find_stale_goldens, prune
from .guard import CellGuard
from .guard import add_options as add_guard_options
from .items import (
    GOLDEN_PROPERTY,
    ROW_PROPERTY,
    SETTINGS_KEY,
    CaseFile,
    CaseItem,
    Settings,
    assign_golden_writers,
    display_path,
    outcome_of,
)
from .matrix import Narrowing, declared_golden_keys, pin_worker_to_gpu
from .report import SummaryRow, summary_table, write_summary_json

PLUGIN_NAME = "quantcheck"
_SESSION_KEY = pytest.StashKey[dict]()


def register_once(pluginmanager: pytest.PytestPluginManager) -> None:
    """Register this module unless the entry point (or anything else) already did."""
    import sys

    module = sys.modules[__name__]
    if not pluginmanager.is_registered(module) and pluginmanager.get_plugin(PLUGIN_NAME) is None:
        pluginmanager.register(module, PLUGIN_NAME)


def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("quantcheck", "quantcheck: YAML numerics cases (suites/*.yaml)")
    group.addoption("--backends", default="", help=f"comma list narrowing the matrix backends ({', '.join(BACKENDS)})")
    group.addoption("--devices", default="", help=f"comma list narrowing the matrix devices ({', '.join(DEVICES)})")
    group.addoption("--dtypes", default="", help="comma list narrowing the matrix dtypes (float32, bfloat16, ...)")
    group.addoption("--update-golden", action="store_true", help="write goldens (from eager) for the selected cells; unchanged files are left alone")
    group.addoption("--add-missing-goldens", action="store_true", help="write (from eager) only the goldens of the selected cells that do not exist yet; compare the rest (a new device or case)")
    group.addoption("--prune-stale-goldens", action="store_true", help="delete goldens that no case declares (they are always reported)")
    group.addoption("--max-autotune", action="store_true", help="also run inductor_max_autotune cells on the CPU")
    group.addoption(
        "--summary", nargs="?", const="-", default=None, metavar="PATH",
        help="print the case x backend x device summary table; with PATH also write it as JSON",
    )
    add_diagnostic_options(group)
    add_guard_options(group)
    parser.addini("quantcheck_golden_dir", "golden directory, relative to rootdir", default="golden")
    parser.addini(
        "quantcheck_suites", "glob patterns (relative to rootdir) of YAML suite files", type="linelist",
        default=["suites/*.yaml", "suites/*.yml"],
    )


def _narrowing(config: pytest.Config) -> Narrowing:
    def parse(option: str, allowed: list[str], normalize=lambda v: v) -> tuple[str, ...]:
        values = []
        for raw in _comma_list(config.getoption(option)):
            value = normalize(raw)
            if value not in allowed:
                raise pytest.UsageError(f"--{option}: {raw!r} is not one of {', '.join(allowed)}")
            values.append(value)
        return tuple(values)

    return Narrowing(
        backends=parse("backends", list(BACKENDS)),
        devices=parse("devices", list(DEVICES)),
        dtypes=parse("dtypes", list(DTYPES), lambda v: canonical_dtype_name(v) or v),
        max_autotune=config.getoption("max_autotune"),
    )


def _missing_paths(config: pytest.Config) -> list[str]:
    """Command-line paths that do not exist (pytest says so itself only where it collects:
    under xdist the controller does not, and a typo ran 0 items with exit 5, naming nothing)."""
    if config.getoption("pyargs", False):
        return []
    base = Path(config.invocation_params.dir)
    return [arg for arg in config.args if not (base / arg.split("::")[0]).exists()]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running case")
    missing = _missing_paths(config) if not hasattr(config, "workerinput") else []
    if missing:
        raise pytest.UsageError(f"file or directory not found: {', '.join(missing)}")
    rootdir = Path(config.rootpath)
    config.stash[SETTINGS_KEY] = Settings(
        rootdir=rootdir,
        golden_root=rootdir / config.getini("quantcheck_golden_dir"),
        narrowing=_narrowing(config),
        update_golden=config.getoption("update_golden"),
        add_missing_goldens=config.getoption("add_missing_goldens"),
    )
    state = {"rows": [], "golden_notes": [], "suites": set()}
    config.stash[_SESSION_KEY] = state
    config.pluginmanager.register(_ResultCollector(state), f"{PLUGIN_NAME}-results-{id(config)}")
    config.pluginmanager.register(Diagnostics(config), f"{PLUGIN_NAME}-diagnostics-{id(config)}")
    config.pluginmanager.register(CellGuard(config), f"{PLUGIN_NAME}-guard-{id(config)}")
    worker = getattr(config, "workerinput", {}).get("workerid")
    pin_worker_to_gpu(worker)


class _ResultCollector:
    """Per-session hook object (no module globals: pytester runs sessions inside sessions).

    ``pytest_runtest_logreport`` also runs on the xdist controller, so rows and golden
    notes from every worker arrive here through ``report.user_properties``.
    """

    def __init__(self, state: dict) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if ".yaml::" in report.nodeid or ".yml::" in report.nodeid:
            self.state["suites"].add(report.nodeid.split("::", 1)[0])
        for name, value in report.user_properties:
            if name == ROW_PROPERTY and report.when in ("setup", "call"):
                self.state["rows"].append(SummaryRow.from_json(value))
            elif name == GOLDEN_PROPERTY and report.when == "call":
                self.state["golden_notes"].append(value)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Optional[pytest.Collector]:
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    rootdir = Path(parent.config.rootpath)
    relative = display_path(file_path, rootdir)
    if any(fnmatch.fnmatch(relative, pattern) for pattern in parent.config.getini("quantcheck_suites")):
        return CaseFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # trylast: after -k/-m deselection, so that the writer of each golden is a cell that runs.
    assign_golden_writers(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if isinstance(item, CaseItem):
        outcome = outcome_of(report)
        if outcome is not None:
            # a new list: the report shares item.user_properties with the item's other reports
            report.user_properties = [*report.user_properties, (ROW_PROPERTY, item.summary_row(outcome).to_json())]
    return report


def _stale_goldens(config: pytest.Config, state: dict) -> list[Path]:
    settings = config.stash[SETTINGS_KEY]
    declared: dict[str, set[tuple[str, str, str]]] = {}
    for suite_path in sorted(state["suites"]):
        path = settings.rootdir / suite_path
        try:
            suite = load_suite(path, suite_path)
        except Exception:  # a broken suite was already reported at collection; do not guess its goldens
            declared.setdefault(path.stem, {("*", "*", "*")})
            continue
        keys = declared.setdefault(path.stem, set())
        for case in suite.cases:
            keys.update((case.name, device, dtype) for device, dtype in declared_golden_keys(case))
    if any(("*", "*", "*") in keys for keys in declared.values()):
        declared = {stem: keys for stem, keys in declared.items() if ("*", "*", "*") not in keys}
    return find_stale_goldens(settings.golden_root, declared, settings.rootdir)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    state = config.stash.get(_SESSION_KEY, None)
    if not state or not state["suites"]:
        return
    settings = config.stash[SETTINGS_KEY]
    write = terminalreporter.write_line
    if state["golden_notes"]:
        terminalreporter.section("quantcheck goldens")
        changed = [n for n in sorted(state["golden_notes"]) if not n.endswith(": unchanged")]
        for note in changed:
            write(note)
        write(f"{len(changed)} golden file(s) written, {len(state['golden_notes']) - len(changed)} unchanged")
    stale = _stale_goldens(config, state)
    if stale:
        terminalreporter.section("quantcheck stale goldens")
        shown = [display_path(p, settings.rootdir) for p in stale]
        if config.getoption("prune_stale_goldens"):
            for p in prune(stale):
                write(f"deleted {display_path(p, settings.rootdir)}")
        else:
            for s in shown:
                write(f"stale (no case declares it): {s}")
            write("delete them with --prune-stale-goldens")
    summary = config.getoption("summary")
    if summary is not None:
        terminalreporter.section("quantcheck summary")
        for line in summary_table(state["rows"]):
            write(line)
        if summary != "-":
            write_summary_json(state["rows"], Path(summary))
            write(f"summary JSON: {summary}")
