"""CUDA lowering of the fused weight-only matmuls: our Triton kernels, in Inductor's output code.

Left as a fallback, ``torch.ops.impl.woq_mm_<scheme>`` would stay an opaque call into
Python on CUDA. Instead the kernel launch of ``impl.kernels.ops`` (the body of the
kernel's ``triton_op``) is traced and its nodes lowered here: the launch is a
``triton_kernel_wrapper_mutation`` node, which Inductor lowers to a user-defined Triton
kernel that its output code defines and launches, beside the reshapes and the bias add it
fuses around it. The trace keeps that node although nothing reads its result (it writes
the output buffer): dead-code elimination would drop the launch and leave the output
unwritten.

Under ``max_autotune`` (or ``max_autotune_gemm``) our kernel competes on time against
Inductor's own lowering of the decomposition (dequantize + matmul, compiled as a subgraph;
``compat.subgraph_choice``): both are timed on the real shapes, each replayed from a CUDA
graph so that neither pays for host launch cost, and the faster one is emitted. Each
decision bumps ``counters["inductor"]["woq_mm_<short>_autotune_{ours,inductor}"]``.

Applies to float16 / bfloat16 activations (what the kernels take) with static weight
shapes. A static M gets the tile config chosen for it; a symbolic M (a dynamic batch) the
config of its M bucket, held by guards on M (``rows_bucket``): a call in another bucket
recompiles. Anything else returns None and the caller falls back to the op, which
launches the same kernels from Python.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable, Optional

import torch
from torch._dynamo.utils import counters
from torch._inductor import ir
from torch._inductor.lowering import lowerings
from torch._inductor.virtualized import V

from .. import compat, kernels, woq_mm
from ..schemes.registry import SCHEMES
from .common import dense, fake_value, flat_fake, inline_decomposition, max_autotune

aten = torch.ops.aten
log = logging.getLogger(__name__)


def _triton_lowerings():
    from ..kernels import ops  # imports triton: only once the kernels apply

    return ops


def _traced_body(name: str) -> Callable[..., torch.Tensor]:
    return _triton_lowerings().traced_body(name)


def _eager_kernel(name: str) -> Callable[..., torch.Tensor]:
    """The eager launcher with the traced body's signature. For timing only: its decode
    tables are cached per device (compiled code computes them in one small fused kernel),
    so the contest times the kernel, not a dozen unfused table ops."""
    return _triton_lowerings().kernel_module(name).LAUNCHER.eager_launch


def _launch(body: Callable[..., torch.Tensor], x: torch.Tensor, bias: Optional[torch.Tensor],
            *weight_args: Any, **extra: Any) -> torch.Tensor:
    """woq_mm._through_triton with ``body`` (the kernel's traced body) in place of its triton_op."""
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    y = body(flat, *weight_args, **extra)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], y.shape[-1])


def kernel_call(scheme: str, fx_args: list, body_of: Callable[[str], Callable] = _traced_body,
                ) -> tuple[list[int], Callable[..., torch.Tensor]]:
    """(positions of the op's tensor operands the launch takes, the launch as a function of
    them and of the body's keyword extras: ``pair_table``, ``tile_counter``, ``config``).
    ``body_of``: the kernel's traced body (lowering) or its eager launcher (timing, no extras)."""
    record = SCHEMES[scheme]
    ints = tuple(fx_args[record.bias_index + 1:])

    def launch(x, *operands_and_bias, **extra):
        *operands, bias = operands_and_bias
        return _launch(body_of(record.short), x, bias,
                       *_triton_lowerings().op_arguments(record.short, tuple(operands), ints), **extra)

    return list(range(record.bias_index + 1)), launch


def fixed_tables(scheme: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The decode tables a kernel takes after the op's operands that depend only on the scheme
    and x's dtype (int4's pair table), by the body's keyword, as real tensors on x's device:
    the lowering adds them as graph constants, so compiled code runs no kernel a call to build
    them (one launch a layer). NF4's tables come from its levels operand, a graph input."""
    with _no_fake_mode():
        return _triton_lowerings().kernel_module(SCHEMES[scheme].short).LAUNCHER.fixed_tables(x.dtype, x.device)


