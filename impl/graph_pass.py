"""What our Inductor graph passes share: the counter key and the cache-safe pass wrapper.

A pass bumps ``counters["inductor"][counter_key(pass_name, event)]``, e.g.
``woq_fusion_int8_matcher_count`` or ``static_quant_qlinear_matcher_nodes``. As a
``CustomGraphPass`` its ``uuid()`` hashes the files its result depends on, so Inductor's FX
graph cache never serves a graph rewritten by an older version of the pass.
"""

from __future__ import annotations

from typing import Callable

import torch.fx as fx
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files


def counter_key(pass_name: str, event: str) -> str:
    """``counters["inductor"]`` key of one event of a pass: ``<pass_name>_<event>``."""
    return f"{pass_name}_{event}"


class SourceHashedPass(CustomGraphPass):
    """``apply(graph)`` as an Inductor custom graph pass whose ``uuid()`` hashes ``source_files``.

    Subclasses set both as class attributes (``apply`` a staticmethod)."""

    apply: Callable[[fx.Graph], None]
    source_files: tuple[str, ...] = ()

    def __call__(self, graph: fx.Graph) -> None:
        self.apply(graph)

    def uuid(self) -> bytes:
        return get_hash_for_files(self.source_files)
