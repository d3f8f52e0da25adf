"""Put a LoRA or DoRA adapter on exactly the resolved modules, and check PEFT did just that.

`adapter.share_a`: the q, k and v projections of one attention block train ONE LoRA A (down
projection) and keep a B each, as moonshine-voice's trainer does: PEFT builds them separately, then
`tie_shared_a` points the k and v layers' lora_A weight at the q layer's Parameter (one object, so
`parameters()` yields it once: the optimizer, gradient clipping and the trainable count see it
once). A saved adapter stores the tied weight under all three names (PEFT copies aliases before
writing safetensors); loading it back (inference.load_adapter, checkpoint.load) ties them again.
"""
from __future__ import annotations

from collections import Counter, defaultdict

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
    if adapter.share_a:
        tie_shared_a(peft_model)
    return peft_model


QKV = ("q_proj", "k_proj", "v_proj")


def tie_shared_a(peft_model: PeftModel) -> int:
    """Give the adapted q/k/v projections of each attention block one lora_A Parameter (the q
    layer's, else the first adapted one's), for every adapter name; returns how many blocks share.
    A block with only one of them adapted has nothing to share. Refuses A matrices of different
    shapes (another input width). Idempotent: tying tied weights changes nothing."""
    groups: dict[str, list] = defaultdict(list)
    for name, module in peft_model.get_base_model().named_modules():
        parent, _, leaf = name.rpartition(".")
        if leaf in QKV and len(getattr(module, "lora_A", ())):
            groups[parent].append((QKV.index(leaf), name, module))
    shared = 0
    for parent, members in groups.items():
        if len(members) < 2:
            continue
        members.sort(key=lambda m: m[0])
        _, first_name, first = members[0]
        for key, down in first.lora_A.items():
            for _, name, module in members[1:]:
                other = module.lora_A[key]
                if other.weight.shape != down.weight.shape:
                    raise TargetError(f"adapter.share_a: {name} and {first_name} have LoRA A matrices of "
                                      f"different shapes ({tuple(other.weight.shape)} vs {tuple(down.weight.shape)})",
                                      where="adapter.share_a", fix="set adapter.share_a=false for this model")
                other.weight = down.weight  # the same Parameter object: one tensor, one gradient
        shared += 1
    return shared


def trainable_count(peft_model: PeftModel) -> int:
    """Trainable parameters, each counted once (a shared A is one parameter)."""
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


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
