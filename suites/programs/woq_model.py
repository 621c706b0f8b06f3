"""Programs for suites/woq_model.yaml: the user's whole path on a small model.

    model = quantize_linear_(nn.Sequential(Linear, ReLU, Linear, ...), scheme)   # the builder
    impl.install()                                                               # the case's passes
    torch.compile(model)(x)                                                      # the program, compiled

``quantized_mlp`` builds the model as an input (fresh, from the input's seed, for every
run): Linear layers of the features the input's ``shape`` lists, ReLU between them, a bias
on every other layer (first, third, ...), weights drawn from the spec's distribution,
quantized by ``impl.schemes.quantize_linear_`` and cast to the cell's dtype as a user would
(``model.to(dtype)``: the packed tensors keep their dtypes, the biases convert).

``forward`` runs the model on each activation it is given, so one graph holds one forward
per batch size (M = 1, 16, 64 and a ragged one): each matmul is lowered for its own static
shapes, as separate compiles would lower it, for a quarter of the compile time. The
harness's float64 run gets float64 activations (the model is not a tensor and stays as
built); ``forward`` then evaluates each layer's dequantization formula in float64
(the scheme record's ``formula``), the reference the SQNR floors are measured against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.core.inputs import BuildContext, InputSpec
from impl.schemes.registry import lookup
from impl.schemes import WeightOnlyLinear, quantize_linear_


def quantized_mlp(spec: InputSpec, ctx: BuildContext) -> torch.nn.Module:
    """Linear(shape[0] -> shape[1]), ReLU, Linear(shape[1] -> shape[2]), ... quantized by ``scheme`` (``dense``: not)."""
    params = spec.param_dict
    features = tuple(spec.shape)
    if len(features) < 2:
        raise ValueError(f"quantized_mlp: shape lists the features of each layer, at least 2; got {features}")
    layers: list[torch.nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(features, features[1:])):
        linear = torch.nn.Linear(fan_in, fan_out, bias=index % 2 == 0)
        with torch.no_grad():
            linear.weight.copy_(ctx.sample(spec, (fan_out, fan_in), torch.float32) / fan_in**0.5)
            if linear.bias is not None:
                linear.bias.copy_(ctx.sample(spec, (fan_out,), torch.float32) * 0.1)
        layers += [linear, torch.nn.ReLU()]
    options = {key: value for key, value in params.items() if key != "scheme"}
    model = torch.nn.Sequential(*layers[:-1])
    if params["scheme"] != "dense":  # dense: the same weights unquantized, the baseline to beat
        model = quantize_linear_(model, params["scheme"], **options)
    return model.to(device=ctx.device, dtype=ctx.dtype).eval()


quantized_mlp.PARAMS = {"scheme": str, "group_size": int, "block_size": int, "double_quant": bool}


def forward(model: torch.nn.Module, *activations: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``model(x)`` for each activation; in float64 the layers' dequantization formulas."""
    if activations[0].dtype == torch.float64:
        return tuple(_forward_float64(model, x) for x in activations)
    return tuple(model(x) for x in activations)


def _forward_float64(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    for layer in model:
        if isinstance(layer, WeightOnlyLinear):
            bias = None if layer.bias is None else layer.bias.double()
            x = F.linear(x, _weight_float64(layer), bias)
        else:
            x = layer(x)
    return x


def _weight_float64(layer: WeightOnlyLinear) -> torch.Tensor:
    """The layer's W (N, K) by its scheme's formula in float64 (buffers as the op's operands)."""
    record = lookup(layer.scheme)
    operands = [getattr(layer, name) for name in record.operands]
    ints = [layer.statics[name] for name in record.ints]
    return record.formula(*operands, *ints, layer.in_features, torch.float64)
