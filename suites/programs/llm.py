"""Programs for suites/llm.yaml: a real model, ``transformers``' ``LlamaForCausalLM``, the way a
user quantizes and compiles it.

    model = LlamaForCausalLM(LlamaConfig(...))                     # the builder: from a config, no download
    quantize_linear_(model, scheme, filter_fn=not lm_head)          # every nn.Linear but lm_head
    impl.install()                                                  # the case's passes
    torch.compile(next_token_logits)(model, input_ids)              # the program, compiled

``llama`` builds the model as an input: weights drawn by transformers' own initializer
(normal, std ``init_std``, transformers' 0.02 by default) from the input's seed, on the cell's device, so the dense model, each
scheme's and the float64 reference share their float weights. ``scheme: dense`` leaves the
Linear layers as they are (the baseline a quantized model must beat); ``float64: true``
builds the scheme's model, then replaces each quantized layer by an ``nn.Linear`` holding
its dequantized weight and casts the whole model to float64: what the quantized model
computes, without rounding (the scheme record's ``formula`` in float64).

``next_token_logits`` runs one forward without a KV cache (``use_cache=False``, every
weight read once, as a decode step reads it) and returns the last position's logits,
(batch, vocab): the next-token distribution the tolerance keys ``max_kl_div`` and
``min_top_k_agreement`` judge.

``transformers`` is an optional test dependency (tools/setup.sh installs it): the suite's
cells are skipped, saying so, where it cannot be imported (``requires: {imports: [...]}``).
"""

from __future__ import annotations

import torch

from harness.core.inputs import BuildContext, InputSpec


def llama(spec: InputSpec, ctx: BuildContext) -> torch.nn.Module:
    """``LlamaForCausalLM`` of the spec's ``params`` (layers, hidden, ...), quantized by ``scheme``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from impl.schemes import quantize_linear_

    params = spec.param_dict
    config = LlamaConfig(
        vocab_size=params.get("vocab", 256),
        hidden_size=params.get("hidden", 64),
        intermediate_size=params.get("intermediate", 128),
        num_hidden_layers=params.get("layers", 2),
        num_attention_heads=params.get("heads", 4),
        num_key_value_heads=params.get("kv_heads", 2),
        max_position_embeddings=params.get("max_positions", 256),
        tie_word_embeddings=False,
        initializer_range=params.get("init_std", 0.02),
        attn_implementation="sdpa",
    )
    # The seed comes from the input's generator, so every run of a cell (eager, compiled,
    # baseline, references) builds the same weights, on the device itself (an 8B-shaped
    # layer stack is seconds to draw on the CPU, and its bytes would cross PCIe).
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator))
    device = torch.device(ctx.device)
    fork = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork, device_type=device.type if device.type != "cpu" else "cuda"):
        torch.manual_seed(seed)
        with device:
            model = LlamaForCausalLM(config)
    scheme = params.get("scheme", "dense")
    if scheme != "dense":
        options = {key: params[key] for key in ("group_size", "block_size", "double_quant") if key in params}
        quantize_linear_(model, scheme, filter_fn=lambda name, _: not name.endswith("lm_head"), **options)
    if params.get("float64", False):
        return _dequantized_float64(model).to(device).eval()
    return model.to(device=device, dtype=ctx.dtype).eval()


llama.PARAMS = {
    "scheme": str, "group_size": int, "block_size": int, "double_quant": bool, "float64": bool,
    "vocab": int, "hidden": int, "intermediate": int, "layers": int, "heads": int, "kv_heads": int, "max_positions": int,
    "init_std": float,
}


def _dequantized_float64(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in float64, each ``WeightOnlyLinear`` replaced by an ``nn.Linear`` of its dequantized weight."""
    from impl.schemes import WeightOnlyLinear

    from .woq_model import _weight_float64

    model = model.to(torch.float64)
    for name, module in list(model.named_modules()):
        if isinstance(module, WeightOnlyLinear):
            linear = torch.nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, dtype=torch.float64)
            with torch.no_grad():
                linear.weight.copy_(_weight_float64(module))
                if module.bias is not None:
                    linear.bias.copy_(module.bias.double())
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, linear.to(module.qweight.device))
    return model


def next_token_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The last position's logits, (batch, vocab), of one forward without a KV cache."""
    return model(input_ids=input_ids, use_cache=False).logits[:, -1, :]
