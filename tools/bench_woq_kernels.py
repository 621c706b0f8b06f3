"""Per-shape kernel table: ours against dense and the peers at every Llama-3 linear shape.

    python -m tools.bench_woq_kernels [--out DIR] [--name kernels_h100] [--budget-s 300]
        [--dtypes bf16,fp16] [--m 1,2,4,8,16] [--kn 4096x4096,...] [--variants dense,int4,...]

Issue 28 item 3: (K, N) of every linear of Llama-3-8B (hidden 4096, intermediate 14336, 8 KV
heads of 128: q/o 4096 x 4096, k/v 4096 x 1024, gate/up 4096 x 14336, down 14336 x 4096) and
Llama-3-70B (8192, 28672: 8192 x 8192, 8192 x 1024, 8192 x 28672, 28672 x 8192), M = 1, 2,
4, 8, 16, bf16 and fp16. Variants:
  dense          F.linear on an unquantized weight in the activation dtype (cuBLAS);
  int8, int4, nf4  our kernels through their eager launchers: every scheme registered in
                 impl.schemes.registry (tools/bench_schemes.py; int4 group 128, nf4 block 64
                 with double-quantized absmax, as bench_woq_model quantizes the model);
  tinygemm_int4  aten._weight_int4pack_mm, group 128 (torch's CUDA int4, bf16 only);
  bnb_nf4        bitsandbytes matmul_4bit, nf4 block 64, compress_statistics (double quant);
  gemlite_int4   GemLite A16W4 group 128 (GemLiteLinearTriton, its own tuned configs where
                 it ships them for the GPU).
Cells: µs a call, a CUDA graph of REPLAYS calls replayed (no host launch cost), the calls
cycling through copies of the weights that together are twice the L2 (each call reads its
weights from HBM), median of 5 replays. Random weights: timing does not depend on values.
Peers missing on the machine (bitsandbytes, gemlite: ``../shared/tools/gpu_peers.sh``) and
cells past ``--budget-s`` are left out (null). The JSON is rewritten after each cell.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from tools import bench_schemes, bench_woq_gpu

LLAMA3_8B_KN = ((4096, 4096), (4096, 1024), (4096, 14336), (14336, 4096))
LLAMA3_70B_KN = ((8192, 8192), (8192, 1024), (8192, 28672), (28672, 8192))
M_VALUES = (1, 2, 4, 8, 16)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# The peers, each with the scheme of ours it competes with (the table's ratio columns).
PEERS = {"tinygemm_int4": "int4", "bnb_nf4": "nf4", "gemlite_int4": "int4"}
INT4_GROUP, NF4_BLOCK = 128, 64  # the peers' group and block, as ours are quantized
OPTIONS = {"nf4": {"double_quant": True}}  # over bench_schemes.OPTIONS: as bench_woq_model's model
REPLAYS = 20
MAX_COPIES = 64


# ----------------------------------------------------------------------------- weights


def variants() -> tuple[str, ...]:
    """dense, each registered scheme of ours, the peers."""
    return ("dense", *bench_schemes.shorts(), *PEERS)


def weight_bytes(variant: str, K: int, N: int, dtype: torch.dtype) -> int:
    """Bytes one call reads for its weight (codes and scales), to size the rotation."""
    if variant == "dense":
        return N * K * torch.finfo(dtype).bits // 8
    if variant not in PEERS:
        return bench_schemes.weight_bytes(variant, N, K, bench_schemes.quantize_options(variant, OPTIONS))
    group = INT4_GROUP if "int4" in variant else NF4_BLOCK
    return N * K // 2 + N * (K // group) * (1 if "nf4" in variant else 4)


def copies_past_l2(bytes_per_copy: int, l2_bytes: int) -> int:
    """Weight copies to cycle through: together at least twice the L2, at most MAX_COPIES."""
    return max(1, min(MAX_COPIES, math.ceil(2 * l2_bytes / max(bytes_per_copy, 1))))


def make_calls(variant: str, K: int, N: int, dtype: torch.dtype, copies: int, device) -> list[Callable]:
    """One callable x -> y per weight copy."""
    g = torch.Generator(device=device).manual_seed(0)

    def codes(shape, high, dtype=torch.uint8):
        return torch.randint(0, high, shape, generator=g, device=device, dtype=dtype)

    def small(shape, dtype=torch.float32):
        return (torch.rand(shape, generator=g, device=device) * 1e-3 + 1e-4).to(dtype)

    if variant == "dense":
        weights = [torch.randn((N, K), generator=g, device=device).to(dtype) * 0.02 for _ in range(copies)]
        return [lambda x, w=w: torch.nn.functional.linear(x, w) for w in weights]
    if variant in bench_schemes.shorts():  # ours: one quantization, cloned
        operands, ints = bench_schemes.quantize(variant, N, K, device, bench_schemes.quantize_options(variant, OPTIONS))
        launch = bench_schemes.launcher(variant)
        sets = [bench_schemes.launch_arguments(variant, w, ints) for w in bench_schemes.copies(operands, copies)]
        return [lambda x, args=args: launch(x, *args) for args in sets]
    if variant == "tinygemm_int4":
        if dtype != torch.bfloat16:
            raise NotImplementedError("aten._weight_int4pack_mm takes bfloat16 activations only")
        sets = [(torch.ops.aten._convert_weight_to_int4pack(codes((N, K // 2), 256), 8),
                 torch.stack((small((K // INT4_GROUP, N)), small((K // INT4_GROUP, N))), -1).to(dtype))
                for _ in range(copies)]
        return [lambda x, p=p, sz=sz: torch.ops.aten._weight_int4pack_mm(x, p, INT4_GROUP, sz) for p, sz in sets]
    if variant == "bnb_nf4":
        import bitsandbytes as bnb

        w = torch.randn((N, K), generator=g, device=device).to(dtype) * 0.02
        sets = [bnb.functional.quantize_4bit(w, blocksize=NF4_BLOCK, compress_statistics=True, quant_type="nf4")
                for _ in range(copies)]
        return [lambda x, q=q, st=st: bnb.matmul_4bit(x, q.t(), quant_state=st) for q, st in sets]
    if variant == "gemlite_int4":
        from gemlite import DType, GemLiteLinearTriton

        gemlite_dtype = {torch.bfloat16: DType.BF16, torch.float16: DType.FP16}[dtype]
        layers = []
        for _ in range(copies):
            layer = GemLiteLinearTriton(4, group_size=INT4_GROUP, in_features=K, out_features=N,
                                        input_dtype=gemlite_dtype, output_dtype=gemlite_dtype)
            groups = (N, K // INT4_GROUP)
            layer.pack(codes((N, K), 16), small(groups, dtype), torch.full(groups, 8.0, device=device, dtype=dtype),
                       bias=None)
            layers.append(layer)
        return layers
    raise ValueError(f"bench_woq_kernels: unknown variant {variant!r} (one of {', '.join(variants())})")


# ------------------------------------------------------------------------------ timing


def replay_us(calls: list[Callable[[], object]], replays: int = REPLAYS) -> float:
    """µs a call: a CUDA graph of ``replays`` calls (cycling through ``calls``), replayed;
    median of 5 replays. Raises when a call cannot be captured."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # compile, autotune and allocate before the capture
        for call in calls[:2]:
            call()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(replays):
            calls[i % len(calls)]()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(5):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / replays)
    return statistics.median(times)


