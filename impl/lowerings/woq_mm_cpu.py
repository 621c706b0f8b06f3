"""CPU lowerings of the fused weight-only matmuls (``torch.ops.impl.woq_mm_<scheme>``).

Each lowering flattens x (..., K) to (M, K), picks an implementation, adds the bias and
restores the leading dims. The implementations:

``gemv`` (decode: M <= ``GEMV_MAX_M`` = 16, every scheme and activation dtype, freezing on or off)
    Our kernels (``impl.lowerings.woq_gemv_cpu``): the packed weight decoded in registers,
    read once a call, never materialized. Where M is symbolic and its hint is a decode size
    (a graph recompiled for a dynamic batch), the call checks the actual M and past 16 rows
    takes the panel route below, so one graph is right at any M.
``panel`` (past 16 rows, every scheme and activation dtype, freezing on or off)
    ``impl.lowerings.woq_panel_cpu``: the weight decoded a cache-sized panel of rows at a time
    by our kernel, each panel multiplied by ATen's GEMM (float32 unless the host has native
    bfloat16 / float16 dot products), so the decoded weight never goes through DRAM. Measured
    with ``tools/bench_woq_cpu.py`` (``benchmarks/cpu.md``): the inlined decomposition took
    0.47-0.52x of the dense model's time in float32 prefill; the ATen kernels below were
    slower than this route in bfloat16 on the AVX2 host (oneDNN's bfloat16 GEMM there is
    emulated, so the float32 GEMM on the decoded panel is also ~5x faster than dense bf16).
``aten`` and ``decomposition`` (past 16 rows, under ``max_autotune`` only)
    int8: ``aten._weight_int8pack_mm(x, qweight, scale)``, scale cast to x's dtype (the
    kernel wants them equal). int4: ``aten._weight_int4pack_mm_for_cpu`` on a weight
    repacked at compile time by ``aten._convert_weight_to_int4pack_for_cpu``, which needs
    the weight tensors to be constants (``torch._inductor.config.freezing = True``) and
    N % 16 == 0; x is zero-padded to K_pad. Its convention is
    W = (u - 8) * scale + offset, so offset = (8 - zero) * scale (our W = (u - zero) * scale),
    both stored in x's dtype. NF4 has no ATen kernel. The bfloat16 int8 kernel has a
    contract it does not check; ``_int8pack_mm`` meets it on every x86 host (see
    ``INT8PACK_BF16_K_MULTIPLE``), so the same kernel is chosen whatever the host.
    The decomposition: the op's own formula (the scheme record's ``formula``
    + ``F.linear``) traced and inlined, so Inductor generates the dequantization loop and
    picks its own GEMM. With ``max_autotune`` (or ``max_autotune_gemm``) these and the panel
    route are benchmarked through ``autotune_select_algorithm`` (the decomposition as a
    subgraph choice where this torch has them, ``compat.subgraph_choice``), like PyTorch's
    ``quantized_lowerings``. At decode sizes the gemv kernels are taken in every mode: the
    weight traffic they save is the whole point there.

On CUDA, ``impl.lowerings.woq_mm_cuda`` inlines our Triton kernels where they apply; other
devices (and CUDA cases the kernels do not take) fall back to the op's own implementation.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch._inductor import ir
from torch._inductor.lowering import lowerings
from torch._inductor.select_algorithm import ExternKernelChoice
from torch._inductor.virtualized import V

from .. import compat
from . import woq_gemv_cpu, woq_panel_cpu
from .common import constant_value, dense, fake_value, flat_fake, inline_decomposition, max_autotune
from .woq_gemv_cpu import GEMV_MAX_M
from ..schemes.common import round_up, unpack_nibbles
from ..schemes.registry import INT4, INT8, NF4, SCHEMES

aten = torch.ops.aten
prims = torch.ops.prims

# The bfloat16 _weight_int8pack_mm (aten/src/ATen/native/cpu/int8mm_kernel.cpp, torch 2.11 and
# 2.13) steps K by one vector without a tail: 16 on AVX-512 (also with AVX512-BF16/VNNI and AMX,
# which have no path of their own), 8 on AVX2; and it loads x rows with aligned loads
# (_mm256_load_si256 on AVX-512, _mm_load_si128 on AVX2) and weight rows with _mm_load_si128.
# Off that contract it reads past each row (wrong numbers at M = 1, a segfault at M > 1) or
# faults on a misaligned row. float32 / float16 take a scalar loop there and need neither.
# So _int8pack_mm zero-pads K to a multiple of 16 and copies a misaligned operand: the widest
# step and alignment of any x86 path.
INT8PACK_BF16_K_MULTIPLE = 16
INT8PACK_BF16_ALIGN_BYTES = 32
INT4_PACK_N_MULTIPLE = 16  # _convert_weight_to_int4pack_for_cpu: N % 16 == 0
INT4_INNER_K_TILES = 2
INT4_CODE_OFFSET = 8  # the CPU int4 kernel decodes (u - 8) * scale + offset


def _int8pack_mm(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The int8 ATen kernel on our operands (it wants the scale in x's dtype).

    For bfloat16, x and qweight are first brought to the kernel's unchecked contract
    (``INT8PACK_BF16_K_MULTIPLE``): K zero-padded (zeros add nothing to the sums) and each
    operand 32-byte aligned. Both are no-ops on the usual shapes: K a multiple of 16, fresh
    buffers (the CPU allocator aligns to 64 bytes). Otherwise each call copies the int8
    weight once, still less traffic than the decomposition's dequantized weight.
    """
    if x.dtype == torch.bfloat16:
        k_pad = round_up(x.shape[1], INT8PACK_BF16_K_MULTIPLE) - x.shape[1]
        if k_pad:
            x, qweight = F.pad(x, (0, k_pad)), F.pad(qweight, (0, k_pad))
        x, qweight = _aligned(x), _aligned(qweight)
    return torch.ops.aten._weight_int8pack_mm(x, qweight, scale.to(x.dtype))


