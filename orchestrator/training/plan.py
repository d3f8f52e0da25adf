"""`orchestrator plan`: compose, validate and resolve a run without training.

The model is built from its config on the meta device, so this answers in seconds for hub
models too; manifests are read (headers only) to count what survives the max-seconds filter.
"""
from __future__ import annotations

from typing import Any

from orchestrator.errors import OrchestratorError
from orchestrator.config.spec import RunSpec, spec_from_overrides
from orchestrator.config.criteria import LR_WARNING


def data_counts(spec: RunSpec) -> dict[str, Any]:
    from orchestrator.data.manifest import filter_by_duration, read_manifest

    counts = {}
    for name, path in spec.manifests.items():
        try:
            part = filter_by_duration(read_manifest(path), spec.data.max_seconds)
            hours = sum(u.duration for u in part.kept) / 3600
            counts[name] = {"path": path, "utterances": len(part.kept), "dropped_too_long": part.dropped_too_long,
                            "hours": round(hours, 3)}
        except OrchestratorError as exc:
            counts[name] = {"path": path, "error": exc.one_line()}
    return counts


def make_plan(overrides: list[str]) -> dict[str, Any]:
    from orchestrator.training import modeling, targets
    from orchestrator.training.adapter import attach, trainable_by_component
    from orchestrator.training.optim import check_buildable

    spec = spec_from_overrides(overrides)
    built = check_buildable(spec.optim)  # both `_target_`s import and take their arguments
    skeleton = modeling.load_skeleton(spec.model)
    total_params = sum(p.numel() for p in skeleton.parameters())
    resolution = targets.resolve(skeleton, spec.targets)
    a = spec.adapter
    trainable = trainable_by_component(attach(skeleton, a, resolution))  # on meta: counts only
    by_component = {
        comp: {"count": len(mods), "params": trainable.get(comp, 0), "base_params": sum(m.params for m in mods),
               "types": sorted({m.type_name for m in mods}), "modules": [m.name for m in mods]}
        for comp, mods in resolution.by_component().items()}
    warnings = [f"component {c!r} contributes no module on this model" for c in resolution.empty_components]
    warnings += [f"skipped {m.name} ({m.type_name}): PEFT cannot adapt it" for m in resolution.skipped]
    if spec.optim.lr >= LR_WARNING:
        warnings.append(f"optim.lr={spec.optim.lr:g} is at or above {LR_WARNING:g}: the seeds saw catastrophic forgetting")
    n_trainable = sum(trainable.values())
    return {
        "experiment": spec.experiment,
        "config_hash": spec.config_hash,
        "model": {"name": spec.model.name, "id": spec.model.id, "params": total_params},
        "adapter": {"kind": a.kind, "r": a.r, "alpha": a.alpha, "dropout": a.dropout},
        "optim": {"lr": spec.optim.lr, "steps": spec.optim.steps, "batch_size": spec.optim.batch_size,
                  "grad_accum": spec.optim.grad_accum, **built},
        "targets": {"spec": spec.targets.name, "summary": resolution.summary(), "total": len(resolution.modules),
                    "by_component": by_component,
                    "skipped": [m.name for m in resolution.skipped],
                    "empty_components": list(resolution.empty_components)},
        "trainable_params": n_trainable,
        "trainable_percent": round(100 * n_trainable / (total_params + n_trainable), 4),
        "schedule": {"steps": spec.optim.steps, "warmup_steps": spec.warmup_steps,
                     "scheduler": built["scheduler"],
                     "eval_points": spec.eval_steps},
        "data": data_counts(spec),
        "warnings": warnings,
    }


def render_plan(plan: dict[str, Any]) -> str:
    from tabulate import tabulate

    t, s, m = plan["targets"], plan["schedule"], plan["model"]
    lines = [f"experiment  {plan['experiment']}  (config {plan['config_hash'][:12]})",
             f"model       {m['name']} = {m['id']}  ({m['params']:,} parameters)",
             f"adapter     {plan['adapter']['kind']} r={plan['adapter']['r']} alpha={plan['adapter']['alpha']}",
             f"optim       lr={plan['optim']['lr']:g} steps={plan['optim']['steps']} batch={plan['optim']['batch_size']}"
             f" x{plan['optim']['grad_accum']}  {plan['optim']['optimizer']}",
             f"schedule    {s['warmup_steps']} warmup steps, {s['scheduler'].rsplit('.', 1)[-1]}; eval at {len(s['eval_points'])} points "
             f"({', '.join(map(str, s['eval_points'][:6]))}{', ...' if len(s['eval_points']) > 6 else ''})",
             "", f"targets     {t['summary']}  [{t['spec']}]"]
    rows = [(comp, g["count"], ", ".join(g["types"]), f"{g['params']:,}", ", ".join(g["modules"][:2]) + (" ..." if g["count"] > 2 else ""))
            for comp, g in t["by_component"].items()]
    lines.append(tabulate(rows, headers=["component", "modules", "types", "trainable", "e.g."]))
    lines.append(f"trainable   {plan['trainable_params']:,} parameters ({plan['trainable_percent']:.3f}%)")
    lines.append("")
    for name, d in plan["data"].items():
        lines.append(f"data {name:8s}{d['error']}" if "error" in d else
                     f"data {name:8s}{d['utterances']} utterances ({d['hours']} h), {d['dropped_too_long']} over max_seconds dropped"
                     f"  {d['path']}")
    lines += [f"WARNING: {w}" for w in plan["warnings"]]
    return "\n".join(lines)