# ------------------------------------------------------------------------------ tables


class Table:
    """Cells by (dtype, K, N, M) and variant, written to NAME.json after each one."""

    def __init__(self, path: Path, meta: dict) -> None:
        self.path, self.result = path, {**meta, "rows": {}, "errors": {}}

    @staticmethod
    def key(dtype: str, K: int, N: int, M: int) -> str:
        return f"{dtype} {K}x{N} M={M}"

    def put(self, dtype: str, K: int, N: int, M: int, variant: str, us: Optional[float],
            error: Optional[str] = None) -> None:
        key = self.key(dtype, K, N, M)
        self.result["rows"].setdefault(key, {})[variant] = None if us is None else round(us, 2)
        if error:
            self.result["errors"][f"{key} {variant}"] = error[:300]
        self.path.write_text(json.dumps(self.result, indent=1))
        print(f"  {key:28s} {variant:14s} {'—' if us is None else f'{us:.2f}'}" + (f"  ({error[:120]})" if error else ""),
              flush=True)


def speedup(theirs: Optional[float], ours: Optional[float]) -> Optional[float]:
    """Their time over ours (> 1: ours faster), None where either is missing."""
    return None if theirs is None or ours is None else theirs / ours


def _best(cells: dict, names) -> Optional[float]:
    times = [cells.get(name) for name in names if cells.get(name) is not None]
    return min(times) if times else None


