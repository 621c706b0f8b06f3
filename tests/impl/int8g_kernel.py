"""The Triton kernel of tests/impl/int8g_scheme.py's scheme, with what impl.kernels.ops asks of
a kernel module (op_body, traced_body, op_arguments, config_for, fixed_tables, eager_launch).

    y (M, N) = x (M, K) @ W.T,  W[n, k] = qweight[n, k] * scale[n, k // G]

A plain tile loop, one group a step: the point is the plumbing, not the speed.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from impl.kernels.common import KernelConfig

CONFIG = KernelConfig(block_m=16, block_n=32, block_k=32, num_warps=4, num_stages=1)


@triton.jit
def woq_mm_int8g_kernel(x_ptr, q_ptr, s_ptr, y_ptr, M, N, K, stride_xm, stride_qn, stride_sn, stride_ym,
                        GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, GROUP)
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)  # builtins only (see impl/kernels/common.py)
    for g in range(0, K // GROUP):
        k = g * GROUP + rk
        x = tl.load(x_ptr + rm[:, None] * stride_xm + k[None, :], mask=rm[:, None] < M, other=0.0)
        q = tl.load(q_ptr + rn[None, :] * stride_qn + k[:, None], mask=rn[None, :] < N, other=0)
        s = tl.load(s_ptr + rn * stride_sn + g, mask=rn < N, other=0.0)
        acc += tl.dot(x.to(tl.float32), q.to(tl.float32)) * s[None, :]
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


def traced_body(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, group_size: int, *, config=None,
                tile_counter: Optional[torch.Tensor] = None, wrap=wrap_triton) -> torch.Tensor:
    M, N, K = x.shape[0], qweight.shape[0], qweight.shape[1]
    out = x.new_empty((M, N))
    grid = (-(-M // CONFIG.block_m), -(-N // CONFIG.block_n))
    kernel = woq_mm_int8g_kernel if wrap is None else wrap(woq_mm_int8g_kernel)
    kernel[grid](x, qweight, scale, out, M, N, K, x.stride(0), qweight.stride(0), scale.stride(0), out.stride(0),
                 GROUP=group_size, BLOCK_M=CONFIG.block_m, BLOCK_N=CONFIG.block_n)
    return out


def op_body(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, group_size: int) -> torch.Tensor:
    return traced_body(x, qweight, scale, group_size)


def op_arguments(operands: tuple, ints: tuple) -> tuple:
    return (*operands, *ints)


def config_for(M: int, N: int, K: int, ints: tuple, device: torch.device) -> KernelConfig:
    return CONFIG


def fixed_tables(dtype: torch.dtype, device: torch.device) -> dict:
    return {}


def eager_launch(x, qweight, scale, group_size, config=None):
    return traced_body(x, qweight, scale, group_size, config=config, wrap=None)
