"""Fuzz cases: shapes, strides and value distributions drawn by hypothesis, failures shrunk.

A case with a ``fuzz:`` block names some sizes instead of fixing them, and may let each
input's layout and distribution vary::

    inputs:
      x: {shape: [M, K]}
      weight: {shape: [N, K], kind: "suites.programs.woq:int4_weight", params: {group_size: 32}}
    fuzz:
      examples: 8                  # examples tried per cell (hypothesis max_examples), default 10
      seed: 0                      # default: the case's seed; same seed, same examples, every run
      max_seconds: 120             # shrinking stops running new examples after this, default 120
      dims:
        M: [1, 8]                  # inclusive range
        K: {min: 1, max: 96, multiple_of: 1}
      inputs:
        x: {layout: [contiguous, transposed, padded], distribution: [normal, uniform], std: [0.01, 10.0]}
      reference: module:function   # optional oracle, called like the program

Each cell (backend x device x dtype) runs the examples through the same checks as a plain
case (compiled vs eager, counters, graphs, FileCheck) plus the reference when given; there
is no golden (the shapes vary). On a failure hypothesis shrinks it to the smallest shape
and simplest layout that still fails, and the cell fails with that example, the checks it
failed, and the example as a plain YAML case to pin it; the cell's ``case`` then is that
concrete case, so the failure's repro script (harness/repro.py) reproduces it.

Deterministic: a fixed seed, no example database, no deadline.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import time
import traceback
from typing import Any, Optional, Sequence

import yaml

from . import case as case_module
from .case import Case
from .inputs import DISTRIBUTIONS, InputSpec

LAYOUTS = ("contiguous", "transposed", "padded")
RANGE_SETTINGS = ("mean", "std", "low", "high")
FUZZ_KEYS = ("examples", "seed", "max_seconds", "dims", "inputs", "reference")
INPUT_FUZZ_KEYS = ("layout", "max_pad", "distribution") + RANGE_SETTINGS
DEFAULT_EXAMPLES = 10
DEFAULT_MAX_SECONDS = 120.0


@dataclasses.dataclass(frozen=True)
class DimRange:
    name: str
    min: int
    max: int
    multiple_of: int = 1


@dataclasses.dataclass(frozen=True)
class InputFuzz:
    """How one input may vary: layouts, distributions and ranges of their settings."""

    name: str
    layouts: tuple[str, ...] = ("contiguous",)
    max_pad: int = 8
    distributions: tuple[str, ...] = ()  # empty: the input's own
    ranges: tuple[tuple[str, float, float], ...] = ()  # (setting, low, high)


@dataclasses.dataclass(frozen=True)
class FuzzSpec:
    examples: int
    seed: Optional[int]
    max_seconds: float
    dims: tuple[DimRange, ...]
    inputs: tuple[InputFuzz, ...]
    reference: Optional[str]
    line: int


# --------------------------------------------------------------------------- loading


def _range(value: Any, at: Any, integer: bool) -> tuple[Any, Any, int]:
    """(low, high, multiple_of) from ``[low, high]`` or ``{min, max[, multiple_of]}``."""
    need = case_module._require_int if integer else case_module._require_number
    if isinstance(value, list):
        if len(value) != 2:
            raise at.error("a range is [low, high] or {min: .., max: ..}", got=list(value))
        low, high, multiple = need(value[0], at), need(value[1], at), 1
    else:
        mapping = case_module._require_map(value, at, ("min", "max", "multiple_of") if integer else ("min", "max"))
        for key in ("min", "max"):
            if key not in mapping:
                raise at.error(f"missing key '{key}'")
        low, high = need(mapping["min"], at), need(mapping["max"], at)
        multiple = case_module._require_int(mapping.get("multiple_of", 1), at, minimum=1)
    if high < low:
        raise at.error("max must be >= min", got=[low, high])
    if integer and low < 0:
        raise at.error("sizes must be >= 0", got=low)
    if integer and math.ceil(low / multiple) * multiple > high:
        raise at.error(f"no multiple of {multiple} in [{low}, {high}]")
    return low, high, multiple


def parse_fuzz(value: Any, at: Any, inputs: Sequence[InputSpec]) -> FuzzSpec:
    """The ``fuzz:`` block of a case whose inputs are already parsed (their shapes may name dims)."""
    mapping = case_module._require_map(value, at, FUZZ_KEYS)

    def sub(key: str) -> Any:
        return at.child(key, mapping.value_lines.get(key, at.line))

    examples = case_module._require_int(mapping.get("examples", DEFAULT_EXAMPLES), sub("examples"), minimum=1)
    seed = None if "seed" not in mapping else case_module._require_int(mapping["seed"], sub("seed"), minimum=0)
    max_seconds = case_module._require_number(mapping.get("max_seconds", DEFAULT_MAX_SECONDS), sub("max_seconds"), minimum=0.0)
    if "dims" not in mapping and "inputs" not in mapping:
        raise at.error("a fuzz block varies something: give 'dims' and/or 'inputs'")
    dims = []
    if "dims" in mapping:
        dims_map = case_module._require_map(mapping["dims"], sub("dims"))
        for name, item, item_at in case_module._entries(dims_map, sub("dims")):
            if not isinstance(name, str) or not name.isidentifier():
                raise item_at.error("a dim name is an identifier such as M or K", got=name)
            low, high, multiple = _range(item, item_at, integer=True)
            dims.append(DimRange(name, low, high, multiple))
    used = {d for spec in inputs for d in spec.shape if isinstance(d, str)}
    unused = [d.name for d in dims if d.name not in used]
    if unused:
        raise sub("dims").error(f"dim(s) {', '.join(unused)} appear in no input's shape")
    by_name = {spec.name: spec for spec in inputs}
    input_fuzz = []
    if "inputs" in mapping:
        inputs_map = case_module._require_map(mapping["inputs"], sub("inputs"))
        for name, item, item_at in case_module._entries(inputs_map, sub("inputs")):
            if name not in by_name:
                raise item_at.error("not an input of this case", got=name, allowed=list(by_name))
            input_fuzz.append(_parse_input_fuzz(name, item, item_at, by_name[name]))
    reference = None
    if "reference" in mapping:
        reference = case_module._require_str(mapping["reference"], sub("reference"))
        if ":" not in reference:
            raise sub("reference").error("must be 'module:function'", got=reference)
        from .programs import ProgramImportError, import_program

        try:
            import_program(reference)
        except ProgramImportError as exc:
            raise sub("reference").error(f"unknown reference: {exc}", got=reference) from None
    return FuzzSpec(examples, seed, max_seconds, tuple(dims), tuple(input_fuzz), reference, at.line)


def _parse_input_fuzz(name: str, value: Any, at: Any, spec: InputSpec) -> InputFuzz:
    mapping = case_module._require_map(value, at, INPUT_FUZZ_KEYS)

    def sub(key: str) -> Any:
        return at.child(key, mapping.value_lines.get(key, at.line))

    fields: dict[str, Any] = {"name": name}
    if "layout" in mapping:
        layouts = case_module._choice_list(mapping["layout"], sub("layout"), LAYOUTS)
        if spec.kind != "tensor" and layouts != ("contiguous",):
            raise sub("layout").error(f"only a plain tensor input has a layout to vary (this one is kind {spec.kind!r})")
        if spec.strides is not None or spec.pad_last_dim:
            raise sub("layout").error("the input fixes strides or pad_last_dim; drop them to let the fuzzer choose")
        fields["layouts"] = layouts
    if "max_pad" in mapping:
        fields["max_pad"] = case_module._require_int(mapping["max_pad"], sub("max_pad"), minimum=1)
    if "distribution" in mapping:
        fields["distributions"] = case_module._choice_list(mapping["distribution"], sub("distribution"), list(DISTRIBUTIONS))
        for d in fields["distributions"]:
            if d in ("randint", "fill"):
                raise sub("distribution").error(f"{d!r} needs settings per draw; fuzz normal, uniform, ones, zeros, arange", got=d)
    ranges = []
    for setting in RANGE_SETTINGS:
        if setting in mapping:
            low, high, _ = _range(mapping[setting], sub(setting), integer=False)
            if setting == "std" and low < 0:
                raise sub(setting).error("std must be >= 0", got=low)
            ranges.append((setting, low, high))
    fields["ranges"] = tuple(ranges)
    return InputFuzz(**fields)


# --------------------------------------------------------------------------- examples


def example_strategy(fuzz: FuzzSpec) -> Any:
    """A hypothesis strategy of examples: {"dims": {name: size}, "inputs": {name: {...}}}.

    Each size shrinks toward its minimum, each choice toward its first entry."""
    from hypothesis import strategies as st

    dims = {
        d.name: st.integers(math.ceil(d.min / d.multiple_of), d.max // d.multiple_of).map(lambda v, m=d.multiple_of: v * m)
        for d in fuzz.dims
    }
    inputs = {}
    for spec in fuzz.inputs:
        fields: dict[str, Any] = {"layout": st.sampled_from(spec.layouts), "pad": st.integers(1, spec.max_pad)}
        if spec.distributions:
            fields["distribution"] = st.sampled_from(spec.distributions)
        for setting, low, high in spec.ranges:
            fields[setting] = st.floats(low, high, allow_nan=False, allow_infinity=False)
        inputs[spec.name] = st.fixed_dictionaries(fields)
    return st.fixed_dictionaries({"dims": st.fixed_dictionaries(dims), "inputs": st.fixed_dictionaries(inputs)})


def _column_major_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in shape:
        strides.append(step)
        step *= max(size, 1)
    return tuple(strides)


def concretize(case: Case, example: dict[str, Any]) -> Case:
    """The plain case one example stands for: sizes filled in, layouts and settings chosen."""
    dims = example["dims"]
    inputs = []
    for spec in case.inputs:
        shape = tuple(dims[d] if isinstance(d, str) else d for d in spec.shape)
        fields: dict[str, Any] = {"shape": shape}
        drawn = example["inputs"].get(spec.name)
        if drawn is not None:
            if drawn["layout"] == "transposed" and len(shape) >= 2:
                fields["strides"] = _column_major_strides(shape)
            elif drawn["layout"] == "padded" and shape:
                fields["pad_last_dim"] = drawn["pad"]
            for key in ("distribution", *RANGE_SETTINGS):
                if key in drawn:
                    fields[key] = drawn[key]
        inputs.append(dataclasses.replace(spec, **fields))
    return dataclasses.replace(case, inputs=tuple(inputs), fuzz=None)


def describe_example(fuzz: FuzzSpec, example: dict[str, Any]) -> str:
    parts = [", ".join(f"{k}={v}" for k, v in example["dims"].items())] if example["dims"] else []
    for name, drawn in example["inputs"].items():
        layout = drawn["layout"] + (f" (pad {drawn['pad']})" if drawn["layout"] == "padded" else "")
        settings = [f"layout={layout}"] + [f"{k}={drawn[k]:g}" if isinstance(drawn[k], float) else f"{k}={drawn[k]}"
                                           for k in ("distribution", *RANGE_SETTINGS) if k in drawn]
        parts.append(f"{name}: " + ", ".join(settings))
    return "; ".join(parts)


def _input_yaml(spec: InputSpec) -> dict[str, Any]:
    default = InputSpec(name=spec.name)
    out: dict[str, Any] = {"shape": list(spec.shape)}
    for field in ("kind", "dtype", "strides", "pad_last_dim", "distribution", "mean", "std", "low", "high", "value", "seed", "requires_grad"):
        value = getattr(spec, field)
        if value != getattr(default, field):
            out[field] = list(value) if isinstance(value, tuple) else value
    if spec.params:
        out["params"] = dict(spec.params)
    return out


def pinned_case_yaml(case: Case, cell_dtype: str, name: str) -> str:
    """The concrete case as YAML to paste under ``cases:`` (matrix narrowed to nothing: edit it)."""
    body: dict[str, Any] = {"description": f"fuzz example of {case.name}, pinned", "program": case.program}
    if case.params:
        body["params"] = dict(case.params)
    body["inputs"] = {spec.name: _input_yaml(spec) for spec in case.inputs}
    body["matrix"] = {"backends": list(case.matrix.backends), "devices": list(case.matrix.devices), "dtypes": [cell_dtype]}
    text = yaml.safe_dump({name: body}, sort_keys=False, default_flow_style=None, width=120)
    return "\n".join("  " + line for line in text.rstrip().splitlines())


# --------------------------------------------------------------------------- running


@dataclasses.dataclass
class FuzzOutcome:
    tried: int = 0  # examples really run
    found_at: Optional[int] = None  # the run that first failed
    budget_hit: bool = False
    failure: Optional[tuple[dict[str, Any], list[str]]] = None  # (smallest example, its failures)


def search(fuzz: FuzzSpec, case_seed: int, run_example: Any) -> FuzzOutcome:
    """Try examples, shrink the first failure; ``run_example(example) -> list of failure texts``.

    Results are cached per example (hypothesis asks again for the one it reports), and past
    ``max_seconds`` no new example runs (counted as passing), which ends the shrinking.
    """
    from hypothesis import HealthCheck, Phase, find, settings
    from hypothesis.errors import NoSuchExample

    outcome = FuzzOutcome()
    cache: dict[str, list[str]] = {}
    start = time.monotonic()

    def fails(example: dict[str, Any]) -> bool:
        key = repr(example)
        if key not in cache:
            if outcome.found_at is not None and time.monotonic() - start > fuzz.max_seconds:
                outcome.budget_hit = True
                return False
            outcome.tried += 1
            cache[key] = run_example(example)
            if cache[key] and outcome.found_at is None:
                outcome.found_at = outcome.tried
        failures = cache[key]
        if failures and (outcome.failure is None or _smaller(example, outcome.failure[0])):
            outcome.failure = (example, failures)
        return bool(failures)

    config = settings(
        max_examples=fuzz.examples, database=None, deadline=None, derandomize=False, print_blob=False,
        phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck),
    )
    seed = fuzz.seed if fuzz.seed is not None else case_seed
    try:
        example = find(example_strategy(fuzz), fails, settings=config, random=random.Random(seed))
    except NoSuchExample:
        return outcome
    outcome.failure = (example, cache[repr(example)])
    return outcome


def _smaller(a: dict[str, Any], b: dict[str, Any]) -> bool:
    size = lambda e: (sum(e["dims"].values()), repr(e))  # noqa: E731
    return size(a) < size(b)


def run_example_checks(item: Any, case: Case) -> list[str]:
    """Run one concrete example in the item's cell; the failed checks' texts (empty: it passed)."""
    from .checks import compare_with_eager, counter_sections, filecheck_sections
    from .compare import compare_outputs
    from .run import run_cell

    cell = item.cell
    try:
        run = run_cell(case, cell)
    except Exception as exc:  # a crash is a failure of this example, and shrinks like one
        return [f"raised {type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc)[-6:])]
    tolerance = case.tolerance_for(cell.dtype)
    sections = []
    if case.checks.eager:
        comparison = compare_with_eager(case, cell, run, label=f"compiled ({cell.backend}) vs eager, same inputs")
        if not comparison.ok:
            sections.append(comparison.report)
    reference = item.case.fuzz.reference
    if reference is not None:
        expected = reference_outputs(case, cell, reference, like=run.eager)
        for label, actual in (("eager", run.eager), (f"compiled ({cell.backend})", run.compiled)):
            comparison = compare_outputs(expected, actual, tolerance, label=f"{label} vs reference {reference}")
            if not comparison.ok:
                sections.append(comparison.report)
    sections += counter_sections(case, cell, run)
    sections += filecheck_sections(item.case, cell, run, item._dump_artifact, item._note)
    return sections


def reference_outputs(case: Case, cell: Any, reference: str, like: dict[str, Any]) -> dict[str, Any]:
    """The reference's outputs on fresh inputs, cast to the dtype and device of ``like``'s."""
    from .dtypes import DTYPES
    from .programs import make_program
    from .run import build_inputs, flatten_outputs

    fn = make_program(reference, dict(case.params))
    outputs = flatten_outputs(fn(*build_inputs(case, cell.device, DTYPES[cell.dtype])))
    return {
        name: t.detach().to(device=like[name].device, dtype=like[name].dtype) if name in like else t.detach()
        for name, t in outputs.items()
    }


@functools.lru_cache(maxsize=None)
def fuzz_item_class() -> type:
    """``FuzzItem``, a CaseItem whose run is the search (made lazily: items imports this module)."""
    from .items import SETTINGS_KEY, CaseItem, CellFailure
    from .report import rerun_command

    class FuzzItem(CaseItem):
        def runtest(self) -> None:
            symbolic = self.case
            fuzz = symbolic.fuzz
            start = time.monotonic()
            outcome = search(fuzz, symbolic.seed, lambda example: run_example_checks(self, concretize(symbolic, example)))
            if outcome.failure is None:
                return
            example, sections = outcome.failure
            concrete = concretize(symbolic, example)
            self.case = concrete  # the repro script and report describe the example that failed
            minimal = "" if not outcome.budget_hit else f" (shrinking stopped at max_seconds {fuzz.max_seconds:g}: may not be minimal)"
            pinned = pinned_case_yaml(concrete, self.cell.dtype, f"{symbolic.name}_pinned")
            message = [
                f"{symbolic.display_path}:{symbolic.line}: fuzz case {symbolic.name!r} [{self.cell.id}] failed",
                "",
                f"fuzz: {outcome.tried} example(s) run in {time.monotonic() - start:.1f} s; the first failure was run "
                f"{outcome.found_at}, then shrunk{minimal}",
                f"smallest failing example: {describe_example(fuzz, example)}",
                "",
                *[s.rstrip() + "\n" for s in sections],
                f"pin it as a plain case (under cases: in {symbolic.display_path}):",
                pinned,
                "",
                f"re-run this cell:      {rerun_command(self.nodeid, self.config.stash[SETTINGS_KEY].rerun_options)}",
            ]
            raise CellFailure("\n".join(message))

    return FuzzItem