def _aligned(t: torch.Tensor) -> torch.Tensor:
    if t.data_ptr() % INT8PACK_BF16_ALIGN_BYTES == 0:
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _int4pack_mm(x, qweight, scale, zero, packed, scales_and_offsets, *, group_size: int) -> torch.Tensor:
    """The int4 ATen kernel on the compile-time repacked weight (``packed``,
    ``scales_and_offsets``); qweight, scale, zero are the decomposition's and unused here."""
    k_pad = 2 * qweight.shape[1]
    if x.shape[1] != k_pad:
        x = F.pad(x, (0, k_pad - x.shape[1]))
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group_size, scales_and_offsets)


_INT8_CHOICE = ExternKernelChoice(_int8pack_mm, name="impl_woq_int8pack_mm", has_out_variant=False)
_INT4_CHOICE = ExternKernelChoice(_int4pack_mm, name="impl_woq_int4pack_mm_cpu", has_out_variant=False)


def _gemv_int8(x, qweight, scale, *, any_m: bool) -> torch.Tensor:
    """Decode: our kernel (``woq_gemv_cpu``). ``any_m`` (x's rows symbolic at compile time):
    past ``GEMV_MAX_M`` rows, the panel route instead."""
    if any_m and x.shape[0] > GEMV_MAX_M:
        return woq_panel_cpu.mm_int8(x, qweight, scale)
    return woq_gemv_cpu.gemv_int8(x, qweight, scale)


def _gemv_int4(x, qweight, scale, zero, *, group_size: int, any_m: bool) -> torch.Tensor:
    if any_m and x.shape[0] > GEMV_MAX_M:
        return woq_panel_cpu.mm_int4(x, qweight, scale, zero, group_size=group_size)
    return woq_gemv_cpu.gemv_int4(x, qweight, scale, zero, group_size=group_size)


