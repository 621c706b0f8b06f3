"""quantcheck's pytest plugin: hooks and options only.

Loaded by the ``pytest11`` entry point ``quantcheck = "quantcheck.harness.plugin"`` when the package is
installed, and from a project's root conftest.py otherwise. pytest refuses to register
one module under two names, so the conftest should go through :func:`register_once`::

    def pytest_addhooks(pluginmanager):
        from harness.plugin import register_once
        register_once(pluginmanager)
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Optional

import pytest

from .case import BACKENDS, DEVICES, load_suite
from .core.dtypes import DTYPES, canonical_dtype_name
from .diagnostics import Diagnostics
from .diagnostics import add_options as add_diagnostic_options
from .golden import StaleGolden, find_stale_goldens, prune, recover_leftovers
from .guard import CellGuard
from .guard import add_options as add_guard_options
from .items import (
    GOLDEN_PROPERTY,
    NOTE_PROPERTY,
    PERF_PROPERTY,
    REPAIR_PROPERTY,
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
from .perf import declared_perf_keys, owned_perf_golden, perf_section
from .project import DEFAULTS as PROJECT_DEFAULTS
from .project import INI_HELP, Project, ProjectSettingsError, load_project
from .report import SummaryRow, device_spread, notes_section, summary_table, write_summary_json

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
    group.addoption(
        "--update-checks", action="store_true",
        help="write each FileCheck block's checks file (file:) from the selected cells' output (as lit's update_test_checks.py)",
    )
    group.addoption(
        "--fail-on-golden-writes", action="store_true",
        help="with --update-golden / --add-missing-goldens: the run fails when it created or changed any golden (as pytest-regressions' --force-regen)",
    )
    group.addoption("--add-missing-goldens", action="store_true", help="write (from eager) only the goldens of the selected cells that do not exist yet; compare the rest (a new device or case)")
    group.addoption("--prune-stale-goldens", action="store_true", help="delete goldens that no case declares (they are always reported)")
    group.addoption("--no-perf", action="store_true", help="do not time the cells of cases with checks.perf (their numerics still run)")
    group.addoption(
        "--fail-on-stale-goldens", action="store_true", default=None,
        help="stale goldens (no case declares them) fail the run; ini quantcheck_fail_on_stale_goldens / [tool.quantcheck] fail_on_stale_goldens",
    )
    group.addoption(
        "--all-suites", action="store_true",
        help="with no path given, collect every suite of this project (its suites root) instead of pytest's testpaths; python -m harness passes it",
    )
    group.addoption("--max-autotune", action="store_true", help="also run inductor_max_autotune cells on the CPU")
    group.addoption(
        "--summary", nargs="?", const="-", default=None, metavar="PATH",
        help="print the case x backend x device summary table; with PATH also write it as JSON",
    )
    add_diagnostic_options(group)
    add_guard_options(group)
    # Unset ini keys read as empty: harness.project then falls back to [tool.quantcheck], then its defaults.
    for key, default in PROJECT_DEFAULTS.items():
        shown = ", ".join(default) if isinstance(default, list) else default
        help_text = f"{INI_HELP[key]} (default: {shown if default is not None else 'the patterns common directory'})"
        parser.addini(f"quantcheck_{key}", help_text, type="linelist" if key == "suites" else "string", default=[] if key == "suites" else "")


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


def _project(config: pytest.Config) -> Project:
    try:
        return load_project(Path(config.rootpath), {key: config.getini(f"quantcheck_{key}") for key in PROJECT_DEFAULTS})
    except ProjectSettingsError as exc:
        raise pytest.UsageError(str(exc)) from None


#: Options a rerun of one cell must not repeat: selection, parallelism, session outputs, golden writes.
NOT_REPEATED = {
    "-n", "--numprocesses", "--maxprocesses", "--dist", "-d", "--max-worker-restart", "--tx",
    "-k", "-m", "--deselect", "--ignore", "--ignore-glob", "--lf", "--last-failed", "--ff", "--failed-first",
    "--nf", "--new-first", "--sw", "--stepwise", "--sw-skip", "--stepwise-skip", "-x", "--exitfirst", "--maxfail",
    "--co", "--collect-only", "--basetemp", "--junitxml", "--junit-xml", "--resultlog", "--all-suites",
    "--update-golden", "--add-missing-goldens", "--prune-stale-goldens", "--fail-on-stale-goldens", "--fail-on-golden-writes", "--update-checks",
    "--summary", "--report", "--report-benchmarks",
}
_NO_VALUE_ACTIONS = {"store_true", "store_false", "store_const", "append_const", "count", "help", "version"}


def _option_arity(config: pytest.Config) -> dict[str, Optional[str]]:
    """Option name -> "value", "optional" (nargs '?') or None (a flag), from pytest's parser."""
    arity: dict[str, Optional[str]] = {}
    parser = getattr(config, "_parser", None)
    for group in [*getattr(parser, "_groups", []), getattr(parser, "_anonymous", None)]:
        for option in getattr(group, "options", []):
            for name in option.names():
                arity[name] = _arity(option)
    return arity


