"""The catalogue of numeric mutants that ``tools/mutation.py`` plants in ``impl/``, one at a time.

Each entry is a bug a person could plausibly write: a swapped nibble order, a zero point
off by one, a scale rounded to 16 bits, a wrong group index, a dropped low-precision flag,
a pass rewriting to the wrong op, a missing transpose, an NF4 level off, ... ``find`` must
occur exactly once in ``path`` (the tool reports the mutant as stale otherwise), and
``tests`` are the pytest arguments that should catch it: the unit tests of that module and
the suites that run it.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One planted bug: replace ``find`` (exactly one occurrence) by ``replace`` in ``path``."""

    name: str
    path: str  # relative to the repository root
    find: str
    replace: str
    tests: tuple[str, ...]  # pytest arguments (paths, node ids, -k ...) that should kill it
    bug: str  # the numeric bug in words

    def __post_init__(self) -> None:
        if self.find == self.replace:
            raise ValueError(f"mutant {self.name}: replace equals find")
        if not self.tests:
            raise ValueError(f"mutant {self.name}: names no tests")


INT4_KERNEL_TESTS = ("tests/impl/test_kernels_int4.py", "suites/woq_kernels.yaml")
INT8_KERNEL_TESTS = ("tests/impl/test_kernels_scale_precision.py", "tests/impl/test_kernels_int8.py", "suites/woq_kernels.yaml")
NF4_KERNEL_TESTS = ("tests/impl/test_kernels_nf4.py", "tests/impl/test_kernels_common.py", "suites/woq_kernels.yaml")
HOP_TESTS = ("tests/impl/test_hop_robustness.py", "tests/impl/test_hop_seed.py", "suites/invoke_quant.yaml")
STATIC_TESTS = ("tests/impl/test_static_quant_primitives.py", "tests/impl/test_static_quant_requant.py")
QLINEAR_TESTS = ("tests/impl/test_static_quant_qlinear.py",)
INT8_SCHEME_TESTS = ("tests/impl/test_schemes_int8.py", "tests/impl/test_schemes_region_options.py", "suites/woq_regions.yaml")
INT4_SCHEME_TESTS = ("tests/impl/test_schemes_int4.py", "suites/woq_regions.yaml")
WOQ_FUSION_TESTS = ("tests/impl/test_woq_fusion_pass.py", "tests/impl/test_woq_install.py")
WOQ_OP_TESTS = ("tests/impl/test_woq_lowering.py",)
NF4_SCHEME_TESTS = ("tests/impl/test_schemes_nf4.py", "tests/impl/test_kernels_nf4.py", "suites/woq_regions.yaml")