def _gemv_nf4(x, qweight, absmax, levels, *double_quant, block_size: int, any_m: bool) -> torch.Tensor:
    """``double_quant``: (absmax_scale, absmax_offset), or nothing without double quantization."""
    absmax_scale, absmax_offset = double_quant or (None, None)
    if any_m and x.shape[0] > GEMV_MAX_M:
        return woq_panel_cpu.mm_nf4(x, qweight, absmax, levels, absmax_scale, absmax_offset, block_size=block_size)
    return woq_gemv_cpu.gemv_nf4(x, qweight, absmax, levels, absmax_scale, absmax_offset, block_size=block_size)


# Our decode kernels, by scheme name; a scheme without one takes the decomposition at every M.
_GEMV_CHOICES = {
    scheme.name: ExternKernelChoice(gemv, name=f"impl_woq_gemv_{scheme.short}_cpu", has_out_variant=False)
    for scheme, gemv in ((INT8, _gemv_int8), (INT4, _gemv_int4), (NF4, _gemv_nf4))
}


def _panel_int8(x, qweight, scale) -> torch.Tensor:
    return woq_panel_cpu.mm_int8(x, qweight, scale)


def _panel_int4(x, qweight, scale, zero, *aten_constants, group_size: int) -> torch.Tensor:
    """``aten_constants``: the ATen kernel's repacked weight where the lowering added it for
    autotuning (every choice of one autotuned call takes the same inputs); unused here."""
    return woq_panel_cpu.mm_int4(x, qweight, scale, zero, group_size=group_size)


def _panel_nf4(x, qweight, absmax, levels, *double_quant, block_size: int) -> torch.Tensor:
    absmax_scale, absmax_offset = double_quant or (None, None)
    return woq_panel_cpu.mm_nf4(x, qweight, absmax, levels, absmax_scale, absmax_offset, block_size=block_size)


# Our prefill kernels (a panel of the weight decoded at a time, then a GEMM), by scheme name; a
# scheme without one takes the decomposition past 16 rows.
_PANEL_CHOICES = {
    scheme.name: ExternKernelChoice(panel, name=f"impl_woq_panel_{scheme.short}_cpu", has_out_variant=False)
    for scheme, panel in ((INT8, _panel_int8), (INT4, _panel_int4), (NF4, _panel_nf4))
}


# --------------------------------------------------------------------------- the lowering


