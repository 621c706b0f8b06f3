"""The part of a cell's run that needs no harness, written once for the harness and its repro scripts.

Dtype names, ``module:function`` resolution, input construction (the builder interface
``InputSpec`` / ``BuildContext``, the distributions, plain tensors), the built-in programs,
running a program and naming its outputs, the tolerance model's numbers (errors, SQNR,
which checks an output fails) and the golden's fixed sample.

:mod:`harness.repro` pastes this file's source into every repro script, so that a script
rebuilds the inputs, runs the program and judges the outputs with the very code the
harness used. It therefore imports only torch and the standard library, nothing of
``harness``; :mod:`harness.dtypes`, :mod:`harness.programs`, :mod:`harness.inputs`,
:mod:`harness.run`, :mod:`harness.compare` and :mod:`harness.golden` build on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import os
import re
import traceback
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree

# ------------------------------------------------------------------------------- dtypes

#: Canonical name -> torch dtype. Canonical names are what test ids and golden file names use.
DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float8_e4m3fn": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}

#: The placeholder an input uses to mean "the dtype of the matrix cell".
MATRIX_DTYPE = "@dtype"


# ------------------------------------------------------------------------------- imports


class ProgramImportError(LookupError):
    """A ``module:function`` program that cannot be imported or found; the message says which part failed."""


def import_program(target: str) -> Callable[..., Any]:
    """``'pkg.mod:func'`` -> the function (``func`` may be dotted: ``Class.method``)."""
    module_name, _, attr_path = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and missing and (module_name == missing or module_name.startswith(missing + ".")):
            # The program's own module is not on the import path: usually the project root,
            # which pytest adds only when told to.
            hint = "; is the project's root on the import path? set pythonpath = [\".\"] under [tool.pytest.ini_options] in pyproject.toml (pytest.ini: pythonpath = .)"
        raise ProgramImportError(f"cannot import module {module_name!r}: {exc}{hint}") from exc
    except (Exception, SystemExit) as exc:  # SystemExit too: a module calling sys.exit() must not end the session
        raise ProgramImportError(f"importing module {module_name!r} raised {describe_exception(exc)}") from exc
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise ProgramImportError(
                f"module {module_name!r} has no {attr_path!r} (callables there: {', '.join(public) or 'none'})"
            ) from None
    if not callable(obj):
        raise ProgramImportError(f"{target!r} is a {type(obj).__name__}, not a callable")
    return obj


def describe_exception(exc: BaseException) -> str:
    """``Type: message (file:line)`` of where ``exc`` was raised, the innermost frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({os.path.relpath(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}" + (f": {message[0]}" if message else "") + where


# -------------------------------------------------------------------------------- inputs

#: Distributions and the settings each one reads (all others must be absent).
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "normal": ("mean", "std"),
    "uniform": ("low", "high"),
    "randint": ("low", "high"),
    "ones": (),
    "zeros": (),
    "fill": ("value",),
    "arange": (),
}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One program argument, as a suite declares it.

    ``shape``: logical sizes, e.g. (M, K). ``strides``: explicit strides; the storage is
    the smallest that holds them (like ``torch._dynamo.testing.rand_strided``).
    ``pad_last_dim``: allocate (..., K + pad) contiguous and view (..., K): padded row
    strides *and* storage room after the last row. ``dtype`` is a canonical dtype name or
    ``"@dtype"`` (the cell's dtype). ``seed`` None means "derived from the case seed".
    """

    name: str
    kind: str = "tensor"
    shape: tuple[int, ...] = ()
    dtype: str = "@dtype"
    strides: Optional[tuple[int, ...]] = None
    pad_last_dim: int = 0
    distribution: str = "normal"
    mean: float = 0.0
    std: float = 1.0
    low: Optional[float] = None
    high: Optional[float] = None
    value: Optional[float] = None
    seed: Optional[int] = None
    requires_grad: bool = False
    params: tuple[tuple[str, Any], ...] = ()
    line: int = 0

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a kind's builder gets besides the spec: where, which dtype, and the seeded generator."""

    device: str
    dtype: torch.dtype
    generator: torch.Generator

    def sample(self, spec: InputSpec, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A contiguous CPU tensor of ``shape`` drawn from the spec's distribution, cast to ``dtype``."""
        return sample_distribution(spec, shape, dtype, self.generator)


def sample_distribution(
    spec: InputSpec, shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator
) -> torch.Tensor:
    """Values for ``shape`` on the CPU. Floats are drawn in float32 and then cast, so that a
    bfloat16 cell sees exactly the float32 cell's values rounded."""
    draw_dtype = torch.float32 if (dtype.is_floating_point or dtype == torch.bool) else dtype
    d = spec.distribution
    if d == "normal":
        values = torch.randn(shape, generator=generator, dtype=torch.float32) * spec.std + spec.mean
    elif d == "uniform":
        low = 0.0 if spec.low is None else spec.low
        high = 1.0 if spec.high is None else spec.high
        values = torch.rand(shape, generator=generator, dtype=torch.float32) * (high - low) + low
    elif d == "randint":
        low = 0 if spec.low is None else int(spec.low)
        values = torch.randint(low, int(spec.high), shape, generator=generator, dtype=torch.int64)
    elif d == "ones":
        values = torch.ones(shape, dtype=draw_dtype)
    elif d == "zeros":
        values = torch.zeros(shape, dtype=draw_dtype)
    elif d == "fill":
        values = torch.full(shape, spec.value, dtype=torch.float32 if draw_dtype.is_floating_point else torch.float64)
    elif d == "arange":
        values = torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape)
    else:  # the loader rejects other names; this guards programmatic misuse
        raise ValueError(f"unknown distribution {d!r}; allowed {', '.join(DISTRIBUTIONS)}")
    return values.to(dtype)


def _storage_numel(shape: tuple[int, ...], strides: tuple[int, ...]) -> int:
    if any(s == 0 for s in shape):
        return 0
    return 1 + sum((size - 1) * stride for size, stride in zip(shape, strides))


def build_plain_tensor(spec: InputSpec, ctx: BuildContext) -> torch.Tensor:
    """``kind: tensor``: sample, lay out with the declared strides or padding, move to the device."""
    if spec.strides is not None:
        flat = ctx.sample(spec, (_storage_numel(spec.shape, spec.strides),), ctx.dtype)
        tensor = flat.to(ctx.device).as_strided(spec.shape, spec.strides)
    elif spec.pad_last_dim:
        padded_shape = (*spec.shape[:-1], spec.shape[-1] + spec.pad_last_dim)
        padded = ctx.sample(spec, padded_shape, ctx.dtype).to(ctx.device)
        tensor = padded[..., : spec.shape[-1]]
    else:
        tensor = ctx.sample(spec, spec.shape, ctx.dtype).to(ctx.device)
    if spec.requires_grad:
        tensor.requires_grad_(True)
    return tensor


def resolve_input_dtype(spec: InputSpec, matrix_dtype: torch.dtype) -> torch.dtype:
    return matrix_dtype if spec.dtype == MATRIX_DTYPE else DTYPES[spec.dtype]


def build_with(
    build: Callable[[InputSpec, BuildContext], Any], spec: InputSpec, *, device: str, matrix_dtype: torch.dtype, seed: int
) -> Any:
    """``build(spec, ctx)`` with a fresh generator seeded ``seed``: the same values on every device and run."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return build(spec, BuildContext(device=device, dtype=resolve_input_dtype(spec, matrix_dtype), generator=generator))


# --------------------------------------------------------------------- built-in programs

aten = torch.ops.aten


def build_matmul() -> Callable[..., torch.Tensor]:
    def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(M, K) @ (K, N) -> (M, N); batched shapes broadcast as in torch.matmul."""
        return a @ b

    return matmul


def build_linear() -> Callable[..., torch.Tensor]:
    def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x (M, K), weight (N, K), optional bias (N,) -> (M, N) = x @ weight.T + bias."""
        return F.linear(x, weight, bias)

    return linear


_UNARY_OPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "abs": torch.abs,
    "cos": torch.cos,
    "exp": torch.exp,
    "gelu": F.gelu,
    "neg": torch.neg,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "sin": torch.sin,
    "square": torch.square,
    "tanh": torch.tanh,
}
_SCALAR_OPS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "add": torch.add,
    "mul": torch.mul,
    "sub": torch.sub,
    "div": torch.div,
    "pow": torch.pow,
}
POINTWISE_OP_NAMES = tuple(sorted(_UNARY_OPS)) + tuple(sorted(_SCALAR_OPS))


def parse_pointwise_op(op: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """``'sin'`` or ``{'mul': 2.0}`` -> a one-argument tensor function. Raises ValueError with the allowed names."""
    if isinstance(op, str) and op in _UNARY_OPS:
        return _UNARY_OPS[op]
    if isinstance(op, Mapping) and len(op) == 1:
        ((name, scalar),) = op.items()
        if name in _SCALAR_OPS and isinstance(scalar, (int, float)) and not isinstance(scalar, bool):
            binary = _SCALAR_OPS[name]
            return lambda t: binary(t, scalar)
    raise ValueError(
        f"pointwise op {op!r} is neither a unary name ({', '.join(sorted(_UNARY_OPS))}) "
        f"nor a one-key mapping {{op: number}} with op in {', '.join(sorted(_SCALAR_OPS))}"
    )


def build_pointwise_chain(ops: list) -> Callable[..., torch.Tensor]:
    steps = [parse_pointwise_op(op) for op in ops]

    def pointwise_chain(*tensors: torch.Tensor) -> torch.Tensor:
        """Sum of the inputs (broadcast), then each op in order: one fusable pointwise kernel."""
        out = tensors[0]
        for t in tensors[1:]:
            out = out + t
        for step in steps:
            out = step(out)
        return out

    return pointwise_chain


def build_constant_pad_nd_mm(pad: list, value: float, add_before: float | None) -> Callable[..., torch.Tensor]:
    pad_tuple = tuple(int(p) for p in pad)

    def constant_pad_nd_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a (M, K) [+ add_before], padded by ``pad`` with ``value`` to (M, K'), then @ b (K', N)."""
        if add_before is not None:
            a = a + add_before
        return aten.constant_pad_nd(a, pad_tuple, value) @ b

    return constant_pad_nd_mm


REDUCTIONS = {"sum": torch.sum, "mean": torch.mean, "amax": torch.amax, "amin": torch.amin}


def build_reduce(op: str, dim: int) -> Callable[..., torch.Tensor]:
    if op not in REDUCTIONS:
        raise ValueError(f"reduce op {op!r} is not one of {', '.join(REDUCTIONS)}")
    reduction = REDUCTIONS[op]

    def reduce(x: torch.Tensor) -> torch.Tensor:
        """x reduced over ``dim`` with ``op``."""
        return reduction(x, dim=dim)

    return reduce


#: Built-in program name -> its build function (harness.programs registers each with its parameters).
BUILTIN_BUILDERS: dict[str, Callable[..., Callable[..., Any]]] = {
    "matmul": build_matmul,
    "linear": build_linear,
    "pointwise_chain": build_pointwise_chain,
    "constant_pad_nd_mm": build_constant_pad_nd_mm,
    "reduce": build_reduce,
}


# ------------------------------------------------------------------------------- running


def flatten_outputs(result: Any, prefix: str = "output") -> dict[str, torch.Tensor]:
    """Name each leaf of a program's result: 'output' for a lone tensor, else 'output[i]' / 'output[key]'."""
    if isinstance(result, torch.Tensor):
        return {prefix: result}
    leaves, _ = pytree.tree_flatten_with_path(result)
    named = {}
    for path, leaf in leaves:
        name = prefix + "".join(f"[{getattr(k, 'idx', getattr(k, 'key', k))}]" for k in path)
        if isinstance(leaf, torch.Tensor):
            named[name] = leaf
        elif isinstance(leaf, (bool, int, float)):
            named[name] = torch.tensor(leaf)
        elif leaf is not None:
            raise TypeError(f"{name}: the program returned a {type(leaf).__name__}; outputs must be tensors or numbers")
    return named


def run_program(
    fn: Callable[..., Any], inputs: list[Any], specs: Sequence[InputSpec], *, no_grad: bool, backward: bool, inputs_after: bool,
) -> dict[str, torch.Tensor]:
    """Call ``fn`` (under no_grad when the case asks), run backward when it asks, and collect
    outputs, grads and (optionally) inputs; ``specs`` name the inputs."""
    with torch.no_grad() if no_grad else contextlib.nullcontext():
        result = fn(*inputs)
    outputs = flatten_outputs(result)
    if backward:
        differentiable = [t for t in outputs.values() if t.requires_grad]
        if not differentiable:
            raise RuntimeError("backward: true, but no output requires grad")
        torch.autograd.backward(differentiable, [torch.ones_like(t) for t in differentiable])
        for spec, value in zip(specs, inputs):
            if spec.requires_grad and isinstance(value, torch.Tensor):
                if value.grad is None:
                    raise RuntimeError(f"backward: input {spec.name!r} got no gradient")
                outputs[f"grad({spec.name})"] = value.grad
    if inputs_after:
        for spec, value in zip(specs, inputs):
            for name, tensor in flatten_outputs(value, prefix=f"input({spec.name})").items():
                outputs[name] = tensor
    return {name: t.detach() for name, t in outputs.items()}


def upcast_to_float64(value: Any) -> Any:
    """Floating tensors in ``value`` (nested) as float64 copies, keeping requires_grad: the float64 run's inputs."""

    def upcast(t: Any) -> Any:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            out = t.detach().to(torch.float64)
            return out.requires_grad_(t.requires_grad)
        return t

    return pytree.tree_map(upcast, value)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    # The C-level switch behind torch.utils.deterministic's module property, which 2.11 and
    # 2.13 spell differently (fill_uninitialized_memory / fill_uninitialized_empty).
    previous_fill = torch._C._get_deterministic_fill_uninitialized_memory()
    previous_workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    # cuBLAS is only deterministic with a fixed workspace; torch refuses otherwise.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch._C._set_deterministic_fill_uninitialized_memory(True)  # torch.empty gives NaN, not stale memory
    try:
        yield
    finally:
        if previous_workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        torch.use_deterministic_algorithms(previous)
        torch._C._set_deterministic_fill_uninitialized_memory(previous_fill)


#: torch.compile's ``dynamic=`` for each mode of a case's ``dynamic:`` axis (None: automatic,
#: static until a second shape is seen, as torch.compile does by default).
DYNAMIC_ARGUMENT = {"static": False, "dynamic": True, "automatic": None, None: None}


def compile_program(fn: Callable[..., Any], backend: str, mode: Optional[str], dynamic: Optional[str] = None) -> Callable[..., Any]:
    """torch.compile for a cell's backend: the ``inductor*`` backends are Inductor in ``mode``;
    ``dynamic``: the cell's dynamic mode (static, dynamic, automatic; None: the default)."""
    if backend.startswith("inductor"):
        return torch.compile(fn, backend="inductor", mode=mode, dynamic=DYNAMIC_ARGUMENT[dynamic])
    return torch.compile(fn, backend=backend, dynamic=DYNAMIC_ARGUMENT[dynamic])


def _chain(passes: list[Callable[[Any], Any]]) -> Callable[[Any], None]:
    def composite(graph: Any) -> None:
        for graph_pass in passes:
            graph_pass(graph)

    composite.__qualname__ = "quantcheck_composite_pass"
    return composite


def chain_passes(patch: dict[str, Any], passes: Sequence[tuple[str, Callable[[Any], Any]]], inductor_config: Any) -> dict[str, Any]:
    """``patch`` with each ``(hook, graph pass)`` run after what the hook already holds (in
    ``patch``, else in Inductor's config): one composite pass per hook, since torch 2.11's
    hooks take a single callable, no list."""
    patch = dict(patch)
    hooks: dict[str, list[Callable[[Any], Any]]] = {}
    for hook, graph_pass in passes:
        if hook not in hooks:
            existing = patch.get(hook, getattr(inductor_config, hook))
            hooks[hook] = [existing] if existing is not None else []
        hooks[hook].append(graph_pass)
    for hook, chain in hooks.items():
        patch[hook] = chain[0] if len(chain) == 1 else _chain(chain)
    return patch


class PostGradCapture:
    """A post-grad pass that records each graph it sees as readable text (forward and backward)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, graph: torch.fx.Graph) -> None:
        module = graph.owning_module
        if module is not None:
            body = module.print_readable(print_output=False, include_stride=True, include_device=True)
        else:
            body = str(graph)
        self.texts.append(f"# AFTER POST GRAD: graph {len(self.texts)}\n{body}")


_KERNEL_DEFINITION = re.compile(
    r"^(?P<name>\w+) = async_compile\.(?P<kind>\w+)\((?P<head>[^\n]*?)r?'''\n?(?P<source>.*?)'''",
    re.DOTALL | re.MULTILINE,
)


def extract_kernel_sources(output_code: str) -> str:
    """The generated kernels (Triton, C++) in an output-code module, each under a '# kernel <name>' header."""
    parts = []
    for match in _KERNEL_DEFINITION.finditer(output_code):
        parts.append(f"# kernel {match['name']} ({match['kind']})\n{match['source'].rstrip()}")
    return "\n".join(parts)


# ----------------------------------------------------------------------- tolerance model


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How close is close enough for floating outputs of one dtype.

    ``atol``/``rtol``: elementwise, as torch.testing.assert_close. ``min_sqnr_db``: signal to
    quantization-noise ratio of actual vs expected must reach this. ``quant_step`` with
    ``max_step_error``: max |actual - expected| <= max_step_error * quant_step.
    ``float64_factor``: the compiled result's max error against a float64 run of the same
    program must be <= float64_factor x eager's (plus atol), i.e. compiling may not make
    the numerics worse than eager by more than that factor. ``max_kl_div`` and
    ``min_top_k_agreement`` read the last dimension as logits, one distribution per row
    (a language model's next token): the mean KL(softmax(expected) || softmax(actual)) over
    rows, in nats, must stay <= max_kl_div; the share of rows whose actual argmax is among
    expected's ``top_k`` (default 1: the argmaxes agree) must reach min_top_k_agreement.
    """

    atol: float
    rtol: float
    min_sqnr_db: Optional[float] = None
    quant_step: Optional[float] = None
    max_step_error: Optional[float] = None
    float64_factor: Optional[float] = None
    max_kl_div: Optional[float] = None
    min_top_k_agreement: Optional[float] = None
    top_k: Optional[float] = None  # an integer >= 1 (the loader checks), float like every tolerance number


def is_inexact(tensor: torch.Tensor) -> bool:
    """Floating or complex: compared within a tolerance (the rest compare exactly)."""
    return tensor.is_floating_point() or tensor.is_complex()


def to_wide(tensor: torch.Tensor) -> torch.Tensor:
    """float64 on the CPU, or complex128 for a complex tensor (a float64 cast drops the imaginary part)."""
    return tensor.detach().to("cpu", torch.complex128 if tensor.is_complex() else torch.float64)


def float_errors(expected: torch.Tensor, actual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(abs error, rel error) in float64 on the CPU; matching NaNs and same-signed infs count as 0.
    For complex tensors the abs error is the modulus of the difference."""
    wide = torch.complex128 if expected.is_complex() or actual.is_complex() else torch.float64
    e = expected.detach().to("cpu", wide)
    a = actual.detach().to("cpu", wide)
    both_nan = torch.isnan(e) & torch.isnan(a)
    same_inf = torch.isinf(e) & (e == a)
    abs_err = (a - e).abs()
    abs_err = torch.where(both_nan | same_inf, torch.zeros_like(abs_err), abs_err)
    abs_err = torch.where(torch.isnan(abs_err), torch.full_like(abs_err, math.inf), abs_err)
    rel_err = abs_err / e.abs()
    rel_err = torch.where(abs_err == 0, torch.zeros_like(rel_err), rel_err)
    return abs_err, rel_err


def sqnr_db(expected: torch.Tensor, actual: torch.Tensor) -> float:
    """Signal to noise ratio of ``actual`` as an approximation of ``expected``, in dB (inf when equal)."""
    e = to_wide(expected)
    a = to_wide(actual)
    noise = (a - e).abs().pow(2).sum().item()
    signal = e.abs().pow(2).sum().item()
    if noise == 0:
        return math.inf
    if signal == 0 or math.isnan(noise):
        return -math.inf
    return 10 * math.log10(signal / noise)


def unravel(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index into ``shape`` of element ``flat_index`` of its row-major flattening."""
    index = []
    for size in reversed(shape):
        index.append(flat_index % size if size else 0)
        flat_index //= size if size else 1
    return tuple(reversed(index))


@dataclasses.dataclass
class TensorStats:
    mismatched: int
    numel: int
    max_abs: float
    max_abs_index: tuple[int, ...]
    max_rel: float
    max_rel_index: tuple[int, ...]
    sqnr_db: float


def tensor_stats(
    expected: torch.Tensor, actual: torch.Tensor, tolerance: Tolerance
) -> tuple[TensorStats, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(stats, mismatch mask, abs error, rel error) under the elementwise ``atol`` / ``rtol``."""
    abs_err, rel_err = float_errors(expected, actual)
    e = to_wide(expected)
    allowed = tolerance.atol + tolerance.rtol * e.abs().nan_to_num(posinf=math.inf)
    mismatch = abs_err > allowed
    numel = abs_err.numel()
    if numel == 0:
        return TensorStats(0, 0, 0.0, (), 0.0, (), math.inf), mismatch, abs_err, rel_err
    flat_abs = abs_err.reshape(-1)
    flat_rel = rel_err.reshape(-1).nan_to_num(nan=0.0, posinf=math.inf)
    abs_i = int(flat_abs.argmax())
    rel_i = int(flat_rel.argmax())
    stats = TensorStats(
        mismatched=int(mismatch.sum()),
        numel=numel,
        max_abs=float(flat_abs[abs_i]),
        max_abs_index=unravel(abs_i, tuple(abs_err.shape)),
        max_rel=float(flat_rel[rel_i]),
        max_rel_index=unravel(rel_i, tuple(abs_err.shape)),
        sqnr_db=sqnr_db(expected, actual) if is_inexact(expected) else math.inf,
    )
    return stats, mismatch, abs_err, rel_err


@dataclasses.dataclass
class Verdict:
    """The tolerance model on one output of the same dtype and shape as expected: its numbers,
    and which of the checks the tolerance declares it fails (a report is made from these)."""

    exact: bool  # integers and bools compare exactly, whatever the tolerance
    stats: TensorStats
    mismatch: torch.Tensor
    abs_err: torch.Tensor
    rel_err: torch.Tensor
    sqnr_failed: bool = False
    steps: Optional[float] = None  # max abs error in quantization steps, where quant_step is declared
    steps_failed: bool = False
    # (max error vs float64, eager's, the bound) where float64_factor is declared and both runs are there
    float64: Optional[tuple[float, float, float]] = None
    float64_failed: bool = False
    # (mean KL over rows, max KL, top-k agreement) where max_kl_div or min_top_k_agreement is declared
    distribution: Optional[tuple[float, float, float]] = None
    kl_failed: bool = False
    top_k_failed: bool = False

    @property
    def ok(self) -> bool:
        return not (
            self.stats.mismatched or self.sqnr_failed or self.steps_failed or self.float64_failed or self.kl_failed or self.top_k_failed
        )


def next_token_agreement(expected: torch.Tensor, actual: torch.Tensor, top_k: int = 1) -> tuple[float, float, float]:
    """(mean KL, max KL, top-k agreement) of the last dimension read as logits, one
    distribution per row: KL(softmax(expected) || softmax(actual)) in nats, in float64, and
    the share of rows whose actual argmax is one of expected's ``top_k`` largest."""
    vocab = expected.shape[-1] if expected.dim() else 1
    e = to_wide(expected).real.reshape(-1, vocab)
    a = to_wide(actual).real.reshape(-1, vocab)
    if e.numel() == 0:
        return 0.0, 0.0, 1.0
    log_p, log_q = e.log_softmax(-1), a.log_softmax(-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0.0)
    top = e.topk(min(top_k, vocab), dim=-1).indices
    agreement = (top == a.argmax(-1, keepdim=True)).any(-1).double().mean()
    return float(kl.mean()), float(kl.max()), float(agreement)


def judge_tensor(
    expected: torch.Tensor,
    actual: torch.Tensor,
    tolerance: Tolerance,
    ref64: Optional[torch.Tensor] = None,
    eager: Optional[torch.Tensor] = None,
) -> Verdict:
    """Every check of ``tolerance`` on ``actual`` against ``expected``; ``ref64``/``eager``: the
    float64 run's and eager's output of the same name, for ``float64_factor``."""
    exact = not is_inexact(expected)
    stats, mismatch, abs_err, rel_err = tensor_stats(expected, actual, Tolerance(atol=0.0, rtol=0.0) if exact else tolerance)
    verdict = Verdict(exact, stats, mismatch, abs_err, rel_err)
    if exact:
        return verdict
    verdict.sqnr_failed = tolerance.min_sqnr_db is not None and stats.sqnr_db < tolerance.min_sqnr_db
    if tolerance.quant_step is not None:
        verdict.steps = stats.max_abs / tolerance.quant_step if tolerance.quant_step else math.inf
        verdict.steps_failed = verdict.steps > tolerance.max_step_error
    if tolerance.float64_factor is not None and ref64 is not None and eager is not None:
        actual_err = float(float_errors(ref64, to_wide(actual))[0].max()) if actual.numel() else 0.0
        eager_err = float(float_errors(ref64, to_wide(eager))[0].max()) if eager.numel() else 0.0
        bound = tolerance.float64_factor * eager_err + tolerance.atol
        verdict.float64 = (actual_err, eager_err, bound)
        verdict.float64_failed = actual_err > bound
    if tolerance.max_kl_div is not None or tolerance.min_top_k_agreement is not None:
        verdict.distribution = next_token_agreement(expected, actual, int(tolerance.top_k or 1))
        mean_kl, _, agreement = verdict.distribution
        verdict.kl_failed = tolerance.max_kl_div is not None and not mean_kl <= tolerance.max_kl_div
        verdict.top_k_failed = tolerance.min_top_k_agreement is not None and not agreement >= tolerance.min_top_k_agreement
    return verdict


# -------------------------------------------------------------------------- golden sample

_SAMPLE_MULTIPLIER = 2654435761  # a prime near 2**32 / golden ratio: spreads k * m mod n over [0, n)


def sample_indices(numel: int, count: int) -> torch.Tensor:
    """``count`` distinct-as-possible flat indices spread over ``[0, numel)``, the same on every
    torch version and machine (plain integer arithmetic, no RNG), sorted."""
    k = torch.arange(count, dtype=torch.int64)
    return torch.unique((k * _SAMPLE_MULTIPLIER) % numel)


def sample_for_golden(tensors: dict[str, torch.Tensor], count: Optional[int]) -> dict[str, torch.Tensor]:
    """Outputs with more than ``count`` elements replaced by a fixed 1-D sample of them.

    Big outputs (a 2048 x 2048 matmul is 16 MB) would bloat the repository; a few
    thousand fixed elements still catch a changed constant, while the full tensors are
    compared with eager in the same run.
    """
    if count is None:
        return tensors
    out = {}
    for name, tensor in tensors.items():
        if tensor.numel() > count:
            flat = tensor.detach().reshape(-1)
            out[name] = flat[sample_indices(flat.numel(), count).to(flat.device)]
        else:
            out[name] = tensor
    return out
