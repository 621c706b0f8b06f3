"""harness/matrix.py: cells, ids, narrowing, skip reasons."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.case import parse_suite
from harness.matrix import Narrowing, declared_golden_keys, expand_matrix, triton_interpreter_unavailable

SUITE = """
cases:
  a:
    program: matmul
    inputs: {x: {shape: [2, 2]}, y: {shape: [2, 2]}}
    matrix: {backends: [eager, inductor_max_autotune], devices: [cpu, cuda], dtypes: [float32, bfloat16]}
    marks:
      - {requires: {min_devices: 64}, when: {devices: [cpu]}}
"""


def case():
    return parse_suite(SUITE, Path("s.yaml"), "s.yaml").cases[0]


def test_ids_and_order():
    ids = [cell.id for cell in expand_matrix(case())]
    assert ids[:4] == ["eager-cpu-float32", "eager-cpu-bfloat16", "eager-cuda-float32", "eager-cuda-bfloat16"]
    assert len(ids) == 8


def test_narrowing_drops_cells():
    cells = expand_matrix(case(), Narrowing(backends=("eager",), dtypes=("bfloat16",)))
    assert [c.id for c in cells] == ["eager-cpu-bfloat16", "eager-cuda-bfloat16"]


def test_what_cannot_run_is_skipped_with_a_reason():
    reasons = {c.id: c.skip_reason for c in expand_matrix(case())}
    assert reasons["eager-cpu-float32"] == "needs 64 cpu devices, this machine has 1"
    assert reasons["inductor_max_autotune-cpu-float32"].startswith("max-autotune cells on the CPU run only with --max-autotune")
    if not torch.cuda.is_available():
        assert reasons["eager-cuda-float32"] == "no cuda device on this machine (available: cpu)"


def test_goldens_are_declared_per_device_and_dtype():
    assert declared_golden_keys(case()) == {("cpu", "float32"), ("cpu", "bfloat16"), ("cuda", "float32"), ("cuda", "bfloat16")}


INTERPRETER_SUITE = """
cases:
  a:
    program: matmul
    inputs: {x: {shape: [2, 2]}, y: {shape: [2, 2]}}
    matrix: {backends: [eager], devices: [cpu], dtypes: [float16]}
    marks:
      - {requires: {triton_interpreter: true}, when: {devices: [cpu]}}
"""


def test_triton_interpreter_cells_give_way_to_a_gpu(monkeypatch):
    pytest.importorskip("triton", reason="the requirement's other branches need triton importable")
    import numpy

    if tuple(int(p) for p in numpy.__version__.split(".")[:2]) >= (2, 3):
        pytest.skip(f"numpy {numpy.__version__}: the interpreter is unavailable for another reason")
    interpreter_case = parse_suite(INTERPRETER_SUITE, Path("s.yaml"), "s.yaml").cases[0]
    (cell,) = expand_matrix(interpreter_case)
    assert cell.skip_reason == triton_interpreter_unavailable()

    # Patched below, not through expand_matrix: available_devices() caches what it sees.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert triton_interpreter_unavailable() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert triton_interpreter_unavailable() == (
        "this process compiles Triton kernels for its GPU (set TRITON_INTERPRET=1 to interpret them)"
    )
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_interpreter_unavailable() is None
