"""Inductor passes folding static-quant regions into quantized kernels: the one entry point.

``apply_static_quant_passes(graph)`` runs, on a post-grad graph, as (part of)
``torch._inductor.config.post_grad_custom_pre_pass``: before Inductor's own post-grad
patterns, which then lower the oneDNN calls through PyTorch's quantization lowering
patterns (those realize a binary post-op's extra input; run as the *post* pass, a
``qlinear_pointwise.binary`` whose added tensor is still a fused pointwise fails to lower,
and Inductor's own rewrites of mm / add change what matches). The passes:

1. dequant promotion (:mod:`.dequant_promotion`): one dequantize per consumer;
2. qconv2d (:mod:`.qconv`) and qlinear (:mod:`.qlinear`): into ``onednn.qconv_pointwise``
   / ``qconv2d_pointwise.binary`` and ``onednn.qlinear_pointwise`` (weights prepacked;
   needs ``torch._inductor.config.freezing``). They stand down, leaving the graph as it is,
   where this torch or CPU has no oneDNN int8 kernels (``onednn_unavailable_reason()``);
3. qmaxpool2d, qcat, qreshape (:mod:`.qpool_cat_reshape`): plain ATen ops on the codes.

Each rewrite bumps ``counters["inductor"]["static_quant_<pass>_matcher_count"]`` and
``..._matcher_nodes`` (the graph nodes it replaced); where a lowering follows (qlinear,
qconv2d), ``..._lower_count`` counts the fused calls Inductor then really lowered
(:mod:`.lowering_counters`). ``COUNTER_NAMES`` lists them.

``StaticQuantPass()`` wraps the entry point as a ``CustomGraphPass`` whose ``uuid()``
hashes ``SOURCE_FILES``, so Inductor's FX graph cache stays valid across edits here.
"""

from __future__ import annotations

from pathlib import Path

import torch.fx as fx

from ...graph_pass import SourceHashedPass
from ...hop import invoke_quant

from ..prepack import onednn_unavailable_reason
from .dequant_promotion import promote_shared_dequants
from .graph_utils import counter_key
from .lowering_counters import install_lower_counters
from .qconv import qconv2d_pass
from .qlinear import qlinear_pass
from .qpool_cat_reshape import requant_pass
from .regions import as_region

PASS_NAMES = ("dequant_promotion", "qconv2d", "qlinear", "qmaxpool2d", "qcat", "qreshape")
LOWERED_PASS_NAMES = ("qconv2d", "qlinear")
COUNTER_NAMES = tuple(
    counter_key(name, event) for name in PASS_NAMES for event in ("matcher_count", "matcher_nodes")
) + tuple(counter_key(name, "lower_count") for name in LOWERED_PASS_NAMES)

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
SOURCE_FILES = tuple(sorted(str(p) for p in _PACKAGE_ROOT.rglob("*.py")))


def apply_static_quant_passes(graph: fx.Graph) -> None:
    """Run every static-quant pass on ``graph`` in place (see the module docstring)."""
    regions = graph.find_nodes(op="call_function", target=invoke_quant)
    if not any(as_region(node) is not None for node in regions):
        return
    promote_shared_dequants(graph)
    if onednn_unavailable_reason() is None:
        install_lower_counters()
        qconv2d_pass().apply(graph)
        qlinear_pass().apply(graph)
    requant_pass().apply(graph)
    graph.lint()


class StaticQuantPass(SourceHashedPass):
    """``apply_static_quant_passes`` as an Inductor custom graph pass (cache-safe)."""

    apply = staticmethod(apply_static_quant_passes)
    source_files = SOURCE_FILES


__all__ = [
    "COUNTER_NAMES",
    "PASS_NAMES",
    "SOURCE_FILES",
    "StaticQuantPass",
    "apply_static_quant_passes",
    "onednn_unavailable_reason",
]
