"""The weight-only fusion pass's match conditions as a property: never a wrong fusion.

Hypothesis draws the programs a user may write around a quantized weight W (N, K): views of
it (transposed or not, square weights where only strides tell ``x @ W`` from ``x @ W.T``,
reshapes, strided slices, copies), region bodies that are not the scheme's formula yet take its operand shapes, the matmul
reading it (``mm``, ``addmm`` with any
``alpha`` / ``beta``, ``bmm``, ``F.linear``, ``aten.linear``, ``matmul``, a padded ``mm``
as pad_mm writes it, the broadcast multiply-and-sum Inductor writes for matrix-vector
products), bias shapes and dtypes, activation layouts, activation dtypes, a second reader
of the weight. Each program is traced the way Inductor sees it (AOT decompositions, fake
tensors), ``apply_woq_fusion`` rewrites the graph, and the rewritten graph (the fused op's
own implementation where it fused) must match the unfused program run eagerly: fused or
left alone, never different. The canonical forms must fuse, so a pass that stops fusing
fails here too.

``test_compiled_program_matches_eager`` runs a few drawn programs through torch.compile
with the passes installed: the compiled output (our lowering where it fused) against eager.

Examples are derandomized (the same ones every run) and bounded, for CI time (the compiled
ones hit the FX graph cache on a rerun, keyed by our passes' sources). What this found is
kept as explicit tests in ``test_woq_fusion_pass.py``: negative pads (crops) taken for
pad_mm's padding (a wrong fusion), a broadcast multiply-and-sum recomposed into an mm whose
K did not match (a crash), a ``sum(..., dtype=)`` recomposed (a dtype change).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch._dynamo.utils import counters
from torch._inductor import config as inductor_config
from torch._inductor.decomposition import select_decomp_table
from torch.fx.experimental.proxy_tensor import make_fx

import impl
from impl.hop import InvokeQuant, invoke_quant
from impl.passes.woq_fusion import COUNTER_NAMES, apply_woq_fusion
from impl.schemes import nf4 as nf4_scheme
from impl.schemes import quantize_int4, quantize_int8, quantize_nf4
from impl.schemes.int4 import dequantize_int4_values as dequantize_int4
from impl.schemes.int8 import dequantize_int8_values as dequantize_int8
from impl.schemes.nf4 import dequantize_nf4_values as dequantize_nf4

GROUP = 32  # int4 group size and nf4 block size of the drawn weights
SCHEMES = {"int8": "int8_weight_only", "int4": "int4_weight_only", "nf4": "nf4"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# max |got - expected| / max |expected|: a wrong fusion (another weight, a lost bias or
# alpha) is off by O(1); rounding of the activation dtype is far below these.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}

# Views of W (N, K) a user may write; each gives a 2-D operand. Only some are W.T.
WEIGHT_VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "t": lambda w: w.t(),
    "transpose": lambda w: w.transpose(0, 1),
    "permute": lambda w: w.permute(1, 0),
    "mT": lambda w: w.mT,
    "t_t_t": lambda w: w.t().t().t(),
    "flat_view_t": lambda w: w.reshape(-1).view(w.shape).t(),
    "unsqueeze_squeeze_t": lambda w: w.t().unsqueeze(0).squeeze(0),
    "split_dim_t": lambda w: w.view(w.shape[0], 2, -1).view(w.shape).t(),
    "identity": lambda w: w,
    "t_t": lambda w: w.t().t(),
    "reshape_as_t": lambda w: w.reshape(w.shape[1], w.shape[0]),  # same shape as W.T, not W.T
    "view_as_t": lambda w: w.view(w.shape[1], w.shape[0]),
    "t_contiguous": lambda w: w.t().contiguous(),
    "as_strided_t": lambda w: w.as_strided((w.shape[1], w.shape[0]), (1, w.shape[1])),
    "sliced_rows_t": lambda w: w[: w.shape[0] // 2].t(),
    "strided_cols_t": lambda w: w[:, ::2].t(),
    "strided_rows_t": lambda w: w[::2].t(),
    "flipped_t": lambda w: w.flip(0).t(),
    "negated_t": lambda w: (-w).t(),
}
TRANSPOSED_VIEWS = ("t", "transpose", "permute", "mT", "t_t_t", "flat_view_t", "unsqueeze_squeeze_t", "split_dim_t")
UNTRANSPOSED_VIEWS = ("identity", "t_t")
CONSUMERS = ("mm", "addmm", "matmul", "linear", "aten_linear", "bmm", "vector_sum", "padded_mm")
X_LAYOUTS = ("contiguous", "transposed", "strided")
BIASES = ("none", "row", "row_float32", "one_by_n", "m_by_n")
EXTRA_READERS = ("none", "second_matmul", "sum")


@dataclasses.dataclass(frozen=True)
class Program:
    """One drawn program: ``consumer(x, WEIGHT_VIEWS[view](W), bias)``, maybe a second reader."""

    scheme: str = "int8"
    dtype: str = "float32"
    n: int = 32
    k: int = 32
    m: int = 3
    view: str = "t"
    consumer: str = "mm"
    x_layout: str = "contiguous"
    bias: str = "none"
    alpha: Optional[float] = None  # addmm: None leaves the keyword out
    beta: Optional[float] = None
    pads: tuple[int, int, int] = (0, 0, 0)  # padded_mm: (K pad of x, M pad of x, K pad of W.T)
    broadcast_x: bool = False  # vector_sum: x (M, 1), broadcast against every row of the operand
    batched_x: bool = False  # linear, aten_linear, matmul: x (2, M, K)
    body: str = "scheme"  # int8 only: "per_column_scale" / "transposed_codes" (square weights)
    extra: str = "none"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def operand_shape(self) -> tuple[int, int]:
        w = torch.empty(self.n, self.k, device="meta")
        return tuple(WEIGHT_VIEWS[self.view](w).shape)

    def is_canonical(self) -> bool:
        """The forms the pass exists for: they must fuse."""
        if self.body != "scheme" or self.extra != "none" or self.alpha is not None or self.beta is not None or self.broadcast_x:
            return False
        if self.consumer in ("linear", "aten_linear"):
            return self.view in UNTRANSPOSED_VIEWS and self.bias in ("none", "row")
        if self.consumer == "padded_mm":
            pk, pm, pk_w = self.pads
            # pad_mm's form: K padded alike on both sides, or M padded (pads of 0 are no pad_mm)
            return self.view in TRANSPOSED_VIEWS and pk == pk_w and min(self.pads) >= 0 and (pk or pm) > 0
        return self.view in TRANSPOSED_VIEWS and self.bias == ("row" if self.consumer == "addmm" else "none")


@st.composite
def programs(draw) -> Program:
    """A program the pass fuses, with up to two of its fields then redrawn (near misses)."""
    scheme = draw(st.sampled_from(sorted(SCHEMES)))
    k = draw(st.sampled_from([32, 64]))
    # Square weights half the time: there only the strides tell W from W.T.
    n = k if draw(st.booleans()) else draw(st.sampled_from([16, 48]))
    consumer = draw(st.sampled_from(CONSUMERS))
    linear = consumer in ("linear", "aten_linear")
    fusible = {
        "view": draw(st.sampled_from(UNTRANSPOSED_VIEWS if linear else TRANSPOSED_VIEWS)),
        "bias": "row" if consumer == "addmm" else draw(st.sampled_from(["none", "row"])) if linear else "none",
        "alpha": None,
        "beta": None,
        "pads": draw(st.sampled_from([(1, 0, 1), (3, 2, 3), (0, 2, 0)])) if consumer == "padded_mm" else (0, 0, 0),
        "broadcast_x": False,
        "extra": "none",
        "body": "scheme",
    }
    anything = {
        "view": st.sampled_from(sorted(WEIGHT_VIEWS)),
        "bias": st.sampled_from(BIASES) if consumer in ("addmm", "linear", "aten_linear") else st.just("none"),
        "alpha": st.sampled_from([None, 1, 1.0, 0.5, 2.0, 0.0]) if consumer == "addmm" else st.just(None),
        "beta": st.sampled_from([None, 1, 1.0, 0.5, 0.0]) if consumer == "addmm" else st.just(None),
        "pads": st.tuples(*[st.sampled_from([-1, 0, 1, 3])] * 3) if consumer == "padded_mm" else st.just((0, 0, 0)),
        "broadcast_x": st.booleans() if consumer == "vector_sum" else st.just(False),
        "extra": st.sampled_from(EXTRA_READERS),
        "body": st.sampled_from(["scheme", "per_column_scale", "transposed_codes"]) if scheme == "int8" else st.just("scheme"),
    }
    for field in draw(st.lists(st.sampled_from(sorted(anything)), max_size=2, unique=True)):
        fusible[field] = draw(anything[field])
    return Program(
        scheme=scheme,
        dtype=draw(st.sampled_from(sorted(DTYPES))),
        n=n,
        k=k,
        m=draw(st.sampled_from([1, 3])),
        consumer=consumer,
        x_layout=draw(st.sampled_from(X_LAYOUTS)),
        batched_x=draw(st.booleans()) if consumer in ("linear", "aten_linear", "matmul") else False,
        **fusible,
    )


# --------------------------------------------------------------------------- building a program


@functools.cache
def _weight_tensors(scheme: str, n: int, k: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(n * 1000 + k)
    w = torch.randn(n, k, generator=generator) * 0.1
    if scheme == "int8":
        q = quantize_int8(w, search=False)
        return q.qweight, q.scale
    if scheme == "int4":
        return tuple(quantize_int4(w, GROUP, search=False).tensors())
    q = quantize_nf4(w, GROUP, double_quant=False)
    return q.qweight, q.absmax, nf4_scheme.nf4_levels()


def _region(program: Program, tensors: tuple[torch.Tensor, ...], compiled: bool) -> torch.Tensor:
    """W (N, K) as one region: the unpacked op for make_fx (what AOTAutograd leaves), the
    ``InvokeQuant`` front end under torch.compile (what a user calls)."""
    dtype, k = program.torch_dtype, program.k
    bodies = {
        "int8": lambda q, s: dequantize_int8(q, s, dtype),
        "int4": lambda q, s, z: dequantize_int4(q, s, z, GROUP, k, dtype),
        "nf4": lambda q, a, lv: dequantize_nf4(q, a, lv, None, None, GROUP, k, dtype),
    }
    # Bodies other than the scheme's formula, with its operand shapes where W is square.
    if program.body == "per_column_scale":
        bodies["int8"] = lambda q, s: (q.to(torch.float32) * s).to(dtype)
    elif program.body == "transposed_codes":
        bodies["int8"] = lambda q, s: dequantize_int8(q.t(), s, dtype)
    region = InvokeQuant() if compiled else invoke_quant
    return region(bodies[program.scheme], *tensors, scheme=SCHEMES[program.scheme])


def _activation(program: Program, rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """x (rows, cols) in the drawn layout."""
    dtype = program.torch_dtype
    if program.x_layout == "transposed":
        return torch.randn(cols, rows, generator=generator).to(dtype).t()
    if program.x_layout == "strided":
        return torch.randn(rows, 2 * cols, generator=generator).to(dtype)[:, ::2]
    return torch.randn(rows, cols, generator=generator).to(dtype)


def build(program: Program, compiled: bool = False) -> tuple[Callable, tuple]:
    """(fn(x, bias, *weight tensors) -> tuple of outputs, its arguments)."""
    generator = torch.Generator().manual_seed(7)
    dtype, m = program.torch_dtype, program.m
    rows, cols = program.operand_shape()
    consumer = program.consumer
    if program.batched_x:  # (2, M, K): a view of the drawn layout where one exists
        x = _activation(program, 2 * m, cols if consumer != "matmul" else rows, generator).unflatten(0, (2, m))
        out_features = rows if consumer != "matmul" else cols
    elif consumer in ("linear", "aten_linear"):
        x = _activation(program, m, cols, generator)
        out_features = rows
    elif consumer == "bmm":
        x = torch.stack([_activation(program, m, rows, generator) for _ in range(2)])
        out_features = cols
    elif consumer == "vector_sum" and program.broadcast_x:
        x = _activation(program, m, 1, generator)
        out_features = cols
    else:
        x = _activation(program, m, rows, generator)
        out_features = cols
    bias_shapes = {
        "none": None,
        "row": ((out_features,), dtype),
        "row_float32": ((out_features,), torch.float32),
        "one_by_n": ((1, out_features), dtype),
        "m_by_n": ((*x.shape[:-1], out_features), dtype),
    }
    bias = None
    if bias_shapes[program.bias] is not None:
        shape, bias_dtype = bias_shapes[program.bias]
        bias = torch.randn(shape, generator=generator).to(bias_dtype)

    def fn(x, bias, *tensors):
        w = _region(program, tensors, compiled)
        operand = WEIGHT_VIEWS[program.view](w)
        if consumer == "mm":
            y = torch.mm(x, operand)
        elif consumer == "matmul":
            y = x @ operand
        elif consumer == "addmm":
            scalars = {k: v for k, v in (("alpha", program.alpha), ("beta", program.beta)) if v is not None}
            y = torch.addmm(bias if bias is not None else torch.zeros((), dtype=x.dtype), x, operand, **scalars)
        elif consumer == "linear":
            y = F.linear(x, operand, bias)
        elif consumer == "aten_linear":
            y = torch.ops.aten.linear(x, operand, bias)
        elif consumer == "bmm":
            y = torch.bmm(x, operand.unsqueeze(0).expand(x.shape[0], *operand.shape))
        elif consumer == "vector_sum":
            y = (x.float().unsqueeze(2) * operand.float().unsqueeze(0)).sum(dim=1).to(x.dtype)
        else:  # padded_mm: pad_mm's form, with any pads (negative ones crop)
            pk, pm, pk_w = program.pads
            y = torch.mm(F.pad(x, [0, pk, 0, pm]), F.pad(operand, [0, 0, 0, pk_w]))[: x.shape[0]]
        if program.extra == "second_matmul":
            return y, (2 * x) @ operand if consumer not in ("linear", "aten_linear", "bmm") else F.linear(x, w)
        if program.extra == "sum":
            return y, w.float().sum()
        return (y,)

    return fn, (x, bias, *_weight_tensors(program.scheme, program.n, program.k))


def is_valid(program: Program) -> bool:
    """Whether the program runs eagerly (draws that are shape errors are not programs)."""
    fn, args = build(program)
    try:
        fn(*args)
    except RuntimeError:
        return False
    return True


# --------------------------------------------------------------------------- the property


def _fused() -> int:
    return sum(v for k, v in counters["inductor"].items() if k in COUNTER_NAMES and k.endswith("matcher_count"))


def rewrite_and_compare(program: Program) -> int:
    """Trace ``program`` as Inductor sees it, apply the pass, compare with eager; the fusions."""
    fn, args = build(program)
    expected = fn(*args)
    if program.consumer == "aten_linear":  # graphs that keep aten.linear (pre-dispatch)
        gm = make_fx(fn, tracing_mode="fake", pre_dispatch=True)(*args)
    else:
        gm = make_fx(fn, decomposition_table=select_decomp_table(), tracing_mode="fake")(*args)
    gm.graph.eliminate_dead_code()  # as AOTAutograd does before any post-grad pass
    counters.clear()
    apply_woq_fusion(gm.graph)
    gm.recompile()
    fused = _fused()
    got = gm(*args)
    _assert_matches(got, expected, program, fused)
    return fused


def _assert_matches(got, expected, program: Program, fused: int) -> None:
    __tracebackhide__ = True
    assert len(got) == len(expected)
    for index, (g, e) in enumerate(zip(got, expected)):
        assert g.shape == e.shape and g.dtype == e.dtype, (program, fused, index, g.shape, e.shape, g.dtype, e.dtype)
        if e.numel() == 0:
            continue
        scale = e.double().abs().max().clamp_min(1e-3)
        error = ((g.double() - e.double()).abs().max() / scale).item()
        assert error <= TOLERANCE[e.dtype], f"{program}: fused {fused}, output {index} off by {error:.3g} (relative to max)"


@settings(derandomize=True, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(programs().filter(is_valid))
def test_fusion_is_never_wrong(program):
    fused = rewrite_and_compare(program)
    event(f"fused: {fused}")
    if program.is_canonical():
        assert fused == 1, f"{program}: the canonical form did not fuse"


# --------------------------------------------------------------------------- compiled


@pytest.fixture(scope="module")
def _passes_installed():
    with impl.installed():
        yield


@settings(derandomize=True, max_examples=12, deadline=None, suppress_health_check=[
    HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
@given(programs().filter(lambda p: p.consumer != "aten_linear" and is_valid(p)))
def test_compiled_program_matches_eager(_passes_installed, program):
    """Through Dynamo, AOTAutograd, our pass and our lowering: compiled equals eager."""
    fn, args = build(program, compiled=True)
    expected = fn(*args)
    torch._dynamo.reset()
    counters.clear()
    with inductor_config.patch(fx_graph_cache=True):
        got = torch.compile(fn, dynamic=False)(*args)
    event(f"fused: {_fused()}" if counters["inductor"]["fxgraph_cache_hit"] == 0 else "fused: cached")
    _assert_matches(got, expected, program, _fused())
