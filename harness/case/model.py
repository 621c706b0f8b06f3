"""The case model: frozen records a suite file becomes, and the names they may hold.

Everything here is plain data, made only by the loader (harness/case/sections.py, and each check's own ``checks:`` keys), which
has checked every value against these names; the matrix, the run and the checks read it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional

from ..core import programs
from ..core.backends import NAMES as BACKENDS  # noqa: F401  (the names a matrix may hold)
from ..core.inputs import InputSpec
from ..core.tolerance import Tolerance  # the tolerance model's record lives with its maths

DEVICES = ("cpu", "cuda", "xpu", "mps")
FILECHECK_TARGETS = ("output_code", "post_grad_graph", "kernel_source", "autotune_block", "ptx", "sass", "kernel_resources")
PASS_HOOKS = (
    "pre_grad_custom_pass",
    "joint_custom_pre_pass",
    "joint_custom_post_pass",
    "post_grad_custom_pre_pass",
    "post_grad_custom_post_pass",
)
COUNTER_OPS = ("equals", "at_least", "at_most")
MARK_KINDS = ("slow", "skip", "xfail", "requires")
REQUIREMENTS = ("big_gpu", "device_memory_gb", "min_devices", "triton", "triton_interpreter", "imports")

# torch.compile modes the ``inductor`` backend's cells may use (``compile_mode:``); the ones
# with CUDA graphs are run until they replay (harness/run.py, CUDAGRAPH_RUNS).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
# The ``dynamic:`` matrix axis: torch.compile(dynamic=False), (dynamic=True), and dynamic=None
# (automatic: static first, dynamic once a second shape is seen).
DYNAMIC_MODES = ("static", "dynamic", "automatic")

# How a fuzz case may vary an input (harness/fuzz.py draws them).
LAYOUTS = ("contiguous", "transposed", "padded")
RANGE_SETTINGS = ("mean", "std", "low", "high")


@dataclasses.dataclass(frozen=True)
class When:
    """A filter on matrix cells; an empty tuple means "any"."""

    backends: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()

    def applies(self, backend: str, device: str, dtype: str) -> bool:
        return (
            (not self.backends or backend in self.backends)
            and (not self.devices or device in self.devices)
            and (not self.dtypes or dtype in self.dtypes)
        )

    def describe(self) -> str:
        parts = [f"{k}={','.join(v)}" for k, v in dataclasses.asdict(self).items() if v]
        return " ".join(parts) or "every cell"


@dataclasses.dataclass(frozen=True)
class Matrix:
    backends: tuple[str, ...]
    devices: tuple[str, ...]
    dtypes: tuple[str, ...]
    dynamic: tuple[str, ...] = ()  # DYNAMIC_MODES of the ``dynamic:`` axis; empty: no axis (torch.compile's default)


@dataclasses.dataclass(frozen=True)
class FileCheckBlock:
    target: str
    check: str
    first_check_line: int  # YAML line of the check text's first line (1 in a checks file)
    when: When
    line: int
    each_graph: bool = False  # run on each compiled graph's code alone (a case with calls recompiles)
    prefixes: tuple[str, ...] = ("CHECK",)  # the block's own check prefixes (``prefixes:``)
    file: str = ""  # a checks file (``file:``), as shown; its text is ``check`` ("" while it does not exist)
    file_path: Optional[Path] = None  # that file, to read and to write (--update-checks)


@dataclasses.dataclass(frozen=True)
class CounterExpectation:
    key: str  # "<group>.<name>", e.g. "inductor.inplace_padding"
    equals: Optional[int]
    at_least: Optional[int]
    at_most: Optional[int]
    when: When
    line: int

    @property
    def group(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]


@dataclasses.dataclass(frozen=True)
class RecompileBound:
    """``checks.recompiles``: how many calls after the first may compile anew (``op`` is ==, <= or >=);
    ``dynamic``: the ``dynamic:`` axis value it holds for (None: every cell)."""

    op: str
    count: int
    dynamic: Optional[str] = None
    line: int = 0

    def holds(self, recompiles: int) -> bool:
        return {"==": recompiles == self.count, "<=": recompiles <= self.count, ">=": recompiles >= self.count}[self.op]


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of a case's ``calls:`` sequence: every input's spec for this call; ``changed``
    names the inputs the call overrides (built anew for it; the others are the same objects
    in every call of the sequence, as a user's model is)."""

    inputs: tuple[InputSpec, ...]
    changed: tuple[str, ...]
    line: int


@dataclasses.dataclass(frozen=True)
class Variant:
    """The case's program or inputs changed, run in the same cell beside it (a baseline to time
    against, a reference to compare with): ``inputs`` and ``calls`` as the case's, with the
    variant's input overrides on top."""

    program: str
    params: tuple[tuple[str, Any], ...]
    inputs: tuple[InputSpec, ...]
    calls: tuple[Call, ...]
    changed: tuple[str, ...]  # the inputs the variant overrides
    text: str  # how the suite wrote it, for reports
    line: int


@dataclasses.dataclass(frozen=True)
class Reference:
    """``checks.references[i]``: a variant run eagerly in the cell, the compiled outputs held to it
    (a quantized model to the dense one, or to its float64 formula) with its own tolerances."""

    name: str
    variant: Variant
    tolerances: tuple[tuple[str, Tolerance], ...]  # dtype name -> tolerance, every matrix dtype present
    when: When = When()

    def tolerance_for(self, dtype: str) -> Tolerance:
        return dict(self.tolerances)[dtype]


