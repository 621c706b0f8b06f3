"""The ``checks:`` part of a case: one parser a key, in one table (:data:`SECTIONS`).

Each key is read by one check of :mod:`harness.checks` (named beside its entry); a new kind
of check adds its keys' parsers here, its field to :class:`~harness.case.model.Checks`, and
its ``Check`` to ``harness.checks.CHECKS``. The parsers sit in the loader, below the checks,
because the checks' own modules import the run and the stores, which import the case.

Every parser takes ``(value, at, section)`` and returns the field's value or raises the
one-line ``path:line: field: problem`` error; ``section`` carries what a key needs of the
rest of the case (a baseline's or reference's program and inputs, the case's dtypes).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Optional, Sequence

from .. import filecheck
from .model import (
    BACKENDS,
    COUNTER_OPS,
    DEVICES,
    DYNAMIC_MODES,
    FILECHECK_TARGETS,
    PERF_TIMERS,
    Checks,
    CounterExpectation,
    FasterThan,
    FileCheckBlock,
    PerfSpec,
    RecompileBound,
    Reference,
    Tolerance,
    Variant,
    When,
)
from .validators import (
    At,
    entries,
    parse_when,
    require_bool,
    require_choice,
    require_int,
    require_list,
    require_map,
    require_number,
    require_str,
)
from .yaml_lines import YamlMap

REFERENCE_KEYS = ("name", "program", "params", "inputs", "tolerances", "when")
EACH_GRAPH_TARGETS = ("output_code", "kernel_source")  # texts the run keeps per compiled graph
PERF_KEYS = ("band", "warmup", "reps", "cuda_graph", "l2_flush", "when", "timer", "golden", "faster_than")
VARIANT_KEYS = ("program", "params", "inputs")


@dataclasses.dataclass(frozen=True)
class CheckSection:
    """What a ``checks:`` key may need of the rest of its case."""

    #: ``(value, at, keys) -> (Variant, mapping)``: a baseline or reference (the case's program
    #: and inputs unless it gives its own), and its mapping for the caller's own keys.
    variant: Callable[[Any, At, Sequence[str]], tuple[Variant, YamlMap]]
    #: ``(value, at) -> ((dtype, Tolerance), ...)``: a ``tolerances:`` for the case's dtypes.
    tolerances: Callable[[Any, At], tuple[tuple[str, Tolerance], ...]]


def parse_checks(value: Any, at: At, section: CheckSection) -> Checks:
    """A case's ``checks:`` (None: every default) -> its :class:`Checks`."""
    if value is None:
        return Checks()
    mapping = require_map(value, at, CHECKS_KEYS)
    return Checks(**{key: SECTIONS[key](item, item_at, section) for key, item, item_at in entries(mapping, at)})


def _flag(value: Any, at: At, section: CheckSection) -> bool:
    return require_bool(value, at)


def _sample_size(value: Any, at: At, section: CheckSection) -> int:
    return require_int(value, at, minimum=1)


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


def _parse_references(value: Any, at: At, section: CheckSection) -> tuple[Reference, ...]:
    items = require_list(value, at)
    out = []
    for i, item in enumerate(items):
        item_at = at.item(items, i)
        parsed, mapping = section.variant(item, item_at, REFERENCE_KEYS)
        for key in ("name", "tolerances"):
            if key not in mapping:
                raise item_at.error(f"missing key '{key}'")
        name = require_str(mapping["name"], item_at.key(mapping, "name"))
        if name in {r.name for r in out}:
            raise item_at.key(mapping, "name").error("named twice", got=name)
        tolerances = section.tolerances(mapping["tolerances"], item_at.key(mapping, "tolerances"))
        when = parse_when(mapping["when"], item_at.key(mapping, "when")) if "when" in mapping else When()
        out.append(Reference(name=name, variant=parsed, tolerances=tolerances, when=when))
    return tuple(out)


def _parse_perf(value: Any, at: At, section: CheckSection) -> PerfSpec:
    spec = require_map(value, at, PERF_KEYS)
    fields: dict[str, Any] = {"line": at.line}
    for key, item, item_at in entries(spec, at):
        if key == "band":
            fields[key] = require_number(item, item_at, minimum=0.0)
        elif key in ("warmup", "reps"):
            fields[key] = require_int(item, item_at, minimum=0 if key == "warmup" else 1)
        elif key in ("cuda_graph", "l2_flush", "golden"):
            fields[key] = require_bool(item, item_at)
        elif key == "timer":
            fields[key] = require_choice(item, item_at, PERF_TIMERS)
        elif key == "faster_than":
            baseline, mapping = section.variant(item, item_at, VARIANT_KEYS + ("by",))
            if "by" not in mapping:
                raise item_at.error("missing key 'by' (how many times faster than the baseline the case must be, e.g. 1.2)")
            by = require_number(mapping["by"], item_at.key(mapping, "by"), minimum=0.0)
            if not by > 0:
                raise item_at.key(mapping, "by").error("must be > 0", got=by)
            fields[key] = FasterThan(baseline=baseline, by=by, line=item_at.line)
        else:
            fields[key] = parse_when(item, item_at)
    if "timer" in fields and "cuda_graph" in fields and fields["cuda_graph"] != (fields["timer"] == "graph"):
        raise at.key(spec, "cuda_graph").error(f"contradicts timer: {fields['timer']} (cuda_graph: true is timer: graph; give one of them)")
    if fields.get("cuda_graph"):
        fields["timer"] = "graph"
    fields["cuda_graph"] = fields.get("timer") == "graph"
    if "golden" not in fields:
        fields["golden"] = "faster_than" not in fields  # a ratio needs no golden unless asked
    if not fields["golden"] and "faster_than" not in fields:
        raise at.error("checks nothing: golden: false and no faster_than (give a baseline, or keep the perf golden)")
    return PerfSpec(**fields)


