"""``impl.install()``: our graph passes into Inductor's post-grad hook, after the user's own.

    impl.install()                      # from now on torch.compile fuses our regions
    with impl.installed(): ...          # only inside the block
    impl.uninstall()                    # the hook as it was before install()

One ``CustomGraphPass`` goes into ``torch._inductor.config.post_grad_custom_pre_pass``:
``InstalledPasses(previous)`` runs whatever the hook held before (a pass, a list of passes
on torch 2.13, or nothing), unchanged and first, so it still sees the graph it saw before;
then the static-quant passes (``impl.static_quant.passes.StaticQuantPass``, which must run
before Inductor's own post-grad patterns) and the weight-only fusion
(``impl.passes.WoqFusionPass``). ``post_grad_custom_post_pass`` is left alone.

FX graph cache: ``uuid()`` combines our passes' source hashes with the previous passes'
uuids, so a cached graph is reused exactly when the same passes would run again; when a
previous pass has no uuid (a plain function) neither has ours and Inductor bypasses the
cache, as it did before install().

``install()`` is idempotent (a hook already holding ``InstalledPasses`` is left as it is).
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Iterator, Optional

import torch.fx as fx
from torch._inductor import config as inductor_config
from torch._inductor.custom_graph_pass import CustomGraphPass

from . import compat
from .passes import WoqFusionPass
from .static_quant.passes import StaticQuantPass

HOOK = "post_grad_custom_pre_pass"
_INFERENCE_AWARE = compat.inference_aware_pass_type()
_BASE = _INFERENCE_AWARE or CustomGraphPass


class InstalledPasses(_BASE):  # type: ignore[misc,valid-type]
    """The previous hook value, then the static-quant passes, then the weight-only fusion.

    On torch 2.13 this is a ``CustomInferenceAwareGraphPass``, so a previous pass of that
    kind still receives ``is_inference``.
    """

    def __init__(self, previous: Any = None) -> None:
        self.previous = previous
        self.ours = (StaticQuantPass(), WoqFusionPass())

    def __call__(self, graph: fx.Graph, is_inference: bool = False) -> None:
        for graph_pass in compat.custom_graph_passes(self.previous):
            if _INFERENCE_AWARE is not None and isinstance(graph_pass, _INFERENCE_AWARE):
                graph_pass(graph, is_inference=is_inference)
            else:
                graph_pass(graph)
        for graph_pass in self.ours:
            graph_pass(graph)

    def uuid(self) -> Optional[bytes]:
        parts = []
        for graph_pass in (*compat.custom_graph_passes(self.previous), *self.ours):
            uuid = graph_pass.uuid() if isinstance(graph_pass, CustomGraphPass) else None
            if uuid is None:
                return None
            parts.append(repr(uuid))
        return hashlib.sha256("\0".join(parts).encode()).hexdigest().encode()

    def __repr__(self) -> str:
        return f"InstalledPasses(previous={self.previous!r})"


def is_installed() -> bool:
    return isinstance(getattr(inductor_config, HOOK), InstalledPasses)


def install() -> InstalledPasses:
    """Put ``InstalledPasses`` into the hook, chained after what it holds; returns it."""
    current = getattr(inductor_config, HOOK)
    if isinstance(current, InstalledPasses):
        return current
    installed = InstalledPasses(current)
    setattr(inductor_config, HOOK, installed)
    return installed


def uninstall() -> bool:
    """Give the hook back the value it had before ``install()``. False when ours is not there
    (never installed, or replaced since: then the hook is left as the user set it)."""
    current = getattr(inductor_config, HOOK)
    if not isinstance(current, InstalledPasses):
        return False
    setattr(inductor_config, HOOK, current.previous)
    return True


@contextlib.contextmanager
def installed() -> Iterator[InstalledPasses]:
    """``install()`` for the block; the hook's previous value is restored after it."""
    before = getattr(inductor_config, HOOK)
    passes = install()
    try:
        yield passes
    finally:
        setattr(inductor_config, HOOK, before)


__all__ = ["HOOK", "InstalledPasses", "install", "installed", "is_installed", "uninstall"]
