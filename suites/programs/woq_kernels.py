"""Programs for suites/woq_kernels.yaml: the Triton weight-only matmul kernels themselves.

``kernel(x, weight, scheme, block)`` is y (M, N) = x (M, K) @ W.T with W (N, K) decoded from
the scheme's layout (the tuples ``suites.programs.woq_fusion``'s input builders make):

- on the CPU, the kernel's eager launcher (``impl.kernels.woq_mm_<scheme>.LAUNCHER.eager_launch``) through Triton's
  interpreter, inside the custom op ``torch.ops.suites.woq_mm_interpreted`` so that Dynamo
  records one node instead of tracing the interpreter; the program CI runs (the suite
  marks those cells ``triton_interpreter``);
- on CUDA, the kernel's ``torch.library.triton_op`` (``impl.kernels.ops``), which
  eager launches and Inductor copies into its output code;
- for the harness's float64 run, the layout's formula in float64: the reference.

NF4 hands a double-quantized absmax to the launcher and to the triton_op as it is (codes,
absmax_scale, absmax_offset: the kernel decodes it), as the fused op's lowering passes it.
"""

from __future__ import annotations

import torch

from impl import kernels
from impl.schemes.registry import by_short
from suites.programs.woq_fusion import dequantize

TRITON_ACTIVATION_DTYPES = (torch.float16, torch.bfloat16)


def kernel(x: torch.Tensor, weight: tuple, scheme: str = "int8", block: int = 64) -> torch.Tensor:
    """y (M, N) = x (M, K) @ W.T through the scheme's Triton kernel (float64: the formula)."""
    if x.dtype == torch.float64:
        return x @ dequantize(scheme, weight, x.shape[-1], torch.float64, block).T
    if x.dtype not in TRITON_ACTIVATION_DTYPES:
        raise TypeError(f"the {scheme} kernel takes float16 / bfloat16 activations; got {x.dtype}")
    if x.is_cuda:
        return _through_triton_op(x, weight, scheme, block)
    return _through_interpreter(x, weight, scheme, block)


def reference(x: torch.Tensor, weight: tuple, scheme: str = "int8", block: int = 64) -> torch.Tensor:
    """The float64 formula on any inputs (the fuzz cases' oracle): x and W's float tensors upcast."""
    upcast = tuple(t.to(torch.float64) if t.is_floating_point() else t for t in weight)
    return kernel(x.to(torch.float64), upcast, scheme, block)


def _through_triton_op(x: torch.Tensor, weight: tuple, scheme: str, block: int) -> torch.Tensor:
    from impl.kernels import ops

    record = by_short(scheme)
    operands = (*weight, *[None] * (len(record.operands) - len(weight)))
    return ops.op_of(scheme)(x, *ops.op_arguments(scheme, operands, (block,) * len(record.ints)))


# Dynamo would trace into Triton's interpreter (numpy on pointers) and fail: the interpreted
# launch is an opaque op instead, one node in the graph (its fake gives Dynamo the shape).
@torch.library.custom_op("suites::woq_mm_interpreted", mutates_args=())
def woq_mm_interpreted(x: torch.Tensor, weight: list[torch.Tensor], scheme: str, block: int) -> torch.Tensor:
    """y (M, N) from the scheme's kernel run by Triton's interpreter; ``weight`` as the layout's tuple."""
    kernels.use_interpreter()  # no-op once active; the cell's mark made sure it may switch
    from impl.kernels import ops

    record = by_short(scheme)
    operands = (*weight, *[None] * (len(record.operands) - len(weight)))
    launcher = ops.kernel_module(scheme).LAUNCHER
    return launcher.eager_launch(x, *launcher.op_arguments(operands, (block,) * len(record.ints)))


@woq_mm_interpreted.register_fake
def _(x: torch.Tensor, weight: list[torch.Tensor], scheme: str, block: int) -> torch.Tensor:
    return x.new_empty((x.shape[0], weight[0].shape[0]))


def _through_interpreter(x: torch.Tensor, weight: tuple, scheme: str, block: int) -> torch.Tensor:
    return woq_mm_interpreted(x, list(weight), scheme, block)
