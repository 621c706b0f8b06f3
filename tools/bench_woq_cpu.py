"""CPU benchmark (not a test): weight-only quantized Linear, fused vs unfused vs eager.

For each scheme (int8, int4 group 64, nf4 block 64), activation dtype and M, one
``WeightOnlyLinear`` (K -> N) is timed three ways:

- eager: the module as written (dequantize the whole weight, then F.linear);
- unfused: ``torch.compile`` without ``impl.install()`` (Inductor's dequantization loop,
  then a GEMM, on every call: freezing does not fold the region);
- fused: ``torch.compile`` under ``impl.install()`` (``torch.ops.impl.woq_mm_<scheme>`` and
  its CPU lowering).

Both compiled variants use ``freezing`` (int4's ATen kernel needs its weight repacked at
compile time).

Decode (M = 1, 4) and prefill (M = 64, 256) shapes, sized for a 2-core CPU. Prints one
table with the best of ``--repeat`` runs in milliseconds and the ratios unfused / fused
and eager / fused (> 1: fused is faster).

    python3 tools/bench_woq_cpu.py [--k 1024 --n 1024 --dtypes float32,bfloat16 --repeat 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import impl  # noqa: E402
from impl.schemes import quantize_linear_  # noqa: E402

SCHEMES = {"int8": {}, "int4": {"group_size": 64}, "nf4": {"block_size": 64}}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def best_ms(fn, x, repeat: int) -> float:
    """The fastest of ``repeat`` calls: on a shared machine the least disturbed one."""
    for _ in range(3):
        fn(x)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def run(args) -> None:
    torch.set_num_threads(args.threads)
    rows = []
    for scheme, options in SCHEMES.items():
        for dtype_name in args.dtypes.split(","):
            dtype = DTYPES[dtype_name]
            torch.manual_seed(0)
            model = quantize_linear_(torch.nn.Linear(args.k, args.n, bias=True), scheme, **options).eval()
            for m in args.m:
                x = torch.randn(m, args.k, dtype=dtype)
                with torch.no_grad():
                    eager = best_ms(model, x, args.repeat)
                    times = {}
                    for variant, fused in (("unfused", False), ("fused", True)):
                        torch._dynamo.reset()
                        with (impl.installed() if fused else _nothing()), torch._inductor.config.patch(freezing=True):
                            fn = torch.compile(model)
                            fn(x)  # compile inside the context: the passes run at compile time
                        times[variant] = best_ms(fn, x, args.repeat)
                rows.append((scheme, dtype_name, m, eager, times["unfused"], times["fused"]))
                print(_row(rows[-1]), flush=True)


def _row(row) -> str:
    scheme, dtype, m, eager, unfused, fused = row
    return (f"| {scheme:5} | {dtype:9} | {m:4} | {eager:9.3f} | {unfused:9.3f} | {fused:9.3f} "
            f"| {unfused / fused:6.2f}x | {eager / fused:6.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--m", type=lambda s: [int(v) for v in s.split(",")], default=[1, 4, 64, 256])
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {args.threads} threads, Linear {args.k} -> {args.n}, best of {args.repeat} (ms)")
    print("| scheme | dtype | M | eager | unfused | fused | unfused/fused | eager/fused |")
    print("|---|---|---|---|---|---|---|---|")
    run(args)


if __name__ == "__main__":
    main()
