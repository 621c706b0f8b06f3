"""The weight-only matmul kernels as ``torch.library.triton_op``s, so Inductor emits them.

    torch.ops.impl.woq_mm_int8_triton(x, qweight, scale)                   -> (M, N)
    torch.ops.impl.woq_mm_int4_triton(x, qweight, scale, zero, group_size) -> (M, N)
    torch.ops.impl.woq_mm_nf4_triton(x, qweight, absmax, block_size[, levels, absmax_scale,
                                     absmax_offset])                       -> (M, N)

``op_arguments(short, operands, ints)`` arranges a fused op's weight operands and ints
(``impl.woq_mm``'s order) as the scheme's triton_op takes them; ``op_of(short)`` is the op.
Layouts and shapes as in impl/kernels/woq_mm_<scheme>.py (x (M, K) float16/bfloat16). A
triton_op is traced, not treated as opaque: under torch.compile Inductor copies each
``wrap_triton`` kernel into its output code and launches it from there, where a plain
custom op would stay a call into Python. The bodies therefore use only traceable
operations: outputs and scratch come from ``new_empty``/``torch.zeros`` (the split-K tile
counters are allocated zeroed on every call unless the caller hands in a zeroed buffer,
which the kernel leaves zeroed: the CUDA lowering passes a graph constant). The fixed decode tables are the device's
cached copies when a body runs eagerly; traced, int4's is built on the device unless the
caller hands it in (the CUDA lowering passes a graph constant), NF4's standard ones are
in-graph constants.

Import this module only where triton is importable; it raises ImportError otherwise.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch._guards import detect_fake_mode
from torch.library import triton_op, wrap_triton

from . import woq_mm_int4 as int4
from . import woq_mm_int8 as int8
from . import woq_mm_nf4 as nf4
from .common import (
    M_BUCKETS,
    SplitKScratch,
    check_activation,
    check_tensor,
    nibble_lut_values,
    nibble_lut_words,
    nibble_lut_words_of,
    nibble_pair_table,
    nibble_pair_table_of,
    nibble_pair_values,
)

NAMESPACE = "impl"


def _standard_nf4_tables(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The NF4 kernel's decode tables of the standard levels in x's dtype: the device's cached
    copies when run eagerly (no host-to-device copy a call); traced, in-graph constants."""
    if detect_fake_mode((x,)) is None:
        return (nibble_pair_table(nf4.NF4_LEVELS, x.dtype, x.device),
                nibble_lut_words(nf4.NF4_LEVELS, x.dtype, x.device))
    return tuple(torch.tensor(values(nf4.NF4_LEVELS, x.dtype), dtype=torch.int32, device=x.device)
                 for values in (nibble_pair_values, nibble_lut_values))


def _scratch(M, N: int, config, x: torch.Tensor, tile_counter: Optional[torch.Tensor]):
    """(partial, tile_counter). ``tile_counter``: zeroed int32 with a counter for every tile
    (the kernel leaves it zeroed), or None to allocate zeros here, a fill kernel a call. A
    launch without split-K reads neither: the given buffer stands in for both pointers."""
    if tile_counter is None:
        return SplitKScratch.buffers(M, N, config, x.device, fresh_counters=True)
    if config.split_k == 1:
        return tile_counter.view(torch.float32), tile_counter
    return torch.empty((config.split_k, M, N), device=x.device, dtype=torch.float32), tile_counter


def _rows(x: torch.Tensor, config) -> Any:
    """x's row count: an int where the body picks its config from it; as given (an int or, in
    a trace with a symbolic batch, a SymInt) where the caller picked the config for M's bucket."""
    return int(x.shape[0]) if config is None else x.shape[0]


def choose_config(name: str, M: int, N: int, K: int, block: Optional[int], device: torch.device):
    """The kernel's tile config for an (M, K) x and N outputs; ``block``: int4's group size or
    NF4's block size (None for int8)."""
    if name == "int8":
        return int8.choose_config(M, N, K, device)
    return {"int4": int4.choose_config, "nf4": nf4.choose_config}[name](M, N, K, block, device)


def woq_mm_int8_body(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, *, config=None,
                     tile_counter: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y (M, N) = x (M, K) @ (qweight (N, K) int8 * scale (N,) fp32 [:, None]).T.
    ``config``: the tile config (None: chosen from M); ``tile_counter``: see _scratch."""
    N, K = qweight.shape
    check_activation(x, K, int8.OP)
    check_tensor(qweight, "qweight", (N, K), torch.int8, x.device, int8.OP)
    check_tensor(scale, "scale", (N,), torch.float32, x.device, int8.OP)
    M = _rows(x, config)
    config = config or int8.choose_config(M, N, K, x.device)
    out = x.new_empty((M, N))
    partial, counter = _scratch(M, N, config, x, tile_counter)
    return int8.launch_woq_mm_int8(x, qweight, scale, out, partial, counter, config,
                                   wrap=wrap_triton)


def int4_pair_table(x: torch.Tensor) -> torch.Tensor:
    """The int4 kernel's decode table (nibble_pair_table of the levels 0..15 in x's dtype).
    Run eagerly: the device's cached copy. Traced: built on the device from arange, one small
    kernel a call (a torch.tensor of Python ints would be a host-to-device copy a call, which
    a CUDA graph cannot capture); the CUDA lowering hands the body a graph constant instead."""
    if detect_fake_mode((x,)) is None:
        return nibble_pair_table(int4.INT4_LEVELS, x.dtype, x.device)
    levels = torch.arange(len(int4.INT4_LEVELS), dtype=torch.float32, device=x.device)
    return nibble_pair_table_of(levels, x.dtype)


def woq_mm_int4_body(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                     group_size: int, pair_table: Optional[torch.Tensor] = None, *, config=None,
                     tile_counter: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y (M, N) = x (M, K) @ W.T, W from the int4 group-wise layout (woq_mm_int4).
    ``pair_table``: the decode table, made by int4_pair_table when None; ``config``,
    ``tile_counter``: as for woq_mm_int8_body."""
    N, _ = int4.check_int4_weight(x, qweight, scale, zero, group_size)
    M, K = _rows(x, config), int(x.shape[1])
    config = config or int4.choose_config(M, N, K, group_size, x.device)
    out = x.new_empty((M, N))
    partial, counter = _scratch(M, N, config, x, tile_counter)
    table = int4_pair_table(x) if pair_table is None else pair_table
    return int4.launch_woq_mm_int4(x, qweight, scale, zero, table, out, partial, counter, group_size, config,
                                   wrap=wrap_triton)


