"""Section parsers: each part of a case's YAML (inputs, matrix, tolerances, config, passes,
marks, fuzz; ``checks:`` through :mod:`.check_sections`) -> its record in the model, every
value checked where it sits.

:func:`parse_case` takes one case, already merged with the file's ``defaults:``; the
suite file itself is read by :func:`harness.case.parse_suite`.
"""

from __future__ import annotations

import functools
import importlib
import math
from pathlib import Path
from typing import Any, Optional, Sequence

from ..core import programs
from ..core.backends import REGISTRY
from ..core.dtypes import DEFAULT_TOLERANCES, DTYPES, MATRIX_DTYPE, canonical_dtype_name
from ..core.inputs import DISTRIBUTIONS, REQUIRED_DISTRIBUTION_SETTINGS, InputSpec, input_kind, input_kind_names, kind_from_builder
from .check_sections import VARIANT_KEYS, CheckSection, parse_checks
from .model import (
    BACKENDS,
    COMPILE_MODES,
    CUDAGRAPH_MODES,
    DEVICES,
    LAYOUTS,
    MARK_KINDS,
    PASS_HOOKS,
    RANGE_SETTINGS,
    REQUIREMENTS,
    Call,
    Case,
    Variant,
    DimRange,
    FuzzSpec,
    InputFuzz,
    Mark,
    Matrix,
    PassSpec,
    Tolerance,
)
from .validators import (
    At,
    choice_list,
    entries,
    list_items,
    matches_types,
    optional_when,
    require_bool,
    require_choice,
    require_dtype,
    require_int,
    require_list,
    require_map,
    require_number,
    require_str,
    require_tolerance,
)
from .yaml_lines import YamlMap, as_yaml_map

CASE_KEYS = (
    "description", "program", "params", "inputs", "seed", "matrix", "tolerances", "config",
    "dynamo_config", "passes", "backward", "no_grad", "deterministic", "checks", "marks", "timeout", "fuzz",
    "compile_mode",
    "max_input_gb", "calls", "mark_dynamic",
)
DEFAULTS_KEYS = tuple(k for k in CASE_KEYS if k not in ("description", "program", "params", "inputs", "fuzz", "calls", "mark_dynamic"))
INPUT_KEYS = (
    "kind", "shape", "dtype", "strides", "pad_last_dim", "distribution", "mean", "std", "low", "high",
    "value", "seed", "requires_grad", "params",
)
TOLERANCE_KEYS = (
    "atol", "rtol", "min_sqnr_db", "quant_step", "max_step_error", "float64_factor", "max_kl_div", "min_top_k_agreement", "top_k",
)
FUZZ_KEYS = ("examples", "seed", "max_seconds", "dims", "inputs", "reference")
INPUT_FUZZ_KEYS = ("layout", "max_pad", "distribution") + RANGE_SETTINGS

#: Input seeds are ``seed x 1000 + input index``, and torch's generators take 64-bit seeds.
MAX_SEED = 10**15
#: A cell deadline past a week is a typo (and past ~1e9 s the timer itself overflows).
MAX_TIMEOUT_S = 7 * 24 * 3600.0
DEFAULT_MATRIX = {"backends": tuple(n for n, b in REGISTRY.items() if b.default), "devices": ("cpu", "cuda"), "dtypes": ("float32",)}
#: Storage one input may take (GB, 1e9 bytes) unless its case says ``max_input_gb:``: more
#: is usually a typo (a stride of 1e11, a dim of 1e12) that would otherwise surface as a
#: swapping machine or an out-of-memory kill minutes into the run.
DEFAULT_MAX_INPUT_GB = 4.0
DEFAULT_EXAMPLES = 10
DEFAULT_MAX_SECONDS = 120.0


