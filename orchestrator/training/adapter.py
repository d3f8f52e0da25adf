"""Put a LoRA or DoRA adapter on exactly the resolved modules, and check PEFT did just that."""
from __future__ import annotations

from collections import Counter

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from orchestrator.errors import TargetError
from orchestrator.config.schema import AdapterConf
from orchestrator.training.targets import DORA_SUPPORTED, Resolution, component_of, unsupported_reason


def check_kind(model: nn.Module, kind: str, resolution: Resolution) -> None:
    """Refuse, naming the module, a resolved module the adapter kind cannot wrap (DoRA supports
    fewer layer types than LoRA: targets.DORA_SUPPORTED)."""
    if kind != "dora":
        return
    for name in resolution.names:
        reason = unsupported_reason(model.get_submodule(name), DORA_SUPPORTED)
        if reason is not None:
            types = ", ".join(t.__name__ for t in DORA_SUPPORTED)
            raise TargetError(f"adapter=dora cannot adapt {name}: it {reason}; PEFT implements DoRA for {types} only",
                              where="targets",
                              fix="use adapter=lora, or leave it out (targets.exclude / another targets preset)")


def attach(model: nn.Module, adapter: AdapterConf, resolution: Resolution) -> PeftModel:
    check_kind(model, adapter.kind, resolution)
    config = LoraConfig(r=adapter.r, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout,
                        target_modules=resolution.names, use_dora=adapter.kind == "dora")
    try:
        peft_model = get_peft_model(model, config)
    except (ValueError, TypeError, NotImplementedError) as exc:  # PEFT's refusals of a layer or setting
        raise TargetError(f"PEFT refused to put a {adapter.kind} adapter on the resolved modules: "
                          f"{' '.join(str(exc).split()) or type(exc).__name__}", where="targets",
                          fix="change adapter.r / adapter.kind, or leave the module it names out of the target spec") from exc
    wrapped = set(adapted_modules(peft_model))
    if wrapped != set(resolution.names):
        missing, extra = sorted(set(resolution.names) - wrapped), sorted(wrapped - set(resolution.names))
        raise TargetError(f"PEFT adapted a different set than resolved (missing {missing[:3]}, extra {extra[:3]})",
                          where="targets", fix="report this: the resolver and PEFT disagree on this model")
    return peft_model


def adapted_modules(peft_model: PeftModel) -> list[str]:
    """Names (relative to the base model) of the modules that carry a LoRA/DoRA layer."""
    base = peft_model.get_base_model()
    return [name for name, module in base.named_modules()  # embeddings keep theirs in lora_embedding_A
            if len(getattr(module, "lora_A", ())) or len(getattr(module, "lora_embedding_A", ()))]


def trainable_by_component(peft_model: PeftModel) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for name, param in peft_model.get_base_model().named_parameters():
        if param.requires_grad:
            module_name = name.split(".lora_")[0] if ".lora_" in name else name.rsplit(".", 1)[0]
            counts[component_of(module_name) or "other"] += param.numel()
    return dict(counts)
