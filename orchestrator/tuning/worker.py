"""A worker: ask the study for a trial, run it as one normal registry run, tell the study; again,
until the campaign is met or its budget is spent.

A trial is the run `+exp=NAME <sampled overrides>` would be: same composition, same identity
hash, same resume, same verdicts; its sweep_id is the study's name. What the study learns:
  value       the tuned WER, on the dev set when the run has one (the interval
              `selection.select_best` picks, as the judge does), else on the domain set
  constraint  `heldout`: the tuned interval's heldout regression minus the guard, in points
              (> 0: infeasible, so it never wins: Optuna's best trial and TPE both honour it)
  user attrs  run_id, config_hash, overrides, verdict (PASS/FAIL/INCONCLUSIVE, for completed
              runs), stop_reason (pruned), train_steps and eval_passes (compute), host + pid
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config.spec import RunSpec
from orchestrator.errors import OrchestratorError
from orchestrator.report.tune import TUNE_CHECK
from orchestrator.tuning import space as spaces
from orchestrator.tuning.pruning import GuardRule, interval_hook
from orchestrator.tuning.settings import TuneConf

log = logging.getLogger(__name__)
PASS = "PASS"


def compose_spec(overrides: list[str]) -> RunSpec:
    """The validated RunSpec of `overrides`, composed by Hydra exactly as `orchestrator run` does."""
    from orchestrator.config.spec import spec_from_overrides

    return spec_from_overrides(overrides)


@dataclass(frozen=True)
class Campaign:
    """What every worker of one campaign shares."""

    url: str
    name: str  # the study, and its trials' sweep_id
    settings: TuneConf
    run_overrides: tuple[str, ...]  # the experiment, without the sampled values
    guard: float  # criteria.max_heldout_regression, points
    output_dir: str = "outputs"  # the runs' folder; <output_dir>/.tune/<study>.lock serialises asking


def passed_trial(trials) -> object | None:
    """The first trial whose run's verdict is PASS, if any."""
    return next((t for t in sorted(trials, key=lambda t: t.number) if t.user_attrs.get("verdict") == PASS), None)


