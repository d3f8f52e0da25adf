"""Early stopping (`optim.early_stopping`): end a run once its dev metric stops improving.

The rule is the one of moonshine-voice's LoRA trainer: after each evaluation (the baseline at
step 0 included), a value counts as an improvement when it is lower than the best so far by more
than `min_delta`; the run stops after `patience` evaluations in a row without one. It is a pure
function of the history, so a resumed run decides exactly as an uninterrupted one would; the
history is recorded in the registry as the run's `early_stopping` check (its details), and why
the run ended as its `stop_reason`. An early-stopped run is `completed`, not `pruned`: it is a
candidate like any other (its best adapter is re-checked for parity and judged).

Metrics:
- `dev_loss`: the domain eval loss plus the heldout eval loss (token-weighted teacher-forced
  cross-entropy), the in-domain + general sum upstream stops on. The domain set here is the one
  the verdicts are judged on, so stopping on it selects on the test set; prefer `select_wer`
  when a separate dev set exists.
- `select_wer`: the WER on `eval.select_manifest` (a dev set apart from the domain set).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from orchestrator.config.schema import EarlyStoppingConf
from orchestrator.errors import OrchestratorError

CHECK = "early_stopping"  # the registry check that keeps the history
LABELS = {"dev_loss": "dev loss (domain + heldout eval loss)", "select_wer": "selection WER"}


def scan(history: Iterable[tuple[int, float]], min_delta: float) -> tuple[int, float, int] | None:
    """(best step, best value, evaluations since it) over `history` ((step, value), lower is
    better); None for no history. A NaN improves on nothing (a finite value improves on a NaN)."""
    points = sorted(history)
    if not points:
        return None
    best_step, best = points[0]
    stale = 0
    for step, value in points[1:]:
        if value < best - min_delta or (math.isnan(best) and not math.isnan(value)):
            best_step, best, stale = step, value, 0
        else:
            stale += 1
    return best_step, best, stale


def decide(history: Iterable[tuple[int, float]], conf: EarlyStoppingConf) -> str | None:
    """Why to stop after the last evaluation of `history`, or None to go on."""
    found = scan(history, conf.min_delta)
    if found is None or found[2] < conf.patience:
        return None
    best_step, best, stale = found
    shown = f"{100 * best:.2f}%" if conf.metric == "select_wer" else f"{best:.4f}"
    return (f"early stopping: {LABELS[conf.metric]} did not improve by more than {conf.min_delta:g} for "
            f"{stale} evaluations (best {shown} at step {best_step})")


class EarlyStopping:
    """The rule with its history for one run; `update` after each evaluation."""

    def __init__(self, conf: EarlyStoppingConf, history: Iterable[tuple[int, float]] = ()):
        self.conf = conf
        self.history: list[tuple[int, float]] = sorted(history)

    @classmethod
    def resumed(cls, conf: EarlyStoppingConf, details: dict[str, Any] | None, upto: int) -> "EarlyStopping":
        """The rule as a run's recorded check left it, keeping the evaluations up to step `upto`
        (the checkpoint a resumed run continues from; later ones are evaluated again)."""
        recorded = (details or {}).get("history", [])
        return cls(conf, [(int(p["step"]), math.nan if p["value"] is None else float(p["value"]))
                          for p in recorded if int(p["step"]) <= upto])

    @property
    def needs_heldout_loss(self) -> bool:
        return self.conf.metric == "dev_loss"

    def value(self, *, domain_loss: float, heldout_loss: float, select_wer: float | None) -> float:
        if self.conf.metric == "dev_loss":
            return domain_loss + heldout_loss
        if select_wer is None:
            raise OrchestratorError("early stopping on select_wer, but the run evaluated no selection manifest",
                                    where="optim.early_stopping.metric",
                                    fix="set eval.select_manifest, or use optim.early_stopping.metric=dev_loss")
        return select_wer

    def update(self, step: int, value: float) -> str | None:
        """Record the value at `step` (replacing an earlier one at that step); why to stop, or None."""
        self.history = sorted([p for p in self.history if p[0] != step] + [(step, float(value))])
        return decide(self.history, self.conf)

    def details(self, stop_reason: str | None) -> dict[str, Any]:
        """What the registry keeps (check `early_stopping`): the settings, every value, the outcome."""
        best = scan(self.history, self.conf.min_delta)
        return {"metric": self.conf.metric, "patience": self.conf.patience, "min_delta": self.conf.min_delta,
                "history": [{"step": s, "value": v if math.isfinite(v) else None} for s, v in self.history],
                "best_step": best[0] if best else None, "stopped": stop_reason is not None,
                "stop_reason": stop_reason}
