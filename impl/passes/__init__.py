"""Inductor graph passes over our ``invoke_quant`` regions (weight-only schemes).

- :mod:`.woq_fusion`: dequantize region -> mm / addmm / bmm / linear into
  ``torch.ops.impl.woq_mm_<scheme>``; ``WoqFusionPass`` is its cache-safe custom pass.

``impl.install()`` puts it (and the static-quant passes) into Inductor's hooks.
"""

from . import woq_fusion
from .woq_fusion import WoqFusionPass, apply_woq_fusion


def __getattr__(name: str):
    if name in ("COUNTER_NAMES", "PASS_NAMES"):  # they follow the scheme registry
        return getattr(woq_fusion, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COUNTER_NAMES", "PASS_NAMES", "WoqFusionPass", "apply_woq_fusion"]