CATALOGUE: tuple[Mutant, ...] = (
    # ------------------------------------------------------------------ Triton kernels
    Mutant(
        "kernel_nibbles_swapped", "impl/kernels/common.py",
        "    low = (packed & 0xF).to(tl.int16)\n    high = (packed >> 4).to(tl.int16)\n",
        "    low = (packed >> 4).to(tl.int16)\n    high = (packed & 0xF).to(tl.int16)\n",
        INT4_KERNEL_TESTS, "int4 kernel decodes the high nibble as k = 2j (swapped nibble order)",
    ),
    Mutant(
        "pair_table_nibbles_swapped", "impl/kernels/common.py",
        "bits[b & 0xF] | (bits[b >> 4] << 16)", "bits[b >> 4] | (bits[b & 0xF] << 16)",
        NF4_KERNEL_TESTS, "the 256-entry decode table puts the high nibble's level first",
    ),
    Mutant(
        "int4_kernel_zero_off_by_one", "impl/kernels/woq_mm_int4.py",
        "zero = tl.load(z_ptrs + group * stride_sg, mask=mask_n, other=0.0) + bias",
        "zero = tl.load(z_ptrs + group * stride_sg, mask=mask_n, other=0.0) + bias + 1.0",
        INT4_KERNEL_TESTS, "int4 kernel subtracts zero + 1",
    ),
    Mutant(
        "int4_kernel_wrong_group", "impl/kernels/woq_mm_int4.py",
        "group = k // GROUP_SIZE\n        if BLOCK_K > GROUP_SIZE:",  # the tile kernel's (its GEMV kernel has one too)
        "group = k_begin // GROUP_SIZE\n        if BLOCK_K > GROUP_SIZE:",
        INT4_KERNEL_TESTS, "int4 kernel uses the first group's scale/zero for the whole K range of a split",
    ),
    Mutant(
        "int4_reference_nibbles_swapped", "impl/kernels/woq_mm_int4.py",
        "torch.stack((packed & 0xF, packed >> 4), dim=-1)", "torch.stack((packed >> 4, packed & 0xF), dim=-1)",
        INT4_KERNEL_TESTS, "the int4 float64 reference unpacks high nibble first",
    ),
    Mutant(
        "int8_fp16_bias_off", "impl/kernels/common.py",
        "(q.to(tl.int16) + 0x6480).to(tl.float16, bitcast=True) - 1152.0",
        "(q.to(tl.int16) + 0x6480).to(tl.float16, bitcast=True) - 1151.0",
        INT8_KERNEL_TESTS, "int8 -> float16 magic-number conversion off by one",
    ),
    Mutant(
        "int8_kernel_scale_rounded", "impl/kernels/woq_mm_int8.py",
        "        acc = acc * scale[None, :]\n",
        "        acc = acc * scale.to(DTYPE).to(tl.float32)[None, :]\n",
        INT8_KERNEL_TESTS, "int8 kernel rounds the per-channel scale to the activation dtype first",
    ),
    Mutant(
        "int8_kernel_k_tail_unmasked", "impl/kernels/woq_mm_int8.py",
        "EVEN_K=K % config.block_k == 0,", "EVEN_K=True,",
        INT8_KERNEL_TESTS, "int8 kernel loads the last K tile unmasked when K is no multiple of BLOCK_K",
    ),
    Mutant(
        "split_k_drops_last_partial", "impl/kernels/common.py",
        "for split in tl.static_range(SPLIT_K):", "for split in tl.static_range(SPLIT_K - 1):",
        INT8_KERNEL_TESTS, "split-K epilogue sums all partials but the last",
    ),
    Mutant(
        "split_k_drops_remainder", "impl/kernels/common.py",
        "steps_per_split = cdiv(k_steps, SPLIT_K)", "steps_per_split = k_steps // SPLIT_K",
        INT8_KERNEL_TESTS, "uneven split-K loses the remainder K steps",
    ),
    Mutant(
        "nf4_double_quant_offset_sign", "impl/kernels/woq_mm_nf4.py",
        "absmax = code.to(tl.float32) * code_scale + absmax_offset",
        "absmax = code.to(tl.float32) * code_scale - absmax_offset",
        NF4_KERNEL_TESTS, "nf4 kernel subtracts the double-quant absmax offset",
    ),
    # ------------------------------------------------------------------ the op and its lowering
    Mutant(
        "lowering_low_precision_dropped", "impl/lowerings/invoke_quant.py",
        "                if options.codegen_low_precision:\n",
        "                if False:\n",
        HOP_TESTS, "the lowering never marks regions for low-precision codegen",
    ),
    Mutant(
        "lowering_operands_reversed", "impl/lowerings/invoke_quant.py",
        "V.graph.env[node] = operands[placeholders.index(node)]",
        "V.graph.env[node] = operands[len(operands) - 1 - placeholders.index(node)]",
        HOP_TESTS, "the lowering binds the region's operands in reverse order",
    ),
    Mutant(
        "hop_alias_not_copied", "impl/hop.py",
        "                    leaf = leaf.clone()\n",
        "                    pass\n",
        HOP_TESTS, "outputs aliasing inputs are not copied (Dynamo graph-breaks, region runs eagerly)",
    ),
    Mutant(
        "hop_options_not_recorded", "impl/hop.py",
        "        traced.meta[QUANT_OPTIONS_META_KEY] = dataclasses.asdict(options)\n\n        out = _record_unpacked",
        "        out = _record_unpacked",
        HOP_TESTS, "the packed op forgets the options on the subgraph (FX graph cache mixes options up)",
    ),
    # ------------------------------------------------------------------ static activation quant
    Mutant(
        "static_quant_floor", "impl/static_quant/primitives.py",
        "torch.clamp(torch.round(x / scale) + zero_point", "torch.clamp(torch.floor(x / scale) + zero_point",
        STATIC_TESTS, "static quantize truncates toward -inf instead of rounding half to even",
    ),
    Mutant(
        "static_dequant_zero_off_by_one", "impl/static_quant/primitives.py",
        "return ((values - zero_point) * scale).to(out_dtype)",
        "return ((values - zero_point - 1) * scale).to(out_dtype)",
        STATIC_TESTS, "static dequantize subtracts zero_point + 1",
    ),
    Mutant(
        "static_quant_clamp_range", "impl/static_quant/primitives.py",
        "info.min, info.max).to(qdtype)", "info.min, info.max - 1).to(qdtype)",
        STATIC_TESTS, "static quantize clamps one code short of qmax",
    ),
    Mutant(
        "static_qparams_truncated_zero_point", "impl/static_quant/primitives.py",
        "scheme.qmin - round(low / scale)", "scheme.qmin - int(low / scale)",
        STATIC_TESTS, "choose_qparams_per_tensor truncates the zero point instead of rounding",
    ),
    Mutant(
        "static_qparams_scale_denominator", "impl/static_quant/primitives.py",
        "scale = max((high - low) / (scheme.qmax - scheme.qmin), _MIN_SCALE)",
        "scale = max((high - low) / (scheme.qmax - scheme.qmin + 1), _MIN_SCALE)",
        STATIC_TESTS, "choose_qparams_per_tensor divides the range by 256 codes instead of 255 steps",
    ),
    Mutant(
        "qlinear_gelu_wrong_algorithm", "impl/static_quant/passes/post_ops.py",
        '    ("gelu", "none", _gelu_erf, _no_scalars),\n    ("gelu", "tanh", _gelu_tanh, _no_scalars),\n',
        '    ("gelu", "tanh", _gelu_erf, _no_scalars),\n    ("gelu", "none", _gelu_tanh, _no_scalars),\n',
        QLINEAR_TESTS, "the fusion pass rewrites erf-GELU to oneDNN's tanh-GELU and back (wrong op)",
    ),
    # ------------------------------------------------------------------ weight-only schemes
    Mutant(
        "scheme_pack_nibbles_swapped", "impl/schemes/common.py",
        "return codes[:, 0::2] | (codes[:, 1::2] << 4)", "return codes[:, 1::2] | (codes[:, 0::2] << 4)",
        INT4_SCHEME_TESTS, "pack_nibbles stores k = 2j in the high nibble",
    ),
    Mutant(
        "scheme_unpack_nibbles_swapped", "impl/schemes/common.py",
        "shifts = torch.arange(2, device=qweight.device, dtype=torch.uint8) * 4",
        "shifts = torch.arange(1, -1, -1, device=qweight.device).to(torch.uint8) * 4",
        INT4_SCHEME_TESTS, "the dequant region unpacks the high nibble first",
    ),
    Mutant(
        "int4_scheme_dequant_zero_off_by_one", "impl/schemes/int4.py",
        "values = ((grouped - group_zero) * group_scale).reshape(n, -1)",
        "values = ((grouped - group_zero - 1) * group_scale).reshape(n, -1)",
        INT4_SCHEME_TESTS, "int4 dequant region subtracts zero + 1",
    ),
    Mutant(
        "int4_scheme_wrong_group", "impl/schemes/int4.py",
        "group_scale = scale[..., None]", "group_scale = scale.flip(-1)[..., None]",
        INT4_SCHEME_TESTS, "int4 dequant region takes the scales of the groups in reverse order",
    ),
    Mutant(
        "int4_scheme_zero_point_rounding", "impl/schemes/int4.py",
        "return scale, torch.round(-lo / scale).clamp(0, QMAX)",
        "return scale, torch.floor(-lo / scale).clamp(0, QMAX)",
        INT4_SCHEME_TESTS, "int4 quantizer truncates the zero point instead of rounding it",
    ),
    Mutant(
        "int8_scheme_scale_rounded", "impl/schemes/int8.py",
        "    return (values * scale[:, None]).to(dtype)\n",
        "    return (values * scale.to(torch.bfloat16).to(torch.float32)[:, None]).to(dtype)\n",
        INT8_SCHEME_TESTS, "int8 dequant region rounds the scale to bfloat16",
    ),
    Mutant(
        "int8_scheme_qmin_128", "impl/schemes/int8.py",
        "QMIN, QMAX = -127, 127", "QMIN, QMAX = -128, 127",
        INT8_SCHEME_TESTS, "int8 quantizer lets -128 through (asymmetric grid, negation no longer exact)",
    ),
    Mutant(
        "int8_scheme_low_precision_dropped", "impl/schemes/int8.py",
        "_REGION = InvokeQuant()  # a matmul prologue", "_REGION = InvokeQuant(codegen_low_precision=False)  # a matmul prologue",
        INT8_SCHEME_TESTS, "the int8 dequant region loses its low-precision codegen flag",
    ),
    Mutant(
        "nf4_table_entry_off", "impl/schemes/nf4.py",
        "0.24611230194568634, 0.33791524171829224,", "0.24611230194568634, 0.34791524171829224,",
        NF4_SCHEME_TESTS, "one NF4 level off by 0.01",
    ),
    Mutant(
        "nf4_double_quant_block_index", "impl/schemes/nf4.py",
        "absmax_scale[flat_block // DOUBLE_QUANT_BLOCK] + absmax_offset",
        "absmax_scale[flat_block // DOUBLE_QUANT_BLOCK - flat_block // DOUBLE_QUANT_BLOCK] + absmax_offset",
        NF4_SCHEME_TESTS, "nf4 dequant region decodes every absmax with the first double-quant scale",
    ),
    # ------------------------------------------------------------------ weight-only fusion and ops
    Mutant(
        "woq_fusion_drops_bias", "impl/passes/woq_fusion.py",
        "        bias, x, weight_node = anchor.args[:3]\n",
        "        _, x, weight_node = anchor.args[:3]\n        bias = None\n",
        WOQ_FUSION_TESTS, "the fusion pass rewrites addmm (F.linear with bias) to the fused op without the bias",
    ),
    Mutant(
        "woq_op_missing_transpose", "impl/woq_mm.py",
        "    return F.linear(x, scheme.formula(*operands, *ints, int(x.shape[-1]), x.dtype), bias)\n",
        "    weight = scheme.formula(*operands, *ints, int(x.shape[-1]), x.dtype)\n"
        "    return F.linear(x, weight.reshape(weight.shape[1], weight.shape[0]).t(), bias)\n",
        WOQ_OP_TESTS, "the fused ops read the weight as (K, N) memory: a transpose missing (right only when N == K)",
    ),
)
