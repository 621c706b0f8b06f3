"""The counters check of a cell: ``checks.counters``, ``graphs`` and ``graph_breaks``
(harness/counters.py) and ``recompiles``, reported as one section."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from ..case import Case
from ..case.check_sections import CheckKey, CheckSection
from ..case.model import COUNTER_OPS, DYNAMIC_MODES, CounterExpectation, RecompileBound
from ..case.validators import At, entries, list_items, optional_when, require_int, require_map, require_str
from ..counters import check_counters, check_graphs
from ..matrix import MatrixCell
from ..run import CellRun
from .context import CheckContext


def counter_sections(case: Case, cell: MatrixCell, run: CellRun) -> list[str]:
    """The ``checks.counters``, ``graphs`` and ``graph_breaks`` failures, as one section."""
    failures = check_counters(case.checks.counters, run.counters, cell, case.display_path)
    failures += check_graphs(case.checks, run.graphs, run.graph_breaks, run.graph_break_reasons, case.line, case.display_path)
    failures += recompile_failures(case, cell, run)
    return ["counters and graphs:\n" + "\n".join("  " + f for f in failures)] if failures else []


def recompile_failures(case: Case, cell: MatrixCell, run: CellRun) -> list[str]:
    """``checks.recompiles`` of the cell's ``dynamic:`` mode against the calls that compiled anew."""
    mode = getattr(cell, "dynamic", None)
    failures = []
    for bound in case.checks.recompiles:
        if bound.dynamic is not None and bound.dynamic != mode:
            continue
        if not bound.holds(run.recompiles):
            compiled_by = sorted({index for index, _ in run.graph_codes})
            failures.append(
                f"{case.display_path}:{bound.line}: recompiles: {run.recompiles}, expected {bound.op} {bound.count} "
                f"(calls that compiled, counting from 0: {', '.join(map(str, compiled_by)) or 'none'})"
            )
    return failures


def _parse_counters(value: Any, at: At, section: CheckSection) -> tuple[CounterExpectation, ...]:
    out = []
    for item, item_at in list_items(value, at):
        spec = require_map(item, item_at, ("key",) + COUNTER_OPS + ("when",))
        if "key" not in spec:
            raise item_at.error("missing key 'key' (a counter such as inductor.inplace_padding)")
        key_at = item_at.child("key", spec.value_lines["key"])
        key = require_str(spec["key"], key_at)
        if "." not in key or key.startswith(".") or key.endswith("."):
            raise key_at.error("must be '<group>.<name>' as in torch._dynamo.utils.counters[group][name]", got=key)
        bounds = {op: require_int(spec[op], item_at.child(op, spec.value_lines[op]), minimum=0) for op in COUNTER_OPS if op in spec}
        if not bounds:
            raise item_at.error("needs at least one of equals, at_least, at_most")
        if "equals" in bounds and len(bounds) > 1:
            raise item_at.error("equals excludes at_least and at_most")
        when = optional_when(spec, item_at)
        out.append(
            CounterExpectation(
                key=key, equals=bounds.get("equals"), at_least=bounds.get("at_least"), at_most=bounds.get("at_most"),
                when=when, line=item_at.line,
            )
        )
    return tuple(out)


def _graph_count(value: Any, at: At, section: CheckSection) -> Optional[int]:
    """A count of graphs (or graph breaks); null: not checked."""
    return None if value is None else require_int(value, at, minimum=0)


def _parse_recompiles(value: Any, at: At, section: CheckSection) -> tuple[RecompileBound, ...]:
    """``0``, ``"<= 1"`` (also ``==``, ``>=``), or one of those per ``dynamic:`` mode."""
    if isinstance(value, dict):
        mapping = require_map(value, at, DYNAMIC_MODES)
        return tuple(
            dataclasses.replace(_parse_recompile_bound(item, item_at), dynamic=mode) for mode, item, item_at in entries(mapping, at)
        )
    return (_parse_recompile_bound(value, at),)


def _parse_recompile_bound(value: Any, at: At) -> RecompileBound:
    if isinstance(value, int) and not isinstance(value, bool):
        return RecompileBound("==", require_int(value, at, minimum=0), line=at.line)
    text = require_str(value, at).strip()
    for op in ("<=", ">=", "=="):
        if text.startswith(op) and text[len(op):].strip().isdigit():
            return RecompileBound(op, int(text[len(op):]), line=at.line)
    raise at.error("must be a count or '<= N', '>= N', '== N'", got=value)


class CountersCheck:
    """Counters, graphs, graph breaks and recompiles: every cell (``graphs`` and
    ``graph_breaks`` have defaults, so each cell asserts how it compiled)."""

    name = "counters"
    per_example = True
    keys = {
        "counters": CheckKey(_parse_counters, default=()),
        "graphs": CheckKey(_graph_count, default=1),
        "graph_breaks": CheckKey(_graph_count, default=0),
        "recompiles": CheckKey(_parse_recompiles, default=()),  # only for a case with calls
    }

    def applies(self, case: Case, cell: MatrixCell) -> bool:
        return True

    def run(self, ctx: CheckContext) -> list[str]:
        return counter_sections(ctx.case, ctx.cell, ctx.run)