def stop_reason(study, settings: TuneConf) -> str | None:
    """Why no new trial should start: met, or the budget spent (None: ask for another)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    found = passed_trial(trials)
    if settings.stop_on_pass and found is not None:
        return f"met: run {found.user_attrs.get('run_id')} (trial {found.number}) passed"
    steps = sum(t.user_attrs.get("train_steps", 0) for t in trials)
    if settings.budget_steps is not None and steps >= settings.budget_steps:
        return f"budget spent: {steps} train steps of tune.budget_steps={settings.budget_steps}"
    if any(t.state == TrialState.WAITING for t in trials):
        return None  # a retried trial waits: it was counted already
    used = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            or (t.state == TrialState.FAIL and "error" in t.user_attrs)]  # killed trials are retried, not counted
    if len(used) >= settings.budget_runs:
        return f"budget spent: {len(used)} runs of tune.budget_runs={settings.budget_runs}"
    size = spaces.size(settings.space)
    tried = {tuple(sorted(t.params.items())) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    if size is not None and len(tried) >= size:
        return f"space exhausted: all {size} combinations tried"
    return None


def run_worker(campaign: Campaign, index: int) -> None:
    """Trials until `stop_reason`; one at a time, in this process."""
    from orchestrator.tuning.study import open_study, recover

    study = open_study(campaign.url, campaign.name, campaign.settings)
    distributions = spaces.distributions(campaign.settings.space)
    while True:
        with ask_lock(campaign):  # check the budget and ask as one step: K workers never overshoot it
            recover(study, campaign.settings)
            reason = stop_reason(study, campaign.settings)
            if reason is not None:
                log.info("worker %d: %s", index, reason)
                return
            trial = ask_next(study, campaign.settings, distributions)
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
        if not repeat_of_finished(study, trial):
            run_trial(study, trial, campaign)


def ask_next(study, settings: TuneConf, distributions):
    """The study's next trial, drawn by a sampler seeded with the number it gets (call it under
    `ask_lock`), not by the worker: given the same finished trials, trial n draws the same point
    whichever worker asks and whenever that worker started, so a campaign's random startup trials
    repeat on another machine; a continued study draws new points."""
    from orchestrator.tuning.study import sampler

    study.sampler = sampler(settings, len(study.get_trials(deepcopy=False)))
    return study.ask(distributions)


@contextlib.contextmanager
def ask_lock(campaign: Campaign):
    """An exclusive lock on <output_dir>/.tune/<study>.lock (flock: released if the holder dies;
    SLURM workers share it through the cluster file system that holds the outputs)."""
    folder = Path(campaign.output_dir) / ".tune"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{campaign.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def repeat_of_finished(study, trial) -> bool:
    """A sampler may draw parameters a finished trial already had (small categorical spaces):
    the run would be the same run, so its outcome is told again instead of training (no compute)."""
    from optuna.trial import TrialState

    same = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
                 if t.params == trial.params and "run_id" in t.user_attrs), None)
    if same is None:
        return False
    for key in ("run_id", "config_hash", "overrides", "verdict", "verdict_reason", "stop_reason"):
        if key in same.user_attrs:
            trial.set_user_attr(key, same.user_attrs[key])
    trial.set_user_attr("repeat_of", same.number)
    for key, value in same.constraints.items():
        trial.set_constraint(key, value)
    if same.state == TrialState.PRUNED:
        for step, value in sorted(same.intermediate_values.items())[-1:]:
            trial.report(value, step)
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, same.values[0])
    log.info("trial %d: the same parameters as trial %d: its run %s, told again (nothing trained)",
             trial.number, same.number, same.user_attrs["run_id"])
    return True


def run_trial(study, trial, campaign: Campaign) -> None:
    """One trial: compose, train (pruned through the interval hook), judge, tell."""
    from optuna.trial import TrialState

    from orchestrator.registry import RunStatus, Store
    from orchestrator.training import loop
    from orchestrator.tuning.study import Heartbeat, retry_callback

    sampled = spaces.overrides(trial.params)
    spec = compose_spec([*campaign.run_overrides, *sampled])
    for key, value in (("overrides", sampled), ("config_hash", spec.config_hash), ("host", socket.gethostname()),
                       ("pid", os.getpid())):
        trial.set_user_attr(key, value)
    log.info("trial %d: %s", trial.number, " ".join(sampled))
    p = campaign.settings.pruning
    rule = GuardRule(campaign.guard, p.guard_slack, p.guard_patience)
    met = (lambda: _met(study)) if campaign.settings.stop_on_pass else (lambda: None)
    hook = interval_hook(trial, rule, p.pruner, met, spec.optim.steps)
    store = Store(campaign.url)
    try:
        with Heartbeat(study, trial, campaign.settings.heartbeat_s):
            run_id = loop.run(spec, store, progress=False, sweep_id=campaign.name, on_interval=hook)
    except KeyboardInterrupt:  # the run is recorded `interrupted`; the trial is retried on the next start
        study.tell(trial, state=TrialState.FAIL)
        retry_callback(campaign.settings.max_retry)(study, study.trials[trial.number])
        store.close()
        raise
    except Exception as exc:  # noqa: BLE001 - a failed run is a failed trial; the campaign goes on
        text = exc.one_line() if isinstance(exc, OrchestratorError) else f"{type(exc).__name__}: {exc}"
        trial.set_user_attr("error", " ".join(text.split())[:500])
        runs = store.runs_with_hash(spec.config_hash)
        if runs:
            trial.set_user_attr("run_id", runs[-1].id)
        store.close()
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, text)
        return
    try:
        store.add_check(run_id, TUNE_CHECK, True, {"study": campaign.name, "trial": trial.number,
                                                   "budget_runs": campaign.settings.budget_runs})
        run = store.get_run(run_id)
        outcome = measure(run, campaign.guard)
        trial.set_user_attr("run_id", run_id)
        trial.set_user_attr("train_steps", outcome.train_steps)
        trial.set_user_attr("eval_passes", outcome.eval_passes)
        if outcome.constraint is not None:
            trial.set_constraint("heldout", outcome.constraint)
        if run.status == RunStatus.PRUNED:
            trial.set_user_attr("stop_reason", run.stop_reason)
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d (%s) pruned: %s", trial.number, run_id, run.stop_reason)
            return
        from orchestrator.acceptance.verdicts import criteria_for, judge

        # family-wise: the campaign ends at whichever trial passes, so each is judged as one of
        # tune.budget_runs possible verdicts (report/tune.py reads the same rule back)
        verdict = judge(run, store, criteria_for(run).family_wise(campaign.settings.budget_runs))
        trial.set_user_attr("verdict", verdict.overall)
        trial.set_user_attr("verdict_reason", verdict.reason)
        if outcome.value is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, outcome.value)
        log.info("trial %d (%s): tuned WER %s, verdict %s (%s)", trial.number, run_id,
                 "-" if outcome.value is None else f"{100 * outcome.value:.2f}%", verdict.overall, verdict.reason)
    finally:
        store.close()


def _met(study) -> str | None:
    found = passed_trial(study.get_trials(deepcopy=False))
    return None if found is None else f"run {found.user_attrs.get('run_id')} (trial {found.number}) passed"


@dataclass(frozen=True)
class Outcome:
    value: float | None  # tuned WER (fraction): the dev set's (eval.select_manifest) if any, else the domain's
    constraint: float | None  # heldout regression - guard, points (<= 0: feasible)
    train_steps: int
    eval_passes: int


def measure(run, guard: float) -> Outcome:
    """What a trial's run achieved and cost: its tuned interval (the judge's rule) and its
    compute (train steps + evaluation passes of both manifests, the parity re-check included)."""
    from orchestrator.report.tune import compute
    from orchestrator.selection import select_best

    pick = select_best(run.intervals, guard)
    # the study compares trials on the WER that picked: the dev set's when the run has one, so the
    # domain set that reports the verdict chooses neither the checkpoint nor the trial
    value = None if pick is None else pick.interval.select_wer if pick.by == "select" else pick.interval.domain_wer
    constraint = pick.regression - guard if pick is not None and pick.regression is not None else None
    return Outcome(value, constraint, *compute(run))
