"""Each weight-only scheme's dequantization region reaches the compiler as a matmul prologue:
its scheme name, and codegen_low_precision on (mutation tools/mutants.py:
int8_scheme_low_precision_dropped). Numerics cannot show a dropped flag on the CPU, the
graph can: the AOT forward graph's invoke_quant node carries the options."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.backends.common import aot_autograd

from impl.hop import QUANT_OPTIONS_META_KEY, invoke_quant
from impl.schemes import int4, int8, nf4
from impl.schemes import INT4_WEIGHT_ONLY, INT8_WEIGHT_ONLY, NF4

SCHEMES = {
    INT8_WEIGHT_ONLY: lambda w: (int8.quantize_int8(w), int8.dequantize_int8),
    INT4_WEIGHT_ONLY: lambda w: (int4.quantize_int4(w, 32), int4.dequantize_int4),
    NF4: lambda w: (nf4.quantize_nf4(w, 32), nf4.dequantize_nf4),
}


def _regions(fn, *args) -> list[torch.fx.Node]:
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=aot_autograd(fw_compiler=capture), fullgraph=True)(*args)
    return [n for gm in graphs for n in gm.graph.find_nodes(op="call_function", target=invoke_quant)]


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_dequant_region_is_a_low_precision_prologue(scheme):
    weight, dequantize = SCHEMES[scheme](torch.randn(8, 64))
    x = torch.randn(2, 64)
    (node,) = _regions(lambda x: x @ dequantize(weight, torch.float32).T, x)
    assert node.kwargs["scheme"] == scheme
    assert node.meta[QUANT_OPTIONS_META_KEY].codegen_low_precision is True