# The ops' schemas leave out what only the lowering hands in (int4's table, config, counters).
def _int8_op_body(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return woq_mm_int8_body(x, qweight, scale)


def _int4_op_body(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                  group_size: int) -> torch.Tensor:
    return woq_mm_int4_body(x, qweight, scale, zero, group_size)


def _nf4_op_body(x: torch.Tensor, qweight: torch.Tensor, absmax: torch.Tensor, block_size: int,
                 levels: Optional[torch.Tensor] = None, absmax_scale: Optional[torch.Tensor] = None,
                 absmax_offset: Optional[torch.Tensor] = None) -> torch.Tensor:
    return woq_mm_nf4_body(x, qweight, absmax, block_size, levels, absmax_scale, absmax_offset)


def woq_mm_nf4_body(x: torch.Tensor, qweight: torch.Tensor, absmax: torch.Tensor, block_size: int,
                    levels: Optional[torch.Tensor] = None, absmax_scale: Optional[torch.Tensor] = None,
                    absmax_offset: Optional[torch.Tensor] = None, *, config=None,
                    tile_counter: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y (M, N) = x (M, K) @ W.T, W from the NF4 layout (woq_mm_nf4): absmax float32, or its
    uint8 codes with absmax_scale and absmax_offset (double quantization, decoded in the kernel).
    ``config``, ``tile_counter``: as for woq_mm_int8_body.

    ``levels`` (16,) float32: the code table; None means the standard NF4 table. A tensor is
    decoded into the kernel's tables on the device (no host sync, CUDA-graph safe)."""
    N, _ = nf4.check_nf4_weight(x, qweight, absmax, block_size, absmax_scale, absmax_offset)
    M, K = _rows(x, config), int(x.shape[1])
    config = config or nf4.choose_config(M, N, K, block_size, x.device)
    out = x.new_empty((M, N))
    partial, counter = _scratch(M, N, config, x, tile_counter)
    if levels is None:
        table, lut = _standard_nf4_tables(x)
    else:
        check_tensor(levels, "levels", (len(nf4.NF4_LEVELS),), torch.float32, x.device, nf4.OP)
        # The launch reads one of the two tables (by its decode route): only that one is built,
        # one small kernel a layer once compiled; the other pointer goes unread.
        build = nibble_lut_words_of if nf4.decode_of(config) == "prmt" else nibble_pair_table_of
        table = lut = build(levels, x.dtype)
    return nf4.launch_woq_mm_nf4(x, qweight, absmax, absmax_scale, absmax_offset, table, lut, out, partial,
                                 counter, block_size, config, wrap=wrap_triton)


# The bodies stay callable on their own: traced without functionalization (make_fx), a body
# records each launch as a triton_kernel_wrapper_mutation node, which Inductor lowers into
# its output code (impl/lowerings/woq_mm_cuda.py inlines them into the fused ops' lowering).
BODIES = {"int8": woq_mm_int8_body, "int4": woq_mm_int4_body, "nf4": woq_mm_nf4_body}
woq_mm_int8_triton = triton_op(f"{NAMESPACE}::woq_mm_int8_triton", mutates_args=())(_int8_op_body)
woq_mm_int4_triton = triton_op(f"{NAMESPACE}::woq_mm_int4_triton", mutates_args=())(_int4_op_body)
woq_mm_nf4_triton = triton_op(f"{NAMESPACE}::woq_mm_nf4_triton", mutates_args=())(_nf4_op_body)

OPS = {
    "int8": torch.ops.impl.woq_mm_int8_triton,
    "int4": torch.ops.impl.woq_mm_int4_triton,
    "nf4": torch.ops.impl.woq_mm_nf4_triton,
}


def op_of(short: str):
    """The triton_op of the scheme whose short name is ``short``."""
    return OPS[short]


def op_arguments(short: str, operands: tuple, ints: tuple) -> tuple:
    """A fused op's weight operands and ints (``impl.woq_mm``'s order: NF4's qweight, absmax,
    levels, absmax_scale, absmax_offset, then block_size) as the triton_op and its body take
    them after x, each unit-stride. NF4's double-quantized absmax goes as codes: decoding it
    first would be a kernel of its own and four bytes a block read back instead of one."""
    tensors = tuple(None if t is None else t.contiguous() for t in operands)
    if short == "nf4":
        qweight, absmax, levels, absmax_scale, absmax_offset = tensors
        return (qweight, absmax, *ints, levels, absmax_scale, absmax_offset)
    return (*tensors, *ints)


__all__ = ["BODIES", "M_BUCKETS", "OPS", "choose_config", "op_arguments", "op_of", "woq_mm_int4_triton", "woq_mm_int8_triton",
           "woq_mm_nf4_triton"]
