"""The user's path on a GPU, as a table: quantize a stack of nn.Linear, install, compile, compare.

    python3 -m tools.user_path_check [--features 1024] [--out DIR]

For each scheme (int8, int4 g128, nf4 b64) × compile mode (default,
max-autotune-no-cudagraphs, reduce-overhead) × M (1, 16, 37): the compiled model's relative
error against the same quantized model run eagerly, whether our kernel is in the output
code, and the max-autotune contest's decisions (``woq_mm_<s>_autotune_{ours,inductor}``).
A quick check before the suites; the suites (``suites/woq_model.yaml``) are the contract.
Exits 1 when any cell is wrong (relative error over 2e-2) or fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import impl  # noqa: E402
from impl.schemes import quantize_linear_  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402
from torch._inductor.utils import run_and_get_code  # noqa: E402

SCHEMES = {"int8": {}, "int4": {"group_size": 128}, "nf4": {"block_size": 64}}
MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead")
M_VALUES = (1, 16, 37)
TOLERANCE = 2e-2


def stack(features: int, layers: int, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    mods = [torch.nn.Linear(features, features, bias=i % 2 == 0) for i in range(layers)]
    return torch.nn.Sequential(*mods).to("cuda", dtype).eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    impl.install()
    rows, bad = [], 0
    for scheme, options in SCHEMES.items():
        model = quantize_linear_(stack(args.features, args.layers, dtype), scheme, **options)
        for mode in MODES:
            for m in M_VALUES:
                torch._dynamo.reset()
                counters.clear()
                x = torch.randn(m, args.features, device="cuda", dtype=dtype)
                row = {"scheme": scheme, "mode": mode, "M": m}
                try:
                    with torch.no_grad():
                        eager = model(x)
                        compiled_model = torch.compile(copy.deepcopy(model), mode=None if mode == "default" else mode)
                        out, codes = run_and_get_code(compiled_model, x)  # benchmark subgraphs' modules too
                        out = compiled_model(x).clone()  # a second call: replays the CUDA graph
                    err = ((out.float() - eager.float()).norm() / eager.float().norm()).item()
                    row.update(rel_err=err, kernel=any(re.search(rf"woq_mm_{scheme}_(gemv_)?kernel", code) for code in codes),
                               contest={k: v for k, v in counters["inductor"].items() if "autotune_" in k and "woq" in k},
                               fused={k: v for k, v in counters["inductor"].items() if k.endswith("matcher_count") and "woq" in k})
                    bad += not (err <= TOLERANCE)
                except Exception as error:  # a failing cell is reported, the rest still run
                    row.update(error=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
                    traceback.print_exc()
                    bad += 1
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n| scheme | mode | M | rel err vs eager | our kernel in code | contest |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scheme']} | {r['mode']} | {r['M']} | {r.get('rel_err', r.get('error'))} | {r.get('kernel')} | {r.get('contest', '')} |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "user_path.json").write_text(json.dumps(rows, indent=1))
    print(f"{bad} bad cells of {len(rows)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
