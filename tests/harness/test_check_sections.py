"""harness/case/check_sections.py: one parser a ``checks:`` key, each error where the key sits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.case import CaseFormatError, Checks, parse_suite
from harness.case.check_sections import CHECKS_KEYS, SECTIONS

CASE = "cases:\n  a:\n    program: pointwise_chain\n    inputs: {x: {shape: [2]}}\n    checks:\n      {key}: {value}\n"


def test_every_field_of_checks_has_its_parser():
    """A new field of ``Checks`` without a parser here (or a parser for no field) fails."""
    assert CHECKS_KEYS == tuple(SECTIONS)
    assert set(SECTIONS) == {field.name for field in dataclasses.fields(Checks)}


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("golden", "3", "golden: must be true or false (got 3)"),
        ("golden_sample", "0", "golden_sample: must be >= 1 (got 0)"),
        ("graphs", "-1", "graphs: must be >= 0 (got -1)"),
        ("counters", "{}", "counters: must be a list (got a mapping)"),
        ("perf", "[]", "perf: must be a mapping (got [])"),
        ("recompiles", "'< 2'", "recompiles: must be a count or '<= N', '>= N', '== N' (got '< 2')"),
    ],
)
def test_a_bad_value_of_each_key_names_file_line_and_field(key, value, message):
    with pytest.raises(CaseFormatError) as info:
        parse_suite(CASE.replace("{key}", key).replace("{value}", value), Path("suites/x.yaml"), "suites/x.yaml")
    assert str(info.value) == f"suites/x.yaml:6: cases.a.checks.{message}"
