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

# The kernel modules too, here, not first in a test under ``compiled_mode``: a launcher built
# while the interpreter reads as off keeps its LaunchPlans on for the rest of the process.
from impl.kernels import launch, woq_mm_int4, woq_mm_int8, woq_mm_nf4  # noqa: E402

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


# LaunchPlans: a stand-in eager op with the shape of ours (key, plan, full call recorded).
_SCRATCH = torch.zeros(8)


def _stand_in_op_parts(limit: int = 4096):
    """(kernel, plans, launcher) of the stand-in op, whose kernel takes (x, out, scratch, n)."""
    kernel = _StandInKernel()
    kernel.arg_names = ["x_ptr", "out_ptr", "scratch_ptr", "n", "BLOCK"]
    return kernel, launch.LaunchPlans(limit=limit), launch.CachedLauncher(kernel)


def _stand_in_op(plans, launcher, x, copy_x=False, launches=1, fail=False):
    inputs = (x,)
    key = plans.key(inputs, "stand-in")
    plan = plans.get(key)
    if plan is not None:
        return plan.run(inputs)
    out = torch.empty_like(x)
    with plans.record(key, inputs, out, stable=(_SCRATCH,)) as call:
        for _ in range(launches):
            launcher[(2,)](x.clone() if copy_x else x, out, _SCRATCH, x.shape[0], BLOCK=16)
        if fail:
            raise RuntimeError("launch failed")
        call.result = out
    return call.result


def test_a_plan_replays_the_recorded_launch_with_the_calls_own_tensors(compiled_mode):
    kernel, plans, launcher = _stand_in_op_parts()
    first, second = torch.zeros(64, dtype=torch.float16), torch.ones(64, dtype=torch.float16)
    _stand_in_op(plans, launcher, first)                  # through Triton, recorded
    y = _stand_in_op(plans, launcher, second)             # replayed: no binding, no key of the launcher
    assert len(kernel.slow_launches) == 1 and len(launcher._compiled) == 1
    number, grid, args, stream = kernel.fast_launches[-1]
    assert (number, grid, stream) == (1, (2, 1, 1), 7)
    assert args[0] is second and args[1] is y and args[2] is _SCRATCH and args[3:] == (64, 16)
    plan = plans.get(plans.key((second,), "stand-in"))
    assert plan.template[:2] == [None, None]              # no reference kept to the first call's tensors
    assert y.shape == (64,) and y.dtype == torch.float16 and y is not first


def test_other_metadata_takes_the_full_call(compiled_mode):
    kernel, plans, launcher = _stand_in_op_parts()
    base = torch.zeros(72, dtype=torch.float16)
    for x in (base[:64], base[1:65], base[:48], base[:64].view(torch.bfloat16), base[:64].view(8, 8)[:, 0]):
        _stand_in_op(plans, launcher, x)
    assert len(plans._plans) == 5                         # alignment, shape, dtype, strides: each its own plan
    _stand_in_op(plans, launcher, base[8:72])             # 16 bytes in: the first plan again
    assert len(plans._plans) == 5


def test_calls_that_cannot_be_replayed_are_not_recorded(compiled_mode):
    kernel, plans, launcher = _stand_in_op_parts()
    x = torch.zeros(64, dtype=torch.float16)
    _stand_in_op(plans, launcher, x, copy_x=True)         # a tensor made for the call alone
    _stand_in_op(plans, launcher, x, launches=2)          # two launches
    with pytest.raises(RuntimeError, match="launch failed"):
        _stand_in_op(plans, launcher, x, fail=True)
    assert not plans._plans and getattr(launch._this_thread, "recording", None) is None


def test_a_recording_sees_only_its_own_threads_launches(compiled_mode):
    import threading

    kernel, plans, launcher = _stand_in_op_parts()
    x = torch.zeros(64, dtype=torch.float16)
    key = plans.key((x,), "stand-in")
    out = torch.empty_like(x)
    with plans.record(key, (x,), out, stable=(_SCRATCH,)) as call:
        other = threading.Thread(target=lambda: launcher[(2,)](x, out, _SCRATCH, 64, BLOCK=16))
        other.start()
        other.join()
        call.result = out
    assert len(kernel.slow_launches) == 1 and plans.get(key) is None  # not this call's launch


def test_plans_start_over_at_their_limit(compiled_mode):
    kernel, plans, launcher = _stand_in_op_parts(limit=2)
    for n in (16, 32, 48):
        _stand_in_op(plans, launcher, torch.zeros(n, dtype=torch.float16))
    assert len(plans._plans) == 1


def test_no_plans_under_the_interpreter(monkeypatch):
    monkeypatch.setattr(launch, "interpreter_active", lambda: True)
    plans = launch.LaunchPlans()
    assert plans.key((torch.zeros(4),), "stand-in") is None and plans.get(None) is None


class _RecordingKernel:
    """Stands in for one of our @triton.jit kernels and for its compiled kernel: records
    every launch's arguments, through Triton (the first) and direct (meta-parameters
    positional) alike."""

    def __init__(self, real, launches: list):
        self.arg_names, self.launches = real.arg_names, launches

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.launches.append(args)
            return self
        return run


def _same_argument(replayed, full) -> bool:
    """Tensors: the same memory and layout (a scratch view is made anew each full call); the
    output is the call's own. Everything else: equal."""
    if isinstance(full, torch.Tensor):
        return (replayed.shape, replayed.stride(), replayed.dtype, replayed.data_ptr()) == (
            full.shape, full.stride(), full.dtype, full.data_ptr())
    return replayed == full


