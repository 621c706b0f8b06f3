"""Benchmark (and tune) the weight-only quantized matmul kernels on a CUDA GPU.

    python -m tools.bench_woq_gpu [--quick] [--schemes int8,int4,...] [--dtypes bf16,fp16] [--out DIR] [--name NAME]
    python -m tools.bench_woq_gpu --out benchmarks --name woq_h200     # the committed table
    python -m tools.bench_woq_gpu --tune [--out DIR]

Bench, kernel level: for each activation dtype (bf16, fp16), scheme (every one registered in
impl.schemes.registry, tools/bench_schemes.py), M in {1, 2, 4, 8, 16, 64, 256} and (K, N) in
{(4096, 4096), (8192, 8192), (8192, 28672)}, times our kernel and its peers:
  dense     F.linear(x, W) with an unquantized W in the activation dtype (cuBLAS);
  eager     x @ dequantize(W).T in eager PyTorch, dequantize the scheme's formula (int8: the
            anchors' form, PLAIN_FORMS);
  compiled  torch.compile(mode="max-autotune-no-cudagraphs") of that plain expression;
  iq        PyTorch's own torch._higher_order_ops.InvokeQuant around the dequantization,
            compiled with max-autotune (prologue fusion on);
  int8pack  torch._weight_int8pack_mm (int8 only: LAYOUT_PEERS).
Each time is the median of triton.testing.do_bench, with several weight copies rotated so
that every launch reads its weights from HBM (L2 holds 50 MB on the H100). GB/s counts the
fewest bytes the product needs (weights with scales, x, y once); "%" is GB/s over the
device-to-device copy bandwidth measured first in the same run; "vs dense" is the dense
time over ours.

Model level (the user's path): for each dtype, (K, N) and M, a stack of bias-free
nn.Linear(K, N) (enough layers that the 4-bit model's weights exceed 256 MB, so every layer
reads HBM), unquantized ("dense") and quantized by impl.schemes.quantize_linear_ per scheme,
compiled after impl.install() with torch.compile(mode=--model-mode, default
"max-autotune-no-cudagraphs") and timed as a CUDA graph replay ("reduce-overhead": Inductor's
own graphs). Reported per layer, with % of copy bandwidth on the layer's fewest bytes and
the speedup over the dense model.

Compiled peers and models get time budgets (--peer-budget-s, --model-budget-s), spent on the
target shapes (K = 8192, M <= 16) first; cells past them say so. --quick (K = N = 8192,
M = 1 and 16, bf16, budgets 60 s and 120 s) fits one run in about 5 minutes on an H200.
Writes NAME.json and NAME.md (default bench_woq) under --out.

Tune: times candidate kernel configs per scheme and M bucket, checks every candidate's
output, and writes tune_woq.json; the winners go into each module's choose_config.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import sys
import time
import traceback
from typing import Optional

import torch

from tools import bench_schemes

M_VALUES = (1, 2, 4, 8, 16, 64, 256)
QUICK_M_VALUES = (1, 16)
KN_SHAPES = ((4096, 4096), (8192, 8192), (8192, 28672))
QUICK_KN_SHAPES = ((8192, 8192),)
PEER_BUDGET_S, QUICK_PEER_BUDGET_S = 240.0, 60.0
MODEL_BUDGET_S, QUICK_MODEL_BUDGET_S = 300.0, 120.0
MODEL_MIN_WEIGHT_BYTES = 256 * 2**20  # the 4-bit model's weights: ~5x an H200's L2
ROTATION_BYTES = 256 * 2**20  # weight bytes cycled through per timing: 5x the H100's L2
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
TUNE_M_VALUES = (1, 2, 4, 8, 16, 64, 256, 1024)  # the M buckets of impl.kernels.common.m_bucket


# ----------------------------------------------------------------------------- problems


@dataclasses.dataclass(frozen=True)
class Problem:
    """One benchmark cell's shape: y (M, N) = x (M, K) @ W.T, W stored as ``scheme`` (a short
    name), quantized with ``bench_schemes.quantize_options`` (int4 group 128, nf4 block 64)."""

    scheme: str
    M: int
    N: int
    K: int
    dtype: torch.dtype = torch.bfloat16

    @property
    def options(self) -> dict:
        return bench_schemes.quantize_options(self.scheme)

    @property
    def ints(self) -> tuple:
        """The fused op's ints: (group size,), (block size,) or ()."""
        return bench_schemes.scheme_ints(self.scheme, self.K, self.options)

    @property
    def group(self) -> int:
        """The scheme's group (block) size; 0 for one without (int8: a scale a row)."""
        return self.ints[0] if self.ints else 0

    def weight_bytes(self) -> int:
        """Bytes of one weight copy: codes plus scales (zeros, absmax)."""
        return bench_schemes.weight_bytes(self.scheme, self.N, self.K, self.options)

    def min_bytes(self) -> int:
        """Fewest bytes the product must move: one weight copy, x and y."""
        elem = torch.finfo(self.dtype).bits // 8
        return self.weight_bytes() + self.M * self.K * elem + self.M * self.N * elem

    def make_weights(self, device) -> tuple:
        """The fused op's operands of a random weight, quantized by the scheme."""
        return bench_schemes.quantize(self.scheme, self.N, self.K, device, self.options)[0]

    def weight_sets(self, device) -> list[tuple]:
        """``n_copies`` weight copies (one quantization, cloned), operands each."""
        return bench_schemes.copies(self.make_weights(device), self.n_copies())

    def launch_sets(self, weight_sets: list[tuple]) -> list[tuple]:
        """The copies as our launcher takes them after x."""
        return [bench_schemes.launch_arguments(self.scheme, w, self.ints) for w in weight_sets]

    def dequantize(self, dtype, *weights) -> torch.Tensor:
        """W (N, K) in ``dtype``: the scheme's formula (a plain PyTorch expression)."""
        return bench_schemes.dequantize(self.scheme, weights, self.ints, self.K, dtype)

    def n_copies(self) -> int:
        return max(2, min(64, math.ceil(ROTATION_BYTES / self.weight_bytes())))

    def label(self) -> str:
        return f"{self.scheme} M={self.M} K={self.K} N={self.N}"