def _arity(option) -> Optional[str]:
    # pytest >= 9.2 wraps an argparse Action (nargs 0 for a flag); earlier ones keep the
    # add_option keywords, where a flag is named by its action.
    action = getattr(option, "_action", None)
    if action is not None:
        nargs = action.nargs
        return None if nargs == 0 else ("optional" if nargs == "?" else "value")
    attrs = option.attrs()
    return None if attrs.get("action") in _NO_VALUE_ACTIONS else ("optional" if attrs.get("nargs") == "?" else "value")


def rerun_options(config: pytest.Config) -> tuple[str, ...]:
    """The user's own command-line options, minus paths and NOT_REPEATED: what a rerun hint repeats."""
    arity = _option_arity(config)
    args = [str(a) for a in config.invocation_params.args]
    kept: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--" or not token.startswith("-") or token == "-":
            continue  # a path or node id
        name, attached = (token.split("=", 1)[0], True) if token.startswith("--") and "=" in token else (token, False)
        if not token.startswith("--") and len(token) > 2 and arity.get(token[:2]) == "value":
            name, attached = token[:2], True  # -n2, -kexpr, -pname
        group = [token]
        kind = arity.get(name)
        if not attached and i < len(args) and (kind == "value" or (kind == "optional" and not args[i].startswith("-"))):
            group.append(args[i])
            i += 1
        if name not in NOT_REPEATED:
            kept.extend(group)
    return tuple(kept)


def _missing_paths(config: pytest.Config) -> list[str]:
    """Command-line paths that do not exist (pytest says so itself only where it collects:
    under xdist the controller does not, and a typo ran 0 items with exit 5, naming nothing)."""
    if config.getoption("pyargs", False):
        return []
    base = Path(config.invocation_params.dir)
    return [arg for arg in config.args if not (base / arg.split("::")[0]).exists()]


def separate_inductor_cache_per_cpu_capability() -> Optional[str]:
    """Give a run under ``ATEN_CPU_CAPABILITY`` an Inductor cache directory of its own.

    Inductor's FX graph cache does not key its entries by that setting, and a graph
    compiled under one capability, loaded under another, gives wrong numbers or aborts
    (torch 2.13, an AVX-512 host: NaN and SIGABRT in inductor-cpu cells of one run under
    avx2 once the other had filled the cache). A directory the user chose is left alone.
    Returns the directory set, or None.
    """
    capability = os.environ.get("ATEN_CPU_CAPABILITY")
    if not capability or "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return None
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"{default_cache_dir()}-{capability.lower()}"
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running case")
    separate_inductor_cache_per_cpu_capability()
    missing = _missing_paths(config) if not hasattr(config, "workerinput") else []
    if missing:
        raise pytest.UsageError(f"file or directory not found: {', '.join(missing)}")
    rootdir = Path(config.rootpath)
    project = _project(config)
    config.stash[SETTINGS_KEY] = Settings(
        rootdir=rootdir,
        golden_root=project.golden_root,
        narrowing=_narrowing(config),
        update_golden=config.getoption("update_golden"),
        project=project,
        add_missing_goldens=config.getoption("add_missing_goldens"),
        perf=not config.getoption("no_perf"),
        rerun_options=rerun_options(config),
        update_checks=config.getoption("update_checks"),
    )
    if config.getoption("all_suites") and config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = [str(project.suites_root)]
    state = {
        "rows": [], "golden_notes": [], "repairs": [], "suites": set(), "perf_notes": [], "notes": [], "stale": [], "leftovers": [],
    }
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
            if name == ROW_PROPERTY and report.when in ("setup", "call", "???"):  # "???": xdist's report of a crashed worker
                self.state["rows"].append(SummaryRow.from_json(value))
            elif name == GOLDEN_PROPERTY and report.when == "call":
                self.state["golden_notes"].append(value)
            elif name == PERF_PROPERTY and report.when == "call":
                self.state["perf_notes"].append(value)
            elif name == NOTE_PROPERTY and report.when == "call":
                self.state["notes"].append(value)
            elif name == REPAIR_PROPERTY and report.when == "call":
                self.state["repairs"].append(value)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Optional[pytest.Collector]:
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    settings = parent.config.stash[SETTINGS_KEY]
    relative = Path(display_path(file_path, settings.rootdir)).as_posix()
    if any(fnmatch.fnmatch(relative, pattern) for pattern in settings.project.suite_patterns):
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