@pytest.mark.parametrize("scheme, config", [
    ("int8", None), ("int4", None), ("nf4", None),                  # the CPU fallback tiles, split-K
    ("int4", "gemv"), ("nf4", "gemv"), ("nf4", "double-quant"),
])
def test_the_real_launchers_replay_what_the_full_call_passes(compiled_mode, monkeypatch, scheme, config):
    """A replayed call hands the kernel, position by position, what the full call hands it
    for the same inputs (the launch stubbed, on the CPU)."""
    from tests.impl import test_kernels_int4, test_kernels_int8, test_kernels_nf4

    from impl.kernels.common import KernelConfig

    module = {"int8": woq_mm_int8, "int4": woq_mm_int4, "nf4": woq_mm_nf4}[scheme]
    launches: list = []
    for value in module.LAUNCHER.launchers.values():
        monkeypatch.setattr(value, "kernel", _RecordingKernel(value.kernel, launches))
        monkeypatch.setattr(value, "_compiled", {})
    monkeypatch.setattr(launch, "check_device", lambda x, op: None)
    monkeypatch.setattr(module, "interpreter_active", lambda: False)
    plans = launch.LaunchPlans()
    monkeypatch.setattr(module.LAUNCHER, "plans", plans)
    M, N, K = 2, 40, 2048  # K long enough for the fallback tiles to split (partials, counters)
    kw = {} if config in (None, "double-quant") else {"config": KernelConfig(1, 16, 64)}
    if scheme == "int8":
        q, s = test_kernels_int8.random_int8_weight(N, K, seed=1)
        call = lambda x, **k: woq_mm_int8.woq_mm_int8(x, q, s, **k)  # noqa: E731
    elif scheme == "int4":
        q, s, z = test_kernels_int4.random_int4_weight(N, K, 64, seed=1)
        call = lambda x, **k: woq_mm_int4.woq_mm_int4(x, q, s, z, 64, **k)  # noqa: E731
    else:
        w = test_kernels_nf4.random_nf4_weight(N, K, 64, seed=1, double_quant=config == "double-quant")
        call = lambda x, **k: woq_mm_nf4.woq_mm_nf4(x, **w, **k)  # noqa: E731
    first, second = (random_activation(M, K, torch.bfloat16, seed=seed) for seed in (2, 3))
    call(first, **kw)                                  # recorded
    y = call(second, **kw)                             # replayed
    assert len(plans._plans) == 1 and len(launches) == 2
    plans.enabled = False
    call(second, **kw)                                 # the full call, for comparison
    replayed, full = launches[1], launches[2]
    assert len(replayed) == len(full)
    out_position = next(i for i, a in enumerate(replayed) if a is y)
    for position, (a, b) in enumerate(zip(replayed, full)):
        if position == out_position:
            assert (a.shape, a.dtype) == (b.shape, b.dtype)
        else:
            assert _same_argument(a, b), f"argument {position}: {a!r} against {b!r}"
    assert replayed[0] is second
    if config is None:  # the split-K scratch went with the plan
        assert any(isinstance(a, torch.Tensor) and a.dtype == torch.int32 and a.numel() >= 1024 for a in replayed)


def _eager_launch_and_reference(scheme: str, M: int = 3, N: int = 96, K: int = 256):
    """(launch(x), reference(x), dense W) of one scheme's eager op on fixed random weights."""
    from tests.impl import test_kernels_int4, test_kernels_int8, test_kernels_nf4

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
    again = run(aligned)          # the call's recorded launch, replayed (launch.LaunchPlans)
    shifted = run(misaligned)     # another specialization: through Triton again
    other = run(aligned.clone().neg_())  # the plan with another tensor's data
    for x, y in ((aligned, first), (aligned, again), (misaligned, shifted), (aligned.clone().neg_(), other)):
        assert_matches_reference(y, reference(x), x, dense, f"{scheme} cached launch")
    assert torch.equal(first, again) and again.data_ptr() != first.data_ptr()


_SWITCH = r"""
import json
import torch
from impl import kernels
from impl.kernels import common, woq_mm_int8   # compiled JITFunctions: no TRITON_INTERPRET here
kernels.use_interpreter()                       # re-imports common, launch and the kernel modules
from impl.kernels import launch
config = woq_mm_int8.choose_config(common.PREFILL_ROWS + 1, 64, 64, torch.device("cpu"))
print(json.dumps({
    "prefill_is_commons": config == common.PREFILL_CONFIG,
    "launcher_is_launchs": isinstance(woq_mm_int8.LAUNCHER, launch.WeightOnlyLauncher),
    "kernels": sorted(type(c.kernel).__name__ for c in woq_mm_int8.LAUNCHER.launchers.values()),
}))
"""


def test_the_launcher_follows_the_switch_to_the_interpreter():
    """use_interpreter() after the kernels were imported compiled: the shared launcher is
    re-imported with common, so its configs are common's KernelConfig (==, not a stale class)
    and the launchers it builds hold the interpreted kernels."""
    from tests.impl.compiled_kernels_support import run_with_compiled_kernels

    assert run_with_compiled_kernels(_SWITCH) == {
        "prefill_is_commons": True, "launcher_is_launchs": True,
        "kernels": ["InterpretedFunction", "InterpretedFunction"],
    }
