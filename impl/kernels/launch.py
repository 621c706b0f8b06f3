"""Launching our compiled Triton kernels with less host time than ``kernel[grid](...)``.

At decode sizes a kernel runs for 10-70 µs, and Triton's ``JITFunction.run`` spends about
as long on the host every call: it binds ~30 arguments and meta-parameters, builds the
specialization key, re-checks the globals the kernel read and assembles launch metadata.
A ``CachedLauncher`` takes that path once per specialization, keeps the ``CompiledKernel``
it returns and launches it directly after that (``CompiledKernel[grid](*args, stream=)``,
Triton's own entry for a compiled kernel).

The cache key is what Triton 3 specializes a launch on: each int argument on whether it
is 1, whether 16 divides it and whether it fits 32 bits; each tensor argument on its dtype
and on the 16-byte alignment of its data pointer; plus the meta-parameters, the launch
options and the device. Under the interpreter, and for ``wrap_triton`` kernels (traced by
torch.compile), launches go through Triton unchanged.

A ``LaunchPlans`` goes one level up, to a whole eager call (checks, config choice, scratch,
arguments): the first call with given inputs' metadata runs in full and records its one
kernel launch; later calls with the same metadata allocate the output and replay it with
their own tensors (about 4 µs of Python on the CPU machine instead of about 16).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable

import torch
from triton.runtime.driver import driver

from . import interpreter_active

_INT32 = (-(2**31), 2**31)


def specialization_of(args: tuple) -> tuple:
    """The part of each argument a compiled kernel is specialized on (see the module doc).

    Called on every launch: plain ints, the commonest argument, are tested first by exact
    type (bool, an int subclass, is its own key)."""
    key = []
    append = key.append
    low, high = _INT32
    for a in args:
        kind = type(a)
        if kind is int:
            append((a == 1, a % 16 == 0, low <= a < high))
        elif isinstance(a, torch.Tensor):
            append((a.dtype, a.data_ptr() % 16 == 0))
        elif kind is bool or a is None:
            append(a)
        elif isinstance(a, int):
            append((a == 1, a % 16 == 0, low <= a < high))
        else:
            append(kind)
    return tuple(key)


class CachedLauncher:
    """``launcher[grid](*args, **meta_and_options)``, as for the ``@triton.jit`` kernel it wraps."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._compiled: dict[tuple, tuple[Any, tuple]] = {}

    def __getitem__(self, grid: tuple) -> Callable[..., Any]:
        if interpreter_active():
            return self.kernel[grid]
        return lambda *args, **kwargs: self._launch(grid, args, kwargs)

    def _launch(self, grid: tuple, args: tuple, kwargs: dict) -> Any:
        device = driver.active.get_current_device()
        key = (device, specialization_of(args), tuple(kwargs.items()))
        hit = self._compiled.get(key)
        grid3 = (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)
        if hit is None:  # Triton binds, compiles or finds the kernel, and launches it
            compiled = self.kernel[grid](*args, **kwargs)
            meta = tuple(kwargs[name] for name in self.kernel.arg_names[len(args):])
            self._compiled[key] = (compiled, meta)
        else:
            compiled, meta = hit
            compiled[grid3](*args, *meta, stream=driver.active.get_current_stream(device))
        recording = getattr(_this_thread, "recording", None)
        if recording is not None:
            recording.append((compiled, grid3, args, meta))
        return compiled


# .recording: the launches of the eager call that LaunchPlans.record is watching in this
# thread (None or absent: no call is). Per thread, so concurrent calls never see each other's.
_this_thread = threading.local()


class LaunchPlan:
    """One recorded kernel launch of an eager call, replayed with a later call's tensors:
    ``template`` holds the arguments that stay (sizes, strides, scratch buffers), ``slots``
    where the call's own inputs (index into ``inputs``) and its output (-1) go."""

    def __init__(self, runner, template: list, slots: tuple, meta: tuple, stream: int, out_shape: tuple, out_dtype):
        self.runner, self.template, self.slots, self.meta = runner, template, slots, meta
        self.stream, self.out_shape, self.out_dtype = stream, out_shape, out_dtype

    def run(self, inputs: tuple) -> torch.Tensor:
        out = torch.empty(self.out_shape, device=inputs[0].device, dtype=self.out_dtype)
        args = self.template.copy()
        for position, which in self.slots:
            args[position] = out if which < 0 else inputs[which]
        self.runner(*args, *self.meta, stream=self.stream)
        return out


class _Record:
    result: Any = None


class LaunchPlans:
    """An eager launcher's plans, keyed by everything its one launch depends on: each input
    tensor's shape, strides, dtype, device and 16-byte alignment (so a hit has passed the
    checks, takes the same config and the same Triton specialization), the current device
    and stream (the scratch buffers are per stream), and the call's other arguments.

    A call is recorded only when it made exactly one cached launch, returned the output it
    allocated, and passed no tensor other than its inputs, that output and the ``stable``
    buffers it names (cached scratch and tables; a per-call copy such as a re-laid-out x
    keeps the call on the full path). Off under the interpreter (decided at import, as
    Triton decides its kernels' kind). At ``limit`` plans the cache starts over."""

    def __init__(self, limit: int = 4096) -> None:
        self.enabled = not interpreter_active()
        self.limit = limit
        self._plans: dict[tuple, LaunchPlan] = {}

    def key(self, tensors: tuple, *extra) -> tuple | None:
        """(current device, current stream, *extra, then five fields a tensor, None for an
        absent one); None while plans are off. ``record`` takes the plan's stream from it."""
        if not self.enabled:
            return None
        device = driver.active.get_current_device()
        parts = [device, driver.active.get_current_stream(device), *extra]
        for t in tensors:
            if t is None:
                parts.append(None)
            else:
                parts += (t.shape, t.stride(), t.dtype, t.device, t.data_ptr() & 15)
        return tuple(parts)

    def get(self, key: tuple | None) -> LaunchPlan | None:
        return None if key is None else self._plans.get(key)

    @contextlib.contextmanager
    def record(self, key: tuple | None, inputs: tuple, out: torch.Tensor, stable: tuple):
        """``with plans.record(...) as call: call.result = <the full call>``."""
        call = _Record()
        if key is None:
            yield call
            return
        outer = getattr(_this_thread, "recording", None)
        launches = _this_thread.recording = []
        try:
            yield call
        finally:
            _this_thread.recording = outer
        if len(launches) != 1 or call.result is not out:
            return
        compiled, grid3, args, meta = launches[0]
        template, slots = list(args), []
        for position, arg in enumerate(args):
            if not isinstance(arg, torch.Tensor):
                continue
            which = next((i for i, t in enumerate(inputs) if t is arg), -1 if arg is out else None)
            if which is None:
                if not any(arg is t for t in stable):
                    return  # a tensor made for this call alone
                continue
            template[position] = None  # holds no reference to this call's tensors
            slots.append((position, which))
        if len(self._plans) >= self.limit:
            self._plans.clear()
        self._plans[key] = LaunchPlan(compiled[grid3], template, tuple(slots), meta, key[1], tuple(out.shape),
                                      out.dtype)
