"""A small MLP of nn.Linear layers, quantized by each weight-only scheme and compiled.

    python3 examples/quantized_mlp.py

For int8, int4 (group 64) and nf4 (block 64, double-quantized absmax): quantize a copy of
the float MLP with ``impl.schemes.quantize_linear_``, ``impl.install()`` the fusion passes,
``torch.compile`` it (freezing on, so int4 can use the repacked ATen kernel), and print the
fusion counters, which kernels Inductor's output code calls, and the error against the
float model (SQNR in dB; higher is better) in float32 and bfloat16.
"""

from __future__ import annotations

import copy
import re
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import impl  # noqa: E402
from impl.schemes import compute_sqnr, quantize_linear_  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402
from torch._inductor.utils import run_and_get_code  # noqa: E402

SCHEMES = {"int8": {}, "int4": {"group_size": 64}, "nf4": {"block_size": 64, "double_quant": True}}
EXTERN_CALL = re.compile(r"extern_kernels\.(\w+)\(")
CPP_KERNEL = re.compile(r"^(cpp_fused_\w+) = ", re.MULTILINE)


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 512), torch.nn.GELU(), torch.nn.Linear(512, 128)
    ).eval()


def main() -> None:
    warnings.filterwarnings("ignore", message=".*dynamo_pgo force disabled.*")
    float_model = mlp()
    impl.install()
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(4, 16, 256).to(dtype)  # (batch, tokens, features)
        with torch.no_grad():
            reference = float_model.double()(x.double())
        for scheme, options in SCHEMES.items():
            model = quantize_linear_(copy.deepcopy(mlp()), scheme, **options)
            torch._dynamo.reset()
            counters.clear()
            with torch.no_grad(), torch._inductor.config.patch(freezing=True, force_disable_caches=True):
                eager = model(x)
                compiled, (code, *_) = run_and_get_code(torch.compile(model), x)
            fused = {k: v for k, v in counters["inductor"].items() if k.startswith("woq_fusion_")}
            calls = sorted(set(EXTERN_CALL.findall(code)))
            print(f"{scheme:5} {str(dtype):15} counters {fused}")
            print(f"      output code: extern calls {calls}, {len(CPP_KERNEL.findall(code))} generated C++ kernels")
            print(
                f"      SQNR vs float model: eager {compute_sqnr(reference, eager):5.1f} dB, "
                f"compiled {compute_sqnr(reference, compiled):5.1f} dB; "
                f"compiled vs eager max |diff| {(compiled.float() - eager.float()).abs().max().item():.2e}"
            )
    impl.uninstall()


if __name__ == "__main__":
    main()