@functools.lru_cache(maxsize=None)
def operand_layout(scheme: str, N: int, K: int, device) -> tuple:
    """Shapes and dtypes of a scheme's (N, K) operands (``bench_schemes.layout``): what the
    precompile workers allocate, zeroed, instead of quantizing again."""
    layout = bench_schemes.layout(Problem(scheme, 1, N, K).make_weights(device))
    torch.cuda.empty_cache()
    return layout


def ours_fn(problem: Problem, config=None):
    """x, *launch arguments -> y through our launcher, resolved once (the timing loop should
    see the launcher's own CPU cost, not the benchmark's)."""
    return bench_schemes.launcher(problem.scheme, config)


def run_ours(problem: Problem, x, weights, config=None):
    """Our kernel on one weight copy (the fused op's operands)."""
    return ours_fn(problem, config)(x, *problem.launch_sets([weights])[0])


def _int8_scale_after_matmul(x, q, scale):
    return (x @ q.T.to(x.dtype)) * scale.to(x.dtype)


# The peers' expression where a scheme has one the anchors timed: int8's (x @ w8.T.to(dtype))
# * scale, which Inductor fuses best. Other schemes: x @ formula(W).T.
PLAIN_FORMS = {"int8": _int8_scale_after_matmul}
# Peers that take a scheme's own layout: name -> fn(x, *operands), by scheme.
LAYOUT_PEERS = {"int8": {"int8pack": lambda x, q, s: torch._weight_int8pack_mm(x, q, s.to(x.dtype))}}


def formula_fn(problem: Problem):
    """x, *weights -> x @ dequantize(W).T, the scheme's formula: what a user would write."""
    def plain(x, *weights):
        return x @ problem.dequantize(x.dtype, *weights).T
    return plain


def make_plain_fn(problem: Problem):
    """x, *weights -> y: the peers' expression (PLAIN_FORMS, else the formula's)."""
    return PLAIN_FORMS.get(problem.scheme) or formula_fn(problem)


def make_invoke_quant_fn(problem: Problem):
    """PyTorch's own InvokeQuant around the dequantization, then the matmul. The region takes
    the operands present (an absent optional one, None, is put back inside)."""
    from torch._higher_order_ops import InvokeQuant

    quant = InvokeQuant(codegen_low_precision=True)

    def with_invoke_quant(x, *weights):
        dtype = x.dtype

        def dequantize(*present):
            given = iter(present)
            return problem.dequantize(dtype, *(None if w is None else next(given) for w in weights))
        return x @ quant(dequantize, *(w for w in weights if w is not None), scheme=problem.scheme).T
    return with_invoke_quant


# ------------------------------------------------------------------------------ timing


TIMER = {"name": "events"}


