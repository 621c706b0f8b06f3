"""The body of every repro script: rebuild a cell's inputs, run it eager and compiled, check it.

:mod:`harness.repro` copies this file's source verbatim into each script and appends the
cell's ``SPEC`` (plain Python literals), so a script runs without the harness: it imports
torch, the program's module and the pass factories the case names, nothing of ``harness``.
It must therefore import nothing from ``harness`` itself. It mirrors the harness's input
construction (:mod:`harness.inputs`), built-in programs (:mod:`harness.programs`), compile
settings (:mod:`harness.run`) and tolerance model (:mod:`harness.compare`); tests in
tests/harness/test_repro.py hold each mirror to its original.

Exit status: 0 when every check passes, 1 when one fails (each failure printed).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import math
import os
import re
import sys
import types

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree

DTYPES = {
    "float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2, "int64": torch.int64,
    "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}


# ------------------------------------------------------------------------------- imports


def import_target(target):
    """'pkg.mod:func' (func may be dotted) -> the object."""
    module_name, _, attr_path = target.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj


# -------------------------------------------------------------------------------- inputs


class InputSpecView(types.SimpleNamespace):
    """What an input builder reads of its spec (the harness passes its InputSpec)."""

    @property
    def param_dict(self):
        return dict(self.params)


def sample_distribution(spec, shape, dtype, generator):
    """Values for ``shape`` on the CPU; floats drawn in float32, then cast (as the harness does)."""
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
    else:
        raise ValueError(f"unknown distribution {d!r}")
    return values.to(dtype)


class BuildContextView:
    """What an input builder reads of its context: device, dtype, the seeded generator, sample()."""

    def __init__(self, device, dtype, generator):
        self.device, self.dtype, self.generator = device, dtype, generator

    def sample(self, spec, shape, dtype):
        return sample_distribution(spec, shape, dtype, self.generator)


def build_plain_tensor(spec, ctx):
    if spec.strides is not None:
        storage = 0 if any(s == 0 for s in spec.shape) else 1 + sum((n - 1) * s for n, s in zip(spec.shape, spec.strides))
        tensor = ctx.sample(spec, (storage,), ctx.dtype).to(ctx.device).as_strided(spec.shape, spec.strides)
    elif spec.pad_last_dim:
        padded = ctx.sample(spec, (*spec.shape[:-1], spec.shape[-1] + spec.pad_last_dim), ctx.dtype).to(ctx.device)
        tensor = padded[..., : spec.shape[-1]]
    else:
        tensor = ctx.sample(spec, spec.shape, ctx.dtype).to(ctx.device)
    if spec.requires_grad:
        tensor.requires_grad_(True)
    return tensor


def build_inputs(spec, device, dtype, saved=None):
    """Every input afresh, from its own seeded generator (or, for a builder no script can
    import, from the values the harness saved beside this script)."""
    values = []
    for item in spec["inputs"]:
        view = InputSpecView(**item["spec"])
        if item["builder"] == "saved":
            values.append(_restore_saved(saved, view.name, device))
            continue
        generator = torch.Generator(device="cpu").manual_seed(item["seed"])
        input_dtype = dtype if view.dtype == "@dtype" else DTYPES[view.dtype]
        ctx = BuildContextView(device, input_dtype, generator)
        builder = build_plain_tensor if item["builder"] == "tensor" else import_target(item["builder"])
        values.append(builder(view, ctx))
    return values


def _restore_saved(saved, name, device):
    if saved is None:
        raise FileNotFoundError(f"input {name!r} was saved beside this script, and that file is missing")
    if name in saved:
        return saved[name].to(device)
    parts = sorted((k for k in saved if k.startswith(name + ".")), key=lambda k: int(k.rsplit(".", 1)[1]))
    return tuple(saved[k].to(device) for k in parts)


# ------------------------------------------------------------------------------- program

_UNARY = {
    "abs": torch.abs, "cos": torch.cos, "exp": torch.exp, "gelu": F.gelu, "neg": torch.neg, "relu": torch.relu,
    "sigmoid": torch.sigmoid, "silu": F.silu, "sin": torch.sin, "square": torch.square, "tanh": torch.tanh,
}
_SCALAR = {"add": torch.add, "mul": torch.mul, "sub": torch.sub, "div": torch.div, "pow": torch.pow}
_REDUCE = {"sum": torch.sum, "mean": torch.mean, "amax": torch.amax, "amin": torch.amin}


def _step(op):
    if isinstance(op, str):
        return _UNARY[op]
    ((name, scalar),) = op.items()
    return lambda t: _SCALAR[name](t, scalar)


def builtin_program(name, params):
    """The harness's built-in programs (harness/programs.py), by name."""
    if name == "matmul":
        return lambda a, b: a @ b
    if name == "linear":
        return lambda x, weight, bias=None: F.linear(x, weight, bias)
    if name == "pointwise_chain":
        steps = [_step(op) for op in params["ops"]]

        def pointwise_chain(*tensors):
            out = tensors[0]
            for t in tensors[1:]:
                out = out + t
            for step in steps:
                out = step(out)
            return out

        return pointwise_chain
    if name == "constant_pad_nd_mm":
        pad, value, add_before = tuple(int(p) for p in params["pad"]), params["value"], params["add_before"]

        def constant_pad_nd_mm(a, b):
            if add_before is not None:
                a = a + add_before
            return torch.ops.aten.constant_pad_nd(a, pad, value) @ b

        return constant_pad_nd_mm
    if name == "reduce":
        reduction, dim = _REDUCE[params["op"]], params["dim"]
        return lambda x: reduction(x, dim=dim)
    raise LookupError(f"no built-in program {name!r}")