def _stale_goldens(config: pytest.Config, state: dict) -> list[StaleGolden]:
    """Stale goldens of this session's suites, and of suites whose file is gone (harness.golden)."""
    settings = config.stash[SETTINGS_KEY]
    project = settings.project
    declared: dict[str, set[tuple[str, str, str]]] = {}
    perf_owned: set[tuple[str, str, str, str]] = set()
    undecided: set[str] = set()
    for suite_path in sorted(state["suites"]):
        path = settings.rootdir / suite_path
        try:
            key = project.suite_key(path)
        except ValueError:
            continue
        try:
            suite = load_suite(path, suite_path)
        except Exception:  # a broken suite was already reported at collection; do not guess its goldens
            undecided.add(key)
            continue
        keys = declared.setdefault(key, set())
        for case in suite.cases:
            keys.update((case.name, device, dtype) for device, dtype in declared_golden_keys(case))
            perf_owned.update((key, case.name, backend, dtype) for backend, dtype in declared_perf_keys(case))
    for key in undecided:
        declared.pop(key, None)
    stale = find_stale_goldens(
        settings.golden_root, declared, lambda key: bool(project.suite_files_for_key(key)), frozenset(undecided)
    )
    return [s for s in stale if not owned_perf_golden(s.path, settings.golden_root, perf_owned)]


def golden_writes_line(notes: list[str]) -> str:
    """``N goldens rewritten (created C, changed K), U unchanged``: what --update-golden did."""
    created = sum(1 for n in notes if n.endswith(": created"))
    unchanged = sum(1 for n in notes if n.endswith(": unchanged"))
    rewritten = len(notes) - unchanged
    return f"{rewritten} golden{'' if rewritten == 1 else 's'} rewritten (created {created}, changed {rewritten - created}), {unchanged} unchanged"


def _fails_on_stale(config: pytest.Config) -> bool:
    option = config.getoption("fail_on_stale_goldens")
    return option if option is not None else config.stash[SETTINGS_KEY].project.fail_on_stale_goldens


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On the controller: recover what killed writers left, find stale goldens, fail on them if asked."""
    config = session.config
    state = config.stash.get(_SESSION_KEY, None)
    if hasattr(config, "workerinput") or not state or not state["suites"]:
        return
    settings = config.stash[SETTINGS_KEY]
    state["leftovers"] = recover_leftovers(settings.golden_root)
    state["stale"] = _stale_goldens(config, state)
    if state["stale"] and _fails_on_stale(config) and not config.getoption("prune_stale_goldens"):
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    rewrote = any(not note.endswith(": unchanged") for note in state["golden_notes"])
    if rewrote and config.getoption("fail_on_golden_writes") and session.exitstatus == pytest.ExitCode.OK:
        # as pytest-regressions' --force-regen: a run left with --update-golden on cannot hide a change
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    state = config.stash.get(_SESSION_KEY, None)
    if not state or not state["suites"]:
        return
    settings = config.stash[SETTINGS_KEY]
    write = terminalreporter.write_line
    repairs = sorted(set(state["repairs"])) + [line.replace(str(settings.rootdir) + os.sep, "") for line in state["leftovers"]]
    if state["golden_notes"] or repairs:
        terminalreporter.section("quantcheck goldens")
        changed = [n for n in sorted(state["golden_notes"]) if not n.endswith(": unchanged")]
        for note in changed:
            write(note)
        if state["golden_notes"]:
            write(golden_writes_line(state["golden_notes"]))
            if changed and config.getoption("fail_on_golden_writes"):
                write(f"{len(changed)} golden(s) rewritten: this run fails (--fail-on-golden-writes); rerun without --update-golden to check them")
        for line in repairs:
            write(f"repaired: {line}")
    if state["perf_notes"]:
        terminalreporter.section("quantcheck perf")
        for line in perf_section(state["perf_notes"]):
            write(line)
    if state["notes"]:
        terminalreporter.section("quantcheck checks not run")
        for line in notes_section(state["notes"]):
            write(line)
    stale = state["stale"]
    if stale:
        terminalreporter.section("quantcheck stale goldens")
        if config.getoption("prune_stale_goldens"):
            for p in prune(stale, settings.golden_root):
                write(f"deleted {display_path(p, settings.rootdir)}")
        else:
            for entry in stale:
                write(f"stale ({entry.why}): {display_path(entry.path, settings.rootdir)}")
            if _fails_on_stale(config):
                write(f"{len(stale)} stale golden file(s) fail this run (fail_on_stale_goldens); delete them with --prune-stale-goldens")
            else:
                write("delete them with --prune-stale-goldens")
    summary = config.getoption("summary")
    if summary is not None:
        terminalreporter.section("quantcheck summary")
        for line in summary_table(state["rows"]):
            write(line)
        spread = device_spread(state["rows"])
        if spread:
            write("cells per device (device index each cell ran on, by xdist worker):")
            for line in spread:
                write("  " + line)
        if summary != "-":
            write_summary_json(state["rows"], Path(summary))
            write(f"summary JSON: {summary}")
