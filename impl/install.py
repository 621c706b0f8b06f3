"""``impl.install()``: our graph passes into Inductor's post-grad hook, after the user's own.

    impl.install()                      # from now on torch.compile fuses our regions
    with impl.installed(): ...          # what is torch.compile'd inside the block
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

``with impl.installed():`` binds the passes to what is compiled inside it. torch.compile
is lazy (Dynamo and Inductor run at the first call, and again at each recompile), so a
global hook that is gone by then would leave a model compiled in the block unfused, or
half fused after a recompile for a new batch size. Inside the block ``torch.compile``
(and so ``nn.Module.compile``) is wrapped: an Inductor backend gets the passes in its own
``options`` (Inductor applies them as config patches at every compile of that callable);
a ``mode`` becomes the options it stands for, since torch.compile takes one or the other.
Other backends, ``torch._dynamo.optimize`` and a callable compiled before the block get
the passes only while the global hook holds them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from typing import Any, Iterator, Optional

import torch
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


def compile_with_passes(compile_fn: Any) -> Any:
    """``compile_fn`` (``torch.compile``) whose Inductor backends carry our passes in their options.

    The passes go in as ``options[HOOK]``: the hook's value at the call (``InstalledPasses``
    inside ``installed()``, or our passes chained after a pass patched in since), or our
    passes chained after the hook the caller's own options name. A ``mode`` is given as the
    options it stands for. A non-Inductor backend, or ``mode`` and ``options`` together
    (torch's own error), is passed through untouched.
    """

    @functools.wraps(compile_fn)
    def compile(model: Any = None, **kwargs: Any) -> Any:
        backend = kwargs.get("backend")
        mode, options = kwargs.get("mode"), kwargs.get("options")
        if backend is None:
            backend = compat.default_compile_backend()
        if not (isinstance(backend, str) and backend == "inductor") or (mode is not None and options is not None):
            return compile_fn(model, **kwargs)
        options = {**compat.inductor_mode_options(mode, kwargs.get("dynamic")), **(options or {})}
        hook = options.get(HOOK, getattr(inductor_config, HOOK))
        options[HOOK] = hook if isinstance(hook, InstalledPasses) else InstalledPasses(hook)
        return compile_fn(model, **{**kwargs, "mode": None, "options": options})

    return compile


@contextlib.contextmanager
def installed() -> Iterator[InstalledPasses]:
    """``install()`` for the block, and for every later compile of what is torch.compile'd in it.

    After the block the hook has its previous value and ``torch.compile`` is torch's again;
    a callable compiled inside keeps the passes (see the module docstring).
    """
    before = getattr(inductor_config, HOOK)
    passes = install()
    original = torch.compile
    torch.compile = compile_with_passes(original)
    try:
        yield passes
    finally:
        setattr(inductor_config, HOOK, before)
        torch.compile = original


__all__ = ["HOOK", "InstalledPasses", "compile_with_passes", "install", "installed", "is_installed", "uninstall"]
