"""The weight-only matmul kernels as ``torch.library.triton_op``s, so Inductor emits them.

    torch.ops.impl.woq_mm_int8_triton(x, qweight, scale)                   -> (M, N)
    torch.ops.impl.woq_mm_int4_triton(x, qweight, scale, zero, group_size) -> (M, N)
    torch.ops.impl.woq_mm_nf4_triton(x, qweight, absmax, block_size)       -> (M, N)

Layouts and shapes as in impl/kernels/woq_mm_<scheme>.py (x (M, K) float16/bfloat16). A
triton_op is traced, not treated as opaque: under torch.compile Inductor copies each
``wrap_triton`` kernel into its output code and launches it from there, where a plain
custom op would stay a call into Python. The bodies therefore use only traceable
operations: tensors come from ``new_empty``/``new_zeros``/``torch.tensor`` (no cached
buffers), and the split-K tile counters are allocated zeroed on every call.

Import this module only where triton is importable; it raises ImportError otherwise.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.library import triton_op, wrap_triton

from impl.kernels import woq_mm_int4 as int4
from impl.kernels import woq_mm_int8 as int8
from impl.kernels import woq_mm_nf4 as nf4
from impl.kernels.common import (
    SplitKScratch,
    check_activation,
    check_tensor,
    nibble_lut_values,
    nibble_pair_values,
    nibble_tables_of,
)

NAMESPACE = "impl"


def _int32_constant(values: tuple, like: torch.Tensor) -> torch.Tensor:
    """A small int32 table (Python ints) as an in-graph constant on ``like``'s device."""
    return torch.tensor(values, dtype=torch.int32, device=like.device)


def _scratch(M: int, N: int, config, x: torch.Tensor):
    return SplitKScratch.buffers(M, N, config, x.device, fresh_counters=True)


def woq_mm_int8_body(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """y (M, N) = x (M, K) @ (qweight (N, K) int8 * scale (N,) fp32 [:, None]).T."""
    N, K = qweight.shape
    check_activation(x, K, int8.OP)
    check_tensor(qweight, "qweight", (N, K), torch.int8, x.device, int8.OP)
    check_tensor(scale, "scale", (N,), torch.float32, x.device, int8.OP)
    M = int(x.shape[0])
    config = int8.choose_config(M, N, K, x.device)
    out = x.new_empty((M, N))
    partial, counter = _scratch(M, N, config, x)
    return int8.launch_woq_mm_int8(x, qweight, scale, out, partial, counter, config,
                                   wrap=wrap_triton)


def woq_mm_int4_body(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                       group_size: int) -> torch.Tensor:
    """y (M, N) = x (M, K) @ W.T, W from the int4 group-wise layout (woq_mm_int4)."""
    N, _ = int4.check_int4_weight(x, qweight, scale, zero, group_size)
    M, K = int(x.shape[0]), int(x.shape[1])
    config = int4.choose_config(M, N, K, group_size, x.device)
    out = x.new_empty((M, N))
    partial, counter = _scratch(M, N, config, x)
    # Built on the device from arange (levels 0..15): a torch.tensor of Python ints would be a
    # host-to-device copy, which a CUDA graph cannot capture (max-autotune times us that way).
    levels = torch.arange(len(int4.INT4_LEVELS), dtype=torch.float32, device=x.device)
    table, _ = nibble_tables_of(levels, x.dtype)
    return int4.launch_woq_mm_int4(x, qweight, scale, zero, table, out, partial, counter, group_size, config,
                                   wrap=wrap_triton)


def woq_mm_nf4_body(x: torch.Tensor, qweight: torch.Tensor, absmax: torch.Tensor, block_size: int,
                    levels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y (M, N) = x (M, K) @ W.T, W from the NF4 layout with float32 absmax (woq_mm_nf4).

    ``levels`` (16,) float32: the code table; None means the standard NF4 table. A tensor is
    decoded into the kernel's tables on the device (no host sync, CUDA-graph safe)."""
    N, _ = nf4.check_nf4_weight(x, qweight, absmax, block_size)
    M, K = int(x.shape[0]), int(x.shape[1])
    config = nf4.choose_config(M, N, K, block_size, x.device)
    out = x.new_empty((M, N))
    partial, counter = _scratch(M, N, config, x)
    if levels is None:
        table = _int32_constant(nibble_pair_values(nf4.NF4_LEVELS, x.dtype), x)
        lut = _int32_constant(nibble_lut_values(nf4.NF4_LEVELS, x.dtype), x)
    else:
        check_tensor(levels, "levels", (len(nf4.NF4_LEVELS),), torch.float32, x.device, nf4.OP)
        table, lut = nibble_tables_of(levels, x.dtype)
    return nf4.launch_woq_mm_nf4(x, qweight, absmax, None, None, table, lut, out, partial, counter, block_size,
                                 config, wrap=wrap_triton)


# The bodies stay callable on their own: traced without functionalization (make_fx), a body
# records each launch as a triton_kernel_wrapper_mutation node, which Inductor lowers into
# its output code (impl/lowerings/woq_mm_cuda.py inlines them into the fused ops' lowering).
BODIES = {"int8": woq_mm_int8_body, "int4": woq_mm_int4_body, "nf4": woq_mm_nf4_body}
woq_mm_int8_triton = triton_op(f"{NAMESPACE}::woq_mm_int8_triton", mutates_args=())(woq_mm_int8_body)
woq_mm_int4_triton = triton_op(f"{NAMESPACE}::woq_mm_int4_triton", mutates_args=())(woq_mm_int4_body)
woq_mm_nf4_triton = triton_op(f"{NAMESPACE}::woq_mm_nf4_triton", mutates_args=())(woq_mm_nf4_body)

OPS = {
    "int8": torch.ops.impl.woq_mm_int8_triton,
    "int4": torch.ops.impl.woq_mm_int4_triton,
    "nf4": torch.ops.impl.woq_mm_nf4_triton,
}

__all__ = ["BODIES", "OPS", "woq_mm_int4_triton", "woq_mm_int8_triton", "woq_mm_nf4_triton"]
