"""harness/case/: YAML -> Case, with one-line errors carrying file, line and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.case import CaseFormatError, parse_suite
from harness.core.inputs import InputKind, build_input, register_input_kind


def load(text: str):
    return parse_suite(text, Path("suites/x.yaml"), "suites/x.yaml")


def error_of(text: str) -> str:
    with pytest.raises(CaseFormatError) as info:
        load(text)
    return str(info.value)


MINIMAL = "cases:\n  a:\n    program: matmul\n    inputs:\n      x: {shape: [2, 3]}\n      y: {shape: [3, 2]}\n"


def test_minimal_case_gets_the_documented_defaults():
    (case,) = load(MINIMAL).cases
    assert case.name == "a" and case.line == 2
    assert case.matrix.backends == ("eager", "aot_eager", "inductor")
    assert case.matrix.devices == ("cpu", "cuda")
    assert case.matrix.dtypes == ("float32",)
    assert case.tolerance_for("float32").atol == 1e-5
    assert case.checks.golden and case.checks.eager
    assert case.checks.graphs == 1 and case.checks.graph_breaks == 0
    assert [spec.dtype for spec in case.inputs] == ["@dtype", "@dtype"]


def test_defaults_merge_under_cases_key_by_key():
    suite = load(
        "defaults:\n"
        "  matrix: {backends: [inductor], dtypes: [bf16]}\n"
        "  config: {inplace_padding: true}\n"
        "  tolerances: {atol: 0.5}\n"
        "cases:\n"
        "  a:\n"
        "    program: matmul\n"
        "    inputs: {x: {shape: [2, 2]}, y: {shape: [2, 2]}}\n"
        "    matrix: {devices: [cpu]}\n"
        "    config: {disable_padding_cpu: false}\n"
        "    tolerances: {bfloat16: {rtol: 0.25}}\n"
    )
    (case,) = suite.cases
    assert case.matrix.backends == ("inductor",) and case.matrix.devices == ("cpu",) and case.matrix.dtypes == ("bfloat16",)
    assert dict(case.config) == {"inplace_padding": True, "disable_padding_cpu": False}
    tolerance = case.tolerance_for("bfloat16")
    assert (tolerance.atol, tolerance.rtol) == (0.5, 0.25)


def test_exponent_floats_without_a_dot_are_numbers():
    (case,) = load(MINIMAL + "    tolerances: {atol: 1e-2, rtol: 5E-3}\n").cases
    assert case.tolerance_for("float32").atol == 0.01
    assert case.tolerance_for("float32").rtol == 0.005


INDUCTOR_ONLY = MINIMAL + "    matrix: {backends: [inductor]}\n"


def test_filecheck_block_knows_the_yaml_line_of_its_first_check():
    (case,) = load(
        INDUCTOR_ONLY
        + "    checks:\n"
        + "      filecheck:\n"
        + "        - target: output_code\n"
        + "          check: |\n"
        + "            CHECK: one\n"
        + "        - check: 'CHECK: two'\n"
    ).cases
    first, second = case.checks.filecheck
    assert first.first_check_line == 12 and first.check == "CHECK: one\n"
    assert second.first_check_line == 13 and second.target == "output_code"


@pytest.mark.parametrize(
    "text, message",
    [
        ("cases: [a]\n", "suites/x.yaml:1: cases: must be a mapping (got ['a'])"),
        ("description: x\n", "suites/x.yaml:1: : missing key 'cases' (a mapping from case name to case)"),
        (
            "cases:\n  a:\n    program: matmul\n    program: linear\n    inputs: {}\n",
            "suites/x.yaml:4: program: duplicate key (first defined on line 3)",
        ),
        (
            MINIMAL + "    matrix: {backends: [inductor, tvm]}\n",
            "suites/x.yaml:7: cases.a.matrix.backends[1]: 'tvm' is not one of the allowed values (got 'tvm'; allowed eager, aot_eager, inductor, inductor_max_autotune)",
        ),
        (
            MINIMAL + "    params: {transpose: true}\n",
            "suites/x.yaml:7: cases.a.params.transpose: unknown parameter of built-in program 'matmul' (got 'transpose'; allowed (none))",
        ),
        (
            "cases:\n  a:\n    program: pointwise_chain\n    params: {ops: [sin, cosh]}\n    inputs: {x: {shape: [2]}}\n",
            "suites/x.yaml:4: cases.a.params: pointwise op 'cosh' is neither a unary name *",
        ),
        (
            MINIMAL + "    config: {inplace_paddin: true}\n",
            "suites/x.yaml:7: cases.a.config.inplace_paddin: not a torch._inductor.config key (got 'inplace_paddin')",
        ),
        (
            MINIMAL + "    config: {inplace_padding: 'yes'}\n",
            "suites/x.yaml:7: cases.a.config.inplace_padding: must be true or false (the config default is a bool) (got 'yes')",
        ),
        (
            "cases:\n  a:\n    program: matmul\n    inputs:\n      x: {shape: [2], distribution: fill}\n",
            "suites/x.yaml:5: cases.a.inputs.x: distribution 'fill' needs 'value'",
        ),
        (
            "cases:\n  a:\n    program: matmul\n    inputs:\n      x: {shape: [2], mean: 1.0, distribution: uniform}\n",
            "suites/x.yaml:5: cases.a.inputs.x.mean: not a setting of distribution 'uniform' (got 'mean'; allowed low, high)",
        ),
        (
            "cases:\n  a:\n    program: matmul\n    inputs:\n      x: {shape: [2, 2], strides: [1]}\n",
            "suites/x.yaml:5: cases.a.inputs.x.strides: needs one stride per dimension (2) (got [1])",
        ),
        (
            "cases:\n  a:\n    program: matmul\n    inputs:\n      x: {shape: [2], kind: int4_weightt}\n",
            "suites/x.yaml:5: cases.a.inputs.x.kind: unknown input kind (got 'int4_weightt'; allowed *tensor*)",
        ),
        (
            MINIMAL + "    checks:\n      counters:\n        - {key: inplace_padding, equals: 1}\n",
            "suites/x.yaml:9: cases.a.checks.counters[0].key: must be '<group>.<name>' as in torch._dynamo.utils.counters[group][name] (got 'inplace_padding')",
        ),
        (
            MINIMAL + "    checks:\n      counters:\n        - {key: inductor.x, equals: 1, at_most: 2}\n",
            "suites/x.yaml:9: cases.a.checks.counters[0]: equals excludes at_least and at_most",
        ),
        (
            MINIMAL + "    checks:\n      filecheck:\n        - {target: asm, check: 'CHECK: x'}\n",
            "suites/x.yaml:9: cases.a.checks.filecheck[0].target: 'asm' is not one of the allowed values (got 'asm'; allowed output_code, post_grad_graph, kernel_source, autotune_block, ptx, sass, kernel_resources)",
        ),
        (
            MINIMAL + "    marks:\n      - {xfail: why, skip: why}\n",
            "suites/x.yaml:8: cases.a.marks[0]: a mark names exactly one of slow, skip, xfail, requires (got ['skip', 'xfail']; allowed slow, skip, xfail, requires)",
        ),
        (
            MINIMAL + "    passes:\n      - {hook: post_grad_custom_pre_pass, factory: 'harness.nope:make'}\n",
            "suites/x.yaml:8: cases.a.passes[0].factory: unknown pass factory: cannot import module 'harness.nope': *",
        ),
        (
            MINIMAL + "    tolerances: {fp17: {atol: 1}}\n",
            "suites/x.yaml:7: cases.a.tolerances.fp17: unknown key: neither a tolerance nor a dtype (got 'fp17'; allowed atol, rtol, *)",
        ),
        (
            MINIMAL + "    backward: true\n",
            "suites/x.yaml:7: cases.a.backward: backward: true needs at least one input with requires_grad: true",
        ),
        (
            MINIMAL.replace("{shape: [2, 3]}", "{shape: [2, 3], requires_grad: true}", 1) + "    backward: true\n    no_grad: true\n",
            "suites/x.yaml:8: cases.a.no_grad: no_grad: true leaves nothing for backward: true to differentiate",
        ),
        (
            MINIMAL + "    compile_mode: reduce_overhead\n",
            "suites/x.yaml:7: cases.a.compile_mode: 'reduce_overhead' is not one of the allowed values (got 'reduce_overhead'; allowed default, reduce-overhead, *)",
        ),
        (
            MINIMAL + "    tolerances: {atol: .nan}\n",
            "suites/x.yaml:7: cases.a.tolerances.atol: must be a number, not NaN (every comparison with NaN is false) (got nan)",
        ),
        (
            MINIMAL + "    tolerances: {float32: {rtol: .nan}}\n",
            "suites/x.yaml:7: cases.a.tolerances.float32.rtol: must be a number, not NaN *",
        ),
        (
            MINIMAL + "    tolerances: {rtol: .inf}\n",
            "suites/x.yaml:7: cases.a.tolerances.rtol: must be finite (only atol may be .inf, which switches the elementwise check off) (got inf)",
        ),
        (
            MINIMAL + "    tolerances: {bf16: {min_sqnr_db: -3}}\n",
            "suites/x.yaml:7: cases.a.tolerances.bf16.min_sqnr_db: must be >= 0.0 (got -3)",
        ),
        (
            "defaults:\n  tolerances: {atol: -1e-3}\n" + MINIMAL,
            "suites/x.yaml:2: defaults.tolerances.atol: must be >= 0.0 (got -0.001)",
        ),
        (
            "defaults:\n  checks: {golden: yes please}\n" + MINIMAL + "    checks: {eager: true}\n",
            "suites/x.yaml:2: defaults.checks.golden: must be true or false (got 'yes please')",
        ),
        (
            "defaults:\n  config: {inplace_paddin: true}\n" + MINIMAL,
            "suites/x.yaml:2: defaults.config.inplace_paddin: not a torch._inductor.config key (got 'inplace_paddin')",
        ),
        (
            "defaults:\n  marks: [{skip: 1}]\n" + MINIMAL + "    marks: [{slow: true}]\n",
            "suites/x.yaml:2: defaults.marks[0].skip: must be a string (got 1)",
        ),
        (
            "cases:\n  [1, 2]: {}\n",
            "suites/x.yaml:2: yaml: a mapping key must be a string or a number (got [1, 2])",
        ),
        (
            MINIMAL + "    checks:\n      filecheck:\n        - check: |\n            CHECK: one\n            CHEKC: two\n",
            "suites/x.yaml:11: cases.a.checks.filecheck[0].check: 'CHEKC:' is not a FileCheck directive, so this line would check nothing (got 'CHEKC'; allowed CHECK, *)",
        ),
        (
            MINIMAL + "    checks:\n      filecheck:\n        - {check: 'CHECK_NOT: tl.float32'}\n",
            "suites/x.yaml:9: cases.a.checks.filecheck[0].check: 'CHECK_NOT:' is not a FileCheck directive*",
        ),
        (
            MINIMAL + "    checks:\n      filecheck:\n        - {check: 'CHECK-NXT: x'}\n",
            "suites/x.yaml:9: cases.a.checks.filecheck[0].check: 'CHECK-NXT:' is not a FileCheck directive*",
        ),
        (
            MINIMAL + "    checks:\n      filecheck:\n        - {check: 'cpp_fused_mul'}\n",
            "suites/x.yaml:9: cases.a.checks.filecheck[0].check: no FileCheck directive in the block, so it would check nothing *",
        ),
        (
            "cases:\n  a:\n    program: matmul\n    inputs:\n      x: {shape: [100000, 100000]}\n",
            "suites/x.yaml:5: cases.a.inputs.x.shape: the input needs 40 GB, more than the budget of 4 GB "
            "(if it is meant, say so: max_input_gb: 40 in the case or under defaults:) (got [100000, 100000])",
        ),
        (
            "cases:\n  a:\n    program: matmul\n    inputs:\n      x: {shape: [4, 4], strides: [100000000000, 1]}\n",
            "suites/x.yaml:5: cases.a.inputs.x.strides: the input needs 1.2e+03 GB, more than the budget of 4 GB *",
        ),
        (
            "cases:\n  a:\n    program: matmul\n    inputs:\n      x: {shape: [M, 4]}\n    fuzz: {dims: {M: [1, 1000000000000]}}\n",
            "suites/x.yaml:5: cases.a.inputs.x.shape: the input needs 1.6e+04 GB at the fuzz dims' maxima (M=1000000000000), *",
        ),
    ],
)
def test_bad_input_message(text, message):
    got = error_of(text)
    pattern = ".*".join(re.escape(part) for part in message.split("*"))
    assert re.fullmatch(pattern, got), got


def test_registered_input_kind_is_accepted_and_built():
    def build_pair(spec, ctx):
        base = ctx.sample(spec, spec.shape, ctx.dtype)
        return base.to(ctx.device), base.abs().amax(dim=-1).to(ctx.device) * spec.param_dict["scale"]

    register_input_kind(InputKind("test_pair", build_pair, params={"scale": (int, float)}))
    (case,) = load("cases:\n  a:\n    program: matmul\n    inputs:\n      w: {shape: [2, 4], kind: test_pair, params: {scale: 2}}\n").cases
    import torch

    tensor, scale = build_input(case.inputs[0], device="cpu", matrix_dtype=torch.float32, seed=3)
    assert tensor.shape == (2, 4) and scale.shape == (2,)
    assert "params.scale: has the wrong type" in error_of(
        "cases:\n  a:\n    program: matmul\n    inputs:\n      w: {shape: [2], kind: test_pair, params: {scale: true}}\n"
    )


def test_filecheck_lines_for_any_cell_are_directives():
    (case,) = load(
        INDUCTOR_ONLY + "    checks:\n      filecheck:\n        - check: |\n            // CHECK-CUDA-INDUCTOR: x\n"
        "            CHECK-COUNT-2: y\n            CHECK-LABEL: def call(args):\n            CHECK-MAX-AUTOTUNE-SAME: z\n"
    ).cases
    assert len(case.checks.filecheck) == 1


def test_a_filecheck_block_that_applies_to_eager_cells_is_a_load_error():
    """Eager and aot_eager cells produce no code: the block would fail on empty text at run time."""
    block = "    checks:\n      filecheck:\n        - check: 'CHECK: cpp_fused'\n"
    assert error_of(MINIMAL + block) == (
        "suites/x.yaml:9: cases.a.checks.filecheck[0]: output_code comes from Inductor only, and this block's lines apply "
        "to the matrix's aot_eager, eager cells, where they would fail on empty text; add when: {backends: [inductor]} (or narrow the matrix)"
    )
    assert load(MINIMAL + block + "          when: {backends: [inductor]}\n").cases
    assert load(MINIMAL + "    checks:\n      filecheck:\n        - check: 'CHECK-INDUCTOR: cpp_fused'\n").cases  # lines for inductor cells only


def test_max_input_gb_raises_the_budget_in_the_case_or_its_defaults():
    big = "cases:\n  a:\n    program: matmul\n    inputs:\n      x: {shape: [100000, 100000]}\n"
    assert load(big + "    max_input_gb: 40.1\n").cases[0].inputs[0].shape == (100000, 100000)
    assert load("defaults: {max_input_gb: 41}\n" + big).cases
    assert "max_input_gb: 40" in error_of(big + "    max_input_gb: 39\n")


def test_alias_bomb_is_refused_fast():
    levels = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for name, previous in zip("bcdefghi", "abcdefgh"):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    text = "\n".join(levels) + "\ncases:\n  a:\n    program: matmul\n    inputs: {x: {shape: *i}}\n"
    assert len(text) < 800
    import time

    start = time.monotonic()
    message = error_of(text)
    assert time.monotonic() - start < 5
    assert re.fullmatch(r"suites/x\.yaml:\d+: yaml: aliases expand to more than 200000 nodes .*", message), message


def test_ordinary_aliases_still_load():
    (case,) = load("cases:\n  a:\n    program: matmul\n    inputs: &io\n      x: {shape: [2, 2]}\n      y: {shape: [2, 2]}\n"
                   "  b:\n    program: matmul\n    inputs: *io\n").cases[1:]
    assert [spec.name for spec in case.inputs] == ["x", "y"]


@pytest.mark.parametrize(
    "extra, message",
    [
        ("    config: {__class__: 1}\n", "suites/x.yaml:7: cases.a.config.__class__: not a torch._inductor.config key (got '__class__')"),
        ("    config: {os: 1}\n", "suites/x.yaml:7: cases.a.config.os: not a torch._inductor.config key (got 'os')"),
        ("    dynamo_config: {sys: 1}\n", "suites/x.yaml:7: cases.a.dynamo_config.sys: not a torch._dynamo.config key (got 'sys')"),
        ("    timeout: 1e300\n", "suites/x.yaml:7: cases.a.timeout: must be <= 604800 (got 1e+300)"),
        ("    seed: 100000000000000000000000\n", "suites/x.yaml:7: cases.a.seed: must be <= 1e+15 (got 100000000000000000000000)"),
    ],
    ids=["dunder", "module-attribute", "dynamo-module-attribute", "timeout", "seed"],
)
def test_settings_that_cannot_work_are_load_errors(extra, message):
    """Were accepted at load: a config 'key' that is a dunder or a module the config module
    imports, a deadline the timer overflows on, a seed past 64 bits once input indices are added."""
    assert error_of(MINIMAL + extra) == message
