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
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import pytest
import yaml

from .. import filecheck, programs
from ..dtypes import DTYPES, MATRIX_DTYPE, canonical_dtype_name
from ..portable import Tolerance
from ..inputs import DISTRIBUTIONS, REQUIRED_DISTRIBUTION_SETTINGS, InputSpec, input_kind, input_kind_names, kind_from_builder

BACKENDS = ("eager", "aot_eager", "inductor", "inductor_max_autotune")
DEVICES = ("cpu", "cuda", "xpu", "mps")
FILECHECK_TARGETS = ("output_code", "post_grad_graph", "kernel_source", "autotune_block", "ptx", "sass", "kernel_resources")
PERF_KEYS = ("band", "warmup", "reps", "cuda_graph", "l2_flush", "when")
PASS_HOOKS = (
    "pre_grad_custom_pass",
    "joint_custom_pre_pass",
    "joint_custom_post_pass",
    "post_grad_custom_pre_pass",
    "post_grad_custom_post_pass",
)
TOLERANCE_KEYS = ("atol", "rtol", "min_sqnr_db", "quant_step", "max_step_error", "float64_factor")
COUNTER_OPS = ("equals", "at_least", "at_most")
MARK_KINDS = ("slow", "skip", "xfail", "requires")
REQUIREMENTS = ("big_gpu", "device_memory_gb", "min_devices", "triton", "triton_interpreter")
#: Storage one input may take (GB, 1e9 bytes) unless its case says ``max_input_gb:``: more
#: is usually a typo (a stride of 1e11, a dim of 1e12) that would otherwise surface as a
#: swapping machine or an out-of-memory kill minutes into the run.
DEFAULT_MAX_INPUT_GB = 4.0

# torch.compile modes the ``inductor`` backend's cells may use (``compile_mode:``); the ones
# with CUDA graphs are run until they replay (harness/run.py, CUDAGRAPH_RUNS).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")

DEFAULT_MATRIX = {"backends": ("eager", "aot_eager", "inductor"), "devices": ("cpu", "cuda"), "dtypes": ("float32",)}

CASE_KEYS = (
    "description", "program", "params", "inputs", "seed", "matrix", "tolerances", "config",
    "dynamo_config", "passes", "backward", "no_grad", "deterministic", "checks", "marks", "timeout", "fuzz",
    "compile_mode",
    "max_input_gb",
)
DEFAULTS_KEYS = tuple(k for k in CASE_KEYS if k not in ("description", "program", "params", "inputs", "fuzz"))
TOP_LEVEL_KEYS = ("description", "defaults", "cases")
CHECKS_KEYS = ("golden", "golden_sample", "eager", "inputs_after", "filecheck", "counters", "graphs", "graph_breaks", "perf")
INPUT_KEYS = (
    "kind", "shape", "dtype", "strides", "pad_last_dim", "distribution", "mean", "std", "low", "high",
    "value", "seed", "requires_grad", "params",
)


class CaseFormatError(pytest.Collector.CollectError):
    """One problem in a suite file, located by file, line and field."""

    def __init__(
        self,
        path: str,
        line: int,
        field: str,
        problem: str,
        got: Any = dataclasses.MISSING,
        allowed: Optional[Iterable[Any]] = None,
    ) -> None:
        detail = []
        if got is not dataclasses.MISSING:
            detail.append(f"got {_show(got)}")
        if allowed is not None:
            detail.append("allowed " + ", ".join(str(a) for a in allowed))
        suffix = f" ({'; '.join(detail)})" if detail else ""
        self.path, self.line, self.field, self.problem = path, line, field, problem
        super().__init__(f"{path}:{line}: {field}: {problem}{suffix}")


def _show(value: Any) -> str:
    if isinstance(value, (YamlMap, dict)):
        return "a mapping"
    if isinstance(value, (YamlSeq, list)):
        if len(value) <= 8 and all(isinstance(v, (str, int, float, bool, type(None))) for v in value):
            return repr(list(value))
        return "a list"
    return repr(value)


# --------------------------------------------------------------------------- YAML with lines


class YamlMap(dict):
    """A YAML mapping that remembers the 1-based line of itself, of each key and of each value.

    ``key_fields``: for a case merged with ``defaults:``, the field path of each key that
    came from the defaults block (``defaults.tolerances.atol``), so errors name that block."""

    line: int = 0
    key_lines: dict
    value_lines: dict
    value_styles: dict
    key_fields: dict = {}


class YamlSeq(list):
    """A YAML sequence that remembers its 1-based line and each item's line (and, merged
    from ``defaults:``, each item's field path)."""

    line: int = 0
    item_lines: list
    item_fields: list = []


#: Nodes a suite may hold once its aliases are expanded. Suites have hundreds; a few
#: nested aliases of aliases ("billion laughs") reach billions in a few hundred bytes.
MAX_YAML_NODES = 200_000


