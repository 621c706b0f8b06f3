"""The user-facing API: swap ``nn.Linear`` modules for weight-only quantized ones.

    model = impl.schemes.quantize_linear_(model, "int4", group_size=64)
    compiled = torch.compile(model)

Each swapped module is a ``WeightOnlyLinear`` whose buffers are the scheme's packed tensors
(names as in the scheme's dataclass) and whose forward is

    F.linear(x, dequantize_<scheme>_packed(<buffers>, dtype=x.dtype, ...), bias)

so under ``torch.compile`` the weight is one ``impl_invoke_quant`` region (operands in the
order the scheme's module docstring gives) feeding ``linear`` (``addmm`` / ``mm`` after
decomposition), which is the pattern ``impl.passes`` fuses. The bias is cast to x's dtype
when it differs (a quantized fp32 Linear may run on bf16 activations).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from .common import check_activation_dtype
from .registry import WeightOnlyScheme, lookup


def _quantize(spec: WeightOnlyScheme, scheme: str, weight: torch.Tensor, options: dict) -> Any:
    try:
        inspect.signature(spec.quantize).bind(weight, **options)
    except TypeError as error:
        allowed = [p for p in inspect.signature(spec.quantize).parameters if p != "weight"]
        raise TypeError(
            f"scheme {scheme!r}: options {sorted(options)} do not fit; it takes {allowed} ({error})"
        ) from None
    return spec.quantize(weight, **options)


class WeightOnlyLinear(torch.nn.Module):
    """A Linear whose weight is stored quantized by ``scheme`` and dequantized on each forward.

    Build with ``WeightOnlyLinear.from_linear(linear, scheme, **options)``; options are the
    scheme's quantizer's (int8: ``search``; int4: ``group_size``, ``symmetric``, ``search``;
    nf4: ``block_size``, ``double_quant``).
    """

    def __init__(self, scheme: str, quantized: Any, bias: Optional[torch.Tensor]) -> None:
        super().__init__()
        spec = lookup(scheme)
        self.scheme = spec.name
        if not isinstance(quantized, spec.weight_type):
            raise TypeError(
                f"WeightOnlyLinear({self.scheme}): quantized must be a {spec.weight_type.__name__}; "
                f"got {type(quantized).__name__}"
            )
        self.in_features = int(quantized.in_features)
        self.out_features = int(quantized.out_features)
        self.statics = {name: getattr(quantized, name) for name in spec.statics}
        for name in spec.buffers:
            self.register_buffer(name, getattr(quantized, name))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        for name, make in spec.derived.items():  # operands the format fixes (NF4's levels): rebuilt, not saved
            self.register_buffer(name, make(quantized.qweight.device), persistent=False)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, scheme: str, **options: Any) -> "WeightOnlyLinear":
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"from_linear: linear must be a torch.nn.Linear; got {type(linear).__name__}")
        spec = lookup(scheme)
        quantized = _quantize(spec, spec.name, linear.weight.detach(), options)
        return cls(spec.name, quantized, linear.bias)

    def _apply(self, fn: Callable, recurse: bool = True) -> "WeightOnlyLinear":
        # .to(dtype) / .half() move the packed tensors but keep their dtypes (a float32 scale
        # is part of the layout); the bias converts like any Linear's.
        packed = {id(t) for name, t in self._buffers.items() if t is not None and name != "bias"}

        def apply(tensor: torch.Tensor) -> torch.Tensor:
            moved = fn(tensor)
            if id(tensor) in packed and moved.dtype != tensor.dtype:
                return tensor.to(device=moved.device)
            return moved

        return super()._apply(apply, recurse)

    def dequantize_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W (out_features, in_features) in ``dtype``: the invoke_quant region."""
        spec = lookup(self.scheme)
        derived = {name: getattr(self, name) for name in spec.derived}
        buffers = [getattr(self, name) for name in spec.buffers]
        return spec.dequantize_region(*buffers, dtype=dtype, **self.statics, **derived)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_activation_dtype(input.dtype, f"WeightOnlyLinear({self.scheme}): input")
        if input.dim() == 0 or input.shape[-1] != self.in_features:
            raise ValueError(
                f"WeightOnlyLinear({self.scheme}): input must end in in_features={self.in_features}; "
                f"got shape {tuple(input.shape)}"
            )
        bias = self.bias
        if bias is not None and bias.dtype != input.dtype:
            bias = bias.to(input.dtype)
        return F.linear(input, self.dequantize_weight(input.dtype), bias)

    def extra_repr(self) -> str:
        statics = "".join(f", {k}={v}" for k, v in self.statics.items() if k != "in_features")
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, scheme={self.scheme}{statics}"
        )


def _swappable(module: torch.nn.Module) -> bool:
    # MultiheadAttention reads its out_proj.weight directly; torch marks that Linear so
    # quantization flows leave it alone, and so do we.
    return isinstance(module, torch.nn.Linear) and not isinstance(
        module, torch.nn.modules.linear.NonDynamicallyQuantizableLinear
    )


def quantize_linear_(
    model: torch.nn.Module,
    scheme: str,
    *,
    filter_fn: Optional[Callable[[str, torch.nn.Linear], bool]] = None,
    **options: Any,
) -> torch.nn.Module:
    """Replace every ``nn.Linear`` in ``model`` (those ``filter_fn(name, linear)`` accepts)
    by a ``WeightOnlyLinear`` of ``scheme`` ("int8", "int4", "nf4" or the full names), in place.

    Returns ``model``; when ``model`` itself is an ``nn.Linear`` (which cannot be replaced
    in place) returns its ``WeightOnlyLinear``. ``options`` go to the scheme's quantizer.
    """
    scheme = lookup(scheme).name
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"quantize_linear_: model must be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(model, torch.nn.Linear):
        if filter_fn is not None and not filter_fn("", model):
            return model
        return WeightOnlyLinear.from_linear(model, scheme, **options)
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if _swappable(module) and (filter_fn is None or filter_fn(name, module))
    ]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, WeightOnlyLinear.from_linear(linear, scheme, **options))
    return model


__all__ = ["WeightOnlyLinear", "quantize_linear_"]