def time_gpu_ms(fn, reps: int = 100) -> float:
    """Median GPU milliseconds of fn(), from CUDA events around each call.

    Default ("events"): before each timed call the GPU spins for ~0.5 ms (torch.cuda._sleep),
    so the CPU's launch overhead hides behind it, and nothing is written to memory.
    triton.testing.do_bench (--timer do_bench) zeroes a 256 MB buffer before each call to
    flush L2 instead; the flush leaves up to 50 MB of dirty L2 lines that are written back
    while the timed kernel runs, which for a kernel moving 30-70 MB adds half again to the
    bytes it appears to move. The weights here are rotated through copies larger than L2, so
    no flush is needed."""
    if TIMER["name"] == "do_bench":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        torch.cuda._sleep(1_000_000)  # ~0.5 ms: longer than any launch path's CPU time
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    times = sorted(start.elapsed_time(end) for start, end in zip(starts, ends))
    return times[len(times) // 2]


def cpu_us_per_call(fn, calls: int = 30) -> float:
    """Host microseconds one call takes to launch its work (the GPU kept busy meanwhile)."""
    torch.cuda.synchronize()
    torch.cuda._sleep(20_000_000)  # ~10 ms of GPU work so the launches never wait on it
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def do_bench_median(fn) -> float:
    """triton.testing.do_bench's median (with its L2 flush), for comparison."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def measure_copy_bandwidth(device) -> float:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    ms = time_gpu_ms(lambda: dst.copy_(src), reps=20)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * n / (ms * 1e-3) / 1e9


def rotating(fn, x, weight_sets):
    """A zero-argument callable cycling fn(x, *weights) over the weight copies."""
    state = {"i": 0}
    count = len(weight_sets)

    def call():
        i = state["i"]
        state["i"] = i + 1 if i + 1 < count else 0
        return fn(x, *weight_sets[i])
    return call


def relative_error(y, ref) -> float:
    y, ref = y.float(), ref.float()
    return float((y - ref).norm() / ref.norm().clamp_min(1e-30))


# ------------------------------------------------------------------- parallel precompile


def _warm_one(job) -> tuple:
    """Worker: compile one (problem, config) into Triton's on-disk cache, by one launch of our
    launcher on zeroed operands of the problem's layout (microseconds of GPU time)."""
    scheme, M, N, K, dtype_name, config_fields, layout, ints = job
    start = time.perf_counter()
    try:
        from impl.kernels.common import KernelConfig

        device = torch.device("cuda")
        x = torch.zeros((M, K), device=device, dtype=DTYPES[dtype_name])
        arguments = bench_schemes.launch_arguments(scheme, bench_schemes.zeros_of(layout, device), ints)
        bench_schemes.launcher(scheme, KernelConfig(**dict(config_fields)))(x, *arguments)
        torch.cuda.synchronize()
        return job, time.perf_counter() - start, None
    except Exception as exc:  # reported, and the timing run compiles (and fails) again
        return job, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"


def precompile(jobs: list, workers: int) -> dict:
    """Compile kernels in worker processes so the timing loop finds them in Triton's cache.
    ``jobs`` are ``config_job`` keys. Returns {job: error} for the jobs that failed."""
    jobs = list(dict.fromkeys(jobs))
    if not jobs:
        return {}
    start = time.perf_counter()
    errors = {}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for job, _, error in pool.map(_warm_one, jobs):
            if error:
                errors[job] = error
    print(f"precompiled {len(jobs)} kernels with {workers} workers in {time.perf_counter() - start:.1f} s"
          f" ({len(errors)} failed)", flush=True)
    return errors


def config_job(problem: Problem, config, device) -> tuple:
    """A hashable, picklable description of one kernel compile."""
    dtype_name = {v: k for k, v in DTYPES.items()}[problem.dtype]
    return (problem.scheme, problem.M, problem.N, problem.K, dtype_name, tuple(sorted(config.__dict__.items())),
            operand_layout(problem.scheme, problem.N, problem.K, device), problem.ints)


# -------------------------------------------------------------------------------- plan


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one bench run covers, and the time budgets of its compiled paths."""

    schemes: tuple[str, ...]
    dtypes: tuple[str, ...]
    kn_shapes: tuple[tuple[int, int], ...]
    m_values: tuple[int, ...]
    peer_budget_s: float
    model_budget_s: float
    models: bool


def make_plan(args) -> Plan:
    """--quick: K = N = 8192, M = 1 and 16, bf16, smaller budgets (one run in about 5 minutes
    on an H200); otherwise every shape, M and dtype. Explicit --m / --dtypes win either way."""
    quick = args.quick
    m_values = tuple(int(m) for m in args.m.split(",")) if args.m else (QUICK_M_VALUES if quick else M_VALUES)
    dtypes = tuple(args.dtypes.split(",")) if args.dtypes else (("bf16",) if quick else tuple(DTYPES))
    for name in dtypes:
        if name not in DTYPES:
            raise SystemExit(f"bench_woq_gpu: --dtypes: {name!r} is not one of {', '.join(DTYPES)}")
    default_budgets = (QUICK_PEER_BUDGET_S, QUICK_MODEL_BUDGET_S) if quick else (PEER_BUDGET_S, MODEL_BUDGET_S)
    return Plan(
        schemes=bench_schemes.parse_schemes(args.schemes, "bench_woq_gpu"), dtypes=dtypes,
        kn_shapes=parse_kn(args.kn) if args.kn else (QUICK_KN_SHAPES if quick else KN_SHAPES), m_values=m_values,
        peer_budget_s=args.peer_budget_s if args.peer_budget_s is not None else default_budgets[0],
        model_budget_s=args.model_budget_s if args.model_budget_s is not None else default_budgets[1],
        models=not args.no_model,
    )


def parse_kn(text: str, tool: str = "bench_woq_gpu") -> tuple[tuple[int, int], ...]:
    """'8192x8192,8192x28672' -> ((8192, 8192), (8192, 28672)): (K, N) pairs; SystemExit naming ``tool``."""
    shapes = []
    for part in text.split(","):
        K, sep, N = part.strip().partition("x")
        if not (sep and K.isdigit() and N.isdigit()):
            raise SystemExit(f"{tool}: --kn: {part!r} is not KxN (e.g. 8192x28672)")
        shapes.append((int(K), int(N)))
    return tuple(shapes)


def target_first(M: int, K: int, N: int) -> tuple:
    """Order of work under a time budget: the issue's target shapes (K = 8192, M <= 16) first."""
    return (0 if (K == 8192 and M <= 16) else 1, K * N, M)


# -------------------------------------------------------------------------------- bench


def bench(args) -> dict:
    plan = make_plan(args)
    device = torch.device("cuda")
    copy_gbs = measure_copy_bandwidth(device)
    print(f"device: {torch.cuda.get_device_name(device)}; copy bandwidth {copy_gbs:.0f} GB/s", flush=True)
    problems = [Problem(s, M, N, K, DTYPES[d]) for d in plan.dtypes for s in plan.schemes
                for (K, N) in plan.kn_shapes for M in plan.m_values]

    precompile([config_job(p, current_config(p, device), device) for p in problems], args.workers)

    rows = []
    peer_deadline = time.perf_counter() + plan.peer_budget_s
    partial = os.path.join(args.out, f"{args.name}.partial.json")
    for problem in sorted(problems, key=lambda p: target_first(p.M, p.K, p.N)):
        rows.append(bench_problem(problem, device, copy_gbs, current_config(problem, device),
                                  peers=not args.no_peers, peer_deadline=peer_deadline))
        print(format_row(rows[-1]), flush=True)
        with open(partial, "w") as f:  # survives a kill
            json.dump({"rows": rows}, f)
    order = bench_schemes.shorts()
    rows.sort(key=lambda r: (r["dtype"], order.index(r["scheme"]), r["K"] * r["N"], r["N"], r["M"]))
    model_rows = []
    if plan.models:
        model_rows = bench_models(plan, device, copy_gbs, args.model_mode, partial_path=partial, rows=rows)
    add_speedups(rows, model_rows)
    return {"device": torch.cuda.get_device_name(device), "torch": torch.__version__,
            "triton": __import__("triton").__version__, "dtype": ",".join(plan.dtypes), "copy_GBps": copy_gbs,
            "timer": args.timer, "scheme_ints": scheme_ints(plan.schemes, plan.kn_shapes), "model_mode": args.model_mode,
            "rows": rows, "model_rows": model_rows}


def dense_bytes(M: int, N: int, K: int, dtype) -> int:
    """Fewest bytes of y = x @ W.T with a dense W in ``dtype``: W, x and y once."""
    elem = torch.finfo(dtype).bits // 8
    return (N * K + M * K + M * N) * elem


def bench_problem(problem: Problem, device, copy_gbs: float, config, peers: bool, peer_deadline: float) -> dict:
    torch.manual_seed(0)
    x = torch.randn((problem.M, problem.K), device=device, dtype=problem.dtype)
    weight_sets = problem.weight_sets(device)
    dtype_name = {v: k for k, v in DTYPES.items()}[problem.dtype]
    row = {"scheme": problem.scheme, "dtype": dtype_name, "M": problem.M, "K": problem.K, "N": problem.N,
           "bytes": problem.min_bytes(), "copies": len(weight_sets), "config": config.short(), "paths": {}}

    reference = x.float() @ problem.dequantize(torch.float32, *weight_sets[0]).T

    def record(name, fn, compile_first=False, weights=weight_sets, ref=reference, nbytes=problem.min_bytes()):
        entry = {}
        try:
            start = time.perf_counter()
            y = fn(x, *weights[0])
            torch.cuda.synchronize()
            if compile_first:
                entry["compile_s"] = round(time.perf_counter() - start, 1)
            entry["rel_err"] = relative_error(y, ref)
            ms = time_gpu_ms(rotating(fn, x, weights))
            gbs = nbytes / (ms * 1e-3) / 1e9
            entry.update(ms=ms, GBps=gbs, pct_copy=100 * gbs / copy_gbs)
            entry["cpu_us"] = cpu_us_per_call(rotating(fn, x, weights))
            if name == "ours" and TIMER["name"] != "do_bench":
                entry["do_bench_ms"] = do_bench_median(rotating(fn, x, weights))
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            traceback.print_exc(limit=2)
        row["paths"][name] = entry

    record("ours", ours_fn(problem, config), weights=problem.launch_sets(weight_sets))
    record("eager", make_plain_fn(problem))
    for name, peer in LAYOUT_PEERS.get(problem.scheme, {}).items():
        record(name, peer)
    # The dense peer: the same product with an unquantized weight in the activation dtype
    # (cuBLAS through F.linear), rotated through copies larger than L2 like ours.
    dense_copies = max(2, min(64, math.ceil(ROTATION_BYTES / (problem.N * problem.K * x.element_size()))))
    dense_sets = [(torch.randn((problem.N, problem.K), device=device, dtype=problem.dtype) * 0.02,) for _ in range(dense_copies)]
    record("dense", torch.nn.functional.linear, weights=dense_sets, ref=x.float() @ dense_sets[0][0].float().T,
           nbytes=dense_bytes(problem.M, problem.N, problem.K, problem.dtype))
    del dense_sets
    for name, maker in (("compiled", make_plain_fn), ("iq", make_invoke_quant_fn)):
        if not peers:
            continue
        if time.perf_counter() > peer_deadline:
            row["paths"][name] = {"skipped": "peer time budget spent"}
            continue
        torch._dynamo.reset()
        compiled = torch.compile(maker(problem), mode="max-autotune-no-cudagraphs", dynamic=False)
        record(name, compiled, compile_first=True)
        if name == "compiled" and problem.scheme in PLAIN_FORMS and "error" in row["paths"][name]:
            # Inductor fails on int8's (x @ w8.T.to(dtype)) * scale at some M; time the
            # formula's way of writing it too, and keep the first form's error in the JSON.
            first_error = row["paths"][name]["error"]
            torch._dynamo.reset()
            compiled = torch.compile(formula_fn(problem), mode="max-autotune-no-cudagraphs", dynamic=False)
            record(name, compiled, compile_first=True)
            row["paths"][name]["note"] = f"x @ formula(W).T; {PLAIN_FORMS[problem.scheme].__name__}: {first_error}"
    del weight_sets
    torch.cuda.empty_cache()
    return row


# ------------------------------------------------------------------------- model level


class StackedLinears(torch.nn.Module):
    """``layers`` bias-free ``nn.Linear(K, N)``, each applied to the same x (M, K).

    Returns the layers' outputs (M, N) as a tuple: with K != N the layers cannot chain, and
    each layer still reads its own weight, which is what decode time is made of.
    """

    def __init__(self, K: int, N: int, layers: int, device=None, dtype=None) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(K, N, bias=False, device=device, dtype=dtype) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor) -> tuple:
        return tuple(layer(x) for layer in self.layers)


