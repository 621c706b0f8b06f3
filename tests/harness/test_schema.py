"""harness/schema.json stays in step with the loader (harness/case/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import case as case_module
from harness.case import CaseFormatError, load_suite, parse_suite
from harness.case.check_sections import check_keys
from harness.case.yaml_lines import LineLoader as _LineLoader
from harness.checks.perf import PERF_KEYS
from harness.core.dtypes import DTYPE_ALIASES, DTYPES
from harness.core.inputs import DISTRIBUTIONS

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "harness" / "schema.json").read_text())
SUITES = sorted((REPO / "suites").glob("*.yaml"))


def as_json(text: str):
    import yaml

    return json.loads(json.dumps(yaml.load(text, Loader=_LineLoader)))


def schema_errors(document) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_schema_is_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("suite", SUITES, ids=lambda p: p.name)
def test_every_suite_passes_schema_and_loader(suite):
    assert schema_errors(as_json(suite.read_text())) == []
    assert load_suite(suite).cases


def test_enums_equal_the_loader_constants():
    defs = SCHEMA["$defs"]
    assert defs["backend"]["enum"] == list(case_module.BACKENDS)
    assert defs["device"]["enum"] == list(case_module.DEVICES)
    assert defs["dtype"]["enum"] == list(DTYPES) + list(DTYPE_ALIASES)
    assert defs["filecheck"]["properties"]["target"]["enum"] == list(case_module.FILECHECK_TARGETS)
    assert defs["pass"]["properties"]["hook"]["enum"] == list(case_module.PASS_HOOKS)
    assert defs["input"]["properties"]["distribution"]["enum"] == list(DISTRIBUTIONS)
    assert set(defs["input"]["properties"]) == set(case_module.INPUT_KEYS)
    assert set(defs["checks"]["properties"]) == set(check_keys())
    assert set(defs["perf"]["properties"]) == set(PERF_KEYS)
    assert set(defs["case"]["properties"]) == set(case_module.CASE_KEYS)
    assert set(defs["defaults"]["properties"]) == set(case_module.DEFAULTS_KEYS)
    assert set(SCHEMA["properties"]) == set(case_module.TOP_LEVEL_KEYS)
    assert set(defs["toleranceFields"]["properties"]) == set(case_module.TOLERANCE_KEYS)
    assert set(defs["mark"]["properties"]) == set(case_module.MARK_KINDS) | {"when", "strict"}
    assert set(defs["mark"]["properties"]["requires"]["properties"]) == set(case_module.REQUIREMENTS)


GOOD = "cases:\n  a:\n    program: matmul\n    inputs: {x: {shape: [2, 2]}, y: {shape: [2, 2]}}\n"


@pytest.mark.parametrize(
    "extra",
    [
        "    colour: red\n",
        "    matrix: {backends: [tvm]}\n",
        "    inputs: {x: {shape: [2], dtype: fp17}}\n",
        "    seed: -1\n",
        "    checks: {golden: 'yes'}\n",
        "    checks: {counters: [{key: inductor.x}]}\n",
        "    checks: {counters: [{key: inductor.x, equals: 1, at_most: 2}]}\n",
        "    checks: {filecheck: [{target: asm, check: x}]}\n",
        "    checks: {perf: {band: -0.1}}\n",
        "    checks: {perf: {reps: 0}}\n",
        "    checks: {perf: {cuda_graph: 1}}\n",
        "    marks: [{xfail: a, skip: b}]\n",
        "    marks: [{skip: a, strict: true}]\n",
        "    passes: [{hook: nowhere, factory: 'a:b'}]\n",
        "    tolerances: {atol: -1}\n",
        "    tolerances: {quant_step: 0.1}\n",
        "    inputs: {x: {shape: [2], strides: [1], pad_last_dim: 1}}\n",
        "    inputs: {x: {shape: [2], distribution: randint}}\n",
    ],
)
def test_bad_examples_fail_both(extra):
    text = GOOD + extra if not extra.startswith("    inputs") else GOOD.replace("    inputs: {x: {shape: [2, 2]}, y: {shape: [2, 2]}}\n", extra)
    assert schema_errors(as_json(text)), f"schema accepted:\n{text}"
    with pytest.raises(CaseFormatError):
        parse_suite(text, Path("suites/x.yaml"), "suites/x.yaml")
