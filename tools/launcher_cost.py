"""Our eager launchers' host time per call: every registered scheme (int8, int4 g128, nf4 b64, ...)
at M = 1, K = N = 4096 (``--kn``), bf16.

    python3 -m tools.launcher_cost [--rounds 9] [--calls 200] [--top 25]   # on a GPU
    python3 -m tools.launcher_cost --stub [--no-plans] [--calls 2000]      # on any machine

On a GPU, the whole call, Triton's launch included: host microseconds a call (the GPU kept
busy, so no call waits on it; median and best of ``--rounds`` rounds of 30 calls), then a
cProfile of ``--calls`` back-to-back calls (the ``--top`` functions by cumulative time).

``--stub``: our Python alone, on CPU tensors as if they were on a GPU: the interpreter reported
off, Triton's driver replaced by one answering device 0 and stream 0, and every
CachedLauncher's kernel by a stand-in whose compiled kernel does nothing. What is left is
ours: checks, config choice, scratch, argument binding, the specialization key, LaunchPlans.
Prints the best of ``--rounds`` rounds of ``--calls`` calls in µs a call, and how many plans
each launcher recorded. ``--no-plans`` turns LaunchPlans off, for the before/after. A kernel
module without LaunchPlans (a scheme registered from elsewhere) is left out of ``--stub``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from impl.kernels import launch, ops  # noqa: E402
from tools import bench_schemes  # noqa: E402
from tools.bench_woq_gpu import cpu_us_per_call, parse_kn  # noqa: E402

# --calls and --rounds when not given: a cProfile of 200 calls and 9 rounds (one round is
# noisy on a shared GPU host, ~10 µs apart between runs); stubbed calls are cheap, so many.
DEFAULTS = {"gpu": {"calls": 200, "rounds": 9}, "stub": {"calls": 2000, "rounds": 5}}


def calls(device: str, k: int = 4096, n: int = 4096) -> dict:
    """short name: (kernel module, zero-argument call) for each registered scheme, at M = 1, bf16."""
    x = torch.randn(1, k, device=device, dtype=torch.bfloat16)
    out = {}
    for short in bench_schemes.shorts():
        operands, ints = bench_schemes.quantize(short, n, k, device, bench_schemes.quantize_options(short))
        arguments, fn = bench_schemes.launch_arguments(short, operands, ints), bench_schemes.launcher(short)
        out[short] = (ops.kernel_module(short), lambda fn=fn, arguments=arguments: fn(x, *arguments))
    return out


# ------------------------------------------------------------------------- on a GPU


def profile_on_gpu(calls_per_profile: int, rounds: int, top: int, kn: tuple) -> None:
    for name, (_, fn) in calls("cuda", *kn).items():
        for _ in range(3):
            fn()
        times = sorted(cpu_us_per_call(fn) for _ in range(rounds))
        print(f"== {name}: {times[len(times) // 2]:.1f} us host per call (median of {rounds} rounds of 30 "
              f"calls; best {times[0]:.1f}, worst {times[-1]:.1f})")
        profile = cProfile.Profile()
        torch.cuda._sleep(50_000_000)
        profile.enable()
        for _ in range(calls_per_profile):
            fn()
        profile.disable()
        torch.cuda.synchronize()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(top)
        print(text.getvalue())


# ------------------------------------------------------------------------- launch stubbed


class _NoOpKernel:
    """Stands in for a @triton.jit kernel: kernel[grid](...) returns a compiled kernel whose
    launches do nothing."""

    def __init__(self, real) -> None:
        self.arg_names = real.arg_names

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self


def stubbable(module: types.ModuleType) -> bool:
    """A kernel module whose eager launcher records LaunchPlans (one on launch.WeightOnlyLauncher)."""
    return isinstance(getattr(module, "LAUNCHER", None), launch.WeightOnlyLauncher)


def stub_launches(modules, plans: bool) -> None:
    """The launch path as on a GPU, with nothing launched (see the module doc)."""
    active = types.SimpleNamespace(get_current_device=lambda: 0, get_current_stream=lambda device: 0)
    launch.driver = types.SimpleNamespace(active=active)
    launch.interpreter_active = lambda: False
    launch.check_device = lambda x, op: None
    for module in modules:
        module.interpreter_active = lambda: False
        for value in module.LAUNCHER.launchers.values():
            value.kernel = _NoOpKernel(value.kernel)
        module.LAUNCHER.plans.enabled = plans


def time_stubbed(calls_per_round: int, rounds: int, plans: bool, kn: tuple) -> None:
    stubbed = {name: call for name, call in calls("cpu", *kn).items() if stubbable(call[0])}
    stub_launches(dict.fromkeys(module for module, _ in stubbed.values()), plans=plans)
    for name, (module, fn) in stubbed.items():
        for _ in range(10):
            fn()
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(calls_per_round):
                fn()
            best = min(best, (time.perf_counter() - start) / calls_per_round * 1e6)
        print(f"{name}: {best:.1f} µs a call (our Python, launch stubbed{'' if plans else ', no plans'}; "
              f"{len(module.LAUNCHER.plans._plans)} plan recorded)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stub", action="store_true", help="our Python alone, the launch stubbed (any machine)")
    parser.add_argument("--no-plans", action="store_true", help="with --stub: LaunchPlans off (every call in full)")
    parser.add_argument("--calls", type=int, default=None, help="calls profiled (GPU: 200) or a round (--stub: 2000)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds timed (GPU: 9, median and best; --stub: 5, best)")
    parser.add_argument("--top", type=int, default=25, help="functions of the cProfile printed (GPU)")
    parser.add_argument("--kn", default="4096x4096", help="K x N of the weights (default 4096x4096)")
    args = parser.parse_args(argv)
    (kn,) = parse_kn(args.kn, "launcher_cost")
    mode = "stub" if args.stub else "gpu"
    count = args.calls if args.calls is not None else DEFAULTS[mode]["calls"]
    rounds = args.rounds if args.rounds is not None else DEFAULTS[mode]["rounds"]
    if args.no_plans and not args.stub:
        parser.error("--no-plans goes with --stub")
    if args.stub:
        time_stubbed(count, rounds, plans=not args.no_plans, kn=kn)
    elif not torch.cuda.is_available():
        parser.error("no CUDA device here: --stub times our Python alone, with the launch stubbed")
    else:
        profile_on_gpu(count, rounds, args.top, kn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
