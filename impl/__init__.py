"""The quantization stack under test: our invoke_quant op, schemes, fusion passes, lowerings."""

from . import compat

compat.check_torch_version()

from .hop import InvokeQuant, invoke_quant, invoke_quant_packed  # noqa: E402
from .lowerings import invoke_quant as _invoke_quant_lowering  # noqa: E402,F401  (registers the lowering)

for _op in (invoke_quant, invoke_quant_packed):
    compat.mark_hop_cacheable(_op)
compat.teach_fx_utils_subgraph_args([invoke_quant, invoke_quant_packed])

from . import woq_mm  # noqa: E402  (registers torch.ops.impl.woq_mm_<scheme>)
from .lowerings import woq_mm_devices as _woq_mm_lowerings  # noqa: E402,F401  (registers their lowerings)
from .install import install, installed, uninstall  # noqa: E402

__all__ = ["InvokeQuant", "install", "installed", "invoke_quant", "invoke_quant_packed", "uninstall"]