class _LineLoader(yaml.SafeLoader):
    """SafeLoader building YamlMap/YamlSeq, refusing duplicate keys (PyYAML keeps the last
    silently), unhashable keys and alias bombs."""

    def construct_document(self, node: yaml.Node):  # type: ignore[override]
        _check_alias_expansion(node)
        return super().construct_document(node)

    def construct_yaml_map(self, node: yaml.MappingNode):  # type: ignore[override]
        mapping = YamlMap()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines, mapping.value_lines, mapping.value_styles = {}, {}, {}
        yield mapping
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise _BadKey(key, key_node.start_mark.line + 1)
            if key in mapping:
                raise _DuplicateKey(key, key_node.start_mark.line + 1, mapping.key_lines[key])
            mapping[key] = self.construct_object(value_node, deep=True)
            mapping.key_lines[key] = key_node.start_mark.line + 1
            mapping.value_lines[key] = value_node.start_mark.line + 1
            mapping.value_styles[key] = getattr(value_node, "style", None)

    def construct_yaml_seq(self, node: yaml.SequenceNode):  # type: ignore[override]
        seq = YamlSeq()
        seq.line = node.start_mark.line + 1
        seq.item_lines = [child.start_mark.line + 1 for child in node.value]
        yield seq
        seq.extend(self.construct_object(child, deep=True) for child in node.value)


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_yaml_map)
# YAML 1.1 (PyYAML) reads 1e-2 as a *string*; tolerances are written that way all the time.
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_yaml_seq)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        self.key, self.line, self.first_line = key, line, first_line


class _BadKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        self.key, self.line = key, line


class _AliasBomb(Exception):
    def __init__(self, nodes: int, line: int) -> None:
        self.nodes, self.line = nodes, line


