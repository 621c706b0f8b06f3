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

A ``WeightOnlyLauncher`` is the launcher every weight-only kernel module shares: the config
choice, the operand checks, the eager call (plans, scratch) and the traced one (the
triton_op's body), and the dispatch to the dequantize-first, GEMV or tile kernel. A kernel
module subclasses it with what is its own: its kernels, their arguments, its fallback tiles
and its decode tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from typing import Any, Callable, Optional

import torch
from torch.library import wrap_triton
from triton.runtime.driver import driver

from ..schemes.registry import WeightOnlyScheme, by_short
from . import interpreter_active
from .common import (
    PREFILL_CONFIG,
    PREFILL_ROWS,
    KernelConfig,
    SplitKScratch,
    ceil_div,
    check_activation,
    check_device,
    check_placement,
    choose_split_k,
    dense_gemm,
    dequantize_grid,
    gemv_activation,
    grid_for,
    sm_count,
    tuned_config,
)

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


# ------------------------------------------------------------------ the weight-only launcher


def traced_rows(x: torch.Tensor, config) -> object:
    """x's row count: an int where the body picks its config from it; as given (an int or, in
    a trace with a symbolic batch, a SymInt) where the caller picked the config for M's bucket."""
    return int(x.shape[0]) if config is None else x.shape[0]


def traced_scratch(M, N: int, config: KernelConfig, x: torch.Tensor, tile_counter):
    """(partial, tile_counter) of a traced launch. ``tile_counter``: zeroed int32 with a counter
    for every tile (the kernel leaves it zeroed), or None to allocate zeros here, a fill kernel a
    call. A launch without split-K reads neither: the given buffer stands in for both pointers."""
    if tile_counter is None:
        return SplitKScratch.buffers(M, N, config, x.device, fresh_counters=True)
    if config.split_k == 1:
        return tile_counter.view(torch.float32), tile_counter
    return torch.empty((config.split_k, M, N), device=x.device, dtype=torch.float32), tile_counter


class WeightOnlyLauncher:
    """The launch of one scheme's kernels, y (M, N) = x (M, K) @ W.T; a kernel module
    subclasses it and makes one instance, its ``LAUNCHER``.

    Arguments, as ``impl.schemes.registry`` names them: ``operands`` the weight tensors in the
    scheme's operand order (None for an optional one left out), ``ints`` its static ints
    (group or block size; ``ints[0]`` caps BLOCK_K). ``tables`` are the decode tables the
    kernels read besides (``eager_tables`` / ``traced_tables``).

    A launch goes, by its KernelConfig, to one of three kernels: ``dequantize_kernel`` then a
    dense GEMM (``dequantize_first``, the prefill route), ``gemv_kernel`` (``config.gemv``;
    a scheme without one runs its GEMV configs in its tile kernel) or ``main_kernel`` (tiles).
    What a subclass gives:

    - ``short``: the scheme's short name (registry record, tuned-config keys, ``woq_mm_<short>``);
    - ``main_kernel`` (and ``gemv_kernel``, ``dequantize_kernel``: None where it has none);
    - ``fallback_tiles``: (most rows, KernelConfig) by M, None last: the tiles when no tuned
      config applies (``choose_config``);
    - ``main_arguments`` (``gemv_arguments``, ``dequantize_arguments``): a kernel's
      positional arguments and meta-parameters for one launch;
    - where it has them: ``eager_tables``, ``traced_tables``, ``fixed_tables``,
      ``check_config``, ``op_arguments`` / ``split_arguments`` (op_body's argument order,
      ``impl.kernels.ops``).
    """

    short: str
    main_kernel: Any
    gemv_kernel: Any = None
    dequantize_kernel: Any = None
    fallback_tiles: tuple[tuple[Optional[int], KernelConfig], ...]
    padded_k: bool = False  # the layout pads K to whole groups: W dequantizes to 2 * qweight.shape[1] columns
    block_name, scale_name = "groups", "the scale"  # what ints[0] measures and what scales a block, in errors

    def __init__(self) -> None:
        self.op = f"woq_mm_{self.short}"
        kernels = {"main": self.main_kernel, "gemv": self.gemv_kernel, "dequantize": self.dequantize_kernel}
        # The eager launches' path to the kernels: Triton's binding once per specialization.
        self.launchers = {name: CachedLauncher(kernel) for name, kernel in kernels.items() if kernel is not None}
        self.plans = LaunchPlans()
        self.choose_config = functools.lru_cache(maxsize=1024)(self._choose_config)

    @property
    def scheme(self) -> WeightOnlyScheme:
        return by_short(self.short)

    # ------------------------------------------------------------------ config

    def _choose_config(self, M: int, N: int, K: int, *ints_and_device) -> KernelConfig:
        """``choose_config(M, N, K, *ints, device)``: the GPU's tuned table (common.tuned_config)
        first; else the fallback tile for M, BLOCK_K capped by ints[0], split-K to fill the SMs,
        and past PREFILL_ROWS rows the prefill route (KernelConfig.dequantize_first) where the
        scheme has a dequantize kernel. Cached."""
        *ints, device = ints_and_device
        block = ints[0] if ints else None
        tuned = tuned_config(self.short, M, N, K, device, block_k_limit=block)
        if tuned is not None:
            return tuned
        if M > PREFILL_ROWS and self.dequantize_kernel is not None:
            return PREFILL_CONFIG
        base = next(config for rows, config in self.fallback_tiles if rows is None or M <= rows)
        block_k = base.block_k if block is None else min(base.block_k, block)
        tiles = ceil_div(M, base.block_m) * ceil_div(N, base.block_n)
        split_k = choose_split_k(tiles, ceil_div(K, block_k), sm_count(device))
        return dataclasses.replace(base, block_k=block_k, split_k=split_k)

    def config_for(self, M: int, N: int, K: int, ints: tuple, device: torch.device) -> KernelConfig:
        return self.choose_config(M, N, K, *ints, device)

    # ------------------------------------------------------------------ checks

    def check(self, x: torch.Tensor, operands: tuple, ints: tuple) -> None:
        """x (M, K) by check_activation; the weight operands by the scheme's one check (layout,
        dtype, shape: ``impl.schemes``), then on x's device and row-major (check_placement)."""
        op = self.op
        check_activation(x, None, op)
        scheme = self.scheme
        scheme.check(*operands, *ints, x.shape[1], op)
        for name, t in zip(scheme.operands, operands):
            if t is not None:
                check_placement(t, name, x.device, op)

    def check_config(self, config: KernelConfig) -> None:
        """What the scheme's kernels refuse of a config beyond KernelConfig's own checks."""

    # ------------------------------------------------------------------ calls

    def eager(self, x: torch.Tensor, operands: tuple, ints: tuple, config: Optional[KernelConfig]) -> torch.Tensor:
        """The eager launcher: y (M, N) in x's dtype. ``config`` overrides the tile choice (tests
        and tuning). A call with the metadata of an earlier one replays that call's launch
        (LaunchPlans)."""
        inputs = (x, *operands)
        key = self.plans.key(inputs, *ints, config)
        plan = self.plans.get(key)
        if plan is not None:
            return plan.run(inputs)
        check_device(x, self.op)
        self.check(x, operands, ints)
        M, K = x.shape
        N = operands[0].shape[0]
        config = config or self.choose_config(M, N, K, *ints, x.device)
        out = torch.empty((M, N), device=x.device, dtype=x.dtype)
        partial, tile_counter = SplitKScratch.buffers(M, N, config, x.device)
        tables = self.eager_tables(x)
        with self.plans.record(key, inputs, out, stable=(partial, tile_counter, *tables)) as call:
            call.result = self.launch(x, operands, tables, out, partial, tile_counter, ints, config)
        return call.result

    def traced(self, x: torch.Tensor, operands: tuple, ints: tuple, config: Optional[KernelConfig] = None,
               tile_counter: Optional[torch.Tensor] = None, **given: Optional[torch.Tensor]) -> torch.Tensor:
        """The triton_op's body (``impl.kernels.ops``), which the CUDA lowering traces: only
        traceable operations. ``config``: the tile config (None: chosen from M);
        ``tile_counter``: see traced_scratch; ``given``: decode tables the caller hands in
        (traced_tables)."""
        self.check(x, operands, ints)
        M, K = traced_rows(x, config), int(x.shape[1])
        N = operands[0].shape[0]
        config = config or self.choose_config(M, N, K, *ints, x.device)
        out = x.new_empty((M, N))
        partial, counter = traced_scratch(M, N, config, x, tile_counter)
        tables = self.traced_tables(x, operands, config, **given)
        return self.launch(x, operands, tables, out, partial, counter, ints, config, wrap=wrap_triton)

    def launch(self, x: torch.Tensor, operands: tuple, tables: tuple, out: torch.Tensor, partial: torch.Tensor,
               tile_counter: torch.Tensor, ints: tuple, config: KernelConfig, wrap=None) -> torch.Tensor:
        """Launch with buffers already checked and allocated; returns y. ``wrap`` maps the chosen
        @triton.jit kernel to what launches it (wrap_triton for a triton_op); None: the eager
        launcher's cached binding."""
        M, K = x.shape
        N = operands[0].shape[0]
        route = ("dequantize" if config.dequantize_first
                 else "gemv" if config.gemv and self.gemv_kernel is not None else "main")
        if route == "main" and ints and config.block_k > ints[0] and config.scale_after_dot:
            raise ValueError(f"{self.op}: config.block_k {config.block_k} spans several {self.block_name} of "
                             f"{ints[0]}, which needs scale_after_dot=False ({self.scale_name} goes into each "
                             "weight before the dot)")
        self.check_config(config)
        kernel = self.launchers[route] if wrap is None else wrap(getattr(self, f"{route}_kernel"))
        if route == "dequantize":  # ``out`` stays unwritten: the dense GEMM returns y
            columns = 2 * operands[0].shape[1] if self.padded_k else K
            weight = x.new_empty((N, columns))
            args, meta = self.dequantize_arguments(operands, tables, weight, ints, config)
            kernel[dequantize_grid(N, columns, config)](*args, **meta, num_warps=config.num_warps)
            return dense_gemm(x, weight[:, :K] if self.padded_k else weight)
        if route == "gemv":
            x = gemv_activation(x)
        args, meta = getattr(self, f"{route}_arguments")(x, operands, tables, out, partial, tile_counter, ints, config)
        kernel[grid_for(M, N, config)](*args, **meta, num_warps=config.num_warps, num_stages=config.num_stages)
        return out

    # ------------------------------------------------------------------ the scheme's own

    def main_arguments(self, x, operands, tables, out, partial, tile_counter, ints, config) -> tuple[tuple, dict]:
        """(positional arguments, meta-parameters but num_warps and num_stages) of main_kernel."""
        raise NotImplementedError

    def gemv_arguments(self, x, operands, tables, out, partial, tile_counter, ints, config) -> tuple[tuple, dict]:
        """As main_arguments, for gemv_kernel (x as gemv_activation made it)."""
        raise NotImplementedError

    def dequantize_arguments(self, operands, tables, weight, ints, config) -> tuple[tuple, dict]:
        """(positional arguments, meta-parameters but num_warps) of dequantize_kernel writing
        ``weight`` (N, K or K_pad) in x's dtype."""
        raise NotImplementedError

    def eager_tables(self, x: torch.Tensor) -> tuple:
        """The decode tables of an eager launch (cached per device: a plan keeps them)."""
        return ()

    def traced_tables(self, x: torch.Tensor, operands: tuple, config: KernelConfig, **given) -> tuple:
        """The decode tables of a traced launch, made by traceable operations where not ``given``."""
        return ()

    def fixed_tables(self, dtype: torch.dtype, device: torch.device) -> dict:
        """Decode tables the CUDA lowering makes graph constants, by ``traced``'s keyword."""
        return {}

    def op_arguments(self, operands: tuple, ints: tuple) -> tuple:
        """The fused op's weight operands and ints as the module's op_body takes them after x."""
        return (*operands, *ints)

    @functools.cached_property
    def operand_count(self) -> int:
        return len(self.scheme.operands)

    def split_arguments(self, arguments: tuple) -> tuple[tuple, tuple]:
        """op_body's arguments after x as (operands, ints): op_arguments undone."""
        count = self.operand_count  # cached: eager_launch's replayed calls take microseconds
        return arguments[:count], arguments[count:]

    # ------------------------------------------------------------------ with op_body's signature

    def traced_body(self, x: torch.Tensor, *arguments, config: Optional[KernelConfig] = None,
                    tile_counter: Optional[torch.Tensor] = None, **tables: Optional[torch.Tensor]) -> torch.Tensor:
        """op_body's launch (``op_body(x, ...)`` is ``traced_body(x, ...)``), and what the CUDA
        lowering traces: ``config``, ``tile_counter`` and decode tables by keyword (``traced``)."""
        operands, ints = self.split_arguments(arguments)
        return self.traced(x, operands, ints, config, tile_counter, **tables)

    def eager_launch(self, x: torch.Tensor, *arguments, config: Optional[KernelConfig] = None) -> torch.Tensor:
        """op_body's signature, eager (``eager``): what the max-autotune contest and tools/ time."""
        operands, ints = self.split_arguments(arguments)
        return self.eager(x, operands, ints, config)
