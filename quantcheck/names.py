"""One module, one name: ``quantcheck.impl`` and ``impl`` (``quantcheck.harness`` and ``harness``) of the same files.

The distribution installs the stack and the plugin under ``quantcheck``; a checkout of the
repository imports the folders by their own names. Where both names reach the same files (a
checkout with an editable install, or ``import quantcheck.impl`` in a checkout), a module
imported under the second name would run a second time: the stack's torch ops would be
registered twice (an error on torch 2.11) and the plugin's stash keys and classes would be
two. :class:`TwinFinder` hands out the module already imported under the other name instead.
A project's own ``impl`` or ``harness`` (other files) is left alone: it stays the project's.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from typing import Optional

PREFIX = "quantcheck."
PACKAGES = ("impl", "harness")
# Where the repository's folders sit beside this package when this is a checkout (not installed).
_CHECKOUT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def twin_name(name: str) -> Optional[str]:
    """``impl.x`` <-> ``quantcheck.impl.x`` (and harness); None for any other module."""
    if name.startswith(PREFIX) and name[len(PREFIX):].split(".")[0] in PACKAGES:
        return name[len(PREFIX):]
    if name.split(".")[0] in PACKAGES:
        return PREFIX + name
    return None


def _same_file(a: Optional[str], b: Optional[str]) -> bool:
    return a is not None and b is not None and os.path.realpath(a) == os.path.realpath(b)


class _Alias(importlib.abc.Loader):
    """Loads a name as a module that is already imported under another."""

    def __init__(self, module) -> None:
        self.module = module
        self.spec = module.__spec__

    def create_module(self, spec):
        return self.module

    def exec_module(self, module) -> None:
        module.__spec__ = self.spec  # importlib set the alias's spec on it; the module keeps its own


class TwinFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path, target=None):
        twin = twin_name(name)
        if twin is None:
            return None
        parent, _, leaf = name.rpartition(".")
        twin_parent = twin.rpartition(".")[0]
        if parent not in ("", "quantcheck"):
            # A submodule: where the parents are one module, so is the child, under the parent's real name.
            shared = sys.modules.get(parent)
            if shared is None or shared is not sys.modules.get(twin_parent):
                return None
            real = f"{shared.__name__}.{leaf}"
            return None if real == name else self._alias(name, importlib.import_module(real))
        spec = self._spec_elsewhere(name, path)
        if spec is None and name.startswith(PREFIX):
            spec = self._checkout_spec(name)
        loaded = sys.modules.get(twin)
        if spec is not None and loaded is not None and _same_file(spec.origin, getattr(loaded, "__file__", None)):
            return self._alias(name, loaded)
        return spec

    def _spec_elsewhere(self, name: str, path):
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, TwinFinder) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path)
            if spec is not None:
                return spec
        return None

    @staticmethod
    def _checkout_spec(name: str):
        """``quantcheck.impl`` in a checkout: the ``impl/`` folder beside ``quantcheck/``."""
        folder = os.path.join(_CHECKOUT_ROOT, name[len(PREFIX):])
        init = os.path.join(folder, "__init__.py")
        if not os.path.isfile(init):
            return None
        return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[folder])

    @staticmethod
    def _alias(name: str, module):
        return importlib.machinery.ModuleSpec(name, _Alias(module), origin=getattr(module, "__file__", None), is_package=hasattr(module, "__path__"))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, TwinFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, TwinFinder())
