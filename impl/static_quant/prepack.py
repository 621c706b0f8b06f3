"""oneDNN weight prepacking for the quantized linear / conv2d kernels, and whether we can.

The weight side of a fused op is int8 codes with symmetric per-output-channel scales.
oneDNN wants it reordered into its own blocked layout once, ahead of time: that is only
possible when the codes are constants, i.e. under ``torch._inductor.config.freezing``.
The packed tensors are opaque mkldnn tensors; in graph metadata a fake strided tensor of
the same shape and dtype stands in for them.

On x86 CPUs without VNNI, oneDNN multiplies uint8 activations by int8 weights with
``vpmaddubsw``, which adds adjacent products into int16 *with saturation*: 255 * 127 * 2
overflows, and the result is silently wrong (measured: errors of 3 to 20 absolute on a
linear / conv of unit-scale values). PyTorch's x86 quantizers avoid it by quantizing with
a reduced range; the passes instead check the frozen weight codes and fuse only when no
pair can saturate, ``|code| <= 64`` (255 * 64 * 2 < 2**15), or when the CPU has VNNI.
"""

from __future__ import annotations

import functools
import importlib
import platform
from typing import Optional, Sequence

import torch
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily


@functools.cache
def onednn_unavailable_reason() -> Optional[str]:
    """Why the oneDNN quantized kernels cannot be used here, or None when they can."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return f"oneDNN int8 kernels are used on x86 CPUs only (this is {platform.machine()})"
    if not torch.backends.mkldnn.is_available() or not torch._C._has_mkldnn:
        return "this torch build has no oneDNN (torch.backends.mkldnn.is_available() is False)"
    onednn = getattr(torch.ops, "onednn", None)
    for name in ("qlinear_pointwise", "qlinear_prepack", "qconv_prepack", "qconv_pointwise", "qconv2d_pointwise"):
        if onednn is None or not hasattr(onednn, name):
            return f"this torch build lacks torch.ops.onednn.{name}"
    importlib.import_module("torch._inductor.mkldnn_lowerings")  # registers the lowerings we need
    from torch._inductor.lowering import lowerings

    for op in (onednn.qlinear_pointwise.default, onednn.qconv_pointwise.default, onednn.qconv2d_pointwise.binary):
        if op not in lowerings:
            return f"Inductor has no lowering for {op} in this build"
    return None


# The largest |weight code| for which oneDNN's int16 pair sums cannot saturate on any x86 CPU.
SATURATION_FREE_WEIGHT_CODE = 64


@functools.cache
def int8_products_saturate() -> bool:
    """Whether this CPU's oneDNN int8 kernels sum u8 x s8 pairs in saturating int16 (no VNNI)."""
    has_vnni = getattr(torch.cpu, "_is_vnni_supported", None)
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return not ((has_vnni is not None and has_vnni()) or (has_amx is not None and has_amx()))


def weight_codes_safe(codes: torch.Tensor) -> bool:
    """Whether oneDNN computes with these int8 weight codes exactly on this CPU."""
    if not int8_products_saturate() or codes.numel() == 0:
        return True
    return int(codes.abs().max()) <= SATURATION_FREE_WEIGHT_CODE


@functools.cache
def bf16_linear_binary_supported() -> bool:
    """Whether oneDNN's quantized linear can add a bfloat16 tensor as its binary post-op.

    Without native bf16 support (avx512_bf16 / AMX) oneDNN cannot create that matmul
    ("could not create a primitive descriptor"), though unary bf16 post-ops and the conv's
    bf16 sum work; the qlinear pass then leaves such an add out of the fusion.
    """
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def prepack_linear_weight(
    codes: torch.Tensor, x_shape: Optional[Sequence[int]], mode: FakeTensorMode
) -> tuple[torch.Tensor, torch.Tensor]:
    """codes (N, K) int8 -> (packed weight, its fake) for ``onednn.qlinear_pointwise``.

    ``x_shape``: the activation's static shape, which lets oneDNN pick the layout for it;
    None under dynamic shapes.
    """
    shape = list(x_shape) if x_shape is not None else None
    with unset_fake_temporarily():
        packed = torch.ops.onednn.qlinear_prepack(codes.contiguous(), shape)
    return packed, _stand_in(packed, mode)


def prepack_conv2d_weight(
    codes: torch.Tensor,
    scales: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    x_shape: Optional[Sequence[int]],
    mode: FakeTensorMode,
) -> tuple[torch.Tensor, torch.Tensor]:
    """codes (O, I / groups, kH, kW) int8, scales (O,) -> (packed weight, its fake) for
    ``onednn.qconv_pointwise`` / ``onednn.qconv2d_pointwise.binary``."""
    args = (list(stride), list(padding), list(dilation), groups, list(x_shape) if x_shape is not None else None)
    with unset_fake_temporarily():
        packed = torch.ops.onednn.qconv_prepack(codes.contiguous(), scales, x_scale, x_zero_point, *args)
    return packed, _stand_in(packed, mode)


def _stand_in(packed: torch.Tensor, mode: FakeTensorMode) -> torch.Tensor:
    """A fake strided tensor with the packed weight's shape and dtype: all the fused ops'
    meta kernels read (the prepack ops themselves have no fake kernel)."""
    with unset_fake_temporarily():
        dense = torch.empty(packed.shape, dtype=packed.dtype)
    return mode.from_tensor(dense, static_shapes=True)
