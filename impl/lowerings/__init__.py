"""Inductor lowerings: our invoke_quant op, and the fused weight-only matmuls per device."""
