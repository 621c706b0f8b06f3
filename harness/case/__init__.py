"""YAML suite file -> frozen :class:`Case` records, validated, with YAML line numbers kept.

Every problem in a suite file is reported as one line,
``path:line: field: problem (got X; allowed A, B)``, raised as :class:`CaseFormatError`
(a ``pytest.Collector.CollectError``, so pytest prints the message alone). The format is
documented in docs/harness.md and described by harness/schema.json; a test keeps the
schema and this validator in agreement on every suite file.

File layout::

    description: free text                 # optional
    defaults: {<case fields>}              # optional; merged under every case
    cases:
      <case name>: {<case fields>}

The package, in the order its modules import one another: ``errors`` (the one-line
error), ``yaml_lines`` (YAML with line numbers, and its guards), ``model`` (the frozen
records and the names they may hold), ``validators`` (where a value sits, checks of single
values), ``sections`` (each part of a case -> its record); this module reads the file,
merges ``defaults:`` under each case, and is what the rest of the harness imports.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional, Sequence

from .. import filecheck
from ..core import programs
from ..core.backends import backend as backend_record
from .errors import CaseFormatError, SuiteErrors
from .model import (
    BACKENDS,
    COMPILE_MODES,
    COUNTER_OPS,
    CUDAGRAPH_MODES,
    DEVICES,
    DYNAMIC_MODES,
    FILECHECK_TARGETS,
    LAYOUTS,
    MARK_KINDS,
    PASS_HOOKS,
    RANGE_SETTINGS,
    REQUIREMENTS,
    PERF_TIMERS,
    Call,
    Case,
    Checks,
    CounterExpectation,
    DimRange,
    FileCheckBlock,
    FuzzSpec,
    InputFuzz,
    Mark,
    Matrix,
    PassSpec,
    FasterThan,
    PerfSpec,
    RecompileBound,
    Reference,
    Variant,
    Suite,
    Tolerance,
    When,
)
from .sections import (
    CASE_KEYS,
    DEFAULT_MATRIX,
    DEFAULT_MAX_INPUT_GB,
    DEFAULTS_KEYS,
    INPUT_KEYS,
    TOLERANCE_KEYS,
    parse_case,
)
from .validators import At, check_directives, entries, require_map, require_str
from .yaml_lines import YamlMap, YamlSeq, as_yaml_map, parse_yaml_with_lines

__all__ = [
    "BACKENDS", "CASE_KEYS", "COMPILE_MODES", "COUNTER_OPS", "CUDAGRAPH_MODES", "DEFAULT_MATRIX",
    "DEFAULT_MAX_INPUT_GB", "DEFAULTS_KEYS", "DEVICES", "DYNAMIC_MODES", "PERF_TIMERS", "FILECHECK_TARGETS", "INPUT_KEYS", "LAYOUTS", "MARK_KINDS",
    "PASS_HOOKS", "RANGE_SETTINGS", "REQUIREMENTS", "TOLERANCE_KEYS", "TOP_LEVEL_KEYS",
    "Call", "Case", "CaseFormatError", "Checks", "SuiteErrors", "CounterExpectation", "DimRange", "FileCheckBlock",
    "FuzzSpec", "InputFuzz", "Mark", "Matrix", "FasterThan", "PassSpec", "PerfSpec", "RecompileBound", "Reference",
    "Suite", "Variant", "Tolerance", "When",
    "load_suite", "parse_suite",
]

TOP_LEVEL_KEYS = ("description", "defaults", "cases")


def load_suite(path: Path, display_path: Optional[str] = None) -> Suite:
    """Read and validate one suite file. Raises CaseFormatError naming file, line and field."""
    display = display_path or _display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseFormatError(display, 1, "file", f"cannot read: {exc}") from None
    try:
        return parse_suite(text, path, display)
    except CaseFormatError:
        raise
    except Exception as exc:  # a loader bug must still be one line, naming the file
        raise CaseFormatError(display, 1, "file", f"the loader failed (a harness bug): {programs.describe_exception(exc)}") from exc


def _display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def parse_suite(text: str, path: Path, display: str) -> Suite:
    document = parse_yaml_with_lines(text, display)
    root_at = At(display, 1, "")
    if document is None:
        raise root_at.error("the file is empty; a suite needs a 'cases' mapping")
    top = require_map(document, root_at, TOP_LEVEL_KEYS)
    description = ""
    defaults = as_yaml_map({}, 1)
    if "description" in top:
        description = require_str(top["description"], root_at.child("description", top.value_lines["description"]))
    if "defaults" in top:
        defaults = require_map(top["defaults"], root_at.child("defaults", top.value_lines["defaults"]), DEFAULTS_KEYS)
    if "cases" not in top:
        raise root_at.error("missing key 'cases' (a mapping from case name to case)")
    cases_at = root_at.child("cases", top.value_lines["cases"])
    cases_map = require_map(top["cases"], cases_at)
    if not cases_map:
        raise cases_at.error("must name at least one case")
    cases = []
    errors: list[CaseFormatError] = []  # as a compiler does: every case checked, each one's first error reported
    for name, body, case_at in entries(cases_map, cases_at):
        case_at = At(display, cases_map.key_lines[name], case_at.field)
        try:
            if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
                raise case_at.error("a case name must be letters, digits, '_' or '-'", got=name)
            body = require_map(body, case_at, CASE_KEYS)
            merged = _merge_maps(defaults, body, ("config", "dynamo_config", "checks", "matrix", "tolerances"), "defaults", case_at.field)
            case = _read_check_files(parse_case(name, merged, case_at, path, display), case_at, path)
            _check_filecheck_cells(case, case_at)
            cases.append(case)
        except SuiteErrors as exc:
            errors += exc.errors
        except CaseFormatError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise SuiteErrors(sorted(_dedupe(errors), key=lambda e: e.line))
    return Suite(path=path, display_path=display, description=description, cases=tuple(cases))


def _read_check_files(case: Case, case_at: At, path: Path) -> Case:
    """Each ``file:`` block's text, from its path relative to the suite file's folder, checked
    as an inline block is (errors name the checks file's line). A file that does not exist yet
    stays empty: its cells fail, naming it, until ``--update-checks`` writes it."""
    if not any(block.file for block in case.checks.filecheck):
        return case
    blocks = []
    for index, block in enumerate(case.checks.filecheck):
        if block.file:
            file_path = Path(path).parent / block.file
            shown = Path(os.path.normpath(Path(case.display_path).parent / block.file)).as_posix()
            check = ""
            if file_path.is_file():
                at = At(shown, 1, f"{case_at.field}.checks.filecheck[{index}].file")
                try:
                    check = file_path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise At(case_at.path, block.line, at.field).error(f"cannot read {shown}: {exc}") from None
                check_directives(check, at, 1, block.prefixes)
            block = dataclasses.replace(block, check=check, file=shown, file_path=file_path)
        blocks.append(block)
    return dataclasses.replace(case, checks=case.checks.replace(filecheck=tuple(blocks)))


def _check_filecheck_cells(case: Case, case_at: At) -> None:
    """A FileCheck block whose lines apply to an eager or aot_eager cell would fail on empty
    text at run time; the matrix is known now, so it is a load error."""
    for index, block in enumerate(case.checks.filecheck):
        cells = [
            (backend, device)
            for backend in case.matrix.backends if not backend_record(backend).generates_code
            for device in case.matrix.devices
            if any(block.when.applies(backend, device, dtype) for dtype in case.matrix.dtypes)
        ]
        hit = sorted({b for b, d in cells if filecheck.directive_problems(block.check, filecheck.prefixes_for(b, d, block.prefixes))[0]})
        if hit:
            at = At(case_at.path, block.line, f"{case_at.field}.checks.filecheck[{index}]")
            raise at.error(
                f"{block.target} comes from Inductor only, and this block's lines apply to the matrix's {', '.join(hit)} cells, "
                "where they would fail on empty text; add when: {backends: [inductor]} (or narrow the matrix)"
            )


def _dedupe(errors: list[CaseFormatError]) -> list[CaseFormatError]:
    """One line per message: an error in ``defaults:`` is met again by every case it merges into."""
    seen: set[str] = set()
    return [e for e in errors if not (str(e) in seen or seen.add(str(e)))]


def _merge_maps(base: YamlMap, override: YamlMap, deep_keys: Sequence[str], base_field: str, override_field: str) -> YamlMap:
    """``override`` on top of ``base``; for ``deep_keys`` the nested mappings merge key by key.

    Line tables and field paths follow each key to the map it came from (``base_field``,
    e.g. ``defaults``, or ``override_field``, e.g. ``cases.w8``), so an error in a default
    points at the defaults block by line and by name.
    """
    merged = YamlMap()
    merged.line = override.line
    merged.key_lines, merged.value_lines, merged.value_styles, merged.key_fields = {}, {}, {}, {}
    for source, field in ((base, base_field), (override, override_field)):
        for key, value in source.items():
            merged.key_fields.pop(key, None)
            if key in deep_keys and isinstance(merged.get(key), YamlMap) and isinstance(value, YamlMap):
                value = _merge_maps(merged[key], value, (), f"{base_field}.{key}", f"{override_field}.{key}")
            elif key == "marks" and isinstance(merged.get(key), YamlSeq) and isinstance(value, YamlSeq):
                combined = YamlSeq(list(merged[key]) + list(value))
                combined.line = value.line
                combined.item_lines = list(merged[key].item_lines) + list(value.item_lines)
                combined.item_fields = [f"{base_field}.marks[{i}]" for i in range(len(merged[key]))] + [
                    f"{override_field}.marks[{i}]" for i in range(len(value))
                ]
                value = combined
            elif source is base:
                merged.key_fields[key] = f"{base_field}.{key}"
            merged[key] = value
            merged.key_lines[key] = source.key_lines.get(key, source.line)
            merged.value_lines[key] = source.value_lines.get(key, source.line)
            merged.value_styles[key] = source.value_styles.get(key)
    return merged
