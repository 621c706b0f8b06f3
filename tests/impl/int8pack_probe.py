"""Child process of test_int8pack_contract.py: the CPU int8 lowering's ATen path on the shapes
and layouts where the bfloat16 kernel reads past a row or faults (K % 16 != 0, misaligned rows),
and our decode and prefill kernels (``impl.lowerings.woq_gemv_cpu``, ``woq_panel_cpu``) on the
same operands.

Run in a fresh process (``ATEN_CPU_CAPABILITY`` is read at torch import, and a fault must not
take the test session down). Prints one line per call before making it, so a crash names the
shape; ends with ``capability <name>`` and ``worst relative error <e> at <shape>``.
"""

from __future__ import annotations

import itertools

import torch

import impl
from impl.lowerings.woq_gemv_cpu import gemv_int8
from impl.lowerings.woq_panel_cpu import mm_int8
from impl.lowerings.woq_mm_cpu import _int8pack_mm
from impl.schemes import quantize_linear_
from torch._inductor import config as inductor_config
from torch._inductor.utils import run_and_get_code

N = 20  # not a multiple of the kernel's 4-wide column block
MS = (1, 2, 5, 17)  # one row; row blocks of 4 with a ragged tail
KS = (8, 16, 24, 40, 200, 201, 208)  # crash or misread on some x86 path: all but 16 and 208
DTYPES = (torch.bfloat16, torch.float32, torch.float16)
LAYOUTS = ("aligned", "x_misaligned", "w_misaligned")  # a row-major view one element in


def _operands(m: int, k: int, dtype: torch.dtype, layout: str):
    g = torch.Generator().manual_seed(m * 1000 + k)
    x = torch.randn(m * k + 1, generator=g).to(dtype)
    w = torch.randint(-127, 128, (N * k + 1,), dtype=torch.int8, generator=g)
    x = (x[1:] if layout == "x_misaligned" else x[:-1]).view(m, k)
    w = (w[1:] if layout == "w_misaligned" else w[:-1]).view(N, k)
    return x, w, torch.rand(N, generator=g).to(dtype) + 0.5


def _relative_error(y: torch.Tensor, x, w, scale) -> float:
    expected = (x.double() @ w.double().T) * scale.double()
    return ((y.double() - expected).abs().max() / expected.abs().max()).item()


def main() -> None:
    worst = (0.0, "")
    for layout, m, k, dtype in itertools.product(LAYOUTS, MS, KS, DTYPES):
        shape = f"aten M={m} K={k} {dtype} {layout}"
        print(shape, flush=True)
        x, w, scale = _operands(m, k, dtype, layout)
        worst = max(worst, (_relative_error(_int8pack_mm(x, w, scale), x, w, scale), shape))
        # Our decode kernel on the same operands (unaligned loads, a scalar K tail).
        shape = f"gemv M={m} K={k} {dtype} {layout}"
        print(shape, flush=True)
        y = gemv_int8(x, w, scale.float())  # its scale is the layout's float32
        worst = max(worst, (_relative_error(y, x, w, scale.float()), shape))
        # Our prefill kernel (a panel of the weight decoded, then a GEMM) on them too.
        shape = f"panel M={m} K={k} {dtype} {layout}"
        print(shape, flush=True)
        y = mm_int8(x, w, scale.float())
        worst = max(worst, (_relative_error(y, x, w, scale.float()), shape))
    # The user's path through Inductor: past the decode kernels' rows (GEMV_MAX_M) the
    # lowering picks our panel kernel (the ATen one is a max-autotune choice) on a misaligned x.
    for m, k in itertools.product((17, 21), (24, 200)):
        shape = f"compiled M={m} K={k} bfloat16"
        print(shape, flush=True)
        torch.manual_seed(k)
        layer = quantize_linear_(torch.nn.Linear(k, N, bias=False), "int8").eval()
        x, _, _ = _operands(m, k, torch.bfloat16, "x_misaligned")
        torch._dynamo.reset()
        with impl.installed(), inductor_config.patch(force_disable_caches=True), torch.no_grad():
            expected = layer(x)
            y, (code,) = run_and_get_code(torch.compile(layer), x)
        assert "extern_kernels.impl_woq_panel_int8_cpu(" in code, code
        error = ((y.double() - expected.double()).abs().max() / expected.double().abs().max()).item()
        worst = max(worst, (error, shape))
    print("capability", torch.backends.cpu.get_cpu_capability())
    print(f"worst relative error {worst[0]:.3e} at {worst[1]}")


if __name__ == "__main__":
    main()
