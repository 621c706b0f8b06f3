"""The matrix's backends, one record each: what a cell's ``backend`` name stands for.

The harness reads these attributes instead of testing the name: the torch.compile call it
stands for (``execute.compile_program`` takes the record), whether the backend's runs
produce code (FileCheck targets, kernels), which FileCheck prefixes a cell answers to,
where it sorts in the summary table. In the core (standard library only) so that a repro
script, which carries the core, compiles through the same record as the harness.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

#: torch.compile's mode for the max-autotune backend: autotuned templates, no CUDA graphs
#: (a case asks for CUDA graphs with ``compile_mode:`` on the inductor backend).
MAX_AUTOTUNE_MODE = "max-autotune-no-cudagraphs"


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str  # as written in a case's matrix and in node ids
    compiler: str  # torch.compile's ``backend=``
    mode: Optional[str] = None  # torch.compile's ``mode=`` this backend fixes
    takes_compile_mode: bool = False  # the case's ``compile_mode:`` applies (when ``mode`` is None)
    compiles: bool = True  # False: Dynamo captures the graph and runs it as is (nothing to bisect)
    generates_code: bool = False  # Inductor: output code and kernels (FileCheck targets, PTX/SASS)
    filecheck_names: tuple[str, ...] = ()  # the prefix parts its cells answer to (CHECK-<part>)
    default: bool = True  # in the matrix of a case that names no backends
    slow_on_cpu: bool = False  # its CPU cells run only with --max-autotune (GPU templates are its point)

    def compile_mode(self, case_mode: str) -> Optional[str]:
        """torch.compile's ``mode=`` for a cell of a case whose ``compile_mode:`` is ``case_mode``."""
        if self.mode is not None:
            return self.mode
        return case_mode if self.takes_compile_mode and case_mode != "default" else None


REGISTRY: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("eager", "eager", compiles=False, filecheck_names=("EAGER",)),
        Backend("aot_eager", "aot_eager", filecheck_names=("AOT-EAGER",)),
        Backend("inductor", "inductor", takes_compile_mode=True, generates_code=True, filecheck_names=("INDUCTOR",)),
        Backend(
            "inductor_max_autotune", "inductor", mode=MAX_AUTOTUNE_MODE, generates_code=True,
            filecheck_names=("INDUCTOR", "MAX-AUTOTUNE"), default=False, slow_on_cpu=True,
        ),
    )
}
#: The names, in the summary table's order.
NAMES: tuple[str, ...] = tuple(REGISTRY)


def backend(name: str) -> Backend:
    """The record of ``name``; a name no record has is a harness bug (cases are validated against NAMES)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r} (known: {', '.join(NAMES)})") from None
