"""Static int8 activation quantization as invoke_quant regions, and the passes that fold
those regions into oneDNN quantized kernels on CPU.

- :mod:`.schemes`: the scheme names, in one place;
- :mod:`.primitives`: quantize / dequantize per tensor and per channel (the regions);
- :mod:`.passes`: dequant promotion, qlinear, qconv2d, qmaxpool2d / qcat / qreshape, and
  the one entry point ``apply_static_quant_passes(graph)``.
"""

from .primitives import (
    choose_qparams_per_channel,
    choose_qparams_per_tensor,
    dequantize_per_channel,
    dequantize_per_tensor,
    quantize_per_channel,
    quantize_per_tensor,
)
from .schemes import SCHEMES, StaticScheme, lookup_scheme

__all__ = [
    "SCHEMES",
    "StaticScheme",
    "choose_qparams_per_channel",
    "choose_qparams_per_tensor",
    "dequantize_per_channel",
    "dequantize_per_tensor",
    "lookup_scheme",
    "quantize_per_channel",
    "quantize_per_tensor",
]
