"""impl/kernels/launch.py: the eager launchers' cache of compiled kernels.

The cache's logic is tested on the CPU with a stand-in kernel; on CUDA, repeated and
differently aligned launches of the real kernels are held to the float64 reference.
"""

from __future__ import annotations

import types

import pytest
import torch

from tests.impl.test_kernels_common import (  # also switches to the interpreter without a GPU
    INTERPRETER_WARNINGS,
    gpu_only,
    random_activation,
)

from impl.kernels import launch  # noqa: E402

pytestmark = INTERPRETER_WARNINGS


def test_specialization_follows_triton_int_rules():
    key = launch.specialization_of
    assert key((1,)) != key((2,))             # == 1 becomes a constant
    assert key((32,)) != key((33,))           # divisibility by 16
    assert key((2**31 + 16,)) != key((16,))   # beyond 32 bits: a 64-bit argument
    assert key((48,)) == key((64,))
    assert key((True,)) != key((1,)) and key((None,)) != key((0,))   # bool and None are their own keys


def test_specialization_follows_tensor_dtype_and_alignment():
    key = launch.specialization_of
    base = torch.zeros(64, dtype=torch.float16)
    assert key((base,)) == key((base[8:],))   # 16 bytes in: still aligned
    assert key((base,)) != key((base[1:],))   # 2 bytes in: not
    assert key((base,)) != key((base.view(torch.bfloat16),))


class _StandInKernel:
    """Records launches like a JITFunction: kernel[grid](*args, **meta) -> compiled."""

    arg_names = ["x_ptr", "n", "BLOCK"]

    def __init__(self):
        self.slow_launches, self.fast_launches = [], []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.slow_launches.append((grid, args, kwargs))
            return self._compiled(len(self.slow_launches))
        return run

    def _compiled(self, number):
        kernel = self

        class Compiled:
            index = number

            def __getitem__(self, grid):
                return lambda *args, stream: kernel.fast_launches.append((number, grid, args, stream))
        return Compiled()


@pytest.fixture
def compiled_mode(monkeypatch):
    """launch.py as on a GPU: interpreter off, Triton's driver answering device 0, stream 7."""
    monkeypatch.setattr(launch, "interpreter_active", lambda: False)
    active = types.SimpleNamespace(get_current_device=lambda: 0, get_current_stream=lambda device: 7)
    monkeypatch.setattr(launch, "driver", types.SimpleNamespace(active=active))


def test_a_specialization_binds_once_then_launches_directly(compiled_mode):
    kernel = _StandInKernel()
    launcher = launch.CachedLauncher(kernel)
    x = torch.zeros(64, dtype=torch.float16)
    launcher[(4, 2)](x, 48, BLOCK=16, num_warps=4)
    launcher[(4, 2)](x, 64, BLOCK=16, num_warps=4)     # same specialization: the compiled kernel
    launcher[(4, 2)](x[1:], 64, BLOCK=16, num_warps=4)  # misaligned: Triton again
    launcher[(4, 2)](x, 64, BLOCK=32, num_warps=4)     # other meta-parameter: Triton again
    assert [call[1][1] for call in kernel.slow_launches] == [48, 64, 64]
    # the direct launch passes the meta-parameters positionally, on the current stream, 3-D grid
    assert kernel.fast_launches == [(1, (4, 2, 1), (x, 64, 16), 7)]


def test_the_interpreter_goes_through_triton(monkeypatch):
    monkeypatch.setattr(launch, "interpreter_active", lambda: True)
    kernel = _StandInKernel()
    launch.CachedLauncher(kernel)[(1,)](torch.zeros(4), 4, BLOCK=16)
    launch.CachedLauncher(kernel)[(1,)](torch.zeros(4), 4, BLOCK=16)
    assert len(kernel.slow_launches) == 2 and not kernel.fast_launches


def _eager_launch_and_reference(scheme: str, M: int = 3, N: int = 96, K: int = 256):
    """(launch(x), reference(x), dense W) of one scheme's eager op on fixed random weights."""
    from tests.impl import test_kernels_int4, test_kernels_int8, test_kernels_nf4

    from impl.kernels import woq_mm_int4, woq_mm_int8, woq_mm_nf4

    if scheme == "int8":
        q, s = test_kernels_int8.random_int8_weight(N, K, seed=1)
        return (lambda x: woq_mm_int8.woq_mm_int8(x, q, s), lambda x: woq_mm_int8.woq_mm_int8_reference(x, q, s),
                woq_mm_int8.dequantize_int8_reference(q, s))
    if scheme == "int4":
        q, s, z = test_kernels_int4.random_int4_weight(N, K, 64, seed=1)
        return (lambda x: woq_mm_int4.woq_mm_int4(x, q, s, z, 64),
                lambda x: woq_mm_int4.woq_mm_int4_reference(x, q, s, z, 64),
                woq_mm_int4.dequantize_int4_reference(q, s, z, 64, K))
    w = test_kernels_nf4.random_nf4_weight(N, K, 64, seed=1)
    return (lambda x: woq_mm_nf4.woq_mm_nf4(x, **w), lambda x: woq_mm_nf4.woq_mm_nf4_reference(x, **w),
            woq_mm_nf4.dequantize_nf4_reference(K=K, **w))


@gpu_only
@pytest.mark.parametrize("scheme", ["int8", "int4", "nf4"])
def test_repeated_and_misaligned_launches_match_the_reference(scheme):
    from tests.impl.test_kernels_common import assert_matches_reference

    run, reference, dense = _eager_launch_and_reference(scheme)
    store = random_activation(3, 256 + 8, torch.bfloat16, seed=0)
    aligned, misaligned = store[:, :256], store[:, 1:257]  # data pointer 2 bytes off 16
    first = run(aligned)
    again = run(aligned)          # the cached compiled kernel, launched directly
    shifted = run(misaligned)     # another specialization: through Triton again
    for x, y in ((aligned, first), (aligned, again), (misaligned, shifted)):
        assert_matches_reference(y, reference(x), x, dense, f"{scheme} cached launch")
    assert torch.equal(first, again)