def make_program(spec):
    program = spec["program"]
    if program["kind"] == "builtin":
        return builtin_program(program["name"], program["params"])
    if program["kind"] == "builder":  # a built-in registered by another module: its build function
        return import_target(program["target"])(**program["params"])
    function = import_target(program["target"])
    return functools.partial(function, **program["params"]) if program["params"] else function


# ------------------------------------------------------------------------------- running


def flatten_outputs(result, prefix="output"):
    if isinstance(result, torch.Tensor):
        return {prefix: result}
    named = {}
    for path, leaf in pytree.tree_flatten_with_path(result)[0]:
        name = prefix + "".join(f"[{getattr(k, 'idx', getattr(k, 'key', k))}]" for k in path)
        if isinstance(leaf, torch.Tensor):
            named[name] = leaf
        elif isinstance(leaf, (bool, int, float)):
            named[name] = torch.tensor(leaf)
    return named


def run_program(spec, fn, inputs):
    with torch.no_grad() if spec["no_grad"] else contextlib.nullcontext():
        outputs = flatten_outputs(fn(*inputs))
    if spec["backward"]:
        differentiable = [t for t in outputs.values() if t.requires_grad]
        torch.autograd.backward(differentiable, [torch.ones_like(t) for t in differentiable])
        for item, value in zip(spec["inputs"], inputs):
            if item["spec"]["requires_grad"] and isinstance(value, torch.Tensor):
                outputs[f"grad({item['spec']['name']})"] = value.grad
    if spec["inputs_after"]:
        for item, value in zip(spec["inputs"], inputs):
            outputs.update(flatten_outputs(value, prefix=f"input({item['spec']['name']})"))
    return {name: t.detach() for name, t in outputs.items()}


def upcast_to_float64(values):
    def upcast(t):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return t.detach().to(torch.float64).requires_grad_(t.requires_grad)
        return t

    return pytree.tree_map(upcast, values)


