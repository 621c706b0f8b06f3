"""Shared helpers of the static-quant tests (this module holds no tests itself).

``compile_with_passes`` is the test shape of PyTorch's pattern-matcher tests: clear the
counters, compute the eager result, compile once with our passes as the post-grad custom
pass (FX graph cache off, so the passes run and counters move), and hand back the
output, the eager output, Inductor's output code and our counters.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

import pytest
import torch
from torch._dynamo.utils import counters
from torch._inductor.utils import run_and_get_code

import impl  # noqa: F401  (registers the op's lowering)
from impl.static_quant.passes import StaticQuantPass, onednn_unavailable_reason

ONEDNN_REASON = onednn_unavailable_reason()
needs_onednn = pytest.mark.skipif(ONEDNN_REASON is not None, reason=f"qlinear / qconv2d stand down: {ONEDNN_REASON}")


@dataclasses.dataclass
class Compiled:
    out: Any
    eager: Any
    code: str
    counts: dict[str, int]  # matcher counters (static_quant_*_matcher_*) that moved
    lowered: dict[str, int]  # static_quant_*_lower_count: fused calls Inductor then lowered
    frames: int
    more: list[tuple[Any, Any]]  # (compiled, eager) outputs for each of ``more_inputs``


def static_quant_counts(lowering: bool = False) -> dict[str, int]:
    """Our matcher counters (or, with ``lowering``, our lower counters) that moved (zero
    entries dropped), for exact comparisons."""
    return {
        k: v for k, v in counters["inductor"].items()
        if k.startswith("static_quant_") and k.endswith("_lower_count") == lowering and v
    }


def compile_with_passes(fn: Callable, *inputs: Any, freezing: bool = True, dynamic: Optional[bool] = None,
                        more_inputs: tuple = ()) -> Compiled:
    """Compile ``fn`` once with the static-quant passes and run it on ``inputs`` (then on
    each tuple of ``more_inputs``, to see a dynamic-shape graph reused)."""
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        eager = fn(*_cloned(inputs))
        with torch._inductor.config.patch(
            freezing=freezing, fx_graph_cache=False, post_grad_custom_pre_pass=StaticQuantPass()
        ):
            compiled = torch.compile(fn, dynamic=dynamic)
            out, codes = run_and_get_code(compiled, *inputs)
            more = [(compiled(*extra), fn(*_cloned(extra))) for extra in more_inputs]
    return Compiled(out, eager, "\n".join(codes), static_quant_counts(), static_quant_counts(lowering=True),
                    counters["stats"]["unique_graphs"], more)


def _cloned(inputs: tuple) -> tuple:
    return tuple(i.clone() if isinstance(i, torch.Tensor) else i for i in inputs)


def sqnr_db(reference: torch.Tensor, actual: torch.Tensor) -> float:
    """20 log10(||reference|| / ||actual - reference||), in float64; inf when equal."""
    reference = reference.detach().to(torch.float64)
    noise = torch.linalg.vector_norm(actual.detach().to(torch.float64) - reference)
    if noise == 0:
        return math.inf
    return 20 * math.log10(float(torch.linalg.vector_norm(reference)) / float(noise))


def dequantize_reference(codes: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Float64 values of int8 codes."""
    return (codes.to(torch.float64) - zero_point) * scale


def uint8_codes(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def int8_codes(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(-128, 128, shape, dtype=torch.int8, generator=torch.Generator().manual_seed(seed))


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))