def markdown(result: dict) -> str:
    variants = result["variants"]
    ours = [v for v in variants if v != "dense" and v not in PEERS]
    # One ratio column for each scheme of ours that a peer competes with, in registry order.
    rivals = [s for s in bench_schemes.shorts() if s in PEERS.values()]
    lines = [f"# Weight-only matmul kernels at Llama-3 linear shapes, µs a call ({result['gpu']})", "",
             f"torch {result['torch']}, triton {result['triton']}; CUDA-graph replay of {REPLAYS} calls cycling "
             "through weight copies past L2, median of 5. int4 / tinygemm / GemLite: group 128; nf4 / bitsandbytes: "
             "block 64, double-quantized absmax. `—`: not run (budget, peer missing, unsupported dtype) or failed "
             "(the JSON's errors). Ratios: the other's time over ours (> 1: ours faster).", "",
             "| dtype | K × N | M | " + " | ".join(variants) + " | best ours vs dense | "
             + " | ".join(f"{s} vs best {s} peer" for s in rivals) + " |",
             "|---|---|---|" + "---|" * (len(variants) + 1 + len(rivals))]
    for key, cells in result["rows"].items():
        dtype, kn, m = key.split(" ")
        k, n = kn.split("x")
        values = ["—" if cells.get(v) is None else f"{cells[v]:.1f}" for v in variants]
        ratios = (speedup(cells.get("dense"), _best(cells, ours)),
                  *(speedup(_best(cells, [p for p, s in PEERS.items() if s == short]), cells.get(short))
                    for short in rivals))
        lines.append(f"| {dtype} | {k} × {n} | {m[2:]} | " + " | ".join(values) + " | "
                     + " | ".join("—" if r is None else f"{r:.2f}×" for r in ratios) + " |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------- main


def available(variant: str) -> bool:
    module = {"bnb_nf4": "bitsandbytes", "gemlite_int4": "gemlite"}.get(variant)
    if module is None:
        return True
    try:
        __import__(module)
    except Exception as error:  # ImportError, or a library that fails to load on this machine
        print(f"{variant}: not available ({type(error).__name__}: {str(error)[:120]})", flush=True)
        return False
    return True


def parse_kn(text: str) -> tuple[tuple[int, int], ...]:
    """'4096x1024,8192x28672' -> ((4096, 1024), (8192, 28672)): (K, N) pairs."""
    return bench_woq_gpu.parse_kn(text, "bench_woq_kernels")


def run(args) -> dict:
    device = torch.device("cuda")
    variants = [v for v in args.variants.split(",") if available(v)]
    shapes = parse_kn(args.kn) if args.kn else LLAMA3_8B_KN + LLAMA3_70B_KN
    m_values = tuple(int(m) for m in args.m.split(","))
    l2 = torch.cuda.get_device_properties(device).L2_cache_size
    import triton

    meta = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__, "triton": triton.__version__,
            "python": platform.python_version(), "variants": variants, "l2_bytes": l2, "replays": REPLAYS}
    if "gemlite_int4" in variants:
        import gemlite.core

        meta["gemlite_tuned_configs"] = bool(gemlite.core.GEMLITE_TRITON_CONFIG_CACHE)
    table = Table(Path(args.out) / f"{args.name}.json", meta)
    deadline = time.monotonic() + args.budget_s
    for dtype_name in args.dtypes.split(","):
        dtype = DTYPES[dtype_name]
        for K, N in shapes:
            xs = {M: torch.randn((M, K), device=device, dtype=dtype) for M in m_values}
            for variant in variants:
                if time.monotonic() > deadline:
                    break
                copies = copies_past_l2(weight_bytes(variant, K, N, dtype), l2)
                try:
                    calls = make_calls(variant, K, N, dtype, copies, device)
                except Exception as error:
                    for M in m_values:
                        table.put(dtype_name, K, N, M, variant, None, f"{type(error).__name__}: {error}")
                    continue
                for M in m_values:
                    if time.monotonic() > deadline:
                        break
                    x = xs[M]
                    try:
                        us = replay_us([lambda fn=fn: fn(x) for fn in calls])
                        table.put(dtype_name, K, N, M, variant, us)
                    except Exception as error:
                        table.put(dtype_name, K, N, M, variant, None, f"{type(error).__name__}: {error}")
                del calls
                torch.cuda.empty_cache()
    return table.result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "out"))
    parser.add_argument("--name", default="kernels")
    parser.add_argument("--dtypes", default="bf16,fp16")
    parser.add_argument("--m", default=",".join(map(str, M_VALUES)))
    parser.add_argument("--kn", default="", help="comma-separated KxN (default: every Llama-3-8B and -70B linear)")
    parser.add_argument("--variants", default=",".join(variants()))
    parser.add_argument("--budget-s", type=float, default=300.0)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with torch.no_grad():  # peers' modules hold parameters
        result = run(args)
    (Path(args.out) / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
