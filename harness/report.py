"""Failure text of a cell, and the session summary table (case x backend x device).

A cell failure lists every failed check (golden, eager, FileCheck, counters, graphs) and
ends with the commands that re-run the cell and, for a golden mismatch, refresh it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional, Sequence

from .core.backends import NAMES

OUTCOME_WORDS = {
    "passed": "pass", "failed": "FAIL", "skipped": "skip", "xfailed": "xfail", "xpassed": "XPASS", "error": "ERROR",
    "crashed": "CRASH",
}


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """One cell's result; travels from xdist workers to the controller as a user property."""

    suite: str
    case: str
    backend: str
    device: str
    dtype: str
    line: int  # the case's line in its suite: rows sort in declaration order
    outcome: str  # passed | failed | skipped | xfailed | xpassed | error | crashed (the cell killed its process)
    max_abs: Optional[float] = None
    max_rel: Optional[float] = None
    seconds: float = 0.0
    detail: str = ""
    device_index: Optional[int] = None  # the GPU a cuda cell ran on (torch.cuda.current_device())
    worker: str = ""  # the pytest-xdist worker that ran it ("" without xdist)
    perf_us: Optional[float] = None  # median µs of a checks.perf cell that was timed

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "SummaryRow":
        return cls(**json.loads(text))


def rerun_command(nodeid: str, options: Sequence[str] = (), extra: str = "") -> str:
    """The command that reruns ``nodeid`` with the user's own ``options`` (see plugin.rerun_options)."""
    return " ".join(["python -m pytest", shlex.quote(nodeid), *map(shlex.quote, options)]) + extra


def update_command(case_nodeid: str, options: Sequence[str] = ()) -> str:
    return rerun_command(case_nodeid, options, " --update-golden")


def golden_verdict(eager_matches: bool, compiled_matches: bool, compiled_matches_eager: Optional[bool]) -> str:
    """What the two golden comparisons say together, for a person deciding whether to refresh."""
    if not eager_matches and compiled_matches:
        return (
            "compiled still matches the old golden: only eager's output moved, so compiled and eager\n"
            "now disagree; find what changed eager's path before accepting a new golden."
        )
    if not eager_matches and compiled_matches_eager:
        return (
            "compiled matches eager in this run: the golden differs because the program's own\n"
            "numerics changed (its code or its package's, its inputs, the torch version), not because of compilation."
        )
    if eager_matches and not compiled_matches:
        return (
            "eager still matches the golden: only the compiled output moved, a compiler or pass\n"
            "problem; the golden is right as it is."
        )
    return ""


def format_cell_failure(
    title: str, sections: list[str], nodeid: str, case_nodeid: str, eager_moved: bool, options: Sequence[str] = ()
) -> str:
    """The cell's report. "accept as new golden" only when eager itself moved off the golden:
    a golden is eager's output, so no compiled-only failure is fixed by refreshing it."""
    lines = [title, ""]
    for section in sections:
        lines.append(section.rstrip())
        lines.append("")
    lines.append(f"re-run this cell:      {rerun_command(nodeid, options)}")
    if eager_moved:
        lines.append(f"accept as new golden:  {update_command(case_nodeid, options)}   (only after an intended change)")
    return "\n".join(lines)


def _fmt_error(row: SummaryRow) -> str:
    if row.max_abs is None:
        return ""
    if math.isinf(row.max_abs):
        return "inf"
    return f"{row.max_abs:.1e}" if row.max_abs else "0"


def summary_table(rows: Iterable[SummaryRow]) -> list[str]:
    """A text table: one line per (suite::case, dtype), one column per backend/device.

    Each entry is the outcome and the worst max-abs error against eager and golden.
    """
    rows = sorted(rows, key=lambda r: (r.suite, r.line))
    if not rows:
        return ["(no quantcheck cells ran)"]
    columns = sorted({(r.device, r.backend) for r in rows}, key=lambda c: (c[0] != "cpu", c[0], _backend_order(c[1])))
    grouped: dict[tuple[str, str], dict[tuple[str, str], SummaryRow]] = defaultdict(dict)
    for r in rows:
        grouped[(f"{r.suite}::{r.case}", r.dtype)][(r.device, r.backend)] = r
    header = ["case", "dtype"] + [f"{b}/{d}" for d, b in columns]
    table = [header]
    for (case, dtype), cells in grouped.items():
        line = [case, dtype]
        for column in columns:
            r = cells.get(column)
            line.append("" if r is None else f"{OUTCOME_WORDS.get(r.outcome, r.outcome)} {_fmt_error(r)}".strip())
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    out.insert(1, "  ".join("-" * w for w in widths))
    counts = defaultdict(int)
    for r in rows:
        counts[r.outcome] += 1
    out.append("")
    out.append("cells: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + "   (entries: outcome and worst max-abs error vs eager/golden)")
    return out


def _backend_order(backend: str) -> int:
    """The summary's column order: the registry's."""
    return NAMES.index(backend) if backend in NAMES else len(NAMES)


def write_summary_json(rows: Iterable[SummaryRow], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2) + "\n", encoding="utf-8")


def notes_section(notes: Iterable[str]) -> list[str]:
    """``<nodeid>: <note>`` lines counted per note: '3 cell(s): FileCheck on ptx not run: ...'."""
    counts: dict[str, int] = defaultdict(int)
    for note in notes:
        counts[note.split(": ", 1)[-1]] += 1
    return [f"{count} cell(s): {note}" for note, count in sorted(counts.items())]


def device_spread(rows: Iterable[SummaryRow]) -> list[str]:
    """How the cells that ran on an indexed device spread over the devices and workers.

    'cuda:0: 41 cells (gw0 21, gw2 20)', one line per device; empty when no row has an index.
    """
    per_device: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        if r.device_index is not None:
            per_device[f"{r.device}:{r.device_index}"][r.worker or "main"] += 1
    lines = []
    for device, workers in sorted(per_device.items()):
        counts = ", ".join(f"{w} {n}" for w, n in sorted(workers.items(), key=lambda item: _worker_order(item[0])))
        lines.append(f"{device}: {sum(workers.values())} cells ({counts})")
    return lines


def _worker_order(worker: str) -> tuple[int, str]:
    return (int(worker[2:]), worker) if worker.startswith("gw") and worker[2:].isdigit() else (-1, worker)
