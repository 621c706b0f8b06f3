"""The requantization passes' match conditions (qmaxpool2d, qcat, qreshape) as a property.

``dequantize -> op -> quantize`` runs on the codes only where both sides have the same
qparams; Hypothesis draws programs whose regions differ by one field (the output scale by a
relative 1e-7 to 2x, the zero point by one, the code dtype, the float dtype, a second
input's qparams, scales given at run time: the same tensor, equal tensors, one computed
twice) over codes that reach both ends of their range. Each program is traced by Dynamo and
AOTAutograd with Inductor's decompositions, the static-quant passes rewrite the graph, and
the rewritten graph run eagerly must give the eager program's codes exactly: fused or left
alone, never different. Programs that differ in nothing must fuse.

What this found is kept in ``test_static_quant_requant.py``: bfloat16 values of int8 codes
with zero point -128 were requantized one code off by eager (bf16 keeps 8 significant
bits), and the pass ran the reshape on the codes anyway.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.utils import counters
from torch._inductor.decomposition import select_decomp_table
from torch._inductor.fx_passes.post_grad import remove_noop_ops
from torch._subclasses.fake_tensor import unset_fake_temporarily

import impl.static_quant as sq
from impl.static_quant.passes import COUNTER_NAMES, apply_static_quant_passes

OPS = ("reshape", "flatten", "view", "cat", "maxpool")
NEAR_MISSES = (
    "none",
    "out_scale",
    "out_zero_point",
    "out_qdtype",
    "second_scale",
    "second_zero_point",
    "second_float_dtype",
    "runtime_scale_shared",
    "runtime_scale_equal_tensors",
    "runtime_scale_computed_twice",
)
QDTYPES = {"uint8": torch.uint8, "int8": torch.int8}
FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclasses.dataclass(frozen=True)
class Program:
    """``quantize(op(dequantize(codes, scale, zp)), out qparams)``, ``near_miss`` changing one field."""

    op: str = "reshape"
    qdtype: str = "uint8"
    float_dtype: str = "float32"
    scale: float = 0.05
    zero_point: int = 3
    near_miss: str = "none"
    ratio: float = 1.0  # the changed scale is scale * ratio
    seed: int = 0

    @property
    def codes_dtype(self) -> torch.dtype:
        return QDTYPES[self.qdtype]

    def must_fuse(self) -> bool:
        """One set of qparams on both sides, and a round trip bf16 cannot move: in bfloat16
        (8 significant bits) every |q - z| up to 128 rounds back to q, 129 may not."""
        if self.near_miss not in ("none", "runtime_scale_shared"):
            return False
        info = torch.iinfo(self.codes_dtype)
        return self.float_dtype == "float32" or max(self.zero_point - info.min, info.max - self.zero_point) <= 128

    def other_zero_point(self) -> int:
        info = torch.iinfo(self.codes_dtype)
        return self.zero_point + 1 if self.zero_point < info.max else self.zero_point - 1


@st.composite
def programs(draw) -> Program:
    qdtype = draw(st.sampled_from(sorted(QDTYPES)))
    info = torch.iinfo(QDTYPES[qdtype])
    near_miss = draw(st.sampled_from(NEAR_MISSES))
    op = draw(st.sampled_from(OPS))
    if near_miss.startswith("second_"):
        op = "cat"
    return Program(
        op=op,
        qdtype=qdtype,
        float_dtype=draw(st.sampled_from(sorted(FLOAT_DTYPES))),
        scale=draw(st.sampled_from([0.05, 0.0123, 1.7, 3e-4])),
        zero_point=draw(st.sampled_from([info.min, 0, 3, (info.min + info.max + 1) // 2, info.max])),
        near_miss=near_miss,
        # 1 + 1e-5 is the pass's tolerance for "the same scale"
        ratio=draw(st.sampled_from([1 + 1e-7, 1 + 4e-6, 1 + 1e-5, 1 + 2e-5, 1.001, 2.0, 0.5])),
        seed=draw(st.integers(0, 3)),
    )


def _codes(program: Program, seed: int) -> torch.Tensor:
    """(2, 4, 6, 6) codes over the dtype's whole range, both ends included."""
    info = torch.iinfo(program.codes_dtype)
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(info.min, info.max + 1, (2, 4, 6, 6), generator=generator, dtype=torch.int32)
    codes.view(-1)[:2] = torch.tensor([info.min, info.max])
    return codes.to(program.codes_dtype)


