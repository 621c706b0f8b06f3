"""The tolerance model's numbers: errors, SQNR, and which checks of a tolerance an output fails.

:mod:`harness.compare` turns a :class:`Verdict` into the report; a repro script prints its
own lines from the same verdict.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How close is close enough for floating outputs of one dtype.

    ``atol``/``rtol``: elementwise, as torch.testing.assert_close. ``min_sqnr_db``: signal to
    quantization-noise ratio of actual vs expected must reach this. ``quant_step`` with
    ``max_step_error``: max |actual - expected| <= max_step_error * quant_step.
    ``float64_factor``: the compiled result's max error against a float64 run of the same
    program must be <= float64_factor x eager's (plus atol), i.e. compiling may not make
    the numerics worse than eager by more than that factor. ``max_kl_div`` and
    ``min_top_k_agreement`` read the last dimension as logits, one distribution per row
    (a language model's next token): the mean KL(softmax(expected) || softmax(actual)) over
    rows, in nats, must stay <= max_kl_div; the share of rows whose actual argmax is among
    expected's ``top_k`` (default 1: the argmaxes agree) must reach min_top_k_agreement.
    """

    atol: float
    rtol: float
    min_sqnr_db: Optional[float] = None
    quant_step: Optional[float] = None
    max_step_error: Optional[float] = None
    float64_factor: Optional[float] = None
    max_kl_div: Optional[float] = None
    min_top_k_agreement: Optional[float] = None
    top_k: Optional[float] = None  # an integer >= 1 (the loader checks), float like every tolerance number


def is_inexact(tensor: torch.Tensor) -> bool:
    """Floating or complex: compared within a tolerance (the rest compare exactly)."""
    return tensor.is_floating_point() or tensor.is_complex()


def to_wide(tensor: torch.Tensor) -> torch.Tensor:
    """float64 on the CPU, or complex128 for a complex tensor (a float64 cast drops the imaginary part)."""
    return tensor.detach().to("cpu", torch.complex128 if tensor.is_complex() else torch.float64)