def parse_case(name: str, body: YamlMap, at: At, path: Path, display: str) -> Case:
    """One case's body, merged with the file's ``defaults:``, as a Case; ``at`` is where its name sits."""

    def sub(key: str) -> At:
        return at.key(body, key)

    if "program" not in body:
        raise at.error("missing key 'program' (a built-in name or 'module:function')")
    program = require_str(body["program"], sub("program"))
    params = require_map(body.get("params", as_yaml_map({}, at.line)), sub("params"))
    _check_program(program, params, sub("program"), sub("params"))
    if "inputs" not in body:
        raise at.error("missing key 'inputs' (a mapping from argument name to input spec)")
    inputs_map = require_map(body["inputs"], sub("inputs"))
    dims = _fuzz_dim_names(body.get("fuzz"))
    inputs = tuple(_parse_input(n, v, a, dims) for n, v, a in entries(inputs_map, sub("inputs")))
    seed = require_int(body.get("seed", 0), sub("seed"), minimum=0, maximum=MAX_SEED)
    matrix = _parse_matrix(body.get("matrix"), sub("matrix"))
    tolerances = _parse_tolerances(body.get("tolerances"), sub("tolerances"), matrix.dtypes)
    config = _parse_config(body.get("config"), sub("config"), "torch._inductor.config")
    dynamo_config = _parse_config(body.get("dynamo_config"), sub("dynamo_config"), "torch._dynamo.config")
    passes = _parse_passes(body.get("passes"), sub("passes"))
    backward = require_bool(body.get("backward", False), sub("backward"))
    no_grad = require_bool(body.get("no_grad", False), sub("no_grad"))
    deterministic = require_bool(body.get("deterministic", False), sub("deterministic"))
    def variant(value: Any, variant_at: At, keys: Sequence[str] = VARIANT_KEYS) -> tuple[Variant, YamlMap]:
        return _parse_variant(value, variant_at, keys, program, params, inputs_map, sub("inputs"), body.get("calls"), sub("calls"))

    def tolerances_for_matrix(value: Any, tolerances_at: At) -> tuple[tuple[str, Tolerance], ...]:
        return _parse_tolerances(value, tolerances_at, matrix.dtypes)

    checks = parse_checks(body.get("checks"), sub("checks"), CheckSection(variant, tolerances_for_matrix))
    marks = _parse_marks(body.get("marks"), sub("marks"))
    description = require_str(body.get("description", name), sub("description"))
    if backward and not any(spec.requires_grad for spec in inputs):
        raise sub("backward").error("backward: true needs at least one input with requires_grad: true")
    if backward and no_grad:
        raise sub("no_grad").error("no_grad: true leaves nothing for backward: true to differentiate")
    compile_mode = require_choice(body.get("compile_mode", "default"), sub("compile_mode"), COMPILE_MODES)
    if checks.perf is not None and checks.perf.cuda_graph and compile_mode in CUDAGRAPH_MODES:
        raise sub("compile_mode").error(
            f"compile_mode {compile_mode!r} replays CUDA graphs itself; checks.perf.cuda_graph would capture one around them "
            "(drop cuda_graph: the cell is timed through Inductor's graphs)"
        )
    timeout = None if body.get("timeout") is None else require_number(body["timeout"], sub("timeout"), minimum=0.001, maximum=MAX_TIMEOUT_S)
    fuzz = None
    if "fuzz" in body:
        fuzz = parse_fuzz(body["fuzz"], sub("fuzz"), inputs)
        if checks.perf is not None:
            raise sub("fuzz").error("a fuzz case draws its shapes, so it has no fixed cell to time: drop checks.perf")
        checks = checks.replace(golden=False)  # shapes vary: there is nothing to store
    max_input_gb = require_number(body.get("max_input_gb", DEFAULT_MAX_INPUT_GB), sub("max_input_gb"), minimum=0.0)
    if math.isinf(max_input_gb):
        raise sub("max_input_gb").error("must be finite", got=max_input_gb)
    for (_, _, input_at), spec in zip(entries(inputs_map, sub("inputs")), inputs):
        _check_input_size(spec, fuzz, matrix, max_input_gb, input_at)
    mark_dynamic = () if "mark_dynamic" not in body else _parse_mark_dynamic(body["mark_dynamic"], sub("mark_dynamic"), inputs)
    calls: tuple[Call, ...] = ()
    if "calls" in body:
        if fuzz is not None:
            raise sub("calls").error("a fuzz case draws its own inputs: give either calls or fuzz")
        calls = _parse_calls(body["calls"], sub("calls"), inputs_map, sub("inputs"))
        for call in calls:
            for spec in call.inputs:
                if spec.name in call.changed:
                    _check_input_size(spec, None, matrix, max_input_gb, At(display, call.line, sub("calls").field))
    if checks.recompiles and not calls:
        raise sub("checks").error("recompiles counts the compiles after a case's first call: it needs calls:")
    return Case(
        suite_path=path, display_path=display, name=name, line=at.line, description=description,
        program=program, params=tuple(params.items()), inputs=inputs, seed=seed, matrix=matrix,
        tolerances=tolerances, config=config, dynamo_config=dynamo_config, passes=passes,
        backward=backward, no_grad=no_grad, deterministic=deterministic, checks=checks, marks=marks, timeout=timeout, fuzz=fuzz,
        compile_mode=compile_mode, calls=calls, mark_dynamic=mark_dynamic,
    )