def tile_counters(rows: Optional[int], n: int, config: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """The split-K tile counters, zeroed, for launches of up to ``rows`` rows (None: no bound,
    and the body allocates zeroed counters each call), by the body's keyword. The kernel
    leaves them zeroed, so one graph constant serves every call: no fill kernel a layer.
    Launches of one compiled graph share a stream, so they never overlap on it."""
    if rows is None:
        return {}
    from ..kernels.common import grid_for

    tiles = grid_for(rows, n, config)[0] if config.split_k > 1 else 1
    with _no_fake_mode():
        return {"tile_counter": torch.zeros(tiles, dtype=torch.int32, device=device)}


def rows_bucket(x: torch.Tensor) -> tuple[Any, Optional[int]]:
    """(M = rows of x flattened to (M, K), the most rows the compiled launch is built for).

    A static M is its own bound. A symbolic M (a dynamic batch) is placed in its M bucket
    (``common.M_BUCKETS``) by comparisons on the SymInt: each one becomes a guard of the
    compiled graph, so a call in another bucket recompiles rather than running this bucket's
    config. Past 256 rows one bucket has no upper bound (None): it launches the largest
    bucket's config, as a static M there does. Each bucket a batch size visits is a compiled
    graph of its own, which counts toward dynamo's ``recompile_limit`` (8 by default): a
    static batch 1 plus the seven symbolic buckets (2, 4, 8, 16, 64, 256, more) stay within it."""
    from ..kernels.common import M_BUCKETS

    m = math.prod(x.shape[:-1])
    if not isinstance(m, torch.SymInt):
        return int(m), int(m)
    for bucket in M_BUCKETS[:-1]:
        if m <= bucket:
            return m, bucket
    return m, None


def lower_through_triton(scheme: str, args: tuple) -> Optional[Any]:
    """The fused op lowered to our Triton kernel (or, under max-autotune, to whichever of our
    kernel and Inductor's decomposition is faster), or None where the kernel does not apply."""
    node = V.graph.current_node
    fx_args = list(node.args) + [None] * (len(args) - len(node.args))
    x = fake_value(fx_args[0])
    if x.dtype not in woq_mm.TRITON_ACTIVATION_DTYPES or not kernels.triton_available():
        return None
    w = fake_value(fx_args[1])
    if any(isinstance(d, torch.SymInt) for d in (*x.shape[-1:], *w.shape)):
        return None  # K and N come from the weights: symbolic only in hand-written graphs
    m, bound = rows_bucket(x)
    record = SCHEMES[scheme]
    short = record.short
    # A symbolic M launches the config of its bucket's largest M (the tuned tables are per
    # bucket), which covers every M the bucket's guards let through.
    block = fx_args[record.bias_index + 1] if record.ints else None
    bodies = _triton_lowerings()
    config = bodies.choose_config(short, bound or bodies.M_BUCKETS[-1], int(w.shape[0]), int(x.shape[-1]), block,
                                  x.device)
    positions, fn = kernel_call(scheme, fx_args, body_of=lambda name: functools.partial(_traced_body(name),
                                                                                         config=config))
    present = [i for i in positions if isinstance(args[i], ir.IRNode)]
    inputs = [args[i] for i in present]
    fakes = [fake_value(fx_args[i]) for i in present]

    def call_with(launch: Callable[..., torch.Tensor], names: tuple = ()) -> Callable[..., torch.Tensor]:
        def call(*tensors: torch.Tensor) -> torch.Tensor:  # the present operands, then the extras
            call_args = {i: None for i in positions}
            call_args.update(zip(present, tensors))
            return launch(*(call_args[i] for i in positions), **dict(zip(names, tensors[len(present):])))
        return call

    def ours() -> Any:
        extras = {**fixed_tables(scheme, x), **tile_counters(bound, int(w.shape[0]), config, x.device)}
        extra_inputs = [V.graph.add_tensor_constant(t) for t in extras.values()]
        extra_fakes = [V.fake_mode.from_tensor(t) for t in extras.values()]
        return inline_decomposition(call_with(fn, tuple(extras)), inputs + extra_inputs, fakes + extra_fakes,
                                    eliminate_dead_code=False)

    if not max_autotune() or isinstance(m, torch.SymInt):
        # The contest times one M; for a symbolic M our kernel, configured for the bucket.
        return ours()
    timed = call_with(kernel_call(scheme, fx_args, body_of=_eager_kernel)[1])
    return _Contest(scheme, args, fx_args, present, fakes, timed, ours).winner()


# --------------------------------------------------------------------------- max-autotune


class _Contest:
    """Our kernel against Inductor's decomposition, timed on the real shapes and layouts.

    The decomposition is the op's own formula without bias (``woq_mm_cpu``'s eager
    functions), traced as an Inductor subgraph choice over (x (M, K), weight tensors); the
    bias add and the leading dims are applied outside, to whichever wins.
    """

    def __init__(self, scheme, args, fx_args, present, fakes, timed_kernel, ours) -> None:
        self.scheme, self.args, self.ours, self.timed_kernel = scheme, args, ours, timed_kernel
        x = fakes[0]
        self.k, self.n = int(x.shape[-1]), int(fake_value(fx_args[1]).shape[0])
        record = SCHEMES[scheme]
        weights = [i for i in present if 0 < i < record.bias_index]
        self.dense = dense(record, args, weights)
        flat = lowerings[aten.reshape.default](args[0], [-1, self.k])
        # Autotuning choices take buffers with a layout: x is often a view of a computed
        # buffer (a 3-D activation after a norm), which realize() leaves a View without one.
        self.choice_inputs = [ir.ExternKernel.realize_input(t) for t in (flat, *(args[i] for i in weights))]
        self.choice_fakes = [flat_fake(x, self.k), *(fake_value(fx_args[i]) for i in weights)]
        self.ours_fakes = fakes

    def winner(self) -> Any:
        short = SCHEMES[self.scheme].short
        m = int(self.choice_fakes[0].shape[0])
        layout = ir.FixedLayout(self.choice_inputs[0].get_device(), self.choice_fakes[0].dtype, [m, self.n])
        decomposed = compat.subgraph_choice(f"impl_woq_mm_{short}_decomposed", self.choice_inputs, layout, self.dense)
        if decomposed is None:
            return self.ours()
        # Decode reads each weight once from HBM: both sides cycle through enough copies of
        # the weights that none is still in L2 when its turn comes (one 8192 x 8192 int4
        # weight fits in an H200's 60 MB L2, where Inductor's decomposition looks faster
        # than it is).
        copies = copies_past_l2(sum(f.numel() * f.element_size() for f in self.choice_fakes[1:]),
                                self.choice_fakes[0].device)
        with _no_fake_mode():
            ours_sets = [self._examples(self.ours_fakes) for _ in range(copies)]
            theirs_sets = [self._examples(self.choice_fakes) for _ in range(copies)]
        ours_calls = [functools.partial(self.timed_kernel, *examples) for examples in ours_sets]
        ours_ms, theirs_ms = _time_fairly(ours_calls,
                                          lambda timer: compat.time_subgraph_choice(decomposed, theirs_sets, timer))
        pick = "ours" if ours_ms <= theirs_ms else "inductor"
        counters["inductor"][f"woq_mm_{short}_autotune_{pick}"] += 1
        log.info("woq_mm_%s M=%d N=%d K=%d: ours %.4f ms, Inductor's decomposition %.4f ms -> %s",
                 short, m, self.n, self.k, ours_ms, theirs_ms, pick)
        if pick == "ours":
            return self.ours()
        y = decomposed.output_node()
        bias = self.args[SCHEMES[self.scheme].bias_index]
        if bias is not None:
            y = lowerings[aten.add.Tensor](y, bias)
        return lowerings[aten.reshape.default](y, [*self.args[0].get_size()[:-1], self.n])

    @staticmethod
    def _examples(fakes: list) -> list:
        """Real tensors of the fakes' shapes, strides and dtypes (timing only): x normal,
        other floats small and positive (scales), integer codes random in range."""
        out = []
        for i, fake in enumerate(fakes):
            t = torch.empty_strided(tuple(fake.shape), tuple(fake.stride()), dtype=fake.dtype, device=fake.device)
            if not t.dtype.is_floating_point:
                t.random_(0, 16 if t.dtype == torch.uint8 else 127)
            elif i == 0:
                t.normal_()
            else:
                t.uniform_(0.01, 0.02)
            out.append(t)
        return out


def copies_past_l2(weight_bytes: int, device: torch.device, max_copies: int = 8) -> int:
    """Copies of a weight of ``weight_bytes`` to cycle through so that together they are
    twice the device's L2 (at least 1, at most ``max_copies``)."""
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) if device.type == "cuda" else 0
    return max(1, min(max_copies, -(-2 * l2 // max(weight_bytes, 1))))


def _time_fairly(ours: list[Callable[[], Any]], theirs_with: Callable[[Callable], float]) -> tuple[float, float]:
    """(ours ms, theirs ms), both timed the same way: as CUDA-graph replays, or, when either
    side cannot be captured, both as plain back-to-back calls (a captured side against an
    uncaptured one would compare kernel time with host launch cost)."""
    ours_ms = time_on_gpu(ours)
    theirs_ms = theirs_with(time_on_gpu)
    if ours_ms is not None and theirs_ms is not None:
        return ours_ms, theirs_ms
    plain = functools.partial(time_on_gpu, capture=False)
    return plain(ours), theirs_with(plain)


def time_on_gpu(fns: list[Callable[[], Any]], replays: int = 24, capture: bool = True) -> Optional[float]:
    """Milliseconds per call of ``fns`` taken in turn (one call each on its own copy of the
    inputs), replayed from a CUDA graph of ``replays`` calls so that host launch cost is not
    counted; None when a call cannot be captured. With ``capture=False``, plain back-to-back
    calls."""
    def calls() -> None:
        for i in range(replays):
            fns[i % len(fns)]()

    with _no_fake_mode():
        torch.cuda.synchronize()
        for fn in fns:  # compile and warm up
            fn()
        torch.cuda.synchronize()
        if capture:
            try:
                stream = torch.cuda.Stream()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
                    calls()
            except Exception as error:
                log.info("woq_mm autotune: CUDA graph capture failed (%s)", error)
                torch.cuda.synchronize()
                return None
            run = graph.replay
        else:
            run = calls
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        run()
        times = []
        for _ in range(5):
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / replays)
        return sorted(times)[len(times) // 2]


def _no_fake_mode():
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    return unset_fake_temporarily()
