"""impl/lowerings/woq_mm_cuda.py on the CPU: the traced kernel launch keeps the launch.

The CUDA lowering traces our kernel's launch and lowers the trace's nodes in place of the
fused op. The launch is a ``triton_kernel_wrapper_mutation`` node that writes the output
buffer and returns nothing, so the usual trace clean-up (dead-code elimination) drops it:
the H200 run's woq_fusion cells came back with the output unwritten (NaN, garbage) and no
kernel in the output code. Here the same trace is made on fake CUDA tensors (no GPU needed:
the launch is recorded, not run), in a subprocess without ``TRITON_INTERPRET`` so the
kernels are ``JITFunction``s as on a GPU. The same traces show what else a compiled layer
would compute each call: nothing for int4 once handed its table, nothing for NF4 (its
kernel reads the levels operand), double-quantized absmax or not. The GPU run checks the lowering end to end.
"""

from __future__ import annotations

import functools

import pytest

pytest.importorskip("triton", reason="the kernels need triton")

from tests.impl.compiled_kernels_support import run_with_compiled_kernels  # noqa: E402


_TRACE = r"""
import json, sys
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from impl.kernels import common, launch
from impl.lowerings.common import trace_to_aten
from impl.lowerings.woq_mm_cuda import kernel_call

for module in (common, launch):  # no GPU to ask for its SM count
    module.sm_count = lambda device: 132
    if hasattr(module, "tuned_config"):
        module.tuned_config = lambda *args, **kwargs: None
M, N, K = 3, 32, 128
eliminate_dead_code = sys.argv[1] == "1"
result = {}
with FakeTensorMode():
    x = torch.empty(M, K, dtype=torch.float16, device="cuda")
    operands = {
        "int8_weight_only": ([None] * 4, [x, torch.empty(N, K, dtype=torch.int8, device="cuda"),
                                          torch.empty(N, dtype=torch.float32, device="cuda")]),
        "int4_weight_only": ([None] * 5 + [64], [x, torch.empty(N, K // 2, dtype=torch.uint8, device="cuda"),
                                                 torch.empty(N, K // 64, device="cuda"), torch.empty(N, K // 64, device="cuda")]),
        "nf4": ([None] * 7 + [64], [x, torch.empty(N, K // 2, dtype=torch.uint8, device="cuda"),
                                    torch.empty(N, K // 64, device="cuda"), torch.empty(16, device="cuda")]),
    }
    # int4 with its pair table handed in (as the lowering hands it a graph constant); NF4 with
    # double-quantized absmax: uint8 codes, absmax_scale (one per 256 blocks), absmax_offset
    table = torch.empty(256, dtype=torch.int32, device="cuda")
    codes = [x, torch.empty(N, K // 2, dtype=torch.uint8, device="cuda"),
             torch.empty(N, K // 64, dtype=torch.uint8, device="cuda"), torch.empty(16, device="cuda"),
             torch.empty(1, device="cuda"), torch.empty((), device="cuda")]
    variants = {scheme: (scheme, fx_args, tensors, {}) for scheme, (fx_args, tensors) in operands.items()}
    variants["int4_weight_only+table"] = ("int4_weight_only", *operands["int4_weight_only"], {"pair_table": table})
    variants["nf4+double_quant"] = ("nf4", operands["nf4"][0], codes, {})
    for name, (scheme, fx_args, tensors, extras) in variants.items():
        positions, launch = kernel_call(scheme, fx_args)
        padded = len(positions) - 1 - len(tensors)  # optional operands and bias: None
        operand_count = len(tensors)
        gm = trace_to_aten(lambda *t: launch(*t[:operand_count], *([None] * (padded + 1)),
                                             **dict(zip(extras, t[operand_count:]))),
                           tensors + list(extras.values()),
                           eliminate_dead_code=eliminate_dead_code)
        nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
        launches = [n.kwargs["kwargs"] for n in nodes if str(n.target) == "triton_kernel_wrapper_mutation"]
        position = {p: i for i, p in enumerate(gm.graph.find_nodes(op="placeholder"))}
        result[name] = {
            "targets": [str(n.target) for n in nodes],
            # per launch: each kernel argument that a trace input feeds directly, and its position
            "inputs": [{arg: position[v] for arg, v in kwargs.items() if v in position} for kwargs in launches],
        }
json.dump(result, sys.stdout)
"""


