"""harness/case/check_sections.py: each ``checks:`` key parsed by the check that declares it, each error where the key sits."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.case import CaseFormatError, Checks, parse_suite
from harness.case.check_sections import check_keys
from harness.checks import CHECKS

CASE = "cases:\n  a:\n    program: pointwise_chain\n    inputs: {x: {shape: [2]}}\n    checks:\n      {key}: {value}\n"


def test_the_keys_are_those_the_checks_declare_in_the_lists_order():
    """The loader reads the keys off the list of checks; a case without ``checks:`` gets every default."""
    assert list(check_keys()) == [key for check in CHECKS for key in getattr(check, "keys", {})]
    case = parse_suite(CASE.replace("    checks:\n      {key}: {value}\n", ""), Path("suites/x.yaml"), "suites/x.yaml").cases[0]
    assert case.checks == Checks(tuple((key, spec.default) for key, spec in check_keys().items()))
    assert (case.checks.golden, case.checks.graphs, case.checks.perf) == (True, 1, None)


def test_two_checks_reading_one_key_is_a_harness_bug(monkeypatch):
    import harness.checks

    class Again:
        name = "again"
        keys = {"golden": CHECKS[2].keys["golden"]}

    monkeypatch.setattr(harness.checks, "CHECKS", (*CHECKS, Again()))
    with pytest.raises(RuntimeError, match="checks key 'golden' is read by two checks: 'golden' and 'again'"):
        check_keys()


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
