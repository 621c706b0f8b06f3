"""What a check reads and where it writes: the session's ``Settings``, a cell's ``CellSite``
in the session, one run's ``CheckContext``, and the ``Check`` protocol every check follows."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from ..case import Case
from ..compare import Comparison
from ..golden import GoldenPaths, golden_paths
from ..matrix import MatrixCell, Narrowing
from ..project import Project
from ..run import CellRun

# Lines a cell hands to the session's sections, as pytest user properties (they cross xdist).
GOLDEN_PROPERTY = "quantcheck_golden"
REPAIR_PROPERTY = "quantcheck_golden_repair"  # an interrupted write, finished or undone by this cell
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

    def shown(self, path: Path) -> str:
        """``path`` as the report prints it: relative to the rootdir when under it."""
        return display_path(path, self.rootdir)


def display_path(path: Path, rootdir: Path) -> str:
    try:
        return str(path.relative_to(rootdir))
    except ValueError:
        return str(path)


def harness_command() -> str:
    """How this process's harness is run: ``python -m quantcheck`` installed, ``python -m harness`` in a checkout."""
    package = __name__.rsplit(".", 2)[0]  # harness, or quantcheck.harness
    return "python -m quantcheck" if package.startswith("quantcheck.") else f"python -m {package}"


@dataclasses.dataclass(frozen=True)
class CellSite:
    """A cell's place in the session: what the golden and perf checks need besides its run."""

    settings: Settings
    nodeid: str
    case_nodeid: str
    record: Callable[[str, str], None]  # (property, line): a line for the session's sections
    writes_golden: bool = False  # this cell writes the golden of its key (one writer per file)
    golden_writer: str = ""  # that writer's node id: its report holds the eager vs golden table
    case_names: frozenset[str] = frozenset()  # the suite's cases (a missing golden may be a rename)
    timer: Optional[Any] = None  # the harness.perf.DeviceTimer that timed the run
    not_timed: Optional[str] = None  # why a cell with checks.perf was not timed


@dataclasses.dataclass
class CheckContext:
    """One run being judged: the checks read the run and fill in what later checks and the
    item read (the comparisons of the summary's worst error, eager's verdict)."""

    case: Case
    cell: MatrixCell
    run: CellRun
    dump: Callable[[str, str], str]  # (name, text) -> the path where a person can open the text
    note: Callable[[str], None]  # a check that could not run here, and why
    site: Optional[CellSite] = None  # None: a fuzz example (no golden, no timing, no --update-checks)
    reference: Optional[str] = None  # a fuzz case's ``module:function`` oracle
    comparisons: list[Comparison] = dataclasses.field(default_factory=list)  # eager's and the golden's
    compiled_matches_eager: Optional[bool] = None  # None: the case does not compare with eager
    eager_moved: bool = False  # eager itself is off the golden: the one failure a new golden may fix


class Check(Protocol):
    """One kind of check of a run. ``run`` returns the report sections of its failures
    (empty: it passed); ``per_example``: it also judges each fuzz example (a golden and a
    timing need fixed shapes)."""

    name: str
    per_example: bool

    def applies(self, case: Case, cell: MatrixCell) -> bool: ...

    def run(self, ctx: CheckContext) -> list[str]: ...
