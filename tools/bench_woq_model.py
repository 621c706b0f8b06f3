"""Decode-step time of a Llama model, dense against weight-only quantized, in each compile mode.

    python -m tools.bench_woq_model [--out DIR] [--name model_h100] [--budget-s 480]
        [--modes default,reduce-overhead,max-autotune] [--variants dense,int8,...]

A ``transformers`` ``LlamaForCausalLM`` built from a config (no weights downloaded) with the
Llama-3-8B layer shapes (hidden 4096, intermediate 14336, 32 heads, 8 KV heads), 6 layers,
vocab 32000, bf16, ``lm_head`` left dense. One forward of one token per sequence with
``use_cache=False`` (every weight read once, as a decode step reads them), µs per token,
median of 15 (CUDA events around each call). Variants: dense; ours (``quantize_linear_``,
every registered scheme: int8, int4 group 128, nf4 block 64 double-quantized, ...;
``impl.install()``); bitsandbytes nf4
block 64 double-quantized (``bnb.matmul_4bit``) and torch's tinygemm int4 group 128
(``aten._convert_weight_to_int4pack`` + ``aten._weight_int4pack_mm``), where present.

Rows, each variant compiled with ``torch.compile`` of the forward, each mode called at
batch 1, then 8 (automatic dynamic shapes recompile with a symbolic batch), then 16:
  default / plain: default mode, plain calls; and compiled for 8 alone (static);
  default / CUDA graph: the same compiled forwards captured in a CUDA graph and replayed;
  reduce-overhead: mode="reduce-overhead" (Inductor's own CUDA graphs), plain calls;
  max-autotune: mode="max-autotune-no-cudagraphs", plain calls and CUDA-graph replay.
Cells past ``--budget-s`` are left out (``null``); the JSON is rewritten after each cell.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from tools import bench_schemes

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, VOCAB = 4096, 14336, 32, 8, 32000
INT4_GROUP, NF4_BLOCK = 128, 64  # the peers' group and block, as ours are quantized
OPTIONS = {"nf4": {"double_quant": True}}  # over bench_schemes.OPTIONS
PEERS = ("bnb_nf4", "tinygemm_int4")
REPS = 15
SEQUENCE = (("1", 1), ("8 after 1", 8), ("16 after 8", 16))


def llama(layers: int, device: str, hidden: int = HIDDEN, intermediate: int = INTERMEDIATE,
          vocab: int = VOCAB) -> torch.nn.Module:
    import transformers

    config = transformers.LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                                      num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, vocab_size=vocab)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.LlamaForCausalLM(config)
    return model.to(torch.bfloat16).eval()


class TinygemmInt4Linear(torch.nn.Module):
    """torch's own CUDA int4 kernel (what torchao's int4 weight-only runs): asymmetric groups,
    W = (q - 8) * scale + zero, the weight tile-packed once by _convert_weight_to_int4pack."""

    def __init__(self, linear: torch.nn.Linear, group: int = INT4_GROUP, inner_k_tiles: int = 8) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        n, k = w.shape
        groups = w.reshape(n, k // group, group)
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        scale = ((high - low) / 15).clamp(min=1e-6)
        q = ((groups - low) / scale).round().clamp(0, 15).to(torch.int32).reshape(n, k)
        packed = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack(packed, inner_k_tiles))
        zero = low + 8 * scale
        self.register_buffer("scales_and_zeros", torch.cat([scale, zero], -1).transpose(0, 1).contiguous()
                             .to(torch.bfloat16))
        self.group, self.out_features = group, n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int4pack_mm(x.reshape(-1, x.shape[-1]), self.packed, self.group,
                                               self.scales_and_zeros)
        return y.reshape(*x.shape[:-1], self.out_features)


class BnbNf4Linear(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        import bitsandbytes as bnb

        self.weight, self.state = bnb.functional.quantize_4bit(linear.weight.detach(), blocksize=NF4_BLOCK,
                                                               compress_statistics=True, quant_type="nf4")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import bitsandbytes as bnb

        return bnb.matmul_4bit(x, self.weight.t(), quant_state=self.state)


def swap_linears(model: torch.nn.Module, make: Callable[[torch.nn.Linear], torch.nn.Module]) -> None:
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear) and f"{name}.{child_name}".strip(".") != "lm_head":
                setattr(module, child_name, make(child))


def quantized(variant: str, layers: int) -> torch.nn.Module:
    model = llama(layers, "cuda")
    if variant in bench_schemes.shorts():
        from impl.schemes import quantize_linear_
        from impl.schemes.registry import by_short

        quantize_linear_(model, by_short(variant).name, filter_fn=lambda name, _: name != "lm_head",
                         **bench_schemes.quantize_options(variant, OPTIONS))
    elif variant == "tinygemm_int4":
        swap_linears(model, TinygemmInt4Linear)
    elif variant == "bnb_nf4":
        swap_linears(model, BnbNf4Linear)
    torch.cuda.synchronize()
    return model


def median_us(fn: Callable[[], Any]) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(REPS):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000)
    return statistics.median(times)


def plain_and_replayed(forward: Callable, ids: torch.Tensor, replay: bool = True) -> tuple[float, Optional[float]]:
    """(µs of a plain call, µs of a CUDA-graph replay of it or None without ``replay``), warmed
    up first (a forward under mode="reduce-overhead" records its own graph in the warm-up)."""
    for _ in range(3):
        forward(ids)
    torch.cuda.synchronize()
    plain = median_us(lambda: forward(ids))
    if not replay:
        return plain, None
    try:
        static = ids.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            forward(static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            forward(static)
        replayed = median_us(graph.replay)
    except Exception as error:  # a peer that cannot be captured
        print(f"    capture failed: {type(error).__name__}: {str(error)[:200]}", flush=True)
        replayed = None
    return plain, replayed


# Each mode's compile options and the rows it fills: (row prefix, plain-call row, replay row).
MODES = {
    "default": ({}, "default, plain calls", "default, CUDA graph"),
    "reduce-overhead": ({"mode": "reduce-overhead"}, "reduce-overhead", None),
    "max-autotune": ({"mode": "max-autotune-no-cudagraphs"}, "max-autotune-no-cudagraphs, plain calls",
                     "max-autotune-no-cudagraphs, CUDA graph"),
}


class Cells:
    def __init__(self, path: Path, meta: dict) -> None:
        self.path, self.result = path, {**meta, "cells": {}}

    def put(self, row: str, variant: str, value: Optional[float]) -> None:
        self.result["cells"].setdefault(row, {})[variant] = None if value is None else round(value, 1)
        self.path.write_text(json.dumps(self.result, indent=1))
        print(f"  {row:40s} {variant:14s} {value if value is None else round(value, 1)}", flush=True)


def run_sequence(forward: Callable, ids_of: Callable[[int], torch.Tensor], variant: str, mode: str, cells: "Cells",
                 deadline: float, sequence: tuple = SEQUENCE) -> None:
    """One compile of ``forward`` in ``mode``, called at each batch of ``sequence`` in turn."""
    options, plain_row, replay_row = MODES[mode]
    torch._dynamo.reset()
    compiled = torch.compile(forward, **options)
    for label, batch in sequence:
        if time.monotonic() > deadline:
            return
        try:
            plain, replayed = plain_and_replayed(compiled, ids_of(batch), replay=replay_row is not None)
        except Exception as error:  # a mode that fails to compile this variant: its cells say so
            print(f"    {mode} failed: {type(error).__name__}: {str(error)[:300]}", flush=True)
            plain = replayed = None
        cells.put(f"{plain_row}, batch {label}", variant, plain)
        if replay_row is not None:
            cells.put(f"{replay_row}, batch {label}", variant, replayed)
        if plain is None:
            return


def bench_mode(mode: str, models: dict, cells: Cells, deadline: float, sequence: tuple = SEQUENCE) -> None:
    """Every variant's model in one mode (modes outer, so a budget cuts the last mode first,
    not the last variant): its batch sequence, and in default mode batch 8 compiled alone."""
    import impl

    def ids_of(batch: int) -> torch.Tensor:
        return torch.randint(0, VOCAB, (batch, 1), device="cuda")

    for variant, model in models.items():
        if time.monotonic() > deadline:
            return
        forward = lambda ids, model=model: model(ids, use_cache=False).logits  # noqa: E731
        print(f"{mode}: {variant}", flush=True)
        try:
            with impl.installed(), torch.no_grad():
                run_sequence(forward, ids_of, variant, mode, cells, deadline, sequence)
                if mode == "default" and len(sequence) > 1 and time.monotonic() < deadline:
                    torch._dynamo.reset()
                    plain, replayed = plain_and_replayed(torch.compile(forward, dynamic=False), ids_of(8))
                    cells.put("default, plain calls, batch 8 compiled alone", variant, plain)
                    cells.put("default, CUDA graph, batch 8 compiled alone", variant, replayed)
        except Exception as error:
            print(f"  {variant} failed: {type(error).__name__}: {str(error)[:500]}", flush=True)
        torch._dynamo.reset()


def markdown(result: dict) -> str:
    variants = result["variants"]
    lines = [f"# Llama decode step, µs a forward ({result['gpu']})", "",
             f"torch {result['torch']}, {result['layers']} layers of Llama-3-8B shapes, vocab {VOCAB}, bf16, "
             "lm_head dense, one token per sequence, use_cache=False: µs a forward (one decode step for the batch); "
             "median of "
             f"{REPS}. `—`: not measured (budget) or failed.", "",
             "| how it runs | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for row, cells in result["cells"].items():
        values = [cells.get(v) for v in variants]
        lines.append(f"| {row} | " + " | ".join("—" if x is None else f"{x:.0f}" for x in values) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "out"))
    parser.add_argument("--name", default="model")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--variants", default=",".join(("dense", *bench_schemes.shorts(), *PEERS)))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--budget-s", type=float, default=480.0)
    parser.add_argument("--batches", type=int, default=len(SEQUENCE),
                        help="how many of the batch sequence 1, 8 after 1, 16 after 8 to run (1: batch 1 only)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",")
    if "bnb_nf4" in variants:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            variants.remove("bnb_nf4")
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "python": platform.python_version(),
            "layers": args.layers, "variants": variants}
    cells = Cells(out / f"{args.name}.json", meta)
    deadline = time.monotonic() + args.budget_s
    models = {}
    for variant in variants:  # all held at once (~3 GB each): modes go outer
        try:
            models[variant] = quantized(variant, args.layers)
        except Exception as error:
            print(f"  {variant} failed to build: {type(error).__name__}: {str(error)[:500]}", flush=True)
    for mode in MODES:
        if mode in args.modes.split(","):
            bench_mode(mode, models, cells, deadline, SEQUENCE[:args.batches])
    (out / f"{args.name}.md").write_text(markdown(cells.result))
    print(markdown(cells.result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
