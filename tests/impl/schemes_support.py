"""What the scheme tests share: random weights, the graph the passes see, backend agreement."""

from __future__ import annotations

from typing import Callable

import torch
from torch._dynamo.backends.common import aot_autograd

from impl.hop import invoke_quant

COMPILED_BACKENDS = ("aot_eager", "inductor")


def randn_weight(n: int, k: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)).to(dtype)


def traced_forward(fn: Callable, *args: torch.Tensor) -> tuple[torch.fx.GraphModule, list[int]]:
    """The AOTAutograd forward graph of ``fn(*args)`` (what post-grad passes see), and for each
    of its placeholders the position in ``args`` of the tensor it stands for (None for a
    module's parameters and buffers; Dynamo orders graph inputs by first use, not by
    argument position)."""
    graphs, inputs = [], []

    def capture(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(gm)
        return gm.forward

    def backend(gm: torch.fx.GraphModule, example_inputs):
        inputs.extend(example_inputs)
        return aot_autograd(fw_compiler=capture)(gm, example_inputs)

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(fn, backend=backend, fullgraph=True)(*args)
    (graph,) = graphs
    positions = [next((i for i, arg in enumerate(args) if arg is tensor), None) for tensor in inputs]
    return graph, positions


def region_nodes(graph: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return list(graph.graph.find_nodes(op="call_function", target=invoke_quant))


def assert_one_region_over_inputs(fn: Callable, *operands: torch.Tensor, scheme: str) -> torch.fx.Node:
    """``fn(*operands)`` traces to one region of ``scheme`` whose operands are ``operands``
    in the order given; returns the region node."""
    graph, positions = traced_forward(fn, *operands)
    (node,) = region_nodes(graph)
    assert node.kwargs == {"scheme": scheme}
    placeholders = list(graph.graph.find_nodes(op="placeholder"))
    order = [positions[placeholders.index(arg)] for arg in node.args[1:]]
    assert order == list(range(len(operands))), f"region operands are the arguments {order}, in that order"
    return node


def assert_backends_agree(fn: Callable, *operands: torch.Tensor) -> torch.Tensor:
    """eager == aot_eager == inductor, bit for bit; returns the eager result."""
    expected = fn(*operands)
    for backend in COMPILED_BACKENDS:
        torch._dynamo.reset()
        actual = torch.compile(fn, backend=backend, fullgraph=True)(*operands)
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, backend
        assert torch.equal(actual, expected), (
            f"{backend}: max |diff| {(actual.double() - expected.double()).abs().max().item()}"
        )
    return expected
