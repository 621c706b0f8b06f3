"""Triton kernels for weight-only quantized matmul: y (M, N) = x (M, K) @ W.T.

One module per weight scheme (``woq_mm_int8``, ``woq_mm_int4``, ``woq_mm_nf4``), each laid
out like a Triton tutorial: kernel, launcher, float64 reference. ``common`` holds the
pieces their kernels share (tile order, split-K epilogue, nibble decoding), ``launch`` the
launcher they share (config choice, checks, the dequantize-first / GEMV / tile dispatch, the
cached launch): a scheme's launcher gives only its kernels' arguments, tiles and tables.

This package file imports nothing from Triton, so ``import impl.kernels`` works anywhere;
the scheme modules need ``triton`` importable. ``use_interpreter()`` switches the kernels
to Triton's CPU interpreter (what CI uses, having no GPU).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

# By this package's own name: ``impl.kernels`` in a checkout, ``quantcheck.impl.kernels`` installed.
COMMON_MODULE = f"{__name__}.common"
# What every kernel module imports, in import order: re-imported first, so that a kernel module
# re-imported after them subclasses and calls the new objects (configs of one KernelConfig class).
SHARED_MODULES = (COMMON_MODULE, f"{__name__}.launch")


def triton_available() -> bool:
    """True when the ``triton`` package can be imported (it is optional for the product)."""
    return importlib.util.find_spec("triton") is not None


def interpreter_active() -> bool:
    """True when Triton runs ``@triton.jit`` functions through its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def use_interpreter() -> None:
    """Run the kernels on the CPU through Triton's interpreter from now on in this process.

    Triton decides at decoration time whether ``@triton.jit`` builds a compiled or an
    interpreted function, so kernel modules imported before this call are re-imported:
    common and launch first (the scheme modules call their helpers and subclass the launcher),
    then each registered scheme's. Needs numpy < 2.3 with triton 3.6 (newer numpy breaks the
    interpreter's loops).
    """
    if interpreter_active() and not _any_compiled_kernel_loaded():
        return
    os.environ["TRITON_INTERPRET"] = "1"
    for name in (*SHARED_MODULES, *dict.fromkeys(_registered_kernel_modules())):
        if name in sys.modules:
            importlib.reload(sys.modules[name])


def _registered_kernel_modules() -> tuple[str, ...]:
    """The kernel modules of every registered scheme (a scheme's kernel may live outside this package)."""
    from ..schemes.registry import all_schemes

    return tuple(s.kernel if "." in s.kernel else f"{__name__}.{s.kernel}" for s in all_schemes())


def _any_compiled_kernel_loaded() -> bool:
    common = sys.modules.get(COMMON_MODULE)
    if common is None:
        return False
    return type(common.store_output_tile).__name__ != "InterpretedFunction"