def _parse_filechecks(value: Any, at: At, section: CheckSection) -> tuple[FileCheckBlock, ...]:
    items = require_list(value, at)
    out = []
    for i, item in enumerate(items):
        item_at = at.item(items, i)
        block = require_map(item, item_at, ("target", "check", "file", "prefixes", "when", "each_graph"))
        if ("check" in block) == ("file" in block):
            raise item_at.error("needs one of 'check' (FileCheck text: CHECK lines) and 'file' (a checks file beside the suite)")
        target = require_choice(block.get("target", "output_code"), item_at.child("target", block.value_lines.get("target", item_at.line)), FILECHECK_TARGETS)
        prefixes = ("CHECK",)
        if "prefixes" in block:
            prefixes_at = item_at.child("prefixes", block.value_lines["prefixes"])
            prefixes = tuple(require_str(p, prefixes_at.item(block["prefixes"], i)) for i, p in enumerate(require_list(block["prefixes"], prefixes_at)))
            bad = [p for p in prefixes if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", p)]
            if bad:
                raise prefixes_at.error("a prefix is a letter, then letters, digits, '-' or '_'", got=bad[0])
        when = parse_when(block["when"], item_at.child("when", block.value_lines["when"])) if "when" in block else When()
        each_graph = False
        if "each_graph" in block:
            each_at = item_at.child("each_graph", block.value_lines["each_graph"])
            each_graph = require_bool(block["each_graph"], each_at)
            if each_graph and target not in EACH_GRAPH_TARGETS:
                raise each_at.error(f"target {target!r} is not kept per graph", got=target, allowed=EACH_GRAPH_TARGETS)
        if "file" in block:  # read (and checked) by the loader, which knows the suite file's folder
            file = require_str(block["file"], item_at.child("file", block.value_lines["file"]))
            out.append(FileCheckBlock(target=target, check="", first_check_line=1, when=when, line=item_at.line,
                                      prefixes=prefixes, file=file, each_graph=each_graph))
            continue
        check_at = item_at.child("check", block.value_lines["check"])
        check = require_str(block["check"], check_at)
        # A block scalar ('|' or '>') starts on the line after its indicator.
        first_line = check_at.line + (1 if block.value_styles.get("check") in ("|", ">") else 0)
        check_directives(check, check_at, first_line, prefixes)
        out.append(FileCheckBlock(target=target, check=check, first_check_line=first_line, when=when, line=item_at.line,
                                  prefixes=prefixes, each_graph=each_graph))
    return tuple(out)


def check_directives(check: str, at: At, first_line: int, bases: Sequence[str] = ("CHECK",)) -> None:
    """A block with no directive, or a line starting like a misspelled one, would check
    nothing and pass; both are load errors (LLVM FileCheck warns about the first)."""
    found, problems = filecheck.directive_problems(check, filecheck.every_prefix(list(BACKENDS), list(DEVICES), bases))
    base = "/".join(bases)
    allowed = f"{base}, {base}-<DEVICE>, {base}-<BACKEND>, {base}-<DEVICE>-<BACKEND>, each plain or with -NEXT, -SAME, -NOT, -DAG, -LABEL, -EMPTY, -COUNT-<n>"
    if problems:
        index, word = problems[0]
        line_at = At(at.path, first_line + index, at.field)
        raise line_at.error(f"{word + ':'!r} is not a FileCheck directive, so this line would check nothing", got=word, allowed=[allowed])
    if not found:
        raise at.error(f"no FileCheck directive in the block, so it would check nothing (a line needs one of {allowed}, then ':')")


def _parse_counters(value: Any, at: At, section: CheckSection) -> tuple[CounterExpectation, ...]:
    items = require_list(value, at)
    out = []
    for i, item in enumerate(items):
        item_at = at.item(items, i)
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
        when = parse_when(spec["when"], item_at.child("when", spec.value_lines["when"])) if "when" in spec else When()
        out.append(
            CounterExpectation(
                key=key, equals=bounds.get("equals"), at_least=bounds.get("at_least"), at_most=bounds.get("at_most"),
                when=when, line=item_at.line,
            )
        )
    return tuple(out)


#: Each ``checks:`` key's parser, in the order the schema and the errors list the keys.
SECTIONS: dict[str, Callable[[Any, At, CheckSection], Any]] = {
    "golden": _flag,  # checks/golden.py
    "golden_sample": _sample_size,  # checks/golden.py
    "eager": _flag,  # checks/numeric.py (EagerCheck)
    "inputs_after": _flag,  # the run: inputs after the call join the compared outputs
    "filecheck": _parse_filechecks,  # checks/filecheck.py
    "counters": _parse_counters,  # checks/counters.py
    "graphs": _graph_count,  # checks/counters.py
    "graph_breaks": _graph_count,  # checks/counters.py
    "perf": _parse_perf,  # checks/perf.py
    "recompiles": _parse_recompiles,  # checks/counters.py
    "references": _parse_references,  # checks/numeric.py (ReferencesCheck)
}
CHECKS_KEYS = tuple(SECTIONS)
