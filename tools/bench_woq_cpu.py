"""CPU benchmark (not a test): a quantized model against the dense one it replaces, per token.

The model (issue 27's): a ``transformers`` ``LlamaForCausalLM`` built from a config (hidden
2048, intermediate 5632, 16 heads, 4 KV heads, 2 layers, vocab 8000, random weights), every
``nn.Linear`` but ``lm_head`` quantized with ``quantize_linear_`` (every registered scheme:
int8; int4 group 128; nf4 block 64; ...), ``impl.install()``, ``torch.compile`` in default mode,
``use_cache=False``.

For each activation dtype and Inductor freezing setting, every variant (dense, int8, int4,
nf4, ...) is compiled and then timed on the same inputs in the same process, the variants
interleaved call by call so that load from other processes on a shared machine falls on
all of them alike:

- ``decode b1``: one token of one sequence (x has M = 1 row a Linear);
- ``decode b4``: one token of four sequences, called after b1 (Dynamo recompiles with a
  dynamic batch, as a server's first batch of four would);
- ``prefill``: one sequence of ``--prefill`` tokens (M = that many rows).

Prints, per row, the median milliseconds of ``--repeat`` calls per variant, the ratio
dense / variant (> 1: faster than dense) and the spread (10th / 90th percentile ratio);
``--json`` writes every sample. ``--linear`` instead times one Linear (K -> N): the dense
Linear compiled, the quantized one eager, compiled unfused and compiled fused.

    python3 tools/bench_woq_cpu.py [--dtypes bfloat16,float32] [--freezing off,on] [--repeat 10]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import impl  # noqa: E402
from impl.schemes import quantize_linear_  # noqa: E402
from impl.schemes.registry import by_short  # noqa: E402
from tools import bench_schemes  # noqa: E402

LINEAR_OPTIONS = {"int4": {"group_size": 64}}  # --linear, over bench_schemes.OPTIONS
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LLAMA_CONFIG = dict(
    hidden_size=2048, intermediate_size=5632, num_attention_heads=16, num_key_value_heads=4,
    num_hidden_layers=2, vocab_size=8000, max_position_embeddings=2048,
)


# --------------------------------------------------------------------------- the model


def build_llama(dtype: torch.dtype) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**LLAMA_CONFIG, torch_dtype=dtype))
    return model.to(dtype).eval()


def quantized(model: torch.nn.Module, scheme: str) -> torch.nn.Module:
    """A copy with every Linear but lm_head quantized by ``scheme``."""
    return quantize_linear_(copy.deepcopy(model), by_short(scheme).name, filter_fn=lambda name, _: name != "lm_head",
                            **bench_schemes.quantize_options(scheme))


def compiled_forward(model: torch.nn.Module):
    forward = torch.compile(lambda ids: model(input_ids=ids, use_cache=False).logits)
    return forward


def percentile(values: list, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_interleaved(calls: dict, repeat: int) -> dict:
    """Milliseconds of each call, ``repeat`` rounds, one call of each variant a round."""
    samples = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append(1e3 * (time.perf_counter() - start))
    return samples


def run_model(args) -> list:
    torch.set_num_threads(args.threads)
    # Four models share LlamaForCausalLM's code objects, each compiled for three shapes: more
    # entries than Dynamo's default limit (8), past which it would run the rest eagerly.
    torch._dynamo.config.recompile_limit = 64
    impl.install()
    records = []
    shapes = [("decode b1", 1, 1), ("decode b4", 4, 1)] if args.decode else []
    if args.prefill:
        shapes.append((f"prefill {args.prefill}", 1, args.prefill))
    for dtype_name in args.dtypes.split(","):
        dense = build_llama(DTYPES[dtype_name])
        models = {"dense": dense, **{s: quantized(dense, s) for s in args.schemes}}
        for freezing in args.freezing.split(","):
            torch._dynamo.reset()
            forwards = {}
            with torch.no_grad(), torch._inductor.config.patch(freezing=freezing == "on"):
                for name, model in models.items():
                    forwards[name] = compiled_forward(model)
                for label, batch, tokens in shapes:
                    ids = torch.randint(0, LLAMA_CONFIG["vocab_size"], (batch, tokens))
                    started = time.perf_counter()
                    for name, forward in forwards.items():
                        for _ in range(2):  # compile (or recompile), then one warm call
                            forward(ids)
                    compile_s = time.perf_counter() - started
                    calls = {name: (lambda f=forward, i=ids: f(i)) for name, forward in forwards.items()}
                    samples = time_interleaved(calls, args.repeat)
                    record = {"dtype": dtype_name, "freezing": freezing, "shape": label, "batch": batch,
                              "tokens": tokens, "samples_ms": samples, "compile_s": compile_s}
                    records.append(record)
                    print(_model_row(record), flush=True)
    return records


def _model_row(record: dict) -> str:
    samples = record["samples_ms"]
    dense = statistics.median(samples["dense"])
    cells = [f"{dense:.2f}"]
    for name, values in samples.items():
        if name == "dense":
            continue
        median = statistics.median(values)
        # The spread of the ratio: round-by-round ratios (same round, same load), 10th-90th pct.
        ratios = [d / v for d, v in zip(samples["dense"], values)]
        cells.append(f"{median:.2f} ({dense / median:.2f}x; {percentile(ratios, 0.1):.2f}-{percentile(ratios, 0.9):.2f})")
    return f"| {record['dtype']} | {record['freezing']} | {record['shape']} | " + " | ".join(cells) + " |"


def host_description() -> dict:
    flags = model_name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].strip()
            if line.startswith("model name") and not model_name:
                model_name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")
    return {
        "cpu": model_name or platform.processor(),
        "isa_flags": [f for f in wanted if f in flags.split()],
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --------------------------------------------------------------------------- one Linear


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


def run_linear(args) -> None:
    torch.set_num_threads(args.threads)
    print(f"Linear {args.k} -> {args.n}, best of {args.repeat} (ms); dense: the float Linear compiled")
    print("| scheme | dtype | M | dense | eager | unfused | fused | unfused/fused | dense/fused |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scheme in bench_schemes.shorts():
        options = bench_schemes.quantize_options(scheme, LINEAR_OPTIONS)
        for dtype_name in args.dtypes.split(","):
            dtype = DTYPES[dtype_name]
            torch.manual_seed(0)
            dense_model = torch.nn.Linear(args.k, args.n, bias=True).to(dtype).eval()
            model = quantize_linear_(copy.deepcopy(dense_model), by_short(scheme).name, **options).eval()
            for m in args.m:
                x = torch.randn(m, args.k, dtype=dtype)
                with torch.no_grad():
                    eager = best_ms(model, x, args.repeat)
                    torch._dynamo.reset()
                    with torch._inductor.config.patch(freezing=args.freezing == "on"):
                        dense_fn = torch.compile(dense_model)
                        dense_fn(x)
                    dense = best_ms(dense_fn, x, args.repeat)
                    times = {}
                    for variant, fused in (("unfused", False), ("fused", True)):
                        torch._dynamo.reset()
                        with (impl.installed() if fused else _nothing()), \
                                torch._inductor.config.patch(freezing=args.freezing == "on"):
                            fn = torch.compile(model)
                            fn(x)  # compile inside the context: the passes run at compile time
                        times[variant] = best_ms(fn, x, args.repeat)
                unfused, fused = times["unfused"], times["fused"]
                print(f"| {scheme:5} | {dtype_name:9} | {m:4} | {dense:9.3f} | {eager:9.3f} | {unfused:9.3f} | {fused:9.3f} "
                      f"| {unfused / fused:6.2f}x | {dense / fused:6.2f}x |", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--freezing", default="off,on", help="off, on, or both (the model); off or on (--linear)")
    parser.add_argument("--schemes", default=",".join(bench_schemes.shorts()))
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prefill", type=int, default=128, help="tokens of the prefill row (0: none)")
    parser.add_argument("--no-decode", dest="decode", action="store_false", help="only the prefill row")
    parser.add_argument("--json", type=Path, help="write the host, every sample and each row here")
    parser.add_argument("--linear", action="store_true", help="one Linear instead of the model")
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--m", type=lambda s: [int(v) for v in s.split(",")], default=[1, 4, 64, 256])
    args = parser.parse_args(argv)
    args.schemes = bench_schemes.parse_schemes(args.schemes, "bench_woq_cpu")
    return args


def main() -> None:
    args = parse_args()
    host = host_description()
    print(f"{host['cpu']} ({', '.join(host['isa_flags'])}; ATen {host['aten_cpu_capability']}), "
          f"torch {host['torch']}, {args.threads} threads, {host['date']}")
    if args.linear:
        run_linear(args)
        return
    print(f"ms per call, median of {args.repeat} interleaved rounds; (dense / variant; 10th-90th percentile of the per-round ratio)")
    print("| activations | freezing | shape | dense | " + " | ".join(args.schemes) + " |")
    print("|---|---|---|---|" + "---|" * len(args.schemes))
    records = run_model(args)
    if args.json:
        args.json.write_text(json.dumps({"host": host, "args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
