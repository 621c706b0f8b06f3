"""The body of every repro script: rebuild a cell's inputs, run it eager and compiled, check it.

:mod:`harness.repro` writes each script as the source of :mod:`harness.core`'s modules (in
place of the imports below), this file's, then the cell's ``SPEC`` (plain Python literals),
so a script runs without the harness: it imports torch, the program's module and the pass
factories the case names, nothing of ``harness``. Input construction, the built-in
programs, running a program, the tolerance model and the golden sample are the core's, the
very code the harness runs; what is here reads the ``SPEC`` and prints the verdict.

Exit status: 0 when every check passes, 1 when one fails (each failure printed).
"""

from __future__ import annotations

import contextlib
import io
import math  # noqa: F401  (the script's last lines, after SPEC, use math and sys)
import os
import sys  # noqa: F401

import torch

# In a script, the core's source stands before this file's instead of these imports.
from .core.backends import backend
from .core.dtypes import DTYPES
from .core.execute import (
    FRESH_DYNAMO_CONFIG,
    FRESH_FUNCTORCH_CONFIG,
    PostGradCapture,
    compile_program,
    deterministic_algorithms,
    extract_kernel_sources,
    inductor_config_patch,
    run_program,
)
from .core.inputs import InputSpec, build_plain_tensor, build_with, upcast_to_float64
from .core.programs import CORE_BUILTINS, import_program, make_program
from .core.sample import sample_for_golden
from .core.tolerance import Tolerance, judge_tensor


# -------------------------------------------------------------------------------- inputs


def build_inputs(spec, device, dtype, saved=None):
    """Every input afresh, from its own seeded generator (or, for a builder no script can
    import, from the values the harness saved beside this script)."""
    values = []
    for item in spec["inputs"]:
        input_spec = InputSpec(**item["spec"])
        if item["builder"] == "saved":
            values.append(_restore_saved(saved, input_spec.name, device))
            continue
        build = build_plain_tensor if item["builder"] == "tensor" else import_program(item["builder"])
        values.append(build_with(build, input_spec, device=device, matrix_dtype=dtype, seed=item["seed"]))
    return values


def _restore_saved(saved, name, device):
    if saved is None:
        raise FileNotFoundError(f"input {name!r} was saved beside this script, and that file is missing")
    if name in saved:
        return saved[name].to(device)
    parts = sorted((k for k in saved if k.startswith(name + ".")), key=lambda k: int(k.rsplit(".", 1)[1]))
    return tuple(saved[k].to(device) for k in parts)


# ------------------------------------------------------------------------------- program


def spec_program(spec):
    """The program the spec names: a core built-in, a built-in registered by another module
    (its build function), or a ``module:function`` with its params bound."""
    program = spec["program"]
    if program["kind"] == "builtin":
        return CORE_BUILTINS[program["name"]].build(**program["params"])
    if program["kind"] == "builder":
        return import_program(program["target"])(**program["params"])
    return make_program(program["target"], program["params"])


# ------------------------------------------------------------------------------- checks


def compare(label, expected, actual, tolerance, float64=None, eager=None):
    """Problems of ``actual`` against ``expected`` under the harness's tolerance model, a line each."""
    tolerance = Tolerance(**tolerance)
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
        verdict = judge_tensor(
            exp, act, tolerance, None if float64 is None else float64.get(name), None if eager is None else eager.get(name)
        )
        stats = verdict.stats
        atol, rtol = (0.0, 0.0) if verdict.exact else (tolerance.atol, tolerance.rtol)
        worst = int(verdict.abs_err.reshape(-1).argmax())
        where = (
            f"max abs error {stats.max_abs:.6g} at {stats.max_abs_index} "
            f"(expected {exp.reshape(-1)[worst].item():.6g}, got {act.reshape(-1)[worst].item():.6g})"
        )
        if stats.mismatched:
            problems.append(f"{label}: {name}: {stats.mismatched} / {stats.numel} elements beyond atol={atol:g}, rtol={rtol:g}; {where}")
        if verdict.sqnr_failed:
            problems.append(f"{label}: {name}: SQNR {stats.sqnr_db:.2f} dB < {tolerance.min_sqnr_db:g} dB")
        if verdict.steps_failed:
            problems.append(f"{label}: {name}: {where} = {verdict.steps:.3g} quantization steps > {tolerance.max_step_error:g}")
        if verdict.float64_failed:
            actual_err, eager_err, _ = verdict.float64
            problems.append(
                f"{label}: {name}: error vs float64 {actual_err:.6g} > {tolerance.float64_factor:g} x eager's {eager_err:.6g} + atol"
            )
    return problems


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