def model_layers(K: int, N: int, min_bytes: int = MODEL_MIN_WEIGHT_BYTES) -> int:
    """Layers per model of shape (K, N): enough that the smallest model's weights (a 4-bit
    scheme's) reach ``min_bytes`` (several times L2, so every layer reads HBM), at least 2.
    Every model of a shape (dense included) gets the same count."""
    smallest = min(Problem(s, 1, N, K).weight_bytes() for s in bench_schemes.shorts())
    return max(2, math.ceil(min_bytes / smallest))


def make_model(kind: str, K: int, N: int, layers: int, dtype, device, seed: int = 0) -> torch.nn.Module:
    """The stacked model in ``dtype``; ``kind`` "dense" stays unquantized, a scheme's short name
    is swapped in by ``impl.schemes.quantize_linear_`` (int4 group / nf4 block as the kernels' rows)."""
    from impl.schemes import quantize_linear_
    from impl.schemes.registry import by_short

    torch.manual_seed(seed)
    model = StackedLinears(K, N, layers, device=device, dtype=dtype).eval()
    if kind != "dense":
        quantize_linear_(model, by_short(kind).name, **bench_schemes.quantize_options(kind))
    return model


def model_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer: the weights a forward must read."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def layer_min_bytes(model: torch.nn.Module, M: int, K: int, N: int, dtype) -> int:
    """Fewest bytes one layer moves: its share of the weights, x and its y once."""
    layers = len(model.layers)
    elem = torch.finfo(dtype).bits // 8
    return model_weight_bytes(model) // layers + (M * K + M * N) * elem


def compiled_replay(model: torch.nn.Module, x: torch.Tensor, mode: str):
    """(first output, zero-argument timed call): ``torch.compile(model, mode)``, then for
    "reduce-overhead" Inductor's own CUDA graphs, for other modes a CUDA graph captured around
    the compiled call (harness.perf.cuda_graph_replay)."""
    from harness.perf import cuda_graph_replay

    compiled = torch.compile(model, mode=mode, dynamic=False)
    first = compiled(x)
    if mode == "reduce-overhead":
        def call():
            torch.compiler.cudagraph_mark_step_begin()
            return compiled(x)
        return first, call
    return first, cuda_graph_replay(lambda: compiled(x))