class _Lowering:
    """One call of a fused op's lowering.

    ``inputs``: the IR tensors every implementation takes, x flattened to (M, K) first
    (int4 with a repacked weight adds the ATen kernel's two constants at the end);
    ``dense(*inputs)``: the decomposition on them, without bias; ``aten``: the ATen kernel's
    choice and keyword constants, or None where it does not apply.
    """

    def __init__(self, scheme: str, args: tuple) -> None:
        self.scheme = scheme
        self.args = args
        node = V.graph.current_node
        fx_args = list(node.args) + [None] * (len(args) - len(node.args))
        x = fake_value(fx_args[0])
        self.dtype = x.dtype
        self.k = int(x.shape[-1])
        self.n = int(fake_value(fx_args[1]).shape[0])
        record = SCHEMES[scheme]
        bias_at = record.bias_index
        self.bias = args[bias_at]
        weight = [i for i in range(1, bias_at) if isinstance(args[i], ir.IRNode)]
        ints = list(args[bias_at + 1:])
        self.inputs = [lowerings[aten.reshape.default](args[0], [-1, self.k]), *(args[i] for i in weight)]
        self.fakes = [flat_fake(x, self.k), *(fake_value(fx_args[i]) for i in weight)]
        self.aten: Optional[tuple[ExternKernelChoice, dict]] = None
        self.dense = dense(record, args, weight)
        statics = dict(zip(record.ints, ints))
        self.gemv = self._gemv_route(statics)
        panel = _PANEL_CHOICES.get(scheme)
        self.panel = None if panel is None else (panel, statics)
        if scheme == INT8.name:
            self.aten = (_INT8_CHOICE, {})
        elif scheme == INT4.name and self.gemv is None and max_autotune():
            self._add_int4_constants([constant_value(a) for a in fx_args[1:4]], group_size=ints[0])

    def _gemv_route(self, statics: dict) -> Optional[tuple[ExternKernelChoice, dict]]:
        """Our decode kernel where x has at most ``GEMV_MAX_M`` rows, or a symbolic count whose
        hint does (the call then picks its route by the actual count); None otherwise."""
        m = V.graph.sizevars.simplify(self.inputs[0].get_size()[0])
        any_m = bool(getattr(m, "free_symbols", None))
        if compat.size_hint(m, fallback=GEMV_MAX_M + 1) > GEMV_MAX_M:
            return None
        choice = _GEMV_CHOICES.get(self.scheme)
        return None if choice is None else (choice, {**statics, "any_m": any_m})

    def _add_int4_constants(self, constants: list, group_size: int) -> None:
        if any(c is None for c in constants) or self.n % INT4_PACK_N_MULTIPLE:
            return
        qweight, scale, zero = constants
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            unpack_nibbles(qweight).to(torch.int32), INT4_INNER_K_TILES
        )
        offset = (INT4_CODE_OFFSET - zero) * scale
        scales_and_offsets = torch.stack([scale.t(), offset.t()], dim=-1).to(self.dtype).contiguous()
        for value in (packed, scales_and_offsets):
            self.inputs.append(V.graph.add_tensor_constant(value))
            self.fakes.append(V.fake_mode.from_tensor(value))
        dense = self.dense
        self.dense = lambda *tensors: dense(*tensors[:-2])
        self.aten = (_INT4_CHOICE, {"group_size": group_size})

    def layout(self) -> ir.Layout:
        return ir.FixedLayout(self.inputs[0].get_device(), self.dtype, [self.inputs[0].get_size()[0], self.n])

    def lower(self) -> Any:
        if self.gemv is not None:
            y = compat.select_algorithm(f"impl_woq_mm_{self.scheme}", [self._choice(*self.gemv)], self.inputs, self.layout())
        elif self.panel is None:  # a scheme without CPU kernels of ours: the decomposition
            y = inline_decomposition(self.dense, self.inputs, self.fakes)
        elif max_autotune():
            choices = [self._choice(*self.panel)] + ([self._choice(*self.aten)] if self.aten is not None else [])
            decomposed = compat.subgraph_choice(f"impl_woq_mm_{self.scheme}_decomposed", self.inputs, self.layout(), self.dense)
            if decomposed is not None:
                choices.append(decomposed)
            y = compat.select_algorithm(f"impl_woq_mm_{self.scheme}", choices, self.inputs, self.layout())
        else:
            y = compat.select_algorithm(f"impl_woq_mm_{self.scheme}", [self._choice(*self.panel)], self.inputs, self.layout())
        if self.bias is not None:
            y = lowerings[aten.add.Tensor](y, self.bias)
        return lowerings[aten.reshape.default](y, [*self.args[0].get_size()[:-1], self.n])

    def _choice(self, choice: ExternKernelChoice, kwargs: dict) -> Any:
        # The kernels need a row-major x (a strided activation is copied first).
        self.inputs[0] = ir.ExternKernel.require_contiguous(self.inputs[0])
        # Freezing folds small weights (NF4's levels, a 0-d absmax_offset) into ir.Constant,
        # which has no buffer until realize_input gives it one.
        self.inputs[1:] = [ir.ExternKernel.realize_input(t) for t in self.inputs[1:]]
        for t in self.inputs:
            t.realize()
        return choice.bind(tuple(self.inputs), self.layout(), **kwargs)
