"""harness/matrix.py: cells, ids, narrowing, skip reasons."""

from __future__ import annotations

import os
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


# --------------------------------------------------------------------------- several GPUs


@pytest.fixture
def fake_gpus(monkeypatch):
    """A machine with ``count`` CUDA devices as far as harness.matrix can tell; records set_device."""
    from harness import matrix

    chosen: list[int] = []

    def install(count: int) -> list[int]:
        monkeypatch.setattr(matrix, "available_devices", lambda: ("cpu", "cuda") if count else ("cpu",))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
        monkeypatch.delenv("QUANTCHECK_WORKER_GPU", raising=False)
        return chosen

    return install


def test_pin_worker_to_gpu_deals_workers_round_robin(fake_gpus, monkeypatch):
    from harness.matrix import pin_worker_to_gpu

    chosen = fake_gpus(2)
    notes = [pin_worker_to_gpu(f"gw{n}") for n in range(5)]
    assert chosen == [0, 1, 0, 1, 0]
    assert notes == ["gw0 -> cuda:0", "gw1 -> cuda:1", "gw2 -> cuda:0", "gw3 -> cuda:1", "gw4 -> cuda:0"]
    assert os.environ["QUANTCHECK_WORKER_GPU"] == "0"
    monkeypatch.delenv("QUANTCHECK_WORKER_GPU")


@pytest.mark.parametrize(
    "count, worker, devices",
    [(1, "gw3", ("cuda",)), (0, "gw1", ("cuda",)), (2, None, ("cuda",)), (2, "master", ("cuda",)), (2, "gw1", ("cpu",))],
    ids=["one-gpu", "no-gpu", "no-xdist", "not-a-worker", "cuda-not-wanted"],
)
def test_pin_worker_to_gpu_leaves_the_device_alone(fake_gpus, count, worker, devices):
    from harness.matrix import pin_worker_to_gpu

    chosen = fake_gpus(count)
    assert pin_worker_to_gpu(worker, devices) is None
    assert chosen == []
    assert "QUANTCHECK_WORKER_GPU" not in os.environ


def test_two_gpu_cases_are_skipped_with_the_reason_on_one_gpu(fake_gpus):
    from harness.case import load_suite

    suite = load_suite(Path(__file__).resolve().parents[2] / "suites" / "multi_gpu.yaml", "suites/multi_gpu.yaml")
    fake_gpus(1)
    reasons = {c.skip_reason for case in suite.cases for c in expand_matrix(case)}
    assert reasons == {"needs 2 cuda devices, this machine has 1"}
    fake_gpus(2)
    assert {c.skip_reason for case in suite.cases for c in expand_matrix(case)} == {None}
    fake_gpus(0)
    assert {c.skip_reason for case in suite.cases for c in expand_matrix(case)} == {"no cuda device on this machine (available: cpu)"}


@pytest.mark.parametrize("scheme, block, K", [("int8", 64, 200), ("int4", 64, 256)])
def test_the_two_gpu_program_gives_one_result_per_gpu(scheme, block, K):
    """On the CPU both 'GPUs' are the CPU: the two results equal each other and the float64 formula."""
    from impl.schemes import quantize_int4, quantize_int8
    from suites.programs.multi_gpu import woq_mm_on_each_gpu
    from suites.programs.woq_fusion import mm_t

    torch.manual_seed(0)
    x, w = torch.randn(4, K), torch.randn(48, K) * 0.05
    weight = quantize_int8(w).tensors() if scheme == "int8" else quantize_int4(w, block).tensors()
    first, second = woq_mm_on_each_gpu(x, tuple(weight), scheme, block)
    assert torch.equal(first, second)
    reference = mm_t(x.double(), tuple(t.double() if t.is_floating_point() else t for t in weight), scheme, block)
    torch.testing.assert_close(first.double(), reference, atol=1e-4, rtol=1e-4)
