"""harness/core/backends.py: one record a backend, read instead of testing the name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from harness.case import COMPILE_MODES, parse_suite
from harness.core.backends import MAX_AUTOTUNE_MODE, NAMES, Backend, backend
from harness.core.execute import compile_program
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


def test_compile_program_calls_torch_compile_as_the_record_says(monkeypatch):
    """The record, not its name, picks the compiler: a record of any name compiles with its own."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: calls.append(kwargs) or fn)
    records = [backend(name) for name in NAMES] + [Backend("my_inductor_variant", "aot_eager")]
    for record in records:
        compile_program(abs, record, record.compile_mode("reduce-overhead"), "dynamic")
    assert calls == [
        {"backend": "eager", "mode": None, "dynamic": True},
        {"backend": "aot_eager", "mode": None, "dynamic": True},
        {"backend": "inductor", "mode": "reduce-overhead", "dynamic": True},
        {"backend": "inductor", "mode": MAX_AUTOTUNE_MODE, "dynamic": True},
        {"backend": "aot_eager", "mode": None, "dynamic": True},
    ]