@functools.lru_cache(maxsize=None)
def _trace(eliminate_dead_code: bool) -> dict:
    return run_with_compiled_kernels(_TRACE, "1" if eliminate_dead_code else "0")


# What a trace does besides the launch without running a kernel: allocations and views
NO_KERNEL = {"aten.view.default", "aten.view.dtype", "aten.alias.default", "aten.empty.memory_format"}


def test_the_lowering_trace_keeps_every_schemes_launch():
    for variant, trace in _trace(eliminate_dead_code=False).items():
        assert trace["targets"].count("triton_kernel_wrapper_mutation") == 1, (variant, trace["targets"])


def test_dead_code_elimination_would_drop_the_launch():
    """What the lowering did before: the trace keeps only the output's allocation."""
    for variant, trace in _trace(eliminate_dead_code=True).items():
        assert "triton_kernel_wrapper_mutation" not in trace["targets"], (variant, trace["targets"])


def test_int4_given_its_decode_table_builds_nothing_per_call():
    """The lowering hands int4's kernel its pair table as a graph constant: the trace then
    computes nothing (without it, it builds the table: a kernel a layer in compiled code)."""
    trace = _trace(eliminate_dead_code=False)
    given, built = trace["int4_weight_only+table"], trace["int4_weight_only"]
    assert set(given["targets"]) - NO_KERNEL == {"triton_kernel_wrapper_mutation"}, given["targets"]
    assert given["inputs"] == [{"qweight_ptr": 1, "scale_ptr": 2, "zero_ptr": 3, "pair_table_ptr": 4}]
    assert "aten.gather.default" in built["targets"]


def test_nf4_builds_no_decode_table_per_call():
    """NF4's kernel takes the levels operand and builds its PRMT table itself: the trace
    computes nothing before the launch (it used to build the table from the levels, a small
    kernel a layer in compiled code, which cost default mode ~0.8x dense a layer)."""
    for variant in ("nf4", "nf4+double_quant"):
        trace = _trace(eliminate_dead_code=False)[variant]
        assert set(trace["targets"]) - NO_KERNEL == {"triton_kernel_wrapper_mutation"}, (variant, trace["targets"])
        assert trace["inputs"][0]["levels_ptr"] == 3, (variant, trace["inputs"])


def test_nf4_double_quantized_absmax_reaches_the_kernel_as_codes():
    """Codes, absmax_scale and absmax_offset go straight to the kernel (it decodes them): no
    float32 absmax is computed and read back. The rest of the trace is the same as without
    double quantization."""
    trace = _trace(eliminate_dead_code=False)
    double, single = trace["nf4+double_quant"], trace["nf4"]
    assert double["inputs"][0]["absmax_ptr"] == 2
    assert (double["inputs"][0]["absmax_scale_ptr"], double["inputs"][0]["absmax_offset_ptr"]) == (4, 5)
    assert double["targets"] == single["targets"]


def test_contest_weights_are_copied_past_l2(monkeypatch):
    """copies_past_l2: copies of a weight that together are twice the GPU's L2."""
    import torch

    from impl.lowerings import woq_mm_cuda

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: type("P", (), {"L2_cache_size": 60 << 20}))
    cuda = torch.device("cuda")
    assert woq_mm_cuda.copies_past_l2(32 << 20, cuda) == 4      # 8192 x 8192 int4
    assert woq_mm_cuda.copies_past_l2(235 << 20, cuda) == 1     # 28672 x 8192 int8: past L2 already
    assert woq_mm_cuda.copies_past_l2(1 << 20, cuda) == 8       # capped
    assert woq_mm_cuda.copies_past_l2(1 << 20, torch.device("cpu")) == 1