def _check_alias_expansion(root: yaml.Node) -> None:
    """Raise _AliasBomb when the document, aliases expanded, has more than MAX_YAML_NODES nodes.

    Sizes are memoized per node, so this costs one visit per distinct node however large
    the expansion; the line named is that of the first node whose expansion alone is too big."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a recursive alias counts once
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                raise _AliasBomb(total, child.start_mark.line + 1)
        sizes[id(node)] = total
        return total

    size(root)


def parse_yaml_with_lines(text: str, display_path: str) -> Any:
    """Parse ``text``; YAML syntax errors and duplicate keys become CaseFormatError."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as dup:
        raise CaseFormatError(display_path, dup.line, str(dup.key), f"duplicate key (first defined on line {dup.first_line})") from None
    except _BadKey as bad:
        raise CaseFormatError(display_path, bad.line, "yaml", "a mapping key must be a string or a number", got=bad.key) from None
    except _AliasBomb as bomb:
        raise CaseFormatError(
            display_path, bomb.line, "yaml",
            f"aliases expand to more than {MAX_YAML_NODES} nodes (an alias of aliases of aliases?); "
            "write the repeated part out or use fewer nested aliases",
        ) from None
    except RecursionError:
        raise CaseFormatError(display_path, 1, "yaml", "nested too deeply (or a recursive alias)") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise CaseFormatError(display_path, line, "yaml", f"malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise CaseFormatError(display_path, 1, "yaml", f"malformed YAML: {exc}") from None


# --------------------------------------------------------------------------- the case model


@dataclasses.dataclass(frozen=True)
class When:
    """A filter on matrix cells; an empty tuple means "any"."""

    backends: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()

    def applies(self, backend: str, device: str, dtype: str) -> bool:
        return (
            (not self.backends or backend in self.backends)
            and (not self.devices or device in self.devices)
            and (not self.dtypes or dtype in self.dtypes)
        )

    def describe(self) -> str:
        parts = [f"{k}={','.join(v)}" for k, v in dataclasses.asdict(self).items() if v]
        return " ".join(parts) or "every cell"


@dataclasses.dataclass(frozen=True)
class Matrix:
    backends: tuple[str, ...]
    devices: tuple[str, ...]
    dtypes: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class FileCheckBlock:
    target: str
    check: str
    first_check_line: int  # YAML line of the check text's first line
    when: When
    line: int


@dataclasses.dataclass(frozen=True)
class CounterExpectation:
    key: str  # "<group>.<name>", e.g. "inductor.inplace_padding"
    equals: Optional[int]
    at_least: Optional[int]
    at_most: Optional[int]
    when: When
    line: int

    @property
    def group(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]


@dataclasses.dataclass(frozen=True)
class PerfSpec:
    """``checks.perf``: time the cell (harness/perf.py); fail when slower than (1 + band) x its perf golden."""

    band: float = 0.15
    warmup: int = 10  # untimed calls first
    reps: int = 100  # timed calls; the median is kept
    cuda_graph: bool = False  # time the replay of a CUDA graph of the call
    l2_flush: bool = False  # read a 256 MB buffer before each timed call (operands from HBM)
    when: When = When()
    line: int = 0


@dataclasses.dataclass(frozen=True)
class PassSpec:
    """``factory`` is a ``module:function``; called with no arguments it returns a graph pass."""

    hook: str
    factory: str
    line: int


@dataclasses.dataclass(frozen=True)
class Mark:
    kind: str  # slow | skip | xfail | requires
    reason: str
    when: When
    strict: bool = True
    requirements: tuple[tuple[str, Any], ...] = ()
    line: int = 0


@dataclasses.dataclass(frozen=True)
class Checks:
    golden: bool = True
    golden_sample: Optional[int] = None  # store only this many spread-out elements of larger outputs
    eager: bool = True
    inputs_after: bool = False
    filecheck: tuple[FileCheckBlock, ...] = ()
    counters: tuple[CounterExpectation, ...] = ()
    graphs: Optional[int] = 1
    graph_breaks: Optional[int] = 0
    perf: Optional[PerfSpec] = None


@dataclasses.dataclass(frozen=True)
class Case:
    suite_path: Path
    display_path: str
    name: str
    line: int
    description: str
    program: str
    params: tuple[tuple[str, Any], ...]
    inputs: tuple[InputSpec, ...]
    seed: int
    matrix: Matrix
    tolerances: tuple[tuple[str, Tolerance], ...]  # dtype name -> tolerance, every matrix dtype present
    config: tuple[tuple[str, Any], ...]
    dynamo_config: tuple[tuple[str, Any], ...]
    passes: tuple[PassSpec, ...]
    backward: bool
    no_grad: bool  # every run (eager, float64, compiled) under torch.no_grad(), as inference compiles
    deterministic: bool
    checks: Checks
    marks: tuple[Mark, ...]
    timeout: Optional[float] = None  # seconds; None: --cell-timeout or no limit (harness/guard.py)
    fuzz: Optional[Any] = None  # a harness.fuzz.FuzzSpec: input shapes/strides/values drawn by hypothesis
    compile_mode: str = "default"  # torch.compile mode of the ``inductor`` backend's cells

    def tolerance_for(self, dtype: str) -> Tolerance:
        return dict(self.tolerances)[dtype]

    def make_program(self) -> Callable[..., Any]:
        return programs.make_program(self.program, dict(self.params))


@dataclasses.dataclass(frozen=True)
class Suite:
    path: Path
    display_path: str
    description: str
    cases: tuple[Case, ...]


# --------------------------------------------------------------------------- validation


@dataclasses.dataclass(frozen=True)
class _At:
    """Where a value sits: file, line and dotted field path, for error messages."""

    path: str
    line: int
    field: str

    def child(self, name: Any, line: int) -> "_At":
        return _At(self.path, line, f"{self.field}.{name}" if self.field else str(name))

    def key(self, mapping: "YamlMap", key: Any, lines: Optional[dict] = None) -> "_At":
        """Where ``mapping[key]`` sits (``lines``: the table to take the line from, default its
        value's): a child of this field, or the defaults block it was merged from."""
        line = (mapping.value_lines if lines is None else lines).get(key, self.line)
        field = getattr(mapping, "key_fields", {}).get(key)
        return _At(self.path, line, field) if field else self.child(key, line)

    def error(self, problem: str, got: Any = dataclasses.MISSING, allowed: Optional[Iterable[Any]] = None) -> CaseFormatError:
        return CaseFormatError(self.path, self.line, self.field, problem, got, allowed)


def _entries(mapping: YamlMap, at: _At) -> Iterable[tuple[str, Any, _At]]:
    for key, value in mapping.items():
        yield key, value, at.key(mapping, key)


def _require_map(value: Any, at: _At, allowed_keys: Optional[Sequence[str]] = None) -> YamlMap:
    if not isinstance(value, dict):
        raise at.error("must be a mapping", got=value)
    if not isinstance(value, YamlMap):  # a programmatic dict: give it empty line tables
        value = _as_yaml_map(value, at.line)
    if allowed_keys is not None:
        for key in value:
            if key not in allowed_keys:
                raise at.key(value, key, value.key_lines).error("unknown key", got=key, allowed=allowed_keys)
    return value


def _as_yaml_map(value: dict, line: int) -> YamlMap:
    mapping = YamlMap(value)
    mapping.line = line
    mapping.key_lines = {k: line for k in value}
    mapping.value_lines = {k: line for k in value}
    mapping.value_styles = {k: None for k in value}
    return mapping


def _require_list(value: Any, at: _At, allow_empty: bool = False) -> list:
    if not isinstance(value, list):
        raise at.error("must be a list", got=value)
    if not value and not allow_empty:
        raise at.error("must not be empty", got=value)
    return value


def _item_at(seq: list, index: int, at: _At) -> _At:
    lines = getattr(seq, "item_lines", None)
    fields = getattr(seq, "item_fields", None)
    return _At(at.path, lines[index] if lines else at.line, fields[index] if fields else f"{at.field}[{index}]")


def _matches_types(value: Any, types: Any) -> bool:
    """isinstance, except that a YAML true/false is no int or float unless bool is listed."""
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _require_str(value: Any, at: _At, non_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise at.error("must be a string", got=value)
    if non_empty and not value.strip():
        raise at.error("must not be empty", got=value)
    return value


def _require_bool(value: Any, at: _At) -> bool:
    if not isinstance(value, bool):
        raise at.error("must be true or false", got=value)
    return value


def _require_int(value: Any, at: _At, minimum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise at.error("must be an integer", got=value)
    if minimum is not None and value < minimum:
        raise at.error(f"must be >= {minimum}", got=value)
    return value


def _require_number(value: Any, at: _At, minimum: Optional[float] = None, allow_nan: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise at.error("must be a number", got=value)
    if math.isnan(value) and not allow_nan:
        raise at.error("must be a number, not NaN (every comparison with NaN is false)", got=value)
    if minimum is not None and value < minimum:
        raise at.error(f"must be >= {minimum}", got=value)
    return float(value)


def _require_tolerance(value: Any, at: _At, key: str) -> float:
    """A tolerance: >= 0, not NaN (it would pass anything), finite except ``atol: .inf`` (the
    documented way to switch the elementwise check off)."""
    number = _require_number(value, at, minimum=0.0)
    if math.isinf(number) and key != "atol":
        raise at.error("must be finite (only atol may be .inf, which switches the elementwise check off)", got=value)
    return number


def _require_choice(value: Any, at: _At, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise at.error(f"{_show(value)} is not one of the allowed values", got=value, allowed=allowed)
    return value


def _require_dtype(value: Any, at: _At, allow_matrix: bool = False) -> str:
    allowed = ([MATRIX_DTYPE] if allow_matrix else []) + list(DTYPES)
    if allow_matrix and value == MATRIX_DTYPE:
        return value
    canonical = canonical_dtype_name(value) if isinstance(value, str) else None
    if canonical is None:
        raise at.error(f"{_show(value)} is not a dtype", got=value, allowed=allowed)
    return canonical


def _choice_list(value: Any, at: _At, allowed: Sequence[str], normalize: Callable[[Any, _At], str] | None = None) -> tuple[str, ...]:
    items = _require_list(value, at)
    out = []
    for i, item in enumerate(items):
        item_at = _item_at(items, i, at)
        out.append(normalize(item, item_at) if normalize else _require_choice(item, item_at, allowed))
    if len(set(out)) != len(out):
        raise at.error("lists a value twice", got=list(items))
    return tuple(out)


def _parse_when(value: Any, at: _At) -> When:
    mapping = _require_map(value, at, ("backends", "devices", "dtypes"))
    fields: dict[str, tuple[str, ...]] = {}
    for key, item, item_at in _entries(mapping, at):
        if key == "backends":
            fields[key] = _choice_list(item, item_at, BACKENDS)
        elif key == "devices":
            fields[key] = _choice_list(item, item_at, DEVICES)
        else:
            fields[key] = _choice_list(item, item_at, list(DTYPES), lambda v, a: _require_dtype(v, a))
    return When(**fields)


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
    root_at = _At(display, 1, "")
    if document is None:
        raise root_at.error("the file is empty; a suite needs a 'cases' mapping")
    top = _require_map(document, root_at, TOP_LEVEL_KEYS)
    description = ""
    defaults = _as_yaml_map({}, 1)
    if "description" in top:
        description = _require_str(top["description"], root_at.child("description", top.value_lines["description"]))
    if "defaults" in top:
        defaults = _require_map(top["defaults"], root_at.child("defaults", top.value_lines["defaults"]), DEFAULTS_KEYS)
    if "cases" not in top:
        raise root_at.error("missing key 'cases' (a mapping from case name to case)")
    cases_at = root_at.child("cases", top.value_lines["cases"])
    cases_map = _require_map(top["cases"], cases_at)
    if not cases_map:
        raise cases_at.error("must name at least one case")
    cases = []
    for name, body, case_at in _entries(cases_map, cases_at):
        case_at = _At(display, cases_map.key_lines[name], case_at.field)
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise case_at.error("a case name must be letters, digits, '_' or '-'", got=name)
        body = _require_map(body, case_at, CASE_KEYS)
        merged = _merge_maps(defaults, body, ("config", "dynamo_config", "checks", "matrix", "tolerances"), "defaults", case_at.field)
        cases.append(_parse_case(name, merged, case_at, path, display))
    return Suite(path=path, display_path=display, description=description, cases=tuple(cases))


def _parse_case(name: str, body: YamlMap, at: _At, path: Path, display: str) -> Case:
    def sub(key: str) -> _At:
        return at.key(body, key)

    if "program" not in body:
        raise at.error("missing key 'program' (a built-in name or 'module:function')")
    program = _require_str(body["program"], sub("program"))
    params = _require_map(body.get("params", _as_yaml_map({}, at.line)), sub("params"))
    _check_program(program, params, sub("program"), sub("params"))
    if "inputs" not in body:
        raise at.error("missing key 'inputs' (a mapping from argument name to input spec)")
    inputs_map = _require_map(body["inputs"], sub("inputs"))
    dims = _fuzz_dim_names(body.get("fuzz"))
    inputs = tuple(_parse_input(n, v, a, dims) for n, v, a in _entries(inputs_map, sub("inputs")))
    seed = _require_int(body.get("seed", 0), sub("seed"), minimum=0)
    matrix = _parse_matrix(body.get("matrix"), sub("matrix"))
    tolerances = _parse_tolerances(body.get("tolerances"), sub("tolerances"), matrix.dtypes)
    config = _parse_config(body.get("config"), sub("config"), "torch._inductor.config")
    dynamo_config = _parse_config(body.get("dynamo_config"), sub("dynamo_config"), "torch._dynamo.config")
    passes = _parse_passes(body.get("passes"), sub("passes"))
    backward = _require_bool(body.get("backward", False), sub("backward"))
    no_grad = _require_bool(body.get("no_grad", False), sub("no_grad"))
    deterministic = _require_bool(body.get("deterministic", False), sub("deterministic"))
    checks = _parse_checks(body.get("checks"), sub("checks"))
    marks = _parse_marks(body.get("marks"), sub("marks"))
    description = _require_str(body.get("description", name), sub("description"))
    if backward and not any(spec.requires_grad for spec in inputs):
        raise sub("backward").error("backward: true needs at least one input with requires_grad: true")
    if backward and no_grad:
        raise sub("no_grad").error("no_grad: true leaves nothing for backward: true to differentiate")
    compile_mode = _require_choice(body.get("compile_mode", "default"), sub("compile_mode"), COMPILE_MODES)
    if checks.perf is not None and checks.perf.cuda_graph and compile_mode in CUDAGRAPH_MODES:
        raise sub("compile_mode").error(
            f"compile_mode {compile_mode!r} replays CUDA graphs itself; checks.perf.cuda_graph would capture one around them "
            "(drop cuda_graph: the cell is timed through Inductor's graphs)"
        )
    timeout = None if body.get("timeout") is None else _require_number(body["timeout"], sub("timeout"), minimum=0.001)
    fuzz = None
    if "fuzz" in body:
        from ..fuzz import parse_fuzz  # imports this module

        fuzz = parse_fuzz(body["fuzz"], sub("fuzz"), inputs)
        if checks.perf is not None:
            raise sub("fuzz").error("a fuzz case draws its shapes, so it has no fixed cell to time: drop checks.perf")
        checks = dataclasses.replace(checks, golden=False)  # shapes vary: there is nothing to store
    max_input_gb = _require_number(body.get("max_input_gb", DEFAULT_MAX_INPUT_GB), sub("max_input_gb"), minimum=0.0)
    if math.isinf(max_input_gb):
        raise sub("max_input_gb").error("must be finite", got=max_input_gb)
    for (_, _, input_at), spec in zip(_entries(inputs_map, sub("inputs")), inputs):
        _check_input_size(spec, fuzz, matrix, max_input_gb, input_at)
    return Case(
        suite_path=path, display_path=display, name=name, line=at.line, description=description,
        program=program, params=tuple(params.items()), inputs=inputs, seed=seed, matrix=matrix,
        tolerances=tolerances, config=config, dynamo_config=dynamo_config, passes=passes,
        backward=backward, no_grad=no_grad, deterministic=deterministic, checks=checks, marks=marks, timeout=timeout, fuzz=fuzz,
        compile_mode=compile_mode,
    )


def _storage_elements(shape: Sequence[int], strides: Optional[Sequence[int]], pad_last_dim: int) -> int:
    """Elements of the smallest storage holding ``shape`` with these strides (or row padding)."""
    if any(size == 0 for size in shape):
        return 0
    if strides is not None:
        return 1 + sum((size - 1) * stride for size, stride in zip(shape, strides))
    if pad_last_dim and shape:
        shape = (*shape[:-1], shape[-1] + pad_last_dim)
    return math.prod(shape)


def _check_input_size(spec: InputSpec, fuzz: Any, matrix: Matrix, max_gb: float, at: _At) -> None:
    """Refuse an input whose storage (at the fuzz dims' maxima) exceeds ``max_gb``."""
    widest = max(DTYPES[d].itemsize for d in matrix.dtypes)
    itemsize = widest if spec.dtype == MATRIX_DTYPE else DTYPES[spec.dtype].itemsize
    maxima = {d.name: d.max for d in fuzz.dims} if fuzz is not None else {}
    shape = tuple(maxima.get(size, 0) if isinstance(size, str) else size for size in spec.shape)
    pad = spec.pad_last_dim or 0
    if fuzz is not None:
        varied = next((f for f in fuzz.inputs if f.name == spec.name), None)
        if varied is not None and "padded" in varied.layouts:
            pad = max(pad, varied.max_pad)
    gigabytes = _storage_elements(shape, spec.strides, pad) * itemsize / 1e9
    if gigabytes > max_gb:
        where = "shape" if spec.strides is None else "strides"
        at_maxima = f" at the fuzz dims' maxima ({', '.join(f'{k}={v}' for k, v in maxima.items())})" if maxima else ""
        raise at.child(where, at.line).error(
            f"the input needs {gigabytes:.3g} GB{at_maxima}, more than the budget of {max_gb:g} GB "
            f"(if it is meant, say so: max_input_gb: {math.ceil(gigabytes)} in the case or under defaults:)",
            got=list(shape) if where == "shape" else list(spec.strides),
        )


def _fuzz_dim_names(value: Any) -> tuple[str, ...]:
    """Names a fuzz block declares under ``dims`` (checked properly by harness.fuzz.parse_fuzz)."""
    if isinstance(value, dict) and isinstance(value.get("dims"), dict):
        return tuple(k for k in value["dims"] if isinstance(k, str))
    return ()


def _check_program(program: str, params: YamlMap, at: _At, params_at: _At) -> None:
    builtin = programs.builtin_program(program)
    if builtin is not None:
        for key, value, value_at in _entries(params, params_at):
            spec = builtin.params.get(key)
            if spec is None:
                raise params_at.child(key, params.key_lines[key]).error(
                    f"unknown parameter of built-in program {program!r}", got=key, allowed=list(builtin.params) or ["(none)"]
                )
            if not _matches_types(value, spec.types):
                raise value_at.error(
                    f"must be {' or '.join(t.__name__ for t in spec.types)}", got=value
                )
        try:
            programs.make_program(program, dict(params))
        except (ValueError, TypeError) as exc:
            raise params_at.error(str(exc)) from None
        return
    if ":" not in program:
        raise at.error(
            "unknown program: neither a built-in nor 'module:function'",
            got=program, allowed=programs.builtin_program_names() + ["<module>:<function>"],
        )
    try:
        programs.import_program(program)
    except programs.ProgramImportError as exc:
        raise at.error(f"unknown program: {exc}", got=program) from None


def _parse_input(name: str, value: Any, at: _At, dims: Sequence[str] = ()) -> InputSpec:
    spec = _require_map(value, at, INPUT_KEYS)

    def sub(key: str) -> _At:
        return at.child(key, spec.value_lines.get(key, at.line))

    kind_name = _require_str(spec.get("kind", "tensor"), sub("kind"))
    kind = input_kind(kind_name)
    if kind is None and ":" in kind_name:
        try:
            kind = kind_from_builder(kind_name)
        except programs.ProgramImportError as exc:
            raise sub("kind").error(f"unknown input kind: {exc}", got=kind_name) from None
    if kind is None:
        raise sub("kind").error("unknown input kind", got=kind_name, allowed=input_kind_names() + ["<module>:<builder>"])
    if "shape" not in spec:
        raise at.error("missing key 'shape' (a list of sizes, [] for a scalar)")
    shape_list = _require_list(spec["shape"], sub("shape"), allow_empty=True)
    shape = tuple(
        v if isinstance(v, str) and v in dims else _require_int(v, _item_at(shape_list, i, sub("shape")), minimum=0)
        for i, v in enumerate(shape_list)
    )
    fields: dict[str, Any] = {"name": name, "kind": kind_name, "shape": shape, "line": at.line}
    if "dtype" in spec:
        fields["dtype"] = _require_dtype(spec["dtype"], sub("dtype"), allow_matrix=True)
    if "strides" in spec:
        strides_list = _require_list(spec["strides"], sub("strides"), allow_empty=True)
        strides = tuple(_require_int(v, _item_at(strides_list, i, sub("strides")), minimum=0) for i, v in enumerate(strides_list))
        if len(strides) != len(shape):
            raise sub("strides").error(f"needs one stride per dimension ({len(shape)})", got=list(strides))
        fields["strides"] = strides
    if "pad_last_dim" in spec:
        if "strides" in spec:
            raise sub("pad_last_dim").error("give either strides or pad_last_dim, not both")
        if not shape:
            raise sub("pad_last_dim").error("a scalar has no last dimension to pad")
        fields["pad_last_dim"] = _require_int(spec["pad_last_dim"], sub("pad_last_dim"), minimum=0)
    distribution = _require_choice(spec.get("distribution", "normal"), sub("distribution"), list(DISTRIBUTIONS))
    fields["distribution"] = distribution
    for setting in ("mean", "std", "low", "high", "value"):
        if setting in spec:
            if setting not in DISTRIBUTIONS[distribution]:
                raise sub(setting).error(
                    f"not a setting of distribution {distribution!r}",
                    got=setting, allowed=list(DISTRIBUTIONS[distribution]) or ["(none)"],
                )
            fields[setting] = _require_number(
                spec[setting], sub(setting), minimum=0.0 if setting == "std" else None, allow_nan=setting == "value"
            )
    for setting in REQUIRED_DISTRIBUTION_SETTINGS.get(distribution, ()):
        if setting not in spec:
            raise at.error(f"distribution {distribution!r} needs '{setting}'")
    if distribution == "randint" and fields.get("low", 0) >= fields["high"]:
        raise sub("high").error("must be greater than low", got=fields["high"])
    if "seed" in spec:
        fields["seed"] = _require_int(spec["seed"], sub("seed"), minimum=0)
    if "requires_grad" in spec:
        fields["requires_grad"] = _require_bool(spec["requires_grad"], sub("requires_grad"))
    if "params" in spec:
        params = _require_map(spec["params"], sub("params"))
        for key, item, item_at in _entries(params, sub("params")):
            types = kind.params.get(key)
            if types is None:
                raise item_at.error(f"unknown parameter of input kind {kind_name!r}", got=key, allowed=list(kind.params) or ["(none)"])
            if not _matches_types(item, types):
                raise item_at.error("has the wrong type", got=item)
        fields["params"] = tuple(params.items())
    return InputSpec(**fields)


def _parse_matrix(value: Any, at: _At) -> Matrix:
    fields = dict(DEFAULT_MATRIX)
    if value is not None:
        mapping = _require_map(value, at, tuple(DEFAULT_MATRIX))
        for key, item, item_at in _entries(mapping, at):
            if key == "backends":
                fields[key] = _choice_list(item, item_at, BACKENDS)
            elif key == "devices":
                fields[key] = _choice_list(item, item_at, DEVICES)
            else:
                fields[key] = _choice_list(item, item_at, list(DTYPES), lambda v, a: _require_dtype(v, a))
    return Matrix(**fields)


def _parse_tolerance_fields(mapping: YamlMap, at: _At) -> dict[str, float]:
    out = {}
    for key, item, item_at in _entries(mapping, at):
        out[key] = _require_tolerance(item, item_at, key)
    if ("quant_step" in out) != ("max_step_error" in out):
        raise at.error("quant_step and max_step_error go together")
    return out


def _parse_tolerances(value: Any, at: _At, dtypes: Sequence[str]) -> tuple[tuple[str, Tolerance], ...]:
    from ..dtypes import DEFAULT_TOLERANCES

    common: dict[str, float] = {}
    per_dtype: dict[str, dict[str, float]] = {}
    if value is not None:
        mapping = _require_map(value, at)
        for key, item, item_at in _entries(mapping, at):
            key_at = at.key(mapping, key, mapping.key_lines)
            if key in TOLERANCE_KEYS:
                common[key] = _require_tolerance(item, item_at, key)
                continue
            dtype = canonical_dtype_name(key) if isinstance(key, str) else None
            if dtype is None:
                raise key_at.error("unknown key: neither a tolerance nor a dtype", got=key, allowed=list(TOLERANCE_KEYS) + ["<dtype>"])
            per_dtype[dtype] = _parse_tolerance_fields(_require_map(item, item_at, TOLERANCE_KEYS), item_at)
        if ("quant_step" in common) != ("max_step_error" in common):
            raise at.error("quant_step and max_step_error go together")
    result = []
    for dtype in dtypes:
        atol, rtol = DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0))
        fields = {"atol": atol, "rtol": rtol, **common, **per_dtype.get(dtype, {})}
        result.append((dtype, Tolerance(**fields)))
    return tuple(result)


@functools.lru_cache(maxsize=None)
def _config_module(name: str) -> Any:
    import importlib

    return importlib.import_module(name)


def _config_default(module: Any, key: str) -> tuple[bool, Any]:
    """(exists, default value) of a dotted config key such as 'triton.cudagraphs'."""
    entries = getattr(module, "_config", None)
    if isinstance(entries, dict) and key in entries:
        return True, getattr(entries[key], "default", None)
    obj = module
    for part in key.split("."):
        if not hasattr(obj, part):
            return False, None
        obj = getattr(obj, part)
    return True, obj


def _parse_config(value: Any, at: _At, module_name: str) -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    mapping = _require_map(value, at)
    module = _config_module(module_name)
    out = []
    for key, item, item_at in _entries(mapping, at):
        exists, default = _config_default(module, key)
        if not exists:
            raise at.key(mapping, key, mapping.key_lines).error(f"not a {module_name} key", got=key)
        if isinstance(default, bool) and not isinstance(item, bool):
            raise item_at.error("must be true or false (the config default is a bool)", got=item)
        if isinstance(default, (int, float)) and not isinstance(default, bool) and (
            isinstance(item, bool) or not isinstance(item, (int, float))
        ):
            raise item_at.error(f"must be a number (the config default is {default!r})", got=item)
        if isinstance(default, str) and not isinstance(item, str):
            raise item_at.error(f"must be a string (the config default is {default!r})", got=item)
        out.append((key, item))
    return tuple(out)


def _parse_passes(value: Any, at: _At) -> tuple[PassSpec, ...]:
    if value is None:
        return ()
    items = _require_list(value, at)
    out = []
    for i, item in enumerate(items):
        item_at = _item_at(items, i, at)
        mapping = _require_map(item, item_at, ("hook", "factory"))
        for key in ("hook", "factory"):
            if key not in mapping:
                raise item_at.error(f"missing key '{key}'")
        hook = _require_choice(mapping["hook"], item_at.child("hook", mapping.value_lines["hook"]), PASS_HOOKS)
        factory_at = item_at.child("factory", mapping.value_lines["factory"])
        factory = _require_str(mapping["factory"], factory_at)
        if ":" not in factory:
            raise factory_at.error("must be 'module:function'", got=factory)
        try:
            programs.import_program(factory)
        except programs.ProgramImportError as exc:
            raise factory_at.error(f"unknown pass factory: {exc}", got=factory) from None
        out.append(PassSpec(hook=hook, factory=factory, line=item_at.line))
    return tuple(out)


def _parse_checks(value: Any, at: _At) -> Checks:
    if value is None:
        return Checks()
    mapping = _require_map(value, at, CHECKS_KEYS)
    fields: dict[str, Any] = {}
    for key, item, item_at in _entries(mapping, at):
        if key in ("golden", "eager", "inputs_after"):
            fields[key] = _require_bool(item, item_at)
        elif key == "golden_sample":
            fields[key] = _require_int(item, item_at, minimum=1)
        elif key in ("graphs", "graph_breaks"):
            fields[key] = None if item is None else _require_int(item, item_at, minimum=0)
        elif key == "filecheck":
            fields[key] = _parse_filechecks(item, item_at, mapping)
        elif key == "counters":
            fields[key] = _parse_counters(item, item_at)
        elif key == "perf":
            fields[key] = _parse_perf(item, item_at)
    return Checks(**fields)


def _parse_perf(value: Any, at: _At) -> PerfSpec:
    spec = _require_map(value, at, PERF_KEYS)
    fields: dict[str, Any] = {"line": at.line}
    for key, item, item_at in _entries(spec, at):
        if key == "band":
            fields[key] = _require_number(item, item_at, minimum=0.0)
        elif key in ("warmup", "reps"):
            fields[key] = _require_int(item, item_at, minimum=0 if key == "warmup" else 1)
        elif key in ("cuda_graph", "l2_flush"):
            fields[key] = _require_bool(item, item_at)
        else:
            fields[key] = _parse_when(item, item_at)
    return PerfSpec(**fields)


def _parse_filechecks(value: Any, at: _At, parent: YamlMap) -> tuple[FileCheckBlock, ...]:
    items = _require_list(value, at)
    out = []
    for i, item in enumerate(items):
        item_at = _item_at(items, i, at)
        block = _require_map(item, item_at, ("target", "check", "when"))
        if "check" not in block:
            raise item_at.error("missing key 'check' (FileCheck text: CHECK lines)")
        target = _require_choice(block.get("target", "output_code"), item_at.child("target", block.value_lines.get("target", item_at.line)), FILECHECK_TARGETS)
        check_at = item_at.child("check", block.value_lines["check"])
        check = _require_str(block["check"], check_at)
        # A block scalar ('|' or '>') starts on the line after its indicator.
        first_line = check_at.line + (1 if block.value_styles.get("check") in ("|", ">") else 0)
        _check_directives(check, check_at, first_line)
        when = _parse_when(block["when"], item_at.child("when", block.value_lines["when"])) if "when" in block else When()
        out.append(FileCheckBlock(target=target, check=check, first_check_line=first_line, when=when, line=item_at.line))
    return tuple(out)


def _check_directives(check: str, at: _At, first_line: int) -> None:
    """A block with no directive, or a line starting like a misspelled one, would check
    nothing and pass; both are load errors (LLVM FileCheck warns about the first)."""
    found, problems = filecheck.directive_problems(check, filecheck.every_prefix(list(BACKENDS), list(DEVICES)))
    allowed = "CHECK, CHECK-<DEVICE>, CHECK-<BACKEND>, CHECK-<DEVICE>-<BACKEND>, each plain or with -NEXT, -SAME, -NOT, -DAG, -LABEL, -EMPTY, -COUNT-<n>"
    if problems:
        index, word = problems[0]
        line_at = _At(at.path, first_line + index, at.field)
        raise line_at.error(f"{word + ':'!r} is not a FileCheck directive, so this line would check nothing", got=word, allowed=[allowed])
    if not found:
        raise at.error(f"no FileCheck directive in the block, so it would check nothing (a line needs one of {allowed}, then ':')")


def _parse_counters(value: Any, at: _At) -> tuple[CounterExpectation, ...]:
    items = _require_list(value, at)
    out = []
    for i, item in enumerate(items):
        item_at = _item_at(items, i, at)
        spec = _require_map(item, item_at, ("key",) + COUNTER_OPS + ("when",))
        if "key" not in spec:
            raise item_at.error("missing key 'key' (a counter such as inductor.inplace_padding)")
        key_at = item_at.child("key", spec.value_lines["key"])
        key = _require_str(spec["key"], key_at)
        if "." not in key or key.startswith(".") or key.endswith("."):
            raise key_at.error("must be '<group>.<name>' as in torch._dynamo.utils.counters[group][name]", got=key)
        bounds = {op: _require_int(spec[op], item_at.child(op, spec.value_lines[op]), minimum=0) for op in COUNTER_OPS if op in spec}
        if not bounds:
            raise item_at.error("needs at least one of equals, at_least, at_most")
        if "equals" in bounds and len(bounds) > 1:
            raise item_at.error("equals excludes at_least and at_most")
        when = _parse_when(spec["when"], item_at.child("when", spec.value_lines["when"])) if "when" in spec else When()
        out.append(
            CounterExpectation(
                key=key, equals=bounds.get("equals"), at_least=bounds.get("at_least"), at_most=bounds.get("at_most"),
                when=when, line=item_at.line,
            )
        )
    return tuple(out)


def _parse_marks(value: Any, at: _At) -> tuple[Mark, ...]:
    if value is None:
        return ()
    items = _require_list(value, at)
    out = []
    for i, item in enumerate(items):
        item_at = _item_at(items, i, at)
        spec = _require_map(item, item_at, MARK_KINDS + ("when", "strict"))
        kinds = [k for k in MARK_KINDS if k in spec]
        if len(kinds) != 1:
            raise item_at.error("a mark names exactly one of slow, skip, xfail, requires", got=kinds or None, allowed=MARK_KINDS)
        (kind,) = kinds
        kind_at = item_at.child(kind, spec.value_lines[kind])
        when = _parse_when(spec["when"], item_at.child("when", spec.value_lines["when"])) if "when" in spec else When()
        strict = True
        if "strict" in spec:
            if kind != "xfail":
                raise item_at.child("strict", spec.value_lines["strict"]).error("only an xfail mark takes strict")
            strict = _require_bool(spec["strict"], item_at.child("strict", spec.value_lines["strict"]))
        requirements: tuple[tuple[str, Any], ...] = ()
        if kind == "slow":
            reason = "slow" if spec[kind] is True else _require_str(spec[kind], kind_at)
        elif kind == "requires":
            req = _require_map(spec[kind], kind_at, REQUIREMENTS)
            parsed = []
            for key, req_value, req_at in _entries(req, kind_at):
                if key in ("big_gpu", "triton", "triton_interpreter"):
                    parsed.append((key, _require_bool(req_value, req_at)))
                elif key == "min_devices":
                    parsed.append((key, _require_int(req_value, req_at, minimum=1)))
                else:
                    parsed.append((key, _require_number(req_value, req_at, minimum=0.0)))
            requirements = tuple(parsed)
            reason = ", ".join(f"{k}={v}" for k, v in parsed)
        else:
            reason = _require_str(spec[kind], kind_at)
        out.append(Mark(kind=kind, reason=reason, when=when, strict=strict, requirements=requirements, line=item_at.line))
    return tuple(out)
