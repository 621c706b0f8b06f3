"""harness/backends.py: one record a backend, read instead of testing the name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.backends import MAX_AUTOTUNE_MODE, NAMES, backend
from harness.case import COMPILE_MODES, parse_suite
from harness.filecheck import prefixes_for
from harness.run import compile_mode


def test_each_backends_compile_mode():
    assert backend("inductor").compile_mode("reduce-overhead") == "reduce-overhead"
    assert backend("inductor").compile_mode("default") is None
    assert backend("inductor_max_autotune").compile_mode("reduce-overhead") == MAX_AUTOTUNE_MODE
    assert backend("aot_eager").compile_mode("reduce-overhead") is None


@pytest.mark.parametrize("mode", COMPILE_MODES)
def test_run_compiles_each_backend_as_its_record_says(mode):
    case = parse_suite("cases:\n  c:\n    program: pointwise_chain\n    inputs: {x: {shape: [2]}}\n", Path("s.yaml"), "s.yaml").cases[0]
    case = dataclasses.replace(case, compile_mode=mode)
    assert [compile_mode(case, name) for name in NAMES] == [backend(name).compile_mode(mode) for name in NAMES]


def test_filecheck_prefixes_and_code_come_from_the_record():
    assert [name for name in NAMES if backend(name).generates_code] == ["inductor", "inductor_max_autotune"]
    assert prefixes_for("inductor_max_autotune", "cuda", ("X",)) == [
        "X", "X-CUDA", "X-INDUCTOR", "X-CUDA-INDUCTOR", "X-MAX-AUTOTUNE", "X-CUDA-MAX-AUTOTUNE",
    ]
    with pytest.raises(KeyError, match="unknown backend 'inductr' \\(known: eager, aot_eager, inductor, inductor_max_autotune\\)"):
        backend("inductr")