@dataclasses.dataclass(frozen=True)
class FasterThan:
    """``checks.perf.faster_than``: the baseline's time / the case's >= ``by``, both timed in the cell."""

    baseline: Variant
    by: float
    line: int = 0


#: ``checks.perf.timer``: CUDA events around each call after a GPU spin (the GPU's time), a CUDA
#: graph's replay, or the host's clock around plain synchronized calls (host cost included).
PERF_TIMERS = ("events", "graph", "wall")


@dataclasses.dataclass(frozen=True)
class PerfSpec:
    """``checks.perf``: time the cell (harness/perf.py); fail when slower than (1 + band) x its
    perf golden, or not ``faster_than.by`` times faster than a baseline timed beside it."""

    band: float = 0.15
    warmup: int = 10  # untimed calls first
    reps: int = 100  # timed calls; the median is kept
    cuda_graph: bool = False  # time the replay of a CUDA graph of the call (timer: graph)
    l2_flush: bool = False  # read a 256 MB buffer before each timed call (operands from HBM)
    when: When = When()
    line: int = 0
    timer: str = "events"  # one of PERF_TIMERS; "graph" exactly when cuda_graph
    golden: bool = True  # hold the time to a perf golden of the device kind
    faster_than: Optional[FasterThan] = None


@dataclasses.dataclass(frozen=True)
class PassSpec:
    """``factory`` is a ``module:function``; called with no arguments it returns a graph pass."""

    hook: str
    factory: str
    line: int


@dataclasses.dataclass(frozen=True)
class Mark:
    kind: str  # slow | skip | xfail | requires
    reason: str
    when: When
    strict: bool = True
    requirements: tuple[tuple[str, Any], ...] = ()
    line: int = 0


@dataclasses.dataclass(frozen=True)
class Checks:
    """A case's ``checks:``, read by name (``case.checks.perf``): each key's value, the key's
    default where the case gives none. Which keys there are is the checks' business: each
    check parses its own (harness/case/check_sections.py), so this record names none."""

    values: tuple[tuple[str, Any], ...] = ()

    def __getattr__(self, key: str) -> Any:
        # Only for names the class lacks; dunders stay missing (copy and pickle probe them).
        if not key.startswith("__"):
            for name, value in self.__dict__.get("values", ()):
                if name == key:
                    return value
        raise AttributeError(f"checks has no key {key!r} (no check in harness.checks.CHECKS reads it)")

    def replace(self, **changes: Any) -> "Checks":
        """These checks with some keys' values changed."""
        unknown = set(changes) - {name for name, _ in self.values}
        if unknown:
            raise AttributeError(f"checks has no key {sorted(unknown)[0]!r}")
        return Checks(tuple((name, changes.get(name, value)) for name, value in self.values))


# --------------------------------------------------------------------------- fuzz spec


@dataclasses.dataclass(frozen=True)
class DimRange:
    """A size a fuzz case draws: from ``min`` to ``max`` inclusive, a multiple of ``multiple_of``."""

    name: str
    min: int
    max: int
    multiple_of: int = 1


@dataclasses.dataclass(frozen=True)
class InputFuzz:
    """How one input may vary: layouts, distributions and ranges of their settings."""

    name: str
    layouts: tuple[str, ...] = ("contiguous",)
    max_pad: int = 8
    distributions: tuple[str, ...] = ()  # empty: the input's own
    ranges: tuple[tuple[str, float, float], ...] = ()  # (setting, low, high)


@dataclasses.dataclass(frozen=True)
class FuzzSpec:
    """A case's ``fuzz:`` block: how many examples, from which seed, varying what (harness/fuzz.py)."""

    examples: int
    seed: Optional[int]
    max_seconds: float
    dims: tuple[DimRange, ...]
    inputs: tuple[InputFuzz, ...]
    reference: Optional[str]
    line: int


@dataclasses.dataclass(frozen=True)
class Case:
    suite_path: Path
    display_path: str
    name: str
    line: int
    description: str
    program: str
    params: tuple[tuple[str, Any], ...]
    inputs: tuple[InputSpec, ...]
    seed: int
    matrix: Matrix
    tolerances: tuple[tuple[str, Tolerance], ...]  # dtype name -> tolerance, every matrix dtype present
    config: tuple[tuple[str, Any], ...]
    dynamo_config: tuple[tuple[str, Any], ...]
    passes: tuple[PassSpec, ...]
    backward: bool
    no_grad: bool  # every run (eager, float64, compiled) under torch.no_grad(), as inference compiles
    deterministic: bool
    checks: Checks
    marks: tuple[Mark, ...]
    timeout: Optional[float] = None  # seconds; None: --cell-timeout or no limit (harness/guard.py)
    fuzz: Optional[FuzzSpec] = None  # input shapes/strides/values drawn by hypothesis (harness/fuzz.py)
    compile_mode: str = "default"  # torch.compile mode of the ``inductor`` backend's cells
    calls: tuple[Call, ...] = ()  # a sequence of calls of one compiled callable (empty: one call on ``inputs``)
    mark_dynamic: tuple[tuple[str, tuple[int, ...]], ...] = ()  # input name -> dims torch._dynamo.mark_dynamic marks

    def tolerance_for(self, dtype: str) -> Tolerance:
        return dict(self.tolerances)[dtype]

    def make_program(self) -> Callable[..., Any]:
        return programs.make_program(self.program, dict(self.params))


@dataclasses.dataclass(frozen=True)
class Suite:
    path: Path
    display_path: str
    description: str
    cases: tuple[Case, ...]
