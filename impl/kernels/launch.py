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
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from triton.runtime.driver import driver

from impl.kernels import interpreter_active

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
        if hit is None:  # Triton binds, compiles or finds the kernel, and launches it
            compiled = self.kernel[grid](*args, **kwargs)
            meta = tuple(kwargs[name] for name in self.kernel.arg_names[len(args):])
            self._compiled[key] = (compiled, meta)
            return compiled
        compiled, meta = hit
        grid3 = (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)
        compiled[grid3](*args, *meta, stream=driver.active.get_current_stream(device))
        return compiled