def _storage_elements(shape: Sequence[int], strides: Optional[Sequence[int]], pad_last_dim: int) -> int:
    """Elements of the smallest storage holding ``shape`` with these strides (or row padding)."""
    if any(size == 0 for size in shape):
        return 0
    if strides is not None:
        return 1 + sum((size - 1) * stride for size, stride in zip(shape, strides))
    if pad_last_dim and shape:
        shape = (*shape[:-1], shape[-1] + pad_last_dim)
    return math.prod(shape)


def _check_input_size(spec: InputSpec, fuzz: Optional[FuzzSpec], matrix: Matrix, max_gb: float, at: At) -> None:
    """Refuse an input whose storage (at the fuzz dims' maxima) exceeds ``max_gb``."""
    widest = max(DTYPES[d].itemsize for d in matrix.dtypes)
    itemsize = widest if spec.dtype == MATRIX_DTYPE else DTYPES[spec.dtype].itemsize
    maxima = {d.name: d.max for d in fuzz.dims} if fuzz is not None else {}
    shape = tuple(maxima.get(size, 0) if isinstance(size, str) else size for size in spec.shape)
    pad = spec.pad_last_dim or 0
    if fuzz is not None:
        varied = next((f for f in fuzz.inputs if f.name == spec.name), None)
        if varied is not None and "padded" in varied.layouts:
            pad = max(pad, varied.max_pad)
    gigabytes = _storage_elements(shape, spec.strides, pad) * itemsize / 1e9
    if gigabytes > max_gb:
        where = "shape" if spec.strides is None else "strides"
        at_maxima = f" at the fuzz dims' maxima ({', '.join(f'{k}={v}' for k, v in maxima.items())})" if maxima else ""
        raise at.child(where, at.line).error(
            f"the input needs {gigabytes:.3g} GB{at_maxima}, more than the budget of {max_gb:g} GB "
            f"(if it is meant, say so: max_input_gb: {math.ceil(gigabytes)} in the case or under defaults:)",
            got=list(shape) if where == "shape" else list(spec.strides),
        )


def _fuzz_dim_names(value: Any) -> tuple[str, ...]:
    """Names a fuzz block declares under ``dims`` (checked properly by :func:`parse_fuzz`)."""
    if isinstance(value, dict) and isinstance(value.get("dims"), dict):
        return tuple(k for k in value["dims"] if isinstance(k, str))
    return ()


def _check_program(program: str, params: YamlMap, at: At, params_at: At) -> None:
    builtin = programs.builtin_program(program)
    if builtin is not None:
        for key, value, value_at in entries(params, params_at):
            spec = builtin.params.get(key)
            if spec is None:
                raise params_at.child(key, params.key_lines[key]).error(
                    f"unknown parameter of built-in program {program!r}", got=key, allowed=list(builtin.params) or ["(none)"]
                )
            if not matches_types(value, spec.types):
                raise value_at.error(
                    f"must be {' or '.join(t.__name__ for t in spec.types)}", got=value
                )
        try:
            programs.make_program(program, dict(params))
        except (ValueError, TypeError) as exc:
            raise params_at.error(str(exc)) from None
        return
    if ":" not in program:
        raise at.error(
            "unknown program: neither a built-in nor 'module:function'",
            got=program, allowed=programs.builtin_program_names() + ["<module>:<function>"],
        )
    try:
        programs.import_program(program)
    except programs.ProgramImportError as exc:
        raise at.error(f"unknown program: {exc}", got=program) from None


