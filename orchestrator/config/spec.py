"""Composed Hydra config -> a frozen, validated RunSpec (with an identity hash).

Everything here is cheap: bad config fails in well under a second, before any model loads.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from orchestrator.errors import ConfigError
from orchestrator.config.compose import compose
from orchestrator.config.schema import (AdapterConf, CriteriaConf, DataConf, Device, EarlyStoppingConf, EvalConf,
                                        ModelConf, OptimConf, Precision, RegistryConf, RunConf, TargetsConf)

DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
OPTIMIZER_ARGS = ("params", "lr", "weight_decay")  # what training/optim.py passes
SCHEDULER_ARGS = ("optimizer", "num_warmup_steps", "num_training_steps")

EARLY_STOPPING_METRICS = ("dev_loss", "select_wer")

__all__ = ["RunSpec", "build_spec", "compose", "spec_from_overrides", "identity_hash", "manifests_of"]
# Keys that do not change what a run computes, so they stay out of its identity hash.
NOT_IDENTITY = ("registry", "output_dir", "device", "rerun")
# keys that only choose how to compute it: the encoder cache (same results to float rounding), how
# often the host reads the loss, how far ahead batches are prepared (the same batches either way)
NOT_IDENTITY_OPTIM = ("cache_encoder", "cache_encoder_max_mb", "log_every")
NOT_IDENTITY_DATA = ("prefetch",)
NOT_IDENTITY_EVAL = ("cache_encoder", "cache_encoder_max_mb", "share_baseline")  # caches: identical results


@dataclass(frozen=True)
class RunSpec:
    experiment: str
    model: ModelConf
    adapter: AdapterConf
    targets: TargetsConf
    optim: OptimConf
    data: DataConf
    eval: EvalConf
    registry: RegistryConf
    criteria: CriteriaConf
    output_dir: str
    device: Device
    precision: Precision
    rerun: bool
    config: dict[str, Any]  # the resolved config, as saved beside the run's artifacts
    config_hash: str

    @property
    def warmup_steps(self) -> int:
        return int(round(self.optim.steps * self.optim.warmup_ratio))

    @property
    def manifests(self) -> dict[str, str]:
        """Every manifest a run reads, by split name (`replay` only when data.replay_manifest is set)."""
        return manifests_of(self.data, self.eval)

    @property
    def eval_steps(self) -> list[int]:
        """Steps at which both manifests are evaluated: 0 (baseline), every interval from eval.start
        (default: the first interval), the end."""
        start = self.eval.start or self.eval.interval
        return [0, *range(start, self.optim.steps, self.eval.interval), self.optim.steps]

    @property
    def checkpoint_steps(self) -> list[int]:
        """Steps before eval.start that save a checkpoint without evaluating (every interval)."""
        start = self.eval.start or self.eval.interval
        return list(range(self.eval.interval, min(start, self.optim.steps), self.eval.interval))


def manifests_of(data: DataConf | dict, eval: EvalConf | dict) -> dict[str, str]:
    get = (lambda obj, key: obj[key]) if isinstance(data, dict) else getattr
    out = {"train": get(data, "train_manifest"), "domain": get(eval, "domain_manifest"),
           "heldout": get(eval, "heldout_manifest")}
    if get(data, "replay_manifest"):
        out["replay"] = get(data, "replay_manifest")
    select = eval.get("select_manifest") if isinstance(eval, dict) else getattr(eval, "select_manifest", None)
    if select:  # the dev set (eval.select_manifest): picks the checkpoint, so the verdict's sets stay untouched
        out["select"] = select
    return out


def spec_from_overrides(overrides: list[str] | tuple[str, ...] = ()) -> RunSpec:
    """compose + build_spec, naming the experiment after the chosen `exp` file."""
    cfg = compose(overrides)
    exp = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+~").startswith("exp=")), None)
    return build_spec(cfg, exp)


def _check(ok: bool, key: str, what: str, fix: str) -> None:
    if not ok:
        raise ConfigError(what, where=key, fix=fix)


def replay_share(batch_size: int, fraction: float) -> int:
    """Replay utterances per batch: round(batch_size * fraction), at least one and not all."""
    n = round(batch_size * fraction)
    if fraction > 0 and not 0 < n < batch_size:
        raise ConfigError(f"data.replay_fraction={fraction} gives {n} of {batch_size} utterances per batch "
                          "from the replay manifest", where="data.replay_fraction",
                          fix=f"choose a fraction between {1 / batch_size:g} and {1 - 1 / batch_size:g} "
                              "for this optim.batch_size")
    return n


def check_target(node: dict, key: str, given: tuple[str, ...], example: str) -> None:
    """A `_target_` node: a dotted path (importability is `plan`'s check: it needs torch), and no
    argument the orchestrator passes itself."""
    target = node.get("_target_")
    _check(isinstance(target, str) and DOTTED.fullmatch(target) is not None, f"{key}._target_",
           f"must be a dotted path to a callable, got {target!r}", f"set {key}._target_={example}")
    clash = sorted(set(node) & set(given))
    _check(not clash, f"{key}.{clash[0] if clash else ''}", "is set by the orchestrator, not here",
           f"remove it (optim.lr, optim.weight_decay, optim.steps and optim.warmup_ratio give {', '.join(given)})")


def validate(c: RunConf) -> None:
    o, e, a, t = c.optim, c.eval, c.adapter, c.targets
    _check(o.lr > 0 and math.isfinite(o.lr), "optim.lr", f"learning rate must be a finite number > 0, got {o.lr}",
           "set optim.lr=1e-4")
    _check(o.steps > 0, "optim.steps", f"steps must be > 0, got {o.steps}", "set optim.steps=1000")
    _check(o.batch_size > 0, "optim.batch_size", f"must be > 0, got {o.batch_size}", "set optim.batch_size=8")
    _check(o.grad_accum > 0, "optim.grad_accum", f"must be > 0, got {o.grad_accum}", "set optim.grad_accum=1")
    _check(0 <= o.warmup_ratio < 1, "optim.warmup_ratio",
           f"warmup must be shorter than the run, got ratio {o.warmup_ratio}", "use a ratio in [0, 1), e.g. 0.1")
    warmup = int(round(o.steps * o.warmup_ratio)) if 0 <= o.warmup_ratio < 1 else 0
    _check(warmup == 0 or warmup < o.steps, "optim.warmup_ratio",
           f"warmup ({warmup} steps) must be shorter than the run (optim.steps={o.steps})",
           "lower optim.warmup_ratio (e.g. 0.1) or raise optim.steps")
    check_target(o.optimizer, "optim.optimizer", OPTIMIZER_ARGS, "torch.optim.AdamW")
    check_target(o.scheduler, "optim.scheduler", SCHEDULER_ARGS, "transformers.get_linear_schedule_with_warmup")
    _check(o.weight_decay >= 0 and math.isfinite(o.weight_decay), "optim.weight_decay",
           f"must be a finite number >= 0, got {o.weight_decay}", "set optim.weight_decay=0.0")
    _check(-(2 ** 63) <= o.seed < 2 ** 63, "optim.seed", f"seed {o.seed} does not fit in 64 bits", "set optim.seed=42")
    _check(o.grad_clip > 0, "optim.grad_clip", f"must be > 0, got {o.grad_clip}", "set optim.grad_clip=1.0")
    _check(o.cache_encoder in ("auto", "off"), "optim.cache_encoder", f"must be auto or off, got {o.cache_encoder!r}",
           "set optim.cache_encoder=auto")
    _check(o.log_every >= 1, "optim.log_every", f"must be >= 1 step, got {o.log_every}", "set optim.log_every=10")
    _check(c.data.prefetch >= 0, "data.prefetch", f"must be >= 0 batches, got {c.data.prefetch}",
           "set data.prefetch=2 (0: prepare each batch on the main thread)")
    _check(e.batch_seconds is None or (e.batch_seconds > 0 and math.isfinite(e.batch_seconds)), "eval.batch_seconds",
           f"must be a finite number of seconds > 0, or null, got {e.batch_seconds}",
           "set eval.batch_seconds=null (batch_size utterances on the CPU) or e.g. 2048")
    _check(e.cache_encoder in ("auto", "off"), "eval.cache_encoder", f"must be auto or off, got {e.cache_encoder!r}",
           "set eval.cache_encoder=auto")
    _check(e.share_baseline in ("auto", "off"), "eval.share_baseline", f"must be auto or off, got {e.share_baseline!r}",
           "set eval.share_baseline=auto")
    _check(e.cache_encoder_max_mb >= 0, "eval.cache_encoder_max_mb", f"must be >= 0, got {e.cache_encoder_max_mb}",
           "set eval.cache_encoder_max_mb=2048")
    _check(o.cache_encoder_max_mb >= 0, "optim.cache_encoder_max_mb", f"must be >= 0, got {o.cache_encoder_max_mb}",
           "set optim.cache_encoder_max_mb=4096")
    validate_early_stopping(o.early_stopping, e.select_manifest)
    _check(0 < e.interval <= o.steps, "eval.interval",
           f"interval {e.interval} must be between 1 and optim.steps ({o.steps})",
           f"set eval.interval to at most {o.steps}")
    _check(e.start is None or 0 < e.start <= o.steps, "eval.start",
           f"the first evaluated step {e.start} must be between 1 and optim.steps ({o.steps})",
           "set eval.start=null (evaluate from the first interval) or a step within the run")
    _check(e.batch_size > 0, "eval.batch_size", f"must be > 0, got {e.batch_size}", "set eval.batch_size=16")
    _check(a.r > 0, "adapter.r", f"rank must be > 0, got {a.r}", "set adapter.r=8")
    _check(a.alpha > 0, "adapter.alpha", f"must be > 0 (it scales the adapter's update), got {a.alpha}",
           "set adapter.alpha=16")
    _check(0 <= a.dropout < 1, "adapter.dropout", f"must be in [0, 1), got {a.dropout}", "set adapter.dropout=0.05")
    _check(bool(t.kinds or t.patterns), "targets", "the target spec selects nothing",
           "choose a preset (targets=global_qkvo) or set targets.kinds / targets.patterns")
    _check(c.data.max_seconds > 0, "data.max_seconds", f"must be > 0, got {c.data.max_seconds}", "set data.max_seconds=20")
    _check(0 <= c.data.replay_fraction < 1, "data.replay_fraction",
           f"must be in [0, 1), got {c.data.replay_fraction}", "set data.replay_fraction=0.5")
    _check(bool(c.data.replay_manifest) == (c.data.replay_fraction > 0), "data.replay_manifest",
           "replay needs both a manifest and a fraction > 0",
           "set data.replay_manifest=PATH and data.replay_fraction=0.5 together (or neither)")
    replay_share(o.batch_size, c.data.replay_fraction)  # a share that rounds to none or to all fails here
    _check(c.data.sample_rate > 0, "data.sample_rate", "must be > 0", "set data.sample_rate=16000")
    _check(c.data.rms_target >= 0 and math.isfinite(c.data.rms_target), "data.rms_target",
           f"must be a finite number >= 0 (0: no normalisation), got {c.data.rms_target}", "set data.rms_target=0.075")
    _check(c.model.tokens_per_second > 0 and math.isfinite(c.model.tokens_per_second), "model.tokens_per_second",
           f"must be a finite number > 0, got {c.model.tokens_per_second}", "set model.tokens_per_second=6.5")


def validate_early_stopping(es: EarlyStoppingConf, select_manifest: str | None) -> None:
    key = "optim.early_stopping"
    _check(es.metric in EARLY_STOPPING_METRICS, f"{key}.metric", f"unknown metric {es.metric!r}",
           "use dev_loss (domain + heldout eval loss) or select_wer (needs eval.select_manifest)")
    _check(es.patience >= 1, f"{key}.patience", f"must be >= 1 evaluation, got {es.patience}",
           f"set {key}.patience=4")
    _check(es.min_delta >= 0 and math.isfinite(es.min_delta), f"{key}.min_delta",
           f"must be a finite number >= 0, got {es.min_delta}", f"set {key}.min_delta=0")
    _check(not es.enabled or es.metric != "select_wer" or bool(select_manifest), f"{key}.metric",
           "select_wer needs a selection manifest to evaluate", "set eval.select_manifest=PATH, or metric=dev_loss")


def check_known_keys(node: DictConfig, prefix: str = "") -> None:
    """Refuse a key the schema does not declare. Hydra refuses `optim.lrr=1`, but `+optim.lrr=1`
    (or a key in an experiment file) is appended and OmegaConf.to_object would drop it silently."""
    schema = OmegaConf.get_type(node)
    known = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key, value in node.items_ex(resolve=False):
        if known is not None and key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {prefix}{near[0]}? " if near else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'", where=f"{prefix}{key}",
                              fix=f"{hint}known keys{' of ' + prefix.rstrip('.') if prefix else ''}: {', '.join(known)}")
        if isinstance(value, DictConfig):
            check_known_keys(value, f"{prefix}{key}.")


def _content(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "missing"


def identity_hash(config: dict[str, Any]) -> str:
    """What makes two runs the same run: the resolved config (less where its outputs go), the
    content of every manifest it reads, the model id + revision (in the config) and our version."""
    from orchestrator import __version__

    keyed = {k: v for k, v in config.items() if k not in NOT_IDENTITY}
    for group, left_out in (("optim", NOT_IDENTITY_OPTIM), ("data", NOT_IDENTITY_DATA), ("eval", NOT_IDENTITY_EVAL)):
        if isinstance(keyed.get(group), dict):
            keyed[group] = {k: v for k, v in keyed[group].items() if k not in left_out}
    manifests = manifests_of(config["data"], config["eval"])
    keyed["_identity"] = {"manifests": [_content(p) for p in manifests.values()], "version": __version__}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


def build_spec(cfg: DictConfig, experiment: str | None = None) -> RunSpec:
    """Validate a composed config and freeze it. `experiment` defaults to cfg.experiment."""
    check_known_keys(cfg)
    conf: RunConf = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate(conf)
    # plain words, not Enum members: this dict is saved as config.yaml and hashed for the identity
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    name = conf.experiment or experiment or "adhoc"
    config["experiment"] = name
    fields = {f.name: getattr(conf, f.name) for f in dataclasses.fields(RunConf)}
    fields.update(experiment=name, config=config, config_hash=identity_hash(config))
    return RunSpec(**fields)
