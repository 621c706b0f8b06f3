"""FileCheck targets from a cell's compiled Triton kernels: PTX, SASS, register and spill counts.

Inductor's output code defines each Triton kernel as ``name = async_compile.triton(...)``;
once the module is loaded, ``name`` is a ``CachingAutotuner`` whose launchers carry the
compiled kernel (``launcher.bin.asm``, a dict with ``ptx`` and ``cubin``) or, with the
static CUDA launcher, only its Triton cache key (``launcher.cache_hash``: the PTX and cubin
are files in that Triton cache directory), and ``n_regs`` / ``n_spills`` / ``shared``.

Targets, each kernel under ``# kernel <name>`` (the names of ``kernel_source``):

- ``ptx``: the PTX (``CHECK: ld.global.v4``);
- ``sass``: ``cuobjdump -sass`` of the cubin, where Triton finds cuobjdump;
- ``kernel_resources``: ``registers: N``, ``spills: N``, ``shared_bytes: N``, ``config: ...``
  (``CHECK-NOT: spills: {{[1-9]}}``).

A cell whose compilation has no Triton kernel (a CPU cell, eager, only extern kernels)
has no such text: the block is not run there and the session says why. Kernels that the
output code defines but that cannot be found are an error, never a silent pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from .core.backends import backend as backend_record

ASM_TARGETS = ("ptx", "sass", "kernel_resources")
_TRITON_KERNEL = re.compile(r"^(\w+) = async_compile\.triton\(", re.MULTILINE)


class KernelAsmError(RuntimeError):
    """Kernels the output code defines whose compiled form cannot be found."""


@dataclasses.dataclass(frozen=True)
class KernelAsm:
    """One compiled launch configuration of one Triton kernel."""

    name: str
    config: str = ""
    ptx: Optional[str] = None
    cubin: Optional[bytes] = None
    n_regs: Optional[int] = None
    n_spills: Optional[int] = None
    shared: Optional[int] = None


# --------------------------------------------------------------------------- capture


class LoadedModules:
    """Records every module Inductor's ``PyCodeCache`` hands out while installed (cache hits too)."""

    def __init__(self) -> None:
        self.modules: list[Any] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator["LoadedModules"]:
        from torch._inductor.codecache import PyCodeCache

        original = PyCodeCache.__dict__["load_by_key_path"]  # the classmethod itself
        bound = PyCodeCache.load_by_key_path
        capture = self

        def recording(*args: Any, **kwargs: Any) -> Any:
            module = bound(*args, **kwargs)
            capture.modules.append(module)
            return module

        PyCodeCache.load_by_key_path = staticmethod(recording)
        try:
            yield self
        finally:
            PyCodeCache.load_by_key_path = original


def output_modules(modules: list[Any], output_codes: list[str]) -> list[Any]:
    """The modules whose source is one of the run's output codes: max-autotune also loads
    benchmark modules of the template choices it timed, whose kernels the graph does not run."""
    codes = set(output_codes)
    chosen = []
    for module in modules:
        path = getattr(module, "__file__", None)
        with contextlib.suppress(OSError, TypeError):
            if path and Path(path).read_text(encoding="utf-8") in codes:
                chosen.append(module)
    return chosen


def triton_kernels(modules: list[Any]) -> dict[str, Any]:
    """name -> kernel object (a CachingAutotuner: has ``launchers``) defined in ``modules``."""
    found: dict[str, Any] = {}
    for module in modules:
        for name, value in vars(module).items():
            if isinstance(getattr(value, "launchers", None), list) and hasattr(value, "fn"):
                found.setdefault(name, value)
    return found


def _triton_cache_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("TRITON_CACHE_DIR"):
        dirs.append(Path(os.environ["TRITON_CACHE_DIR"]))
    with contextlib.suppress(Exception):  # where Inductor's compile workers put them when the variable was unset
        import torch
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        dirs += [Path(cache_dir()) / "triton" / str(index) for index in range(max(torch.cuda.device_count(), 1))]
    with contextlib.suppress(Exception):
        from triton import knobs

        dirs.append(Path(knobs.cache.dir))
    dirs.append(Path.home() / ".triton" / "cache")
    return dirs


def _from_cache_dir(cache_hash: Optional[str], suffix: str, cache_dirs: list[Path]) -> Optional[bytes]:
    if not cache_hash:
        return None
    for directory in cache_dirs:
        matches = sorted((directory / cache_hash).glob(f"*{suffix}"))
        if matches:
            return matches[0].read_bytes()
    return None