def bench_model(kind: str, dtype_name: str, M: int, K: int, N: int, layers: int, device, copy_gbs: float, mode: str) -> dict:
    """One compiled model: per-layer GPU time under CUDA-graph replay, % of copy bandwidth."""
    import impl

    dtype = DTYPES[dtype_name]
    entry = {"model": kind, "dtype": dtype_name, "M": M, "K": K, "N": N, "layers": layers, "mode": mode}
    model = None
    try:
        model = make_model(kind, K, N, layers, dtype, device)
        x = torch.randn((M, K), device=device, dtype=dtype)
        entry["bytes_per_layer"] = layer_min_bytes(model, M, K, N, dtype)
        torch._dynamo.reset()
        with torch.no_grad(), (impl.installed() if kind != "dense" else contextlib.nullcontext()):
            eager = model(x)
            start = time.perf_counter()
            first, call = compiled_replay(model, x, mode)
            torch.cuda.synchronize()
            entry["compile_s"] = round(time.perf_counter() - start, 1)
            entry["rel_err"] = max(relative_error(y, e) for y, e in zip(first, eager))
            ms = time_gpu_ms(call, reps=50)
        per_layer_ms = ms / layers
        gbs = entry["bytes_per_layer"] / (per_layer_ms * 1e-3) / 1e9
        entry.update(ms=ms, per_layer_us=per_layer_ms * 1e3, GBps=gbs, pct_copy=100 * gbs / copy_gbs)
    except Exception as exc:
        entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        traceback.print_exc(limit=3)
    finally:
        del model
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    return entry


def bench_models(plan: Plan, device, copy_gbs: float, mode: str, partial_path: str, rows: list) -> list:
    """Every (dtype, shape, M): the dense model first, then each scheme's, until the budget is spent."""
    deadline = time.perf_counter() + plan.model_budget_s
    work = sorted(((d, K, N, M) for d in plan.dtypes for (K, N) in plan.kn_shapes for M in plan.m_values),
                  key=lambda w: (target_first(w[3], w[1], w[2]), w[0]))
    out = []
    for dtype_name, K, N, M in work:
        layers = model_layers(K, N)
        for kind in ("dense", *plan.schemes):
            if time.perf_counter() > deadline:
                entry = {"model": kind, "dtype": dtype_name, "M": M, "K": K, "N": N, "layers": layers,
                         "skipped": "model time budget spent"}
            else:
                entry = bench_model(kind, dtype_name, M, K, N, layers, device, copy_gbs, mode)
            out.append(entry)
            shown = f"{entry['per_layer_us']:.1f} µs/layer ({entry['pct_copy']:.0f} %)" if "ms" in entry else \
                entry.get("error", entry.get("skipped", ""))
            print(f"model {kind:5s} {dtype_name} M={M} K={K} N={N} x{layers}: {shown}", flush=True)
            with open(partial_path, "w") as f:  # survives a kill
                json.dump({"rows": rows, "model_rows": out}, f)
    return out


def add_speedups(rows: list, model_rows: list) -> None:
    """speedup_vs_dense = dense time / this time: on each kernel row's paths (against its dense
    path) and on each model row (per layer, against the dense model of the same dtype, M, K, N)."""
    for row in rows:
        dense = row["paths"].get("dense", {})
        for name, entry in row["paths"].items():
            if name != "dense" and "ms" in entry and "ms" in dense:
                entry["speedup_vs_dense"] = dense["ms"] / entry["ms"]
    dense_models = {(m["dtype"], m["M"], m["K"], m["N"]): m for m in model_rows if m["model"] == "dense" and "ms" in m}
    for entry in model_rows:
        dense = dense_models.get((entry["dtype"], entry["M"], entry["K"], entry["N"]))
        if dense is not None and "ms" in entry:
            entry["speedup_vs_dense"] = dense["per_layer_us"] / entry["per_layer_us"]


# ------------------------------------------------------------------------------ tables


PATHS = ("ours", "dense", "eager", "compiled", "iq", *dict.fromkeys(p for peers in LAYOUT_PEERS.values() for p in peers))
PATH_LABELS = {"compiled": "compiled max-autotune", "iq": "InvokeQuant + prologue", "int8pack": "_weight_int8pack_mm"}


def scheme_ints(schemes: tuple, kn_shapes: tuple) -> dict:
    """{scheme: {int name: value}} of the schemes with ints (group, block size), as benched."""
    from impl.schemes.registry import by_short

    out = {}
    for short in schemes:
        names = by_short(short).ints
        if names:
            values = bench_schemes.scheme_ints(short, kn_shapes[0][0], bench_schemes.quantize_options(short))
            out[short] = dict(zip(names, values))
    return out


def describe_ints(ints: dict) -> str:
    """{"int4": {"group_size": 128}} -> 'int4 group_size 128'."""
    return ", ".join(f"{short} " + ", ".join(f"{k} {v}" for k, v in named.items()) for short, named in ints.items())


def format_cell(entry: dict) -> str:
    if not entry:
        return "—"
    if "ms" in entry:
        return f"{entry['ms'] * 1e3:.1f} µs ({entry['pct_copy']:.0f} %)"
    if "skipped" in entry:
        return "skipped"
    return "error"


def format_row(row: dict) -> str:
    cells = " | ".join(format_cell(row["paths"].get(p, {})) for p in PATHS)
    ours = row["paths"].get("ours", {})
    speedup = f"{ours['speedup_vs_dense']:.2f}×" if "speedup_vs_dense" in ours else "—"
    flushed = f"{ours['do_bench_ms'] * 1e3:.1f} µs" if "do_bench_ms" in ours else "—"
    cpu = f"{ours['cpu_us']:.0f} µs" if "cpu_us" in ours else "—"
    return (f"| {row['scheme']} | {row.get('dtype', '')} | {row['M']} | {row['K']} | {row['N']} | {cells} | {speedup} "
            f"| {flushed} | {cpu} | {row['config']} |")


