"""CUDA lowering of the fused weight-only matmuls: our Triton kernels, in Inductor's output code.

Left as a fallback, ``torch.ops.impl.woq_mm_<scheme>`` would stay an opaque call into
Python on CUDA. Instead the call is traced through the kernels' ``torch.library.triton_op``
registrations (``impl.lowerings.triton``): the trace holds the kernel launch as a
user-defined Triton kernel, which Inductor copies into its output code and launches from
there, beside the reshapes and the bias add it fuses around it.

Applies to float16 / bfloat16 activations (what the kernels take) and, for NF4, a levels
operand that is a compile-time constant equal to the standard table (the kernel decodes
that table only), with static shapes (a tile config is chosen per shape). Anything else
returns None and the caller falls back to the op, which launches the same kernels from
Python.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch._inductor import ir
from torch._inductor.virtualized import V

from .. import kernels, woq_mm
from ..schemes import nf4 as nf4_scheme
from .woq_mm_cpu import constant_value, fake_value, inline_decomposition

def _launch(name: str, x: torch.Tensor, bias: Optional[torch.Tensor], *weight_args: Any) -> torch.Tensor:
    """woq_mm._through_triton with the kernel's body in place of its triton_op (traced, not called)."""
    from . import triton as triton_lowerings

    flat = x.reshape(-1, x.shape[-1]).contiguous()
    y = triton_lowerings.BODIES[name](flat, *weight_args)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], y.shape[-1])


def _kernel_call(scheme: str, fx_args: list) -> Optional[tuple[list[int], Any]]:
    """(positions of the tensor operands the traced function takes, the function), or None."""
    if scheme == "int8_weight_only":
        return [0, 1, 2, 3], lambda x, q, s, b: _launch("int8", x, b, q.contiguous(), s.contiguous())
    if scheme == "int4_weight_only":
        group_size = fx_args[5]
        return [0, 1, 2, 3, 4], lambda x, q, s, z, b: _launch(
            "int4", x, b, q.contiguous(), s.contiguous(), z.contiguous(), group_size
        )
    if scheme == "nf4":
        levels = constant_value(fx_args[3])
        if levels is None or not torch.equal(levels.cpu(), nf4_scheme.nf4_levels(torch.device("cpu"))):
            return None
        block_size = fx_args[7]

        def nf4(x, q, absmax, absmax_scale, absmax_offset, b):
            float_absmax = woq_mm.decode_absmax(absmax, absmax_scale, absmax_offset).contiguous()
            return _launch("nf4", x, b, q.contiguous(), float_absmax, block_size)

        return [0, 1, 2, 4, 5, 6], nf4
    return None


def lower_through_triton(scheme: str, args: tuple) -> Optional[Any]:
    """The fused op lowered to our Triton kernel, or None where the kernel does not apply."""
    node = V.graph.current_node
    fx_args = list(node.args) + [None] * (len(args) - len(node.args))
    x = fake_value(fx_args[0])
    if x.dtype not in woq_mm.TRITON_ACTIVATION_DTYPES or not kernels.triton_available():
        return None
    if any(isinstance(d, torch.SymInt) for d in x.shape):
        return None  # the kernels pick their tile configs from concrete sizes
    call = _kernel_call(scheme, fx_args)
    if call is None:
        return None
    positions, fn = call
    present = [i for i in positions if isinstance(args[i], ir.IRNode)]
    inputs = [args[i] for i in present]
    fakes = [fake_value(fx_args[i]) for i in present]

    def traced(*tensors: torch.Tensor) -> torch.Tensor:
        call_args = {i: None for i in positions}
        call_args.update(zip(present, tensors))
        return fn(*(call_args[i] for i in positions))

    return inline_decomposition(traced, inputs, fakes)
