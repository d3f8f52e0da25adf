"""Acceptance thresholds: the `criteria` config group's schema, readable without Hydra.

The runner needs the heldout guard (to pick `lora_adapter_best`), the judge needs every
threshold, and the report reads them back from each run's recorded config: all three import
this module, which imports nothing heavy (no torch, no hydra, no numpy).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError

LR_WARNING = 2e-4  # the seeds saw catastrophic forgetting at and above this learning rate (plan, report flag it)


@dataclass
class CriteriaConf:
    """Acceptance thresholds (the seeds' values are the defaults). Mutable on purpose: it is
    also the Hydra schema of the `criteria` config group (orchestrator/schema.py)."""

    min_domain_reduction: float = 1.0  # points: baseline - tuned domain WER must reach this
    max_heldout_regression: float = 0.2  # points: tuned - baseline heldout WER must stay within
    stability_window: int = 3  # last N intervals ...
    max_stability_range: float = 0.5  # ... whose domain WER spread (max - min, points) is bounded
    bootstrap_replicates: int = 10_000
    bootstrap_seed: int = 0
    confidence: float = 0.95  # of the bootstrap percentile interval

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, where: str = "criteria", strict: bool = True) -> CriteriaConf:
        """Build from a plain dict; unknown keys are a ConfigError when `strict` (a user's
        file), ignored otherwise (a run recorded by a newer version)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown and strict:
            raise ConfigError(f"unknown criteria key(s) {', '.join(unknown)}", where=where,
                              fix=f"use {', '.join(sorted(known))}")
        conf = cls(**{k: v for k, v in values.items() if k in known})
        conf.validate(where)
        return conf

    def validate(self, where: str = "criteria") -> None:
        checks = [
            (self.stability_window >= 2, "stability_window", "must be >= 2"),
            (self.max_stability_range >= 0, "max_stability_range", "must be >= 0"),
            (self.max_heldout_regression >= 0, "max_heldout_regression", "must be >= 0"),
            (self.bootstrap_replicates >= 100, "bootstrap_replicates", "must be >= 100"),
            (0 < self.confidence < 1, "confidence", "must be in (0, 1), e.g. 0.95"),
        ]
        for ok, key, what in checks:
            if not ok:
                raise ConfigError(f"{key} {what}, got {getattr(self, key)!r}", where=f"{where}.{key}",
                                  fix="see conf/criteria/default.yaml")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def confidence_text(self) -> str:
        """The confidence as every report prints it: "95%", "98.75%", "98.33%" (never rounded to
        a level it was not judged at)."""
        return f"{100 * self.confidence:.4g}%"

    def family_wise(self, looks: int) -> CriteriaConf:
        """These thresholds for one of `looks` verdicts of which any could be the one reported (a
        tune campaign ends at whichever trial passes): each judged at confidence
        1 - (1 - confidence) / looks (Bonferroni), so the chance that any of them passes by
        luck stays within 1 - confidence."""
        if looks <= 1:
            return self
        return dataclasses.replace(self, confidence=1 - (1 - self.confidence) / looks)


def load_criteria(path: Path) -> CriteriaConf:
    """Read a criteria YAML file (e.g. conf/criteria/default.yaml) without Hydra."""
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read criteria ({str(exc).splitlines()[0]})", where=str(path),
                          fix="check the file exists and is valid YAML") from None
    if not isinstance(values, dict):
        raise ConfigError("criteria file must be a mapping of thresholds", where=str(path),
                          fix="see conf/criteria/default.yaml")
    return CriteriaConf.from_dict(values, where=str(path))