def _parse_input(name: str, value: Any, at: At, dims: Sequence[str] = ()) -> InputSpec:
    spec = require_map(value, at, INPUT_KEYS)

    def sub(key: str) -> At:
        return at.child(key, spec.value_lines.get(key, at.line))

    kind_name = require_str(spec.get("kind", "tensor"), sub("kind"))
    kind = input_kind(kind_name)
    if kind is None and ":" in kind_name:
        try:
            kind = kind_from_builder(kind_name)
        except programs.ProgramImportError as exc:
            raise sub("kind").error(f"unknown input kind: {exc}", got=kind_name) from None
    if kind is None:
        raise sub("kind").error("unknown input kind", got=kind_name, allowed=input_kind_names() + ["<module>:<builder>"])
    if "shape" not in spec:
        raise at.error("missing key 'shape' (a list of sizes, [] for a scalar)")
    shape_list = require_list(spec["shape"], sub("shape"), allow_empty=True)
    shape = tuple(
        v if isinstance(v, str) and v in dims else require_int(v, sub("shape").item(shape_list, i), minimum=0)
        for i, v in enumerate(shape_list)
    )
    fields: dict[str, Any] = {"name": name, "kind": kind_name, "shape": shape, "line": at.line}
    if "dtype" in spec:
        fields["dtype"] = require_dtype(spec["dtype"], sub("dtype"), allow_matrix=True)
    if "strides" in spec:
        strides_list = require_list(spec["strides"], sub("strides"), allow_empty=True)
        strides = tuple(require_int(v, sub("strides").item(strides_list, i), minimum=0) for i, v in enumerate(strides_list))
        if len(strides) != len(shape):
            raise sub("strides").error(f"needs one stride per dimension ({len(shape)})", got=list(strides))
        fields["strides"] = strides
    if "pad_last_dim" in spec:
        if "strides" in spec:
            raise sub("pad_last_dim").error("give either strides or pad_last_dim, not both")
        if not shape:
            raise sub("pad_last_dim").error("a scalar has no last dimension to pad")
        fields["pad_last_dim"] = require_int(spec["pad_last_dim"], sub("pad_last_dim"), minimum=0)
    distribution = require_choice(spec.get("distribution", "normal"), sub("distribution"), list(DISTRIBUTIONS))
    fields["distribution"] = distribution
    for setting in ("mean", "std", "low", "high", "value"):
        if setting in spec:
            if setting not in DISTRIBUTIONS[distribution]:
                raise sub(setting).error(
                    f"not a setting of distribution {distribution!r}",
                    got=setting, allowed=list(DISTRIBUTIONS[distribution]) or ["(none)"],
                )
            fields[setting] = require_number(
                spec[setting], sub(setting), minimum=0.0 if setting == "std" else None, allow_nan=setting == "value"
            )
    for setting in REQUIRED_DISTRIBUTION_SETTINGS.get(distribution, ()):
        if setting not in spec:
            raise at.error(f"distribution {distribution!r} needs '{setting}'")
    if distribution == "randint" and fields.get("low", 0) >= fields["high"]:
        raise sub("high").error("must be greater than low", got=fields["high"])
    if "seed" in spec:
        fields["seed"] = require_int(spec["seed"], sub("seed"), minimum=0)
    if "requires_grad" in spec:
        fields["requires_grad"] = require_bool(spec["requires_grad"], sub("requires_grad"))
    if "params" in spec:
        params = require_map(spec["params"], sub("params"))
        for key, item, item_at in entries(params, sub("params")):
            types = kind.params.get(key)
            if types is None:
                raise item_at.error(f"unknown parameter of input kind {kind_name!r}", got=key, allowed=list(kind.params) or ["(none)"])
            if not matches_types(item, types):
                raise item_at.error("has the wrong type", got=item)
        fields["params"] = tuple(params.items())
    return InputSpec(**fields)


def _merge_input(base: YamlMap, override: YamlMap) -> YamlMap:
    """An input's YAML with a call's keys on top (``params`` merged key by key unless the call
    changes the input's kind), lines kept."""
    merged = as_yaml_map({}, override.line)
    if "kind" in override and override.get("kind") != base.get("kind", "tensor"):
        base = as_yaml_map({k: v for k, v in base.items() if k != "params"}, base.line)  # another kind's params do not apply
    for source in (base, override):
        for key, value in source.items():
            if key == "params" and isinstance(merged.get(key), dict) and isinstance(value, dict):
                params = as_yaml_map({**merged[key], **value}, value.line)
                params.key_lines = {**merged[key].key_lines, **value.key_lines}
                params.value_lines = {**merged[key].value_lines, **value.value_lines}
                value = params
            merged[key] = value
            merged.key_lines[key] = source.key_lines.get(key, source.line)
            merged.value_lines[key] = source.value_lines.get(key, source.line)
            merged.value_styles[key] = source.value_styles.get(key)
    return merged


