"""Guard-aware pruning, asked after every interval of a trial (the runner's `on_interval` hook).

A trial stops, recorded `pruned` with the reason, when
  1. its heldout guard is blown beyond recovery: the heldout regression against step 0 exceeded
     criteria.max_heldout_regression + tune.pruning.guard_slack points at the last
     tune.pruning.guard_patience intervals in a row (forgetting that large does not come back
     while the LR decays; the runner's best-adapter rule would never pick those intervals);
  2. its WER is not improving against the study: Optuna's pruner (Median, or Patient around
     Median) on the WER reported at each step, the dev set's (eval.select_manifest) when the run
     has one, else the domain set's (then the domain set also picks the trial);
  3. the campaign was met meanwhile by another trial (a PASS), when tune.stop_on_pass.
Its intervals stay in the registry either way.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.registry.entities import Interval
from orchestrator.selection import EPS, heldout_regression


@dataclass(frozen=True)
class GuardRule:
    max_regression: float  # points: criteria.max_heldout_regression
    slack: float  # points beyond it that count as blown
    patience: int  # consecutive intervals blown before stopping

    def blown(self, intervals: Sequence[Interval]) -> str | None:
        """Why the guard is beyond recovery, or None."""
        baseline = next((i for i in intervals if i.step == 0), None)
        trained = [i for i in intervals if i.step > 0]
        if baseline is None or len(trained) < self.patience:
            return None
        recent = trained[-self.patience:]
        regressions = [heldout_regression(i, baseline) for i in recent]
        limit = self.max_regression + self.slack
        if any(r is None or r <= limit + EPS for r in regressions):  # as select_best: 4.92 - 4.72 is 0.2
            return None
        last = recent[-1]
        return (f"heldout guard blown beyond recovery: +{regressions[-1]:.2f} points at step {last.step} "
                f"(limit +{self.max_regression:g}, stopped beyond +{limit:g} for {self.patience} interval(s))")


def interval_hook(trial, rule: GuardRule, pruner_name: str, met: Callable[[], str | None], last_step: int):
    """The `on_interval` hook of one trial: report the latest WER (dev set, else domain) to the study, then ask
    the guard rule, the study's pruner and the campaign, in that order. At `last_step` (the
    run's end) nothing is stopped: a run that trained to its end is judged, not pruned."""

    def hook(intervals: list[Interval]) -> str | None:
        last = intervals[-1]
        wer = last.select_wer if last.select_wer is not None else last.domain_wer  # the dev set's, if any
        if wer is not None:
            trial.report(wer, last.step)
        if last.step >= last_step:
            return None
        reason = rule.blown(intervals)
        if reason:
            return reason
        if wer is not None and trial.should_prune():
            which = "dev-set" if last.select_wer is not None else "domain"
            return (f"{which} WER {100 * wer:.2f}% at step {last.step} is not improving against "
                    f"the study ({pruner_name} pruner)")
        passed = met()
        if passed:
            return f"campaign met meanwhile: {passed}"
        return None

    return hook
