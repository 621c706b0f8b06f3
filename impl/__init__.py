"""The quantization stack under test: our invoke_quant op, schemes, fusion passes, lowerings."""

from . import compat

compat.check_torch_version()

from .hop import InvokeQuant, invoke_quant, invoke_quant_packed  # noqa: E402
from .lowerings import invoke_quant as _invoke_quant_lowering  # noqa: E402,F401  (registers the lowering)

for _op in (invoke_quant, invoke_quant_packed):
    compat.mark_hop_cacheable(_op)
compat.teach_fx_utils_subgraph_args([invoke_quant, invoke_quant_packed])

__all__ = ["InvokeQuant", "invoke_quant", "invoke_quant_packed"]
