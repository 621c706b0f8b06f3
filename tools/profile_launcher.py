"""Where the eager launchers' host time goes, on a GPU: cProfile of back-to-back calls.

    python3 -m tools.profile_launcher [--calls 200] [--top 25] [--rounds 9]

For each kernel (int8, int4 g128, nf4 b64 at M = 1, K = N = 4096, bf16) prints host
microseconds per call (the GPU kept busy, so no call waits on it: median and best of
``--rounds`` rounds) and the functions that take the most cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from impl.kernels import woq_mm_int4, woq_mm_int8, woq_mm_nf4  # noqa: E402
from tools.bench_woq_gpu import cpu_us_per_call  # noqa: E402


def calls(k: int = 4096, n: int = 4096):
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    q8 = torch.randint(-127, 127, (n, k), device="cuda", dtype=torch.int8)
    scale = torch.rand(n, device="cuda") * 0.01
    q4 = torch.randint(0, 255, (n, k // 2), device="cuda", dtype=torch.uint8)
    s4 = torch.rand(n, k // 128, device="cuda") * 0.01
    z4 = torch.full((n, k // 128), 8.0, device="cuda")
    absmax = torch.rand(n, k // 64, device="cuda")
    return {
        "int8": lambda: woq_mm_int8.woq_mm_int8(x, q8, scale),
        "int4": lambda: woq_mm_int4.woq_mm_int4(x, q4, s4, z4, 128),
        "nf4": lambda: woq_mm_nf4.woq_mm_nf4(x, q4, absmax, 64),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    for name, fn in calls().items():
        for _ in range(3):
            fn()
        # One round of 30 calls is noisy on a shared host (10 µs apart between runs): report
        # the median and the best of several.
        rounds = sorted(cpu_us_per_call(fn) for _ in range(args.rounds))
        print(f"== {name}: {rounds[len(rounds) // 2]:.1f} us host per call (median of {args.rounds} rounds of 30 "
              f"calls; best {rounds[0]:.1f}, worst {rounds[-1]:.1f})")
        profile = cProfile.Profile()
        torch.cuda._sleep(50_000_000)
        profile.enable()
        for _ in range(args.calls):
            fn()
        profile.disable()
        torch.cuda.synchronize()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(args.top)
        print(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
