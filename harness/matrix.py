"""Case -> list of MatrixCell (backend x device x dtype); what this machine can run.

Ids read ``backend-device-dtype`` so node ids look like
``suites/x.yaml::case[inductor-cuda-bfloat16]``. A cell the command line narrows away
(``--backends/--devices/--dtypes``) is not collected; a cell this machine cannot run (no
such device, a mark's requirement unmet, max-autotune on the CPU without
``--max-autotune``) is collected and skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import os
from typing import Optional, Sequence

import torch

from .case import Case, Mark
from .core.backends import backend as backend_record


@dataclasses.dataclass(frozen=True)
class MatrixCell:
    backend: str
    device: str
    dtype: str
    skip_reason: Optional[str] = None
    dynamic: Optional[str] = None  # the case's ``dynamic:`` axis value (None: the case has no such axis)

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.device}-{self.dtype}" + (f"-{self.dynamic}" if self.dynamic else "")

    @property
    def variant(self) -> str:
        """The backend with the dynamic mode, ``inductor.dynamic``: what tells two cells of one device and dtype apart."""
        return f"{self.backend}.{self.dynamic}" if self.dynamic else self.backend


@dataclasses.dataclass(frozen=True)
class Narrowing:
    """The command line's choice of backends, devices and dtypes (empty: all)."""

    backends: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()
    max_autotune: bool = False

    def keeps(self, backend: str, device: str, dtype: str) -> bool:
        return (
            (not self.backends or backend in self.backends)
            and (not self.devices or device in self.devices)
            and (not self.dtypes or dtype in self.dtypes)
        )


@functools.lru_cache(maxsize=None)
def available_devices() -> tuple[str, ...]:
    """Device types this process can run on: cpu always, then whatever torch reports."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        found.append("xpu")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return tuple(found)


def device_count(device: str) -> int:
    if device == "cpu":
        return 1
    module = getattr(torch, device, None)
    return module.device_count() if module is not None and hasattr(module, "device_count") else 0


def triton_interpreter_unavailable() -> Optional[str]:
    """Why Triton's CPU interpreter cannot run this process's kernels (None: it can).

    Triton picks compiled or interpreted at ``@triton.jit`` time, process-wide: with a GPU
    and no ``TRITON_INTERPRET=1`` the kernels are compiled for it, so cells meant for the
    interpreter give way to the GPU's cells.
    """
    try:
        import triton  # noqa: F401
    except ImportError:
        return "needs triton, which is not importable here"
    import numpy

    if tuple(int(p) for p in numpy.__version__.split(".")[:2]) >= (2, 3):
        return f"Triton 3.6's interpreter needs numpy < 2.3 (found {numpy.__version__})"
    if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return "this process compiles Triton kernels for its GPU (set TRITON_INTERPRET=1 to interpret them)"
    return None


def unmet_requirement(mark: Mark, device: str) -> Optional[str]:
    """Why this machine does not meet a ``requires`` mark on ``device`` (None when it does)."""
    for key, wanted in mark.requirements:
        if key == "min_devices" and device_count(device) < wanted:
            return f"needs {wanted} {device} devices, this machine has {device_count(device)}"
        if key == "triton" and wanted:
            try:
                import triton  # noqa: F401
            except ImportError:
                return "needs triton, which is not importable here"
        if key == "imports":
            for module in wanted:
                if importlib.util.find_spec(module) is None:
                    return f"needs the Python module {module!r}, which is not importable here (tools/setup.sh installs the test dependencies)"
        if key == "triton_interpreter" and wanted:
            reason = triton_interpreter_unavailable()
            if reason is not None:
                return reason
        if key == "big_gpu" and wanted:
            if device != "cuda":
                return f"needs a big GPU, and {device} is none"
            from torch._inductor.utils import is_big_gpu

            if not is_big_gpu(torch.cuda.current_device()):
                return "needs a big GPU (enough SMs for max-autotune templates); this one is smaller"
        if key == "device_memory_gb":
            if device == "cuda":
                total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**30
                if total < wanted:
                    return f"needs {wanted:g} GiB of device memory, this GPU has {total:.0f} GiB"
            elif device != "cpu":
                return f"cannot check the memory of a {device} device"
    return None


def why_cannot_run(case: Case, backend: str, device: str, dtype: str, narrowing: Narrowing) -> Optional[str]:
    if device not in available_devices():
        return f"no {device} device on this machine (available: {', '.join(available_devices())})"
    if backend_record(backend).slow_on_cpu and device == "cpu" and not narrowing.max_autotune:
        return "max-autotune cells on the CPU run only with --max-autotune (slow; GPU templates are the point)"
    for mark in case.marks:
        if mark.kind == "requires" and mark.when.applies(backend, device, dtype):
            unmet = unmet_requirement(mark, device)
            if unmet is not None:
                return unmet
    return None


def expand_matrix(case: Case, narrowing: Narrowing = Narrowing()) -> list[MatrixCell]:
    """Every cell of the case the narrowing keeps, in backend, device, dtype, dynamic order."""
    cells = []
    modes: tuple[Optional[str], ...] = case.matrix.dynamic or (None,)
    for backend, device, dtype, dynamic in itertools.product(case.matrix.backends, case.matrix.devices, case.matrix.dtypes, modes):
        if not narrowing.keeps(backend, device, dtype):
            continue
        cells.append(MatrixCell(backend, device, dtype, why_cannot_run(case, backend, device, dtype, narrowing), dynamic))
    return cells


def declared_golden_keys(case: Case) -> set[tuple[str, str]]:
    """(device, dtype) pairs whose golden this case owns, whatever this machine can run."""
    if not case.checks.golden:
        return set()
    return set(itertools.product(case.matrix.devices, case.matrix.dtypes))


def current_device_index(device: str) -> Optional[int]:
    """The index a ``device`` cell runs on in this process (``"cuda"`` means the current GPU); None for the CPU."""
    module = getattr(torch, device, None) if device != "cpu" else None
    if module is None or not hasattr(module, "current_device") or device not in available_devices():
        return None
    return int(module.current_device())


def pin_worker_to_gpu(worker_id: Optional[str], devices: Sequence[str] = ("cuda",)) -> Optional[str]:
    """Under pytest-xdist with several GPUs, give worker ``gwN`` GPU ``N % count``.

    Done with ``torch.cuda.set_device`` (not CUDA_VISIBLE_DEVICES, which is read once at
    CUDA initialisation and may already be fixed), so "cuda" in a cell means this
    worker's GPU. Returns a note for the header, or None when nothing was pinned.
    """
    if not worker_id or not worker_id.startswith("gw"):
        return None
    if "cuda" not in devices or "cuda" not in available_devices():
        return None
    count = torch.cuda.device_count()
    if count < 2:
        return None
    index = int(worker_id[2:]) % count
    torch.cuda.set_device(index)
    os.environ["QUANTCHECK_WORKER_GPU"] = str(index)
    return f"{worker_id} -> cuda:{index}"