_SYMBOLIC_TRACE = r"""
import functools
import json
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext
from impl.kernels import common, launch
from impl.kernels import ops as bodies
from impl.lowerings.common import trace_to_aten
from impl.lowerings.woq_mm_cuda import kernel_call, rows_bucket, tile_counters

for module in (common, launch):  # no GPU to ask for its SM count
    module.sm_count = lambda device: 132
    if hasattr(module, "tuned_config"):
        module.tuned_config = lambda *args, **kwargs: None
N, K = 32, 4096  # one tile of N, K long enough to split
result = {}
for scheme, short, block in (("int8_weight_only", "int8", None), ("int4_weight_only", "int4", 128), ("nf4", "nf4", 64)):
    shape_env = ShapeEnv()
    mode = FakeTensorMode(shape_env=shape_env)
    dynamic = StatelessSymbolicContext(dynamic_sizes=[DimDynamic.DYNAMIC, DimDynamic.STATIC, DimDynamic.STATIC])
    batch = mode.from_tensor(torch.empty(5, 1, K), symbolic_context=dynamic).shape[0]
    with mode:
        x = torch.empty(batch, 1, K, dtype=torch.float16, device="cuda")  # one-token sequences, s0 = 5
        m, bound = rows_bucket(x)
        config = bodies.choose_config(short, bound, N, K, block, x.device)
        counter = tile_counters(bound, N, config, torch.device("cpu"))["tile_counter"]
        counter = torch.empty(counter.numel(), dtype=torch.int32, device="cuda")
        if scheme == "int8_weight_only":
            fx_args = [None] * 4
            tensors = [x, torch.empty(N, K, dtype=torch.int8, device="cuda"), torch.empty(N, device="cuda")]
        else:
            fx_args = [None] * (5 if short == "int4" else 7) + [block]
            tensors = [x, torch.empty(N, K // 2, dtype=torch.uint8, device="cuda"),
                       torch.empty(N, K // block, device="cuda")]
            last = (N, K // block) if short == "int4" else (16,)  # zero points, or NF4's levels
            tensors.append(torch.empty(last, device="cuda"))
        positions, launch = kernel_call(scheme, fx_args, body_of=lambda name: functools.partial(
            bodies.traced_body(name), config=config))
        padded = len(positions) - len(tensors)
        count = len(tensors)
        gm = trace_to_aten(lambda *t: launch(*t[:count], *([None] * padded), tile_counter=t[count]),
                           tensors + [counter], eliminate_dead_code=False)
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    (kwargs,) = [n.kwargs for n in nodes if str(n.target) == "triton_kernel_wrapper_mutation"]
    placeholders = gm.graph.find_nodes(op="placeholder")
    result[short] = {
        "bound": bound, "split_k": config.split_k, "counters": counter.numel(),
        # the batch sizes the guards admit
        "admits": [v for v in range(1, 40) if all(bool(g.expr.subs(batch.node.expr, v)) for g in shape_env.guards)],
        "grid_is_symbolic": any(isinstance(d, torch.fx.Node) for d in kwargs["grid"][0]),
        "m_is_symbolic": isinstance(kwargs["kwargs"]["M"], torch.fx.Node),
        "counter_is_given": kwargs["kwargs"]["tile_counter_ptr"] is placeholders[-1],
        "targets": sorted({str(n.target) for n in nodes}),
    }
print(json.dumps(result))
"""


def test_a_symbolic_batch_launches_its_buckets_config_with_a_symbolic_grid():
    """A dynamic batch (M = s0, 5 when traced): rows_bucket puts M in the bucket (4, 8] by
    guards on s0 (which make a call in another bucket recompile), the launch takes that
    bucket's config with M and the grid symbolic (no guard pins M to 5), and the split-K
    counters it is handed (sized for 8 rows) instead of zeroing new ones each call."""
    result = run_with_compiled_kernels(_SYMBOLIC_TRACE)
    for short, trace in result.items():
        assert trace["bound"] == 8, (short, trace)
        assert trace["admits"] == [5, 6, 7, 8], (short, trace)
        assert trace["grid_is_symbolic"] and trace["m_is_symbolic"], (short, trace)
        assert trace["split_k"] > 1 and trace["counters"] >= 1 and trace["counter_is_given"], (short, trace)
        assert not {"aten.zeros.default", "aten.full.default", "aten.fill_.Scalar"} & set(trace["targets"]), trace
