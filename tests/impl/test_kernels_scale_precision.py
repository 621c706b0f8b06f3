"""The int8 kernel keeps per-channel scales in float32 (mutation tools/mutants.py: int8_kernel_scale_rounded).

Weights of small magnitude have scales below float16's normal range (6.1e-5); a kernel that
rounded the scale to the activation dtype would lose up to half of such a scale, an error
the general tolerance (a few units of roundoff) cannot miss. At ordinary scales the same
rounding hides inside that tolerance, which is why this case exists.
"""

from __future__ import annotations

import torch

from tests.impl.test_kernels_common import DEVICE, INTERPRETER_WARNINGS, assert_matches_reference, random_activation

from impl.kernels.common import KernelConfig  # noqa: E402
from impl.kernels.woq_mm_int8 import dequantize_int8_reference, woq_mm_int8, woq_mm_int8_reference  # noqa: E402

pytestmark = INTERPRETER_WARNINGS


def test_subnormal_float16_scales_are_not_rounded():
    g = torch.Generator().manual_seed(3)
    M, N, K = 5, 16, 64
    x = random_activation(M, K, torch.float16, seed=4)
    qweight = torch.randint(-127, 128, (N, K), generator=g, dtype=torch.int8).to(DEVICE)
    scale = (torch.rand(N, generator=g) * 3e-6 + 1e-7).to(DEVICE)  # float16 subnormals: spacing 6e-8
    assert (scale.half().float() != scale).all()  # the case only bites if rounding changes every scale
    for config in (None, KernelConfig(16, 16, 32, split_k=2)):
        y = woq_mm_int8(x, qweight, scale, config=config)
        assert_matches_reference(y, woq_mm_int8_reference(x, qweight, scale), x, dequantize_int8_reference(qweight, scale),
                                 f"int8 tiny scales {config.short() if config else 'default'}")