def parse_input_overrides(value: Any, at: At, inputs_map: YamlMap, inputs_at: At) -> tuple[tuple[InputSpec, ...], tuple[str, ...]]:
    """``{input name: {spec keys}}`` on top of the case's inputs: (every input's spec, the names overridden).

    A call of ``calls:`` and a baseline (``checks.perf.faster_than``, ``checks.reference``) say
    what differs from ``inputs:`` this way; the merged spec is checked like any input."""
    overrides = require_map(value, at)
    for name in overrides:
        if name not in inputs_map:
            raise at.key(overrides, name, overrides.key_lines).error("not an input of this case", got=name, allowed=list(inputs_map))
    specs = []
    for name, base, base_at in entries(inputs_map, inputs_at):
        if name in overrides:
            override_at = at.key(overrides, name)
            merged = _merge_input(require_map(base, base_at, INPUT_KEYS), require_map(overrides[name], override_at, INPUT_KEYS))
            specs.append(_parse_input(name, merged, override_at))
        else:
            specs.append(_parse_input(name, base, base_at))
    return tuple(specs), tuple(n for n in inputs_map if n in overrides)


def _parse_calls(value: Any, at: At, inputs_map: YamlMap, inputs_at: At) -> tuple[Call, ...]:
    calls = []
    for item, item_at in list_items(value, at):
        specs, changed = parse_input_overrides(item if item is not None else as_yaml_map({}, item_at.line), item_at, inputs_map, inputs_at)
        calls.append(Call(inputs=specs, changed=changed, line=item_at.line))
    return tuple(calls)


def _parse_matrix(value: Any, at: At) -> Matrix:
    fields = dict(DEFAULT_MATRIX)
    if value is not None:
        mapping = require_map(value, at, tuple(DEFAULT_MATRIX) + ("dynamic",))
        for key, item, item_at in entries(mapping, at):
            if key == "backends":
                fields[key] = choice_list(item, item_at, BACKENDS)
            elif key == "devices":
                fields[key] = choice_list(item, item_at, DEVICES)
            elif key == "dynamic":
                fields[key] = _parse_dynamic_axis(item, item_at)
            else:
                fields[key] = choice_list(item, item_at, list(DTYPES), lambda v, a: require_dtype(v, a))
    return Matrix(**fields)


#: How the ``dynamic:`` axis may spell each mode: torch.compile's own ``dynamic=`` values, or the names.
DYNAMIC_SPELLINGS = {False: "static", True: "dynamic", "static": "static", "dynamic": "dynamic", "automatic": "automatic"}


def _parse_dynamic_axis(value: Any, at: At) -> tuple[str, ...]:
    items = require_list(value, at)
    modes = []
    for i, item in enumerate(items):
        mode = DYNAMIC_SPELLINGS.get(item) if isinstance(item, (bool, str)) else None
        if mode is None:
            raise at.item(items, i).error("not a dynamic mode", got=item, allowed=["false", "true", "automatic"])
        if mode in modes:
            raise at.item(items, i).error("named twice", got=item)
        modes.append(mode)
    return tuple(modes)


