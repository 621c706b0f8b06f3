"""Where a compiled quantized Llama layer's host time goes, against the dense one (GPU only).

    python -m tools.host_profile [--out DIR] [--variants dense,int8,int4,nf4] [--layers 1] [--static 0,1]

For each variant, compiled once with each ``--static`` value of Inductor's
``static_launch_user_defined_triton_kernels`` (our kernels reach Inductor as user-defined
Triton kernels, launched by Triton's own launcher unless it is set): the default-mode
compiled forward of a ``tools.bench_woq_model`` Llama at batch 1; its Inductor output code
(``<variant>_static<s>_output_code.py``); host µs a call (200 back-to-back calls, then a sync:
the GPU idles most of the time, so the wall time is the host's) and the bench's synced
median; the GPU kernels a call runs (torch.profiler); whether the static launcher ran; the
largest difference of the logits from the variant's first compile; and a cProfile of 100
calls (``<variant>_static<s>_cprofile.txt``, by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="out")
    parser.add_argument("--variants", default="dense,int8,int4,nf4")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--static", default="0,1",
                        help="inductor.config.static_launch_user_defined_triton_kernels values to compile with")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import impl
    from torch._inductor.utils import run_and_get_code
    from tools.bench_woq_model import median_us, quantized

    rows, outputs = [], {}
    for variant, static in [(v, s) for v in args.variants.split(",") for s in args.static.split(",")]:
        if variant == "dense" and static == "1":
            continue
        torch._dynamo.reset()
        model = quantized(variant, args.layers)
        forward = lambda ids, model=model: model(ids, use_cache=False).logits  # noqa: E731
        ids = torch.randint(0, 32000, (1, 1), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
        name = f"{variant}_static{static}"
        patch = torch._inductor.config.patch(static_launch_user_defined_triton_kernels=static == "1")
        with impl.installed(), torch.no_grad(), patch:
            compiled = torch.compile(forward)
            logits, codes = run_and_get_code(compiled, ids)
            first = outputs.setdefault(variant, logits)
            match = (logits.float() - first.float()).abs().max().item()
            (out / f"{name}_output_code.py").write_text("\n\n# ----- next\n\n".join(codes))
            for _ in range(20):
                compiled(ids)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(200):
                compiled(ids)
            torch.cuda.synchronize()
            host_us = (time.perf_counter() - start) / 200 * 1e6
            synced_us = median_us(lambda: compiled(ids))
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                compiled(ids)
                torch.cuda.synchronize()
            kernels = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(100):
                compiled(ids)
            profiler.disable()
            torch.cuda.synchronize()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(40)
            (out / f"{name}_cprofile.txt").write_text(text.getvalue())
        rows.append((name, host_us, kernels))
        launchers = sum(1 for e in pstats.Stats(profiler).stats if "static_triton_launcher" in e[0])
        print(f"{name:14s} host {host_us:8.1f} µs a call ({synced_us:.1f} synced), {kernels} GPU events, "
              f"static launcher seen: {bool(launchers)}, max |logits - first compile's| {match:.3g}", flush=True)
        del model, compiled
        torch.cuda.empty_cache()
    dense = dict((v, h) for v, h, _ in rows).get("dense_static0")
    for variant, host_us, kernels in rows:
        extra = "" if dense is None else f", {(host_us - dense) / (7 * args.layers):+.1f} µs a linear over dense"
        print(f"{variant:14s} {host_us:8.1f} µs{extra}", flush=True)


if __name__ == "__main__":
    main()
