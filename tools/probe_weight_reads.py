"""How fast a weight-streaming kernel can read its weights, by access pattern, on a GPU.

    python3 -m tools.probe_weight_reads [--kn 8192x8192,8192x28672] [--bytes-per-row 4]

A Triton kernel that only reads a packed weight (N, K * bits / 8) uint8 the way the
weight-only matmuls do: each program owns BLOCK_N rows and a split of K, and per K step
loads a (BLOCK_N, STEP_BYTES) tile (rows STEP_BYTES wide: 32 for nf4's block of 64, 64 for
int4's group of 128, 256 for int8 at BLOCK_K 256). "tiled" reads the same bytes from a
layout where each program's step is one contiguous block instead. Prints GB/s read and
% of copy bandwidth per pattern. The loads here are plain (not pipelined through shared
memory as the matmuls' are), so a pattern's number compares patterns, not a kernel's
ceiling: on the H200 the int4 kernel beats this probe at its own 64 B pattern.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.bench_woq_gpu import measure_copy_bandwidth, parse_kn, time_gpu_ms  # noqa: E402


@triton.jit
def read_tiles_kernel(w_ptr, out_ptr, N, ROW_BYTES, BLOCK_N: tl.constexpr, STEP_BYTES: tl.constexpr,
                      SPLIT_K, TILED: tl.constexpr):
    """w (N, ROW_BYTES) uint8; program (pid_n, pid_k) reads its rows' split in steps of
    STEP_BYTES and writes one int32 (the bytes' sum, so no load is dead)."""
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    split_bytes = ROW_BYTES // SPLIT_K
    offs_n = tl.arange(0, BLOCK_N)
    offs_b = tl.arange(0, STEP_BYTES)
    acc = tl.full((BLOCK_N, STEP_BYTES), 0, tl.int32)
    if TILED:  # tile (pid_n, step) is BLOCK_N * STEP_BYTES contiguous bytes
        base = w_ptr + pid_n.to(tl.int64) * BLOCK_N * ROW_BYTES
        for step in range(pid_k * (split_bytes // STEP_BYTES), (pid_k + 1) * (split_bytes // STEP_BYTES)):
            ptrs = base + step * BLOCK_N * STEP_BYTES + offs_n[:, None] * STEP_BYTES + offs_b[None, :]
            acc += tl.load(ptrs, eviction_policy="evict_first").to(tl.int32)
    else:
        rows = pid_n * BLOCK_N + offs_n
        ptrs = w_ptr + rows.to(tl.int64)[:, None] * ROW_BYTES + pid_k * split_bytes + offs_b[None, :]
        for _ in range(0, split_bytes, STEP_BYTES):
            acc += tl.load(ptrs, eviction_policy="evict_first").to(tl.int32)
            ptrs += STEP_BYTES
    total = tl.reduce(tl.reduce(acc, 1, _add), 0, _add)
    tl.store(out_ptr + pid_n * SPLIT_K + pid_k, total)


@triton.jit
def _add(a, b):
    return a + b


def read_fn(block_n: int, step_bytes: int, split_k: int, tiled: bool, warps: int, stages: int):
    def call(w, out):
        N, row_bytes = w.shape
        read_tiles_kernel[(N // block_n, split_k)](w, out, N, row_bytes, BLOCK_N=block_n, STEP_BYTES=step_bytes,
                                                   SPLIT_K=split_k, TILED=tiled, num_warps=warps,
                                                   num_stages=stages)
    return call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kn", default="8192x8192,8192x28672")
    parser.add_argument("--bits", type=int, default=4, help="weight bits (4: K / 2 bytes a row)")
    args = parser.parse_args()
    device = torch.device("cuda")
    copy_gbs = measure_copy_bandwidth(device)
    print(f"device: {torch.cuda.get_device_name(device)}; copy bandwidth {copy_gbs:.0f} GB/s")
    l2_bytes = 60 << 20
    patterns = [(bn, sb, sk, tiled, w, st)
                for bn, sb in ((128, 32), (128, 64), (64, 128), (128, 128), (64, 256), (32, 512), (128, 256))
                for sk in (1, 2, 4, 8) for tiled in (False, True) for w, st in ((4, 4), (8, 4))]
    print(f"{'K x N':>12s} {'BLOCK_N':>7s} {'step B':>6s} {'split':>5s} {'layout':>6s} {'warps':>5s} "
          f"{'stages':>6s} {'µs':>8s} {'GB/s':>7s} {'% copy':>6s}")
    for K, N in parse_kn(args.kn):
        row_bytes = K * args.bits // 8
        nbytes = N * row_bytes
        copies = max(2, -(-2 * l2_bytes // nbytes) + 1)
        weights = [torch.randint(0, 255, (N, row_bytes), device=device, dtype=torch.uint8) for _ in range(copies)]
        best = {}
        for bn, sb, sk, tiled, w, st in patterns:
            if row_bytes % (sk * sb) or N % bn:
                continue
            out = torch.empty(N // bn * sk, device=device, dtype=torch.int32)
            fn = read_fn(bn, sb, sk, tiled, w, st)
            state = {"i": 0}

            def call(fn=fn, out=out):
                state["i"] = (state["i"] + 1) % len(weights)
                fn(weights[state["i"]], out)
            us = 1e3 * time_gpu_ms(call, reps=30)
            gbs = nbytes / (us * 1e-6) / 1e9
            key = (sb, tiled)
            best[key] = min(best.get(key, (1e9,)), (us, bn, sk, w, st))
            print(f"{K:>5d}x{N:<6d} {bn:7d} {sb:6d} {sk:5d} {'tiled' if tiled else 'rows':>6s} {w:5d} {st:6d} "
                  f"{us:8.1f} {gbs:7.0f} {100 * gbs / copy_gbs:6.1f}", flush=True)
        print(f"best per step width, {K}x{N}:")
        for (sb, tiled), (us, bn, sk, w, st) in sorted(best.items()):
            gbs = nbytes / (us * 1e-6) / 1e9
            print(f"  step {sb:4d} B {'tiled' if tiled else 'rows':>6s}: {us:7.1f} µs {100 * gbs / copy_gbs:5.1f} % "
                  f"(BLOCK_N {bn}, split {sk}, {w} warps, {st} stages)")
        del weights
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
