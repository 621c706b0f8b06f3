"""Our eager launchers' Python cost per call, on any machine: the kernel launch stubbed out.

    python3 -m tools.launcher_python_cost [--no-plans] [--calls 2000]

Runs woq_mm_int8, woq_mm_int4 (g128) and woq_mm_nf4 (b64) at M = 1, K = N = 4096, bf16, on
CPU tensors as if they were on a GPU: the interpreter reported off, Triton's driver replaced
by one answering device 0 and stream 0, and every CachedLauncher's kernel by a stand-in whose
compiled kernel does nothing. What is left is ours: checks, config choice, scratch, argument
binding, the specialization key, LaunchPlans. Prints the best of 5 rounds in µs a call,
and how many plans each launcher recorded.
``--no-plans`` turns LaunchPlans off, for the before/after. On a GPU host,
``tools.profile_launcher`` measures the whole call, Triton's launch included.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from impl.kernels import launch, woq_mm_int4, woq_mm_int8, woq_mm_nf4  # noqa: E402


class _NoOpKernel:
    """Stands in for a @triton.jit kernel: kernel[grid](...) returns a compiled kernel whose
    launches do nothing."""

    def __init__(self, real) -> None:
        self.arg_names = real.arg_names

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self


def stub_launches(plans: bool) -> None:
    """The launch path as on a GPU, with nothing launched (see the module doc)."""
    active = types.SimpleNamespace(get_current_device=lambda: 0, get_current_stream=lambda device: 0)
    launch.driver = types.SimpleNamespace(active=active)
    launch.interpreter_active = lambda: False
    for module in (woq_mm_int8, woq_mm_int4, woq_mm_nf4):
        module.interpreter_active = lambda: False
        module.check_device = lambda x, op: None
        for value in vars(module).values():
            if isinstance(value, launch.CachedLauncher):
                value.kernel = _NoOpKernel(value.kernel)
        module._PLANS.enabled = plans


def calls(k: int = 4096, n: int = 4096) -> dict:
    x = torch.randn(1, k, dtype=torch.bfloat16)
    q8, scale8 = torch.randint(-127, 127, (n, k), dtype=torch.int8), torch.rand(n)
    q4 = torch.randint(0, 255, (n, k // 2), dtype=torch.uint8)
    scale4, zero4 = torch.rand(n, k // 128), torch.full((n, k // 128), 8.0)
    absmax = torch.rand(n, k // 64)
    return {  # name: (module, call)
        "int8": (woq_mm_int8, lambda: woq_mm_int8.woq_mm_int8(x, q8, scale8)),
        "int4": (woq_mm_int4, lambda: woq_mm_int4.woq_mm_int4(x, q4, scale4, zero4, 128)),
        "nf4": (woq_mm_nf4, lambda: woq_mm_nf4.woq_mm_nf4(x, q4, absmax, 64)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-plans", action="store_true", help="LaunchPlans off (every call in full)")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    stub_launches(plans=not args.no_plans)
    for name, (module, fn) in calls().items():
        for _ in range(10):
            fn()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(args.calls):
                fn()
            best = min(best, (time.perf_counter() - start) / args.calls * 1e6)
        print(f"{name}: {best:.1f} µs a call (our Python, launch stubbed{', no plans' if args.no_plans else ''}; "
              f"{len(module._PLANS._plans)} plan recorded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
