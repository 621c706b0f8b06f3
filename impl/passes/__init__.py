"""Inductor graph passes over our ``invoke_quant`` regions (weight-only schemes).

- :mod:`.woq_fusion`: dequantize region -> mm / addmm / bmm / linear into
  ``torch.ops.impl.woq_mm_<scheme>``; ``WoqFusionPass`` is its cache-safe custom pass.

``impl.install()`` puts it (and the static-quant passes) into Inductor's hooks.
"""

from .woq_fusion import COUNTER_NAMES, PASS_NAMES, WoqFusionPass, apply_woq_fusion

__all__ = ["COUNTER_NAMES", "PASS_NAMES", "WoqFusionPass", "apply_woq_fusion"]