@contextlib.contextmanager
def deterministic(enabled):
    if not enabled:
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    previous_fill = torch._C._get_deterministic_fill_uninitialized_memory()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch._C._set_deterministic_fill_uninitialized_memory(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch._C._set_deterministic_fill_uninitialized_memory(previous_fill)


class PostGradCapture:
    def __init__(self):
        self.texts = []

    def __call__(self, graph):
        module = graph.owning_module
        body = module.print_readable(print_output=False, include_stride=True, include_device=True) if module is not None else str(graph)
        self.texts.append(f"# AFTER POST GRAD: graph {len(self.texts)}\n{body}")


def inductor_config_patch(spec, capture):
    """The case's config, caches off where the harness turns them off, and its passes chained per hook."""
    from torch._inductor import config as inductor_config

    patch = dict(spec["inductor_config"])
    hooks = {}
    for hook, factory in spec["passes"]:
        existing = patch.get(hook, getattr(inductor_config, hook))
        hooks.setdefault(hook, [existing] if existing is not None else []).append(import_target(factory)())
    if capture is not None:
        existing = patch.get("post_grad_custom_post_pass", inductor_config.post_grad_custom_post_pass)
        hooks.setdefault("post_grad_custom_post_pass", [existing] if existing is not None else []).append(capture)
    for hook, chain in hooks.items():
        if len(chain) == 1:
            patch[hook] = chain[0]
        else:
            def composite(graph, chain=tuple(chain)):
                for graph_pass in chain:
                    graph_pass(graph)

            patch[hook] = composite
    return patch


_KERNEL = re.compile(r"^(?P<name>\w+) = async_compile\.(?P<kind>\w+)\((?P<head>[^\n]*?)r?'''\n?(?P<source>.*?)'''", re.DOTALL | re.MULTILINE)


def kernel_sources(output_code):
    return "\n".join(f"# kernel {m['name']} ({m['kind']})\n{m['source'].rstrip()}" for m in _KERNEL.finditer(output_code))


# ------------------------------------------------------------------------------- checks


def _errors(expected, actual):
    e = expected.detach().to("cpu", torch.float64)
    a = actual.detach().to("cpu", torch.float64)
    same = (torch.isnan(e) & torch.isnan(a)) | (torch.isinf(e) & (e == a))
    err = torch.where(same, torch.zeros_like(e), (a - e).abs())
    return e, torch.where(torch.isnan(err), torch.full_like(err, math.inf), err)


def sqnr_db(expected, actual):
    e = expected.detach().to("cpu", torch.float64)
    noise = (actual.detach().to("cpu", torch.float64) - e).pow(2).sum().item()
    signal = e.pow(2).sum().item()
    if noise == 0:
        return math.inf
    if signal == 0 or math.isnan(noise):
        return -math.inf
    return 10 * math.log10(signal / noise)


def compare(label, expected, actual, tolerance, float64=None, eager=None):
    """Problems of ``actual`` against ``expected`` under the harness's tolerance model."""
    problems = []
    for name in sorted(set(expected) ^ set(actual)):
        problems.append(f"{label}: {name}: present on one side only")
    for name in expected:
        if name not in actual:
            continue
        exp, act = expected[name], actual[name]
        if exp.dtype != act.dtype or exp.shape != act.shape:
            problems.append(f"{label}: {name}: expected {exp.dtype} {tuple(exp.shape)}, got {act.dtype} {tuple(act.shape)}")
            continue
        if act.numel() == 0:
            continue
        exact = not exp.is_floating_point()
        atol, rtol = (0.0, 0.0) if exact else (tolerance["atol"], tolerance["rtol"])
        e, err = _errors(exp, act)
        mismatched = int((err > atol + rtol * e.abs().nan_to_num(posinf=math.inf)).sum())
        worst = int(err.reshape(-1).argmax())
        max_abs = float(err.reshape(-1)[worst])
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), tuple(err.shape))) if err.dim() else ()
        where = f"max abs error {max_abs:.6g} at {index} (expected {exp.reshape(-1)[worst].item():.6g}, got {act.reshape(-1)[worst].item():.6g})"
        if mismatched:
            problems.append(f"{label}: {name}: {mismatched} / {err.numel()} elements beyond atol={atol:g}, rtol={rtol:g}; {where}")
        if exact:
            continue
        if tolerance.get("min_sqnr_db") is not None and sqnr_db(exp, act) < tolerance["min_sqnr_db"]:
            problems.append(f"{label}: {name}: SQNR {sqnr_db(exp, act):.2f} dB < {tolerance['min_sqnr_db']:g} dB")
        step = tolerance.get("quant_step")
        if step is not None and (max_abs / step if step else math.inf) > tolerance["max_step_error"]:
            problems.append(f"{label}: {name}: {where} = {max_abs / step if step else math.inf:.3g} quantization steps > {tolerance['max_step_error']:g}")
        factor = tolerance.get("float64_factor")
        if factor is not None and float64 is not None and eager is not None and name in float64:
            actual_err = float(_errors(float64[name], act.to(torch.float64))[1].max())
            eager_err = float(_errors(float64[name], eager[name].to(torch.float64))[1].max())
            if actual_err > factor * eager_err + atol:
                problems.append(f"{label}: {name}: error vs float64 {actual_err:.6g} > {factor:g} x eager's {eager_err:.6g} + atol")
    return problems


def golden_sample(tensors, count):
    if count is None:
        return tensors
    out = {}
    for name, tensor in tensors.items():
        if tensor.numel() > count:
            flat = tensor.detach().reshape(-1)
            k = torch.arange(count, dtype=torch.int64)
            out[name] = flat[torch.unique((k * 2654435761) % flat.numel()).to(flat.device)]
        else:
            out[name] = tensor
    return out


def run_filecheck(block, text, prefixes, variables):
    """FileCheck through the ``filecheck`` package; (ok, what it printed)."""
    from filecheck.finput import FInput
    from filecheck.matcher import Matcher
    from filecheck.options import Options
    from filecheck.parser import Parser, pattern_for_opts

    opts = Options(match_filename=block["target"], check_prefixes=list(prefixes), variables=dict(variables))
    parser = Parser(opts, io.StringIO(block["check"]), *pattern_for_opts(opts))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = Matcher(opts, FInput(block["target"], FInput.canonicalize_line_ends(text)), parser).run()
    return code == 0, out.getvalue()