def format_model_cell(entry: Optional[dict]) -> str:
    if not entry:
        return "—"
    if "ms" in entry:
        speedup = f", {entry['speedup_vs_dense']:.2f}×" if entry.get("model") != "dense" and "speedup_vs_dense" in entry else ""
        return f"{entry['per_layer_us']:.1f} µs ({entry['pct_copy']:.0f} %{speedup})"
    if "skipped" in entry:
        return "skipped"
    return "error"


def model_table(result: dict) -> list:
    """One line per (dtype, K, N, M): per-layer time of the dense model and of each scheme's."""
    model_rows = result.get("model_rows") or []
    if not model_rows:
        return []
    kinds = list(dict.fromkeys(m["model"] for m in model_rows))
    by_key: dict = {}
    for m in model_rows:
        by_key.setdefault((m["dtype"], m["K"] * m["N"], m["K"], m["N"], m["M"]), {})[m["model"]] = m
    lines = [
        f"Model level: a stack of bias-free nn.Linear(K, N) (layers per shape chosen so the 4-bit model's "
        f"weights exceed {MODEL_MIN_WEIGHT_BYTES >> 20} MB), quantized by impl.schemes.quantize_linear_, "
        f"impl.install(), torch.compile(mode=\"{result.get('model_mode', '')}\"), timed as a CUDA graph replay. "
        "Cells: GPU time per layer (% of copy bandwidth on the layer's fewest bytes, speedup over the "
        "dense model in the same dtype).",
        "",
        "| dtype | M | K | N | layers | " + " | ".join("dense" if k == "dense" else k for k in kinds) + " |",
        "|---|---|---|---|---|" + "---|" * len(kinds),
    ]
    for (dtype, _, K, N, M), entries in sorted(by_key.items()):
        layers = next(iter(entries.values()))["layers"]
        lines.append(f"| {dtype} | {M} | {K} | {N} | {layers} | " + " | ".join(format_model_cell(entries.get(k)) for k in kinds) + " |")
    return lines


def markdown_table(result: dict) -> str:
    lines = [
        f"Device: {result['device']}, torch {result['torch']}, triton {result['triton']}, "
        f"{result['dtype']} activations; {describe_ints(result['scheme_ints'])}.",
        f"Copy bandwidth measured first: {result['copy_GBps']:.0f} GB/s (read + write). Cells: median "
        f"GPU time ({result['timer']} timer, see tools/bench_woq_gpu.py time_gpu_ms), weights rotated "
        "through copies larger than L2; % = (fewest bytes / time) / copy bandwidth; dense = F.linear "
        "on an unquantized weight in the activation dtype.",
        "",
        "| scheme | dtype | M | K | N | " + " | ".join(PATH_LABELS.get(p, p) for p in PATHS)
        + " | ours vs dense | ours, do_bench with L2 flush | ours, host time per call | our config |",
        "|---|---|---|---|---|" + "---|" * (len(PATHS) + 4),
    ]
    lines += [format_row(r) for r in result["rows"]]
    models = model_table(result)
    if models:
        lines += ["", *models]
    notes = []
    for r in result["rows"]:
        for name, entry in r["paths"].items():
            if "error" in entry:
                notes.append(f"- {r['scheme']} {r.get('dtype', '')} M={r['M']} K={r['K']} N={r['N']} {name}: {entry['error']}")
            if "note" in entry:
                notes.append(f"- {r['scheme']} {r.get('dtype', '')} M={r['M']} K={r['K']} N={r['N']} {name} timed as {entry['note']}")
    for m in result.get("model_rows") or []:
        if "error" in m:
            notes.append(f"- model {m['model']} {m['dtype']} M={m['M']} K={m['K']} N={m['N']}: {m['error']}")
    if notes:
        lines += ["", "Errors and notes:", *sorted(set(notes))]
    return "\n".join(lines) + "\n"

# --------------------------------------------------------------------------------- tune


def current_config(problem: Problem, device):
    """The config our launcher picks for this problem (the tuned table, else the fallback)."""
    return bench_schemes.choose_config(problem.scheme, problem.M, problem.N, problem.K, problem.ints, device)


# Decode routes a scheme's kernel takes besides "prmt" (KernelConfig.decode), tried at M <= 16.
EXTRA_DECODES = {"int4": ("bits",)}


