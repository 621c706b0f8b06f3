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

This module is the search (examples, shrinking, the pinned case); the ``fuzz:`` block is
read into a ``FuzzSpec`` beside the rest of the case model (harness/case/), and each
cell is the pytest item ``FuzzItem`` (harness/items.py), which judges every example
with the checks of a plain cell (harness/checks.py).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from typing import Any, Callable, Optional

import yaml

from .case import RANGE_SETTINGS, Case, FuzzSpec
from .core.inputs import InputSpec


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


def search(fuzz: FuzzSpec, case_seed: int, run_example: Callable[[dict[str, Any]], list[str]]) -> FuzzOutcome:
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