def _parse_mark_dynamic(value: Any, at: At, inputs: Sequence[InputSpec]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``{input: [dim, ...]}``: dims of tensor inputs marked dynamic before each compiled call."""
    mapping = require_map(value, at)
    by_name = {spec.name: spec for spec in inputs}
    out = []
    for name, item, item_at in entries(mapping, at):
        if name not in by_name:
            raise item_at.error("not an input of this case", got=name, allowed=list(by_name))
        dims = require_list(item, item_at)
        rank = len(by_name[name].shape)
        parsed = tuple(require_int(d, item_at.item(dims, i), minimum=0) for i, d in enumerate(dims))
        for i, dim in enumerate(parsed):
            if dim >= rank:
                raise item_at.item(dims, i).error(f"input {name!r} has {rank} dims", got=dim)
        out.append((name, parsed))
    return tuple(out)


def _tolerance_value(item: Any, at: At, key: str) -> float:
    value = require_tolerance(item, at, key)
    if key == "top_k" and (value < 1 or value != int(value) or isinstance(item, float)):
        raise at.error("must be an integer >= 1", got=item)
    if key == "min_top_k_agreement" and value > 1:
        raise at.error("is a share of rows: at most 1", got=item)
    return value


def _parse_tolerance_fields(mapping: YamlMap, at: At) -> dict[str, float]:
    out = {}
    for key, item, item_at in entries(mapping, at):
        out[key] = _tolerance_value(item, item_at, key)
    if ("quant_step" in out) != ("max_step_error" in out):
        raise at.error("quant_step and max_step_error go together")
    return out


def _parse_tolerances(value: Any, at: At, dtypes: Sequence[str]) -> tuple[tuple[str, Tolerance], ...]:
    common: dict[str, float] = {}
    per_dtype: dict[str, dict[str, float]] = {}
    if value is not None:
        mapping = require_map(value, at)
        for key, item, item_at in entries(mapping, at):
            key_at = at.key(mapping, key, mapping.key_lines)
            if key in TOLERANCE_KEYS:
                common[key] = _tolerance_value(item, item_at, key)
                continue
            dtype = canonical_dtype_name(key) if isinstance(key, str) else None
            if dtype is None:
                raise key_at.error("unknown key: neither a tolerance nor a dtype", got=key, allowed=list(TOLERANCE_KEYS) + ["<dtype>"])
            per_dtype[dtype] = _parse_tolerance_fields(require_map(item, item_at, TOLERANCE_KEYS), item_at)
        if ("quant_step" in common) != ("max_step_error" in common):
            raise at.error("quant_step and max_step_error go together")
    result = []
    for dtype in dtypes:
        atol, rtol = DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0))
        fields = {"atol": atol, "rtol": rtol, **common, **per_dtype.get(dtype, {})}
        result.append((dtype, Tolerance(**fields)))
    return tuple(result)


@functools.lru_cache(maxsize=None)
def _config_module(name: str) -> Any:
    return importlib.import_module(name)


def _config_default(module: Any, key: str) -> tuple[bool, Any]:
    """(exists, default value) of a dotted config key such as 'triton.cudagraphs'."""
    declared = getattr(module, "_config", None)
    if isinstance(declared, dict):
        # torch's config modules list their keys: anything else they hold (os, a submodule,
        # a dunder) is no setting, and patching it would break the process, not configure it.
        return (True, getattr(declared[key], "default", None)) if key in declared else (False, None)
    obj = module
    for part in key.split("."):
        if not hasattr(obj, part):
            return False, None
        obj = getattr(obj, part)
    return True, obj


def _parse_config(value: Any, at: At, module_name: str) -> tuple[tuple[str, Any], ...]:
    if value is None:
        return ()
    mapping = require_map(value, at)
    module = _config_module(module_name)
    out = []
    for key, item, item_at in entries(mapping, at):
        exists, default = _config_default(module, key)
        if not exists:
            raise at.key(mapping, key, mapping.key_lines).error(f"not a {module_name} key", got=key)
        if isinstance(default, bool) and not isinstance(item, bool):
            raise item_at.error("must be true or false (the config default is a bool)", got=item)
        if isinstance(default, (int, float)) and not isinstance(default, bool) and (
            isinstance(item, bool) or not isinstance(item, (int, float))
        ):
            raise item_at.error(f"must be a number (the config default is {default!r})", got=item)
        if isinstance(default, str) and not isinstance(item, str):
            raise item_at.error(f"must be a string (the config default is {default!r})", got=item)
        out.append((key, item))
    return tuple(out)


def _parse_passes(value: Any, at: At) -> tuple[PassSpec, ...]:
    if value is None:
        return ()
    out = []
    for item, item_at in list_items(value, at):
        mapping = require_map(item, item_at, ("hook", "factory"))
        for key in ("hook", "factory"):
            if key not in mapping:
                raise item_at.error(f"missing key '{key}'")
        hook = require_choice(mapping["hook"], item_at.child("hook", mapping.value_lines["hook"]), PASS_HOOKS)
        factory_at = item_at.child("factory", mapping.value_lines["factory"])
        factory = require_str(mapping["factory"], factory_at)
        if ":" not in factory:
            raise factory_at.error("must be 'module:function'", got=factory)
        try:
            programs.import_program(factory)
        except programs.ProgramImportError as exc:
            raise factory_at.error(f"unknown pass factory: {exc}", got=factory) from None
        out.append(PassSpec(hook=hook, factory=factory, line=item_at.line))
    return tuple(out)


def _parse_variant(
    value: Any, at: At, keys: Sequence[str], program: str, params: YamlMap,
    inputs_map: YamlMap, inputs_at: At, calls_value: Any, calls_at: At,
) -> tuple[Variant, YamlMap]:
    """A baseline or reference: ``{program?, params?, inputs?}`` (the case's unless given; its
    input overrides apply to every call) and the mapping, for the caller's own keys."""
    mapping = require_map(value, at, keys)
    variant_program = program
    if "program" in mapping:
        variant_program = require_str(mapping["program"], at.key(mapping, "program"))
    variant_params = params if "program" not in mapping else as_yaml_map({}, at.line)
    if "params" in mapping:
        variant_params = require_map(mapping["params"], at.key(mapping, "params"))
    _check_program(variant_program, variant_params, at.key(mapping, "program"), at.key(mapping, "params"))
    changed: tuple[str, ...] = ()
    if "inputs" in mapping:
        overrides = require_map(mapping["inputs"], at.key(mapping, "inputs"))
        _, changed = parse_input_overrides(overrides, at.key(mapping, "inputs"), inputs_map, inputs_at)
        merged = as_yaml_map({}, inputs_map.line)
        for name, base in inputs_map.items():
            merged[name] = _merge_input(base, overrides[name]) if name in overrides else base
            merged.key_lines[name] = inputs_map.key_lines.get(name, inputs_map.line)
            merged.value_lines[name] = inputs_map.value_lines.get(name, inputs_map.line)
        inputs_map = merged
    inputs = tuple(_parse_input(n, v, a) for n, v, a in entries(inputs_map, inputs_at))
    calls = () if calls_value is None else _parse_calls(calls_value, calls_at, inputs_map, inputs_at)
    text = variant_program + "".join(f", {name} changed" for name in changed)
    return Variant(
        program=variant_program, params=tuple(variant_params.items()), inputs=inputs, calls=calls,
        changed=changed, text=text, line=at.line,
    ), mapping


def _parse_marks(value: Any, at: At) -> tuple[Mark, ...]:
    if value is None:
        return ()
    out = []
    for item, item_at in list_items(value, at):
        spec = require_map(item, item_at, MARK_KINDS + ("when", "strict"))
        kinds = [k for k in MARK_KINDS if k in spec]
        if len(kinds) != 1:
            raise item_at.error("a mark names exactly one of slow, skip, xfail, requires", got=kinds or None, allowed=MARK_KINDS)
        (kind,) = kinds
        kind_at = item_at.child(kind, spec.value_lines[kind])
        when = optional_when(spec, item_at)
        strict = True
        if "strict" in spec:
            if kind != "xfail":
                raise item_at.child("strict", spec.value_lines["strict"]).error("only an xfail mark takes strict")
            strict = require_bool(spec["strict"], item_at.child("strict", spec.value_lines["strict"]))
        requirements: tuple[tuple[str, Any], ...] = ()
        if kind == "slow":
            reason = "slow" if spec[kind] is True else require_str(spec[kind], kind_at)
        elif kind == "requires":
            req = require_map(spec[kind], kind_at, REQUIREMENTS)
            parsed = []
            for key, req_value, req_at in entries(req, kind_at):
                if key in ("big_gpu", "triton", "triton_interpreter"):
                    parsed.append((key, require_bool(req_value, req_at)))
                elif key == "min_devices":
                    parsed.append((key, require_int(req_value, req_at, minimum=1)))
                elif key == "imports":
                    names = require_list(req_value, req_at)
                    parsed.append((key, tuple(require_str(n, req_at.item(names, j)) for j, n in enumerate(names))))
                else:
                    parsed.append((key, require_number(req_value, req_at, minimum=0.0)))
            requirements = tuple(parsed)
            reason = ", ".join(f"{k}={v}" for k, v in parsed)
        else:
            reason = require_str(spec[kind], kind_at)
        out.append(Mark(kind=kind, reason=reason, when=when, strict=strict, requirements=requirements, line=item_at.line))
    return tuple(out)


# --------------------------------------------------------------------------- fuzz


def _range(value: Any, at: At, integer: bool) -> tuple[Any, Any, int]:
    """(low, high, multiple_of) from ``[low, high]`` or ``{min, max[, multiple_of]}``."""
    need = require_int if integer else require_number
    if isinstance(value, list):
        if len(value) != 2:
            raise at.error("a range is [low, high] or {min: .., max: ..}", got=list(value))
        low, high, multiple = need(value[0], at), need(value[1], at), 1
    else:
        mapping = require_map(value, at, ("min", "max", "multiple_of") if integer else ("min", "max"))
        for key in ("min", "max"):
            if key not in mapping:
                raise at.error(f"missing key '{key}'")
        low, high = need(mapping["min"], at), need(mapping["max"], at)
        multiple = require_int(mapping.get("multiple_of", 1), at, minimum=1)
    if high < low:
        raise at.error("max must be >= min", got=[low, high])
    if integer and low < 0:
        raise at.error("sizes must be >= 0", got=low)
    if integer and math.ceil(low / multiple) * multiple > high:
        raise at.error(f"no multiple of {multiple} in [{low}, {high}]")
    return low, high, multiple


def parse_fuzz(value: Any, at: At, inputs: Sequence[InputSpec]) -> FuzzSpec:
    """The ``fuzz:`` block of a case whose inputs are already parsed (their shapes may name dims)."""
    mapping = require_map(value, at, FUZZ_KEYS)

    def sub(key: str) -> At:
        return at.child(key, mapping.value_lines.get(key, at.line))

    examples = require_int(mapping.get("examples", DEFAULT_EXAMPLES), sub("examples"), minimum=1)
    seed = None if "seed" not in mapping else require_int(mapping["seed"], sub("seed"), minimum=0)
    max_seconds = require_number(mapping.get("max_seconds", DEFAULT_MAX_SECONDS), sub("max_seconds"), minimum=0.0)
    if "dims" not in mapping and "inputs" not in mapping:
        raise at.error("a fuzz block varies something: give 'dims' and/or 'inputs'")
    dims = []
    if "dims" in mapping:
        dims_map = require_map(mapping["dims"], sub("dims"))
        for name, item, item_at in entries(dims_map, sub("dims")):
            if not isinstance(name, str) or not name.isidentifier():
                raise item_at.error("a dim name is an identifier such as M or K", got=name)
            low, high, multiple = _range(item, item_at, integer=True)
            dims.append(DimRange(name, low, high, multiple))
    used = {d for spec in inputs for d in spec.shape if isinstance(d, str)}
    unused = [d.name for d in dims if d.name not in used]
    if unused:
        raise sub("dims").error(f"dim(s) {', '.join(unused)} appear in no input's shape")
    by_name = {spec.name: spec for spec in inputs}
    input_fuzz = []
    if "inputs" in mapping:
        inputs_map = require_map(mapping["inputs"], sub("inputs"))
        for name, item, item_at in entries(inputs_map, sub("inputs")):
            if name not in by_name:
                raise item_at.error("not an input of this case", got=name, allowed=list(by_name))
            input_fuzz.append(_parse_input_fuzz(name, item, item_at, by_name[name]))
    reference = None
    if "reference" in mapping:
        reference = require_str(mapping["reference"], sub("reference"))
        if ":" not in reference:
            raise sub("reference").error("must be 'module:function'", got=reference)
        try:
            programs.import_program(reference)
        except programs.ProgramImportError as exc:
            raise sub("reference").error(f"unknown reference: {exc}", got=reference) from None
    return FuzzSpec(examples, seed, max_seconds, tuple(dims), tuple(input_fuzz), reference, at.line)


def _parse_input_fuzz(name: str, value: Any, at: At, spec: InputSpec) -> InputFuzz:
    mapping = require_map(value, at, INPUT_FUZZ_KEYS)

    def sub(key: str) -> At:
        return at.child(key, mapping.value_lines.get(key, at.line))

    fields: dict[str, Any] = {"name": name}
    if "layout" in mapping:
        layouts = choice_list(mapping["layout"], sub("layout"), LAYOUTS)
        if spec.kind != "tensor" and layouts != ("contiguous",):
            raise sub("layout").error(f"only a plain tensor input has a layout to vary (this one is kind {spec.kind!r})")
        if spec.strides is not None or spec.pad_last_dim:
            raise sub("layout").error("the input fixes strides or pad_last_dim; drop them to let the fuzzer choose")
        fields["layouts"] = layouts
    if "max_pad" in mapping:
        fields["max_pad"] = require_int(mapping["max_pad"], sub("max_pad"), minimum=1)
    if "distribution" in mapping:
        fields["distributions"] = choice_list(mapping["distribution"], sub("distribution"), list(DISTRIBUTIONS))
        for d in fields["distributions"]:
            if d in ("randint", "fill"):
                raise sub("distribution").error(f"{d!r} needs settings per draw; fuzz normal, uniform, ones, zeros, arange", got=d)
    ranges = []
    for setting in RANGE_SETTINGS:
        if setting in mapping:
            low, high, _ = _range(mapping[setting], sub(setting), integer=False)
            if setting == "std" and low < 0:
                raise sub(setting).error("std must be >= 0", got=low)
            ranges.append((setting, low, high))
    fields["ranges"] = tuple(ranges)
    return InputFuzz(**fields)