def tune_candidates(scheme: str, M: int, group: int) -> list:
    """Configs worth timing for one scheme and M bucket (split_k filled in per shape). A scheme
    with a group (block) size gets the 4-bit kernels' sweep, one without (int8) the per-channel one."""
    from impl.kernels.common import KernelConfig

    def make(bm, bn, bk, warps, stages, **kw):
        # A step may span several groups only with the scale before the dot (woq_mm_int4).
        capped = min(bk, group or bk) if kw.get("scale_after_dot", True) else bk
        return KernelConfig(bm, bn, capped, num_warps=warps, num_stages=stages, **kw)

    if M == 1 and group:  # the CUDA-core GEMV kernels, then the tensor-core tiles
        # Steps of any width (the GEMV sums each group apart); one stage: without a tl.dot,
        # Triton pipelines nothing (p2 and p3 measured the same on the H200).
        gemv = [make(1, bn, bk, w, 1, scale_after_dot=False)
                for bn, bk, w in ((128, 128, 4), (64, 256, 4), (256, 128, 8), (128, 256, 8), (64, 128, 4),
                                  (32, 512, 4), (128, 512, 8), (64, 512, 4), (16, 1024, 4), (32, 1024, 8),
                                  (16, 2048, 8))]
        return gemv + tune_candidates(scheme, 16, group)
    if M == 1:  # per channel: the CUDA-core GEMV kernel against the tensor-core tiles
        gemv = [(16, 512, 4, 1), (32, 512, 8, 1), (16, 1024, 8, 1), (8, 1024, 4, 1), (32, 256, 4, 1),
                (64, 256, 8, 1), (16, 512, 4, 3), (32, 512, 8, 3), (64, 256, 4, 1), (128, 128, 4, 1),
                (128, 256, 8, 1)]
        return ([make(1, bn, bk, w, st) for bn, bk, w, st in gemv]
                + [make(16, bn, bk, w, st) for bn, bk, w, st in [(32, 256, 4, 4), (64, 256, 4, 4), (32, 512, 4, 3)]])
    if M in (2, 4, 8):  # the GEMV kernels with M rows (each decoded weight used M times), then the tiles
        # Fewer weights a thread than at M = 1: the decoded weights stay live for all M rows
        # (local sm_90a compile: m2n64k512w4 spills, m2n32k512w4 and m4n16k512w4 do not).
        gemv = [make(M, bn, bk, w, 1, scale_after_dot=False)
                for bn, bk, w in ((32, 512, 4), (16, 1024, 4), (32, 1024, 8), (16, 512, 4), (8, 1024, 4))]
        return gemv + tune_candidates(scheme, 16, group)
    if M <= 16:
        if not group:
            shapes = [(32, 256, 4, 4), (64, 256, 4, 4), (64, 256, 8, 4), (128, 128, 4, 4), (128, 256, 8, 3),
                      (32, 512, 4, 3), (64, 512, 8, 3), (64, 128, 4, 8)]
            return [make(16, bn, bk, w, st) for bn, bk, w, st in shapes]
        # 4-bit decode: the tile's width, the pipeline's depth and where the scale goes decide
        # how many weight bytes are in flight per SM (the H200 needs ~1.4x the H100's).
        configs = [make(16, bn, bk, 8 if bn == 256 else 4, st, scale_after_dot=sad)
                   for bn in (64, 128, 256) for bk in (64, 128) for st in (3, 5, 8) for sad in (True, False)]
        # Steps spanning groups: each weight row read BLOCK_K // 2 contiguous bytes at a time.
        configs += [make(16, bn, bk, w, st, scale_after_dot=False)
                    for bn, bk, w, st in ((128, 256, 8, 3), (64, 256, 4, 4), (64, 512, 8, 3), (32, 512, 4, 3),
                                          (128, 128, 4, 4), (64, 256, 4, 6), (32, 256, 4, 6))]
        configs = list(dict.fromkeys(configs))  # nf4's block of 64 caps bk: half the list repeats
        return configs + [make(16, 64, 128, 4, 4, scale_after_dot=False, decode=d) for d in EXTRA_DECODES.get(scheme, ())]
    if M <= 64:
        shapes = [(64, 64, 128, 4, 4), (64, 128, 128, 4, 4), (32, 128, 128, 4, 4), (64, 128, 64, 4, 5),
                  (64, 256, 64, 8, 3), (32, 64, 128, 4, 6)]
    else:
        shapes = [(128, 128, 64, 8, 4), (128, 128, 128, 8, 3), (128, 256, 64, 8, 3), (64, 128, 128, 4, 4),
                  (128, 64, 128, 4, 4), (256, 128, 64, 8, 3)]
    configs = [make(bm, bn, bk, w, st, scale_after_dot=False) for bm, bn, bk, w, st in shapes]
    configs += [make(bm, bn, bk, w, st, scale_after_dot=False, swap_ab=True) for bm, bn, bk, w, st in shapes[:2]]
    if group:
        configs += [make(bm, bn, bk, w, st, scale_after_dot=True) for bm, bn, bk, w, st in shapes[:2]]
    # The prefill route: the weight decoded once into x's dtype, then cuBLAS (the dequantize
    # kernel's tile: 8-16 K weights a program, each row written 0.5-2 KB at a time).
    configs += [make(16, bn, bk, w, 1, scale_after_dot=False, dequantize_first=True)
                for bn, bk, w in ((32, 256, 4), (16, 512, 4), (16, 1024, 8), (32, 512, 8), (64, 256, 8))]
    return configs


def with_split_choices(config, problem: Problem, sms: int) -> list:
    """The config unsplit, split to fill the SMs once, and split twice that."""
    import triton

    from impl.kernels.common import choose_split_k

    if config.dequantize_first:  # never split
        return [config]
    tiles = triton.cdiv(problem.M, config.block_m) * triton.cdiv(problem.N, config.block_n)
    k_steps = triton.cdiv(problem.K, config.block_k)
    auto = choose_split_k(tiles, k_steps, sms)
    double = choose_split_k(tiles, k_steps, 2 * sms, max_split=16)
    # Small M: one wave of programs already streams too little, so try splitting further.
    quadruple = choose_split_k(tiles, k_steps, 4 * sms, max_split=32)
    splits = {auto, double, quadruple} if problem.M <= 16 else {1, auto}
    return [dataclasses.replace(config, split_k=s) for s in sorted(splits)]


