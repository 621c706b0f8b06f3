"""The weight-only matmul kernels as ``torch.library.triton_op``s, so Inductor emits them.

    torch.ops.impl.woq_mm_int8_triton(x, qweight, scale)                   -> (M, N)
    torch.ops.impl.woq_mm_int4_triton(x, qweight, scale, zero, group_size) -> (M, N)
    torch.ops.impl.woq_mm_nf4_triton(x, qweight, absmax, block_size[, levels, absmax_scale,
                                     absmax_offset])                       -> (M, N)

One op ``woq_mm_<short>_triton`` for each scheme of ``impl.schemes.registry``, as it
registers, from the scheme's kernel module (the record's ``kernel``: a module of this
package by its bare name, or any module by its dotted path). A kernel module provides:

- ``op_body(x, ...)``: the op (its schema inferred from the annotations);
- ``LAUNCHER``, its ``launch.WeightOnlyLauncher``: ``traced_body`` (op_body's launch taking
  ``config=``, ``tile_counter=`` and its decode tables by keyword: what the CUDA lowering
  traces), ``eager_launch`` (op_body's signature and ``config=None``, eager: what the
  max-autotune contest and tools/ time), ``op_arguments(operands, ints)`` (the fused op's
  weight operands and ints, ``impl.woq_mm``'s order, as ``op_body`` takes them after x),
  ``config_for(M, N, K, ints, device)`` (the tile config) and ``fixed_tables(dtype, device)``
  (decode tables the lowering makes graph constants, by ``traced_body``'s keyword).

Layouts and shapes as in impl/kernels/woq_mm_<scheme>.py (x (M, K) float16/bfloat16). A
triton_op is traced, not treated as opaque: under torch.compile Inductor copies each
``wrap_triton`` kernel into its output code and launches it from there, where a plain
custom op would stay a call into Python. The bodies therefore use only traceable
operations: outputs and scratch come from ``new_empty``/``torch.zeros`` (the split-K tile
counters are allocated zeroed on every call unless the caller hands in a zeroed buffer,
which the kernel leaves zeroed: the CUDA lowering passes a graph constant).

Import this module only where triton is importable; it raises ImportError otherwise.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable, Optional

import torch
from torch.library import triton_op

from ..schemes.registry import WeightOnlyScheme, by_short, on_register
from .common import M_BUCKETS

NAMESPACE = "impl"
_PACKAGE = __name__.rpartition(".")[0]
_OPS: dict[str, Any] = {}
# Imported once, at registration: a program under torch.compile calls op_arguments, and
# Dynamo breaks the graph at importlib.import_module (a function it skips).
_MODULES: dict[str, ModuleType] = {}


def kernel_module(short: str) -> ModuleType:
    """The kernel module of the scheme whose short name is ``short``."""
    module = _MODULES.get(short)
    if module is None:
        name = by_short(short).kernel
        module = _MODULES[short] = importlib.import_module(name if "." in name else f"{_PACKAGE}.{name}")
    return module


def _define(scheme: WeightOnlyScheme) -> None:
    if scheme.short not in _OPS:
        body = kernel_module(scheme.short).op_body
        triton_op(f"{NAMESPACE}::woq_mm_{scheme.short}_triton", mutates_args=())(body)
        _OPS[scheme.short] = getattr(torch.ops.impl, f"woq_mm_{scheme.short}_triton")


def op_of(short: str):
    """The triton_op of the scheme whose short name is ``short``."""
    return _OPS[short]


def op_arguments(short: str, operands: tuple, ints: tuple) -> tuple:
    """A fused op's weight operands and ints as the scheme's triton_op and traced body take
    them after x, each unit-stride."""
    tensors = tuple(None if t is None else t.contiguous() for t in operands)
    return kernel_module(short).LAUNCHER.op_arguments(tensors, tuple(ints))


def traced_body(short: str) -> Callable[..., torch.Tensor]:
    """The scheme's launch as the CUDA lowering traces it (``config=``, ``tile_counter=``, tables)."""
    return kernel_module(short).LAUNCHER.traced_body


def choose_config(short: str, M: int, N: int, K: int, block: Optional[int], device: torch.device):
    """The kernel's tile config for an (M, K) x and N outputs; ``block``: the scheme's one int
    (int4's group size, NF4's block size), None for a scheme without."""
    return kernel_module(short).LAUNCHER.config_for(M, N, K, () if block is None else (block,), device)


on_register(_define)  # every scheme's triton_op, those registered later included

__all__ = ["M_BUCKETS", "choose_config", "kernel_module", "op_arguments", "op_of", "traced_body"]