# ------------------------------------------------------------------------------- main


def main(spec, saved_inputs_path=None):
    from torch._dynamo import config as dynamo_config
    from torch._dynamo.utils import counters
    from torch._inductor import config as inductor_config
    from torch._inductor.utils import run_and_get_code

    saved = None
    if saved_inputs_path is not None and os.path.exists(saved_inputs_path):
        from safetensors.torch import load_file

        saved = load_file(saved_inputs_path)
    device, dtype = spec["device"], DTYPES[spec["dtype"]]
    program = make_program(spec)
    tolerance = spec["tolerance"]
    with deterministic(spec["deterministic"]):
        eager = run_program(spec, program, build_inputs(spec, device, dtype, saved))
        float64 = None
        if tolerance.get("float64_factor") is not None:
            float64 = run_program(spec, program, upcast_to_float64(build_inputs(spec, device, dtype, saved)))
        targets = {block["target"] for block in spec["filecheck"]}
        capture = PostGradCapture() if "post_grad_graph" in targets else None
        torch._dynamo.reset()
        counters.clear()
        # No AOTAutograd cache or profile-guided dynamism from an earlier run (they would skip passes).
        torch._functorch.config.enable_autograd_cache = False
        dynamo_config.automatic_dynamic_local_pgo = False
        with inductor_config.patch(inductor_config_patch(spec, capture)), dynamo_config.patch(dict(spec["dynamo_config"])):
            backend = spec["backend"]
            if backend.startswith("inductor"):
                compiled_fn = torch.compile(program, backend="inductor", mode=spec["compile_mode"])
            else:
                compiled_fn = torch.compile(program, backend=backend)
            inputs = build_inputs(spec, device, dtype, saved)
            compiled, code = run_and_get_code(run_program, spec, compiled_fn, inputs)
            for _ in range(spec["compiled_runs"] - 1):  # CUDA graphs: warm up, record, replay
                compiled = run_program(spec, compiled_fn, inputs)
            compiled = {name: t.clone() for name, t in compiled.items()}
        seen = {group: dict(values) for group, values in counters.items() if values}
        torch._dynamo.reset()

    failures = []
    label = f"compiled ({spec['backend']})"
    if spec["check_eager"]:
        failures += compare(f"{label} vs eager", eager, compiled, tolerance, float64=float64, eager=eager)
    if spec["golden"] is not None:
        path = spec["golden"]["path"]
        if not os.path.exists(path):
            failures.append(f"golden missing: {path}")
        else:
            from safetensors.torch import load_file

            golden = {name: t.to(device) for name, t in load_file(path).items()}
            count = spec["golden"]["sample"]
            failures += compare(f"eager vs golden {path}", golden, golden_sample(eager, count), tolerance)
            failures += compare(f"{label} vs golden {path}", golden, golden_sample(compiled, count), tolerance)
    for group, name, bounds in spec["counters"]:
        value = seen.get(group, {}).get(name, 0)
        for op, bound in bounds.items():
            if not {"equals": value == bound, "at_least": value >= bound, "at_most": value <= bound}[op]:
                failures.append(f"counter {group}.{name}: expected {op} {bound}, got {value}")
    graphs = seen.get("stats", {}).get("unique_graphs", 0)
    breaks = sum(seen.get("graph_break", {}).values())
    if spec["graphs"] is not None and graphs != spec["graphs"]:
        failures.append(f"graphs: expected {spec['graphs']} compiled graph(s), got {graphs}")
    if spec["graph_breaks"] is not None and breaks != spec["graph_breaks"]:
        failures.append(f"graph_breaks: expected {spec['graph_breaks']}, got {breaks}")
    output_code = "\n".join(code)
    texts = {
        "output_code": output_code,
        "kernel_source": kernel_sources(output_code),
        "post_grad_graph": "\n".join(capture.texts) if capture else "",
    }
    for block in spec["filecheck"]:
        ok, printed = run_filecheck(block, texts[block["target"]], spec["filecheck_prefixes"], spec["filecheck_variables"])
        if not ok:
            failures.append(f"FileCheck on {block['target']} (suite line {block['line']}) failed:\n{printed.rstrip()}")

    cell = f"{spec['nodeid']}"
    if failures:
        print(f"FAIL {cell}")
        for failure in failures:
            print("  " + failure.replace("\n", "\n  "))
        return 1
    print(f"OK {cell}: every check passes")
    return 0