def tune(args) -> dict:
    device = torch.device("cuda")
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    dtype = DTYPES[args.dtype]
    copy_gbs = measure_copy_bandwidth(device)
    print(f"device: {torch.cuda.get_device_name(device)}; copy bandwidth {copy_gbs:.0f} GB/s", flush=True)
    plan = []
    schemes = bench_schemes.parse_schemes(args.schemes, "bench_woq_gpu")
    kn_shapes = parse_kn(args.kn) if args.kn else (QUICK_KN_SHAPES if args.quick else KN_SHAPES)
    m_values = tuple(int(m) for m in args.m.split(",")) if args.m else TUNE_M_VALUES
    for scheme in schemes:
        for (K, N) in kn_shapes:
            for M in m_values:
                problem = Problem(scheme, M, N, K, dtype)
                bases = tune_candidates(scheme, M, problem.group)
                if args.gemv_only:  # the GEMV candidates against the config the shape runs now
                    bases = [c for c in bases if c.gemv]
                    plan.append((problem, current_config(problem, device)))
                for base in bases:
                    for config in with_split_choices(base, problem, sms):
                        plan.append((problem, config))
    plan = list(dict.fromkeys(plan))
    errors = precompile([config_job(p, c, device) for p, c in plan], args.workers)
    results = []
    current, x, weight_sets, launch_sets, reference = None, None, None, None, None
    for problem, config in plan:
        if problem != current:
            current = problem
            torch.manual_seed(0)
            x = torch.randn((problem.M, problem.K), device=device, dtype=dtype)
            weight_sets = problem.weight_sets(device)
            launch_sets = problem.launch_sets(weight_sets)
            reference = x.float() @ problem.dequantize(torch.float32, *weight_sets[0]).T
        entry = {"scheme": problem.scheme, "M": problem.M, "N": problem.N, "K": problem.K, "config": config.short(),
                 "fields": config.__dict__}
        job = config_job(problem, config, device)
        try:
            y = run_ours(problem, x, weight_sets[0], config)
            entry["rel_err"] = relative_error(y, reference)
            ms = time_gpu_ms(rotating(ours_fn(problem, config), x, launch_sets), reps=40)
            entry.update(ms=ms, pct_copy=100 * problem.min_bytes() / (ms * 1e-3) / 1e9 / copy_gbs)
        except Exception as exc:
            entry["error"] = errors.get(job) or f"{type(exc).__name__}: {str(exc)[:300]}"
        results.append(entry)
        status = (f"{entry['ms'] * 1e3:8.1f} µs {entry['pct_copy']:5.1f} % err {entry['rel_err']:.1e}"
                  if "ms" in entry else entry["error"][:120])
        print(f"{problem.label():32s} {config.short():32s} {status}", flush=True)
    best = {}
    for entry in results:
        if "ms" not in entry or entry["rel_err"] > 2e-2:
            continue
        key = f"{entry['scheme']} M={entry['M']} N={entry['N']} K={entry['K']}"
        if key not in best or entry["ms"] < best[key]["ms"]:
            best[key] = entry
    print("\nbest per shape:")
    for key, entry in best.items():
        print(f"  {key:32s} {entry['config']:32s} {entry['ms'] * 1e3:8.1f} µs {entry['pct_copy']:5.1f} %")
    table = {f"{e['scheme']}/{e['M']}/{e['N']}/{e['K']}": e["fields"] for e in best.values()}
    return {"device": torch.cuda.get_device_name(device), "torch": torch.__version__,
            "triton": __import__("triton").__version__, "copy_GBps": copy_gbs, "results": results, "best": best,
            "tuned_configs": {"device": torch.cuda.get_device_name(device), "dtype": args.dtype,
                              "scheme_ints": scheme_ints(schemes, kn_shapes), "configs": table}}


# --------------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tune", action="store_true", help="time candidate kernel configs instead")
    parser.add_argument("--gemv-only", action="store_true",
                        help="--tune: only the GEMV (block_m 1, 2, 4, 8) candidates, and each shape's current config")
    parser.add_argument("--quick", action="store_true",
                        help="K = N = 8192, M = 1 and 16, bf16, smaller budgets: about 5 minutes on an H200")
    parser.add_argument("--schemes", default=",".join(bench_schemes.shorts()),
                        help="short names (or names, aliases) of registered schemes (default: every one)")
    parser.add_argument("--m", default="", help="comma-separated M values (default 1,2,4,8,16,64,256; --quick 1,16)")
    parser.add_argument("--kn", default="", help="comma-separated KxN shapes (default 4096x4096,8192x8192,8192x28672)")
    parser.add_argument("--dtypes", default="", help="bench activation dtypes (default bf16,fp16; --quick bf16)")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="activation dtype of --tune")
    parser.add_argument("--no-peers", action="store_true", help="skip the torch.compile peers")
    parser.add_argument("--no-model", action="store_true", help="skip the model-level rows")
    parser.add_argument("--peer-budget-s", type=float, default=None,
                        help=f"seconds for compiling and timing the torch.compile peers (default {PEER_BUDGET_S:.0f}, --quick {QUICK_PEER_BUDGET_S:.0f})")
    parser.add_argument("--model-budget-s", type=float, default=None,
                        help=f"seconds for the model-level rows (default {MODEL_BUDGET_S:.0f}, --quick {QUICK_MODEL_BUDGET_S:.0f})")
    parser.add_argument("--model-mode", default="max-autotune-no-cudagraphs",
                        choices=("max-autotune-no-cudagraphs", "default", "reduce-overhead"),
                        help="torch.compile mode of the models (reduce-overhead: Inductor's CUDA graphs, else ours)")
    parser.add_argument("--name", default="bench_woq", help="output file stem: NAME.json and NAME.md under --out")
    parser.add_argument("--workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)),
                        help="processes compiling our kernels ahead of timing")
    parser.add_argument("--out", default=os.environ.get("OUT", "out"))
    parser.add_argument("--timer", default="events", choices=("events", "do_bench"),
                        help="events: CUDA events after a GPU spin (default); do_bench: triton's, with its L2 flush")
    parser.add_argument("--configs", default="",
                        help="tuned-config JSON for our kernels (default: the GPU's own, impl/kernels/tuned_configs_<gpu>.json)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    TIMER["name"] = args.timer
    if args.configs:
        os.environ["IMPL_WOQ_TUNED_CONFIGS"] = os.path.abspath(args.configs)
    if not torch.cuda.is_available():
        print("bench_woq_gpu: needs a CUDA device", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    if args.tune:
        result = tune(args)
        with open(os.path.join(args.out, "tune_woq.json"), "w") as f:
            json.dump(result, f, indent=1, default=str)
        with open(os.path.join(args.out, "tuned_configs.json"), "w") as f:
            json.dump(result["tuned_configs"], f, indent=1, sort_keys=True)
    else:
        result = bench(args)
        with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
            json.dump(result, f, indent=1)
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(args.out, f"{args.name}.partial.json"))
        table = markdown_table(result)
        with open(os.path.join(args.out, f"{args.name}.md"), "w") as f:
            f.write(table)
        print("\n" + table)
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