def main(spec, root=".", saved_inputs_path=None):
    """Run the cell ``spec`` describes; ``root``: the project root (the golden's path is relative to it)."""
    from torch._dynamo import config as dynamo_config
    from torch._dynamo.utils import counters
    from torch._inductor import config as inductor_config
    from torch._inductor.utils import run_and_get_code

    saved = None
    if saved_inputs_path is not None and os.path.exists(saved_inputs_path):
        from safetensors.torch import load_file

        saved = load_file(saved_inputs_path)
    device, dtype = spec["device"], DTYPES[spec["dtype"]]
    program = spec_program(spec)
    tolerance = spec["tolerance"]
    input_specs = [InputSpec(**item["spec"]) for item in spec["inputs"]]

    def run(fn, inputs):
        return run_program(fn, inputs, input_specs, no_grad=spec["no_grad"], backward=spec["backward"], inputs_after=spec["inputs_after"])

    with deterministic_algorithms(spec["deterministic"]):
        eager = run(program, build_inputs(spec, device, dtype, saved))
        float64 = None
        if tolerance.get("float64_factor") is not None:
            float64 = run(program, upcast_to_float64(build_inputs(spec, device, dtype, saved)))
        targets = {block["target"] for block in spec["filecheck"]}
        capture = PostGradCapture() if "post_grad_graph" in targets else None
        torch._dynamo.reset()
        counters.clear()
        # No AOTAutograd cache or profile-guided dynamism from an earlier run (they would skip
        # passes); the spec's Inductor config has the harness's caches off already.
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch._functorch.config.patch(FRESH_FUNCTORCH_CONFIG))
            stack.enter_context(dynamo_config.patch({**FRESH_DYNAMO_CONFIG, **spec["dynamo_config"]}))
            stack.enter_context(inductor_config.patch(inductor_config_patch(dict(spec["inductor_config"]), spec["passes"], capture)))
            compiled_fn = compile_program(program, backend(spec["backend"]), spec["compile_mode"])
            inputs = build_inputs(spec, device, dtype, saved)
            compiled, code = run_and_get_code(run, compiled_fn, inputs)
            for _ in range(spec["compiled_runs"] - 1):  # CUDA graphs: warm up, record, replay
                compiled = run(compiled_fn, inputs)
            compiled = {name: t.clone() for name, t in compiled.items()}
        seen = {group: dict(values) for group, values in counters.items() if values}
        torch._dynamo.reset()

    failures = []
    label = f"compiled ({spec['backend']})"
    if spec["check_eager"]:
        failures += compare(f"{label} vs eager", eager, compiled, tolerance, float64=float64, eager=eager)
    if spec["golden"] is not None:
        path = spec["golden"]["path"]
        if not os.path.exists(os.path.join(root, path)):
            failures.append(f"golden missing: {os.path.join(root, path)}")
        else:
            from safetensors.torch import load_file

            golden = {name: t.to(device) for name, t in load_file(os.path.join(root, path)).items()}
            count = spec["golden"]["sample"]
            failures += compare(f"eager vs golden {path}", golden, sample_for_golden(eager, count), tolerance)
            failures += compare(f"{label} vs golden {path}", golden, sample_for_golden(compiled, count), tolerance)
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
        "kernel_source": extract_kernel_sources(output_code),
        "post_grad_graph": "\n".join(capture.texts) if capture else "",
    }
    for block in spec["filecheck"]:
        ok, printed = run_filecheck(block, texts[block["target"]], block.get("prefixes") or spec["filecheck_prefixes"], spec["filecheck_variables"])
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