def kernel_asm(name: str, kernel: Any, cache_dirs: Optional[list[Path]] = None) -> list[KernelAsm]:
    """Each launcher of ``kernel`` as a KernelAsm (asm from the launcher, else Triton's cache)."""
    cache_dirs = _triton_cache_dirs() if cache_dirs is None else cache_dirs
    out = []
    for launcher in kernel.launchers:
        asm = getattr(getattr(launcher, "bin", None), "asm", None) or {}
        ptx = asm.get("ptx")
        cubin = asm.get("cubin")
        cache_hash = getattr(launcher, "cache_hash", None)
        if ptx is None:
            raw = _from_cache_dir(cache_hash, ".ptx", cache_dirs)
            ptx = raw.decode("utf-8", "replace") if raw is not None else None
        if cubin is None:
            cubin = _from_cache_dir(cache_hash, ".cubin", cache_dirs)
        out.append(
            KernelAsm(
                name=name, config=str(getattr(launcher, "config", "")), ptx=ptx, cubin=cubin,
                n_regs=getattr(launcher, "n_regs", None), n_spills=getattr(launcher, "n_spills", None),
                shared=getattr(launcher, "shared", None),
            )
        )
    return out


# --------------------------------------------------------------------------- texts


def _sass_with_cuobjdump(cubin: bytes) -> str:
    from triton.tools.disasm import get_sass

    return get_sass(cubin)


def asm_artifacts(
    kernels: list[KernelAsm], wanted: tuple[str, ...] = ASM_TARGETS, sass_of: Callable[[bytes], str] = _sass_with_cuobjdump
) -> tuple[dict[str, str], dict[str, str]]:
    """(target -> text, target -> why there is none) for the ``wanted`` ASM_TARGETS."""
    texts: dict[str, str] = {}
    missing: dict[str, str] = {}
    if not kernels:
        return {}, {target: "this cell launched no Triton kernel" for target in ASM_TARGETS}
    texts["kernel_resources"] = "\n".join(
        f"# kernel {k.name}\nregisters: {k.n_regs}\nspills: {k.n_spills}\nshared_bytes: {k.shared}\nconfig: {k.config}"
        for k in kernels
    )
    lacking_ptx = [k.name for k in kernels if k.ptx is None]
    if lacking_ptx and "ptx" in wanted:
        raise KernelAsmError(
            f"ptx: no PTX found for Triton kernel(s) {', '.join(lacking_ptx)} (neither launcher.bin.asm nor "
            f"the Triton cache under {', '.join(str(d) for d in _triton_cache_dirs())})"
        )
    if "ptx" in wanted:
        texts["ptx"] = "\n".join(f"# kernel {k.name}\n{k.ptx.rstrip()}" for k in kernels)
    if "sass" not in wanted:
        return texts, missing
    sass_parts = []
    for k in kernels:
        if k.cubin is None:
            missing["sass"] = f"no cubin kept for Triton kernel {k.name}"
            break
        try:
            sass_parts.append(f"# kernel {k.name}\n{sass_of(k.cubin).rstrip()}")
        except Exception as exc:  # no cuobjdump on this machine, most often
            missing["sass"] = f"cuobjdump -sass failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            break
    else:
        texts["sass"] = "\n".join(sass_parts)
    return texts, missing


def collect_asm_artifacts(
    modules: list[Any], output_codes: list[str], device: str, backend: str, wanted: tuple[str, ...] = ASM_TARGETS
) -> tuple[dict[str, str], dict[str, str]]:
    """The ASM_TARGETS of one compiled run (``output_codes``: its output modules' sources),
    or the reason each is absent.

    Raises KernelAsmError when the output code defines Triton kernels that are not among
    the loaded output modules' kernels (the capture missed them: a harness problem to report).
    """
    if not backend_record(backend).generates_code:
        return {}, {t: f"the {backend} backend generates no kernels" for t in ASM_TARGETS}
    kernels = triton_kernels(output_modules(modules, output_codes))
    defined = [name for code in output_codes for name in _TRITON_KERNEL.findall(code)]
    lost = [name for name in defined if name not in kernels]
    if lost:
        raise KernelAsmError(
            f"the output code defines Triton kernel(s) {', '.join(lost)} that no loaded Inductor module holds"
        )
    if not kernels:
        reason = f"{device} cells compile no Triton kernels" if device != "cuda" else "this cell launched no Triton kernel"
        return {}, {t: reason for t in ASM_TARGETS}
    return asm_artifacts([asm for name, kernel in kernels.items() for asm in kernel_asm(name, kernel)], wanted)