def build(program: Program):
    """(fn(codes, other codes, scale tensor, equal scale tensor) -> codes, its arguments)."""
    float_dtype = FLOAT_DTYPES[program.float_dtype]
    scale, zero_point, miss = program.scale, program.zero_point, program.near_miss
    changed = scale * program.ratio
    out_scale = changed if miss == "out_scale" else scale
    out_zero_point = program.other_zero_point() if miss == "out_zero_point" else zero_point
    out_qdtype = program.codes_dtype
    if miss == "out_qdtype":
        out_qdtype = torch.int8 if program.codes_dtype == torch.uint8 else torch.uint8
        out_zero_point = max(min(out_zero_point, torch.iinfo(out_qdtype).max), torch.iinfo(out_qdtype).min)

    def fn(codes, more_codes, scale_tensor, equal_scale_tensor):
        in_scale, quant_scale = scale, out_scale
        if miss == "runtime_scale_shared":
            in_scale = quant_scale = scale_tensor
        elif miss == "runtime_scale_equal_tensors":
            in_scale, quant_scale = scale_tensor, equal_scale_tensor
        elif miss == "runtime_scale_computed_twice":
            in_scale, quant_scale = scale_tensor * 1.0, scale_tensor * 1.0
        values = sq.dequantize_per_tensor(codes, in_scale, zero_point, out_dtype=float_dtype)
        if program.op == "reshape":
            y = values.reshape(2, -1)
        elif program.op == "flatten":
            y = torch.flatten(values, 1)
        elif program.op == "view":
            y = values.view(4, 2, 36)
        elif program.op == "maxpool":
            y = F.max_pool2d(values, 3, 2, 1)
        else:
            second = sq.dequantize_per_tensor(
                more_codes,
                changed if miss == "second_scale" else in_scale,
                program.other_zero_point() if miss == "second_zero_point" else zero_point,
                out_dtype=torch.float32 if miss == "second_float_dtype" else float_dtype,
            )
            y = torch.cat([values, second.to(values.dtype) if miss != "second_float_dtype" else second], 1)
            if miss == "second_float_dtype":
                y = y.to(float_dtype)
        return sq.quantize_per_tensor(y, quant_scale, out_zero_point, dtype=out_qdtype)

    scale_tensor = torch.tensor(scale, dtype=torch.float32)
    return fn, (_codes(program, program.seed), _codes(program, program.seed + 10), scale_tensor, scale_tensor.clone())


def _rewrite_only(gm: torch.fx.GraphModule, example_inputs):
    """A torch.compile backend: AOTAutograd with Inductor's decompositions, Inductor's no-op
    removal, then the static-quant passes; the graph then runs eagerly (no Inductor
    lowering, which may drop a bf16 rounding eager keeps: see the module docstring)."""

    def forward(graph_module, inputs):
        graph_module.graph.eliminate_dead_code()
        remove_noop_ops(graph_module.graph)  # as Inductor's joint-graph passes do
        with unset_fake_temporarily():  # as in Inductor's post-grad passes: constants are real
            apply_static_quant_passes(graph_module.graph)
        graph_module.recompile()
        return graph_module

    return aot_autograd(fw_compiler=forward, decompositions=select_decomp_table())(gm, example_inputs)


def _fused() -> int:
    return sum(v for k, v in counters["inductor"].items() if k in COUNTER_NAMES and k.endswith("matcher_count"))


def rewrite_and_compare(program: Program) -> int:
    fn, args = build(program)
    expected = fn(*args)
    torch._dynamo.reset()
    counters.clear()
    got = torch.compile(fn, backend=_rewrite_only, fullgraph=True)(*args)
    fused = _fused()
    assert got.dtype == expected.dtype, program
    mismatched = (got.int() != expected.int()).sum().item()
    assert mismatched == 0, f"{program}: fused {fused}, {mismatched} codes differ (max by {(got.int() - expected.int()).abs().max().item()})"
    return fused


@settings(derandomize=True, max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_requantization_is_never_wrong(program):
    fused = rewrite_and_compare(program)
    event(f"{program.near_miss} fused: {fused}")
    if program.must_fuse():
        assert fused == 1, f"{program}: the same qparams on both sides did not fuse"
