"""Put a LoRA or DoRA adapter on exactly the resolved modules, and check PEFT did just that."""
from __future__ import annotations

from collections import Counter

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from orchestrator.errors import TargetError
from orchestrator.schema import AdapterConf
from orchestrator.targets import Resolution, component_of


def attach(model: nn.Module, adapter: AdapterConf, resolution: Resolution) -> PeftModel:
    config = LoraConfig(r=adapter.r, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout,
                        target_modules=resolution.names, use_dora=adapter.kind == "dora")
    peft_model = get_peft_model(model, config)
    wrapped = set(adapted_modules(peft_model))
    if wrapped != set(resolution.names):
        missing, extra = sorted(set(resolution.names) - wrapped), sorted(wrapped - set(resolution.names))
        raise TargetError(f"PEFT adapted a different set than resolved (missing {missing[:3]}, extra {extra[:3]})",
                          where="targets", fix="report this: the resolver and PEFT disagree on this model")
    return peft_model


def adapted_modules(peft_model: PeftModel) -> list[str]:
    """Names (relative to the base model) of the modules that carry a LoRA/DoRA layer."""
    base = peft_model.get_base_model()
    return [name for name, module in base.named_modules() if hasattr(module, "lora_A") and len(module.lora_A)]


def trainable_by_component(peft_model: PeftModel) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for name, param in peft_model.get_base_model().named_parameters():
        if param.requires_grad:
            module_name = name.split(".lora_")[0] if ".lora_" in name else name.rsplit(".", 1)[0]
            counts[component_of(module_name) or "other"] += param.numel()
    return dict(counts)