def float_errors(expected: torch.Tensor, actual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(abs error, rel error) in float64 on the CPU; matching NaNs and same-signed infs count as 0.
    For complex tensors the abs error is the modulus of the difference."""
    wide = torch.complex128 if expected.is_complex() or actual.is_complex() else torch.float64
    e = expected.detach().to("cpu", wide)
    a = actual.detach().to("cpu", wide)
    both_nan = torch.isnan(e) & torch.isnan(a)
    same_inf = torch.isinf(e) & (e == a)
    abs_err = (a - e).abs()
    abs_err = torch.where(both_nan | same_inf, torch.zeros_like(abs_err), abs_err)
    abs_err = torch.where(torch.isnan(abs_err), torch.full_like(abs_err, math.inf), abs_err)
    rel_err = abs_err / e.abs()
    rel_err = torch.where(abs_err == 0, torch.zeros_like(rel_err), rel_err)
    return abs_err, rel_err


def sqnr_db(expected: torch.Tensor, actual: torch.Tensor) -> float:
    """Signal to noise ratio of ``actual`` as an approximation of ``expected``, in dB (inf when equal)."""
    e = to_wide(expected)
    a = to_wide(actual)
    noise = (a - e).abs().pow(2).sum().item()
    signal = e.abs().pow(2).sum().item()
    if noise == 0:
        return math.inf
    if signal == 0 or math.isnan(noise):
        return -math.inf
    return 10 * math.log10(signal / noise)


def unravel(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index into ``shape`` of element ``flat_index`` of its row-major flattening."""
    index = []
    for size in reversed(shape):
        index.append(flat_index % size if size else 0)
        flat_index //= size if size else 1
    return tuple(reversed(index))


@dataclasses.dataclass
class TensorStats:
    mismatched: int
    numel: int
    max_abs: float
    max_abs_index: tuple[int, ...]
    max_rel: float
    max_rel_index: tuple[int, ...]
    sqnr_db: float


def tensor_stats(
    expected: torch.Tensor, actual: torch.Tensor, tolerance: Tolerance
) -> tuple[TensorStats, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(stats, mismatch mask, abs error, rel error) under the elementwise ``atol`` / ``rtol``."""
    abs_err, rel_err = float_errors(expected, actual)
    e = to_wide(expected)
    allowed = tolerance.atol + tolerance.rtol * e.abs().nan_to_num(posinf=math.inf)
    mismatch = abs_err > allowed
    numel = abs_err.numel()
    if numel == 0:
        return TensorStats(0, 0, 0.0, (), 0.0, (), math.inf), mismatch, abs_err, rel_err
    flat_abs = abs_err.reshape(-1)
    flat_rel = rel_err.reshape(-1).nan_to_num(nan=0.0, posinf=math.inf)
    abs_i = int(flat_abs.argmax())
    rel_i = int(flat_rel.argmax())
    stats = TensorStats(
        mismatched=int(mismatch.sum()),
        numel=numel,
        max_abs=float(flat_abs[abs_i]),
        max_abs_index=unravel(abs_i, tuple(abs_err.shape)),
        max_rel=float(flat_rel[rel_i]),
        max_rel_index=unravel(rel_i, tuple(abs_err.shape)),
        sqnr_db=sqnr_db(expected, actual) if is_inexact(expected) else math.inf,
    )
    return stats, mismatch, abs_err, rel_err


@dataclasses.dataclass
class Verdict:
    """The tolerance model on one output of the same dtype and shape as expected: its numbers,
    and which of the checks the tolerance declares it fails (a report is made from these)."""

    exact: bool  # integers and bools compare exactly, whatever the tolerance
    stats: TensorStats
    mismatch: torch.Tensor
    abs_err: torch.Tensor
    rel_err: torch.Tensor
    sqnr_failed: bool = False
    steps: Optional[float] = None  # max abs error in quantization steps, where quant_step is declared
    steps_failed: bool = False
    # (max error vs float64, eager's, the bound) where float64_factor is declared and both runs are there
    float64: Optional[tuple[float, float, float]] = None
    float64_failed: bool = False
    # (mean KL over rows, max KL, top-k agreement) where max_kl_div or min_top_k_agreement is declared
    distribution: Optional[tuple[float, float, float]] = None
    kl_failed: bool = False
    top_k_failed: bool = False

    @property
    def ok(self) -> bool:
        return not (
            self.stats.mismatched or self.sqnr_failed or self.steps_failed or self.float64_failed or self.kl_failed or self.top_k_failed
        )


def next_token_agreement(expected: torch.Tensor, actual: torch.Tensor, top_k: int = 1) -> tuple[float, float, float]:
    """(mean KL, max KL, top-k agreement) of the last dimension read as logits, one
    distribution per row: KL(softmax(expected) || softmax(actual)) in nats, in float64, and
    the share of rows whose actual argmax is one of expected's ``top_k`` largest."""
    vocab = expected.shape[-1] if expected.dim() else 1
    e = to_wide(expected).real.reshape(-1, vocab)
    a = to_wide(actual).real.reshape(-1, vocab)
    if e.numel() == 0:
        return 0.0, 0.0, 1.0
    log_p, log_q = e.log_softmax(-1), a.log_softmax(-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0.0)
    top = e.topk(min(top_k, vocab), dim=-1).indices
    agreement = (top == a.argmax(-1, keepdim=True)).any(-1).double().mean()
    return float(kl.mean()), float(kl.max()), float(agreement)


def judge_tensor(
    expected: torch.Tensor,
    actual: torch.Tensor,
    tolerance: Tolerance,
    ref64: Optional[torch.Tensor] = None,
    eager: Optional[torch.Tensor] = None,
) -> Verdict:
    """Every check of ``tolerance`` on ``actual`` against ``expected``; ``ref64``/``eager``: the
    float64 run's and eager's output of the same name, for ``float64_factor``."""
    exact = not is_inexact(expected)
    stats, mismatch, abs_err, rel_err = tensor_stats(expected, actual, Tolerance(atol=0.0, rtol=0.0) if exact else tolerance)
    verdict = Verdict(exact, stats, mismatch, abs_err, rel_err)
    if exact:
        return verdict
    verdict.sqnr_failed = tolerance.min_sqnr_db is not None and stats.sqnr_db < tolerance.min_sqnr_db
    if tolerance.quant_step is not None:
        verdict.steps = stats.max_abs / tolerance.quant_step if tolerance.quant_step else math.inf
        verdict.steps_failed = verdict.steps > tolerance.max_step_error
    if tolerance.float64_factor is not None and ref64 is not None and eager is not None:
        actual_err = float(float_errors(ref64, to_wide(actual))[0].max()) if actual.numel() else 0.0
        eager_err = float(float_errors(ref64, to_wide(eager))[0].max()) if eager.numel() else 0.0
        bound = tolerance.float64_factor * eager_err + tolerance.atol
        verdict.float64 = (actual_err, eager_err, bound)
        verdict.float64_failed = actual_err > bound
    if tolerance.max_kl_div is not None or tolerance.min_top_k_agreement is not None:
        verdict.distribution = next_token_agreement(expected, actual, int(tolerance.top_k or 1))
        mean_kl, _, agreement = verdict.distribution
        verdict.kl_failed = tolerance.max_kl_div is not None and not mean_kl <= tolerance.max_kl_div
        verdict.top_k_failed = tolerance.min_top_k_agreement is not None and not agreement >= tolerance.min_top_k_agreement
    return verdict
