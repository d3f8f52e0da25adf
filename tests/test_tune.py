"""`orchestrator tune`: real tiny_random trials, a real Optuna study in the registry's SQLite file,
a worker process really SIGKILLed mid-trial, and the study continued by re-running the command.

tiny_random's WER stays at 100 %, so the campaigns that must reach PASS here are judged with
`criteria.min_domain_reduction=-1` (no gain required); every other criterion is the real one.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from orchestrator.cli import main as cli_main
from orchestrator.registry import Interval, Store
from orchestrator.registry.doctor import diagnose
from orchestrator.registry.models import Base, is_registry_object
from orchestrator.tuning import space as spaces
from orchestrator.tuning.pruning import GuardRule
from orchestrator.tuning.settings import ParamConf
from orchestrator.tuning.worker import compose_spec, measure

ROOT = Path(__file__).resolve().parent.parent
REACHABLE = "criteria.min_domain_reduction=-1"  # tiny_random cannot gain; the rest of the criteria are real


def settings_file(tmp_path: Path, space: dict, **more) -> str:
    path = tmp_path / f"tune_{len(list(tmp_path.glob('tune_*.yaml')))}.yaml"
    path.write_text(json.dumps({**more, "space": space}))  # JSON is YAML
    return f"tune={path}"


LRS = {"optim.lr": {"choices": [1.0e-4, 1.0e-3]}}


def registry_path(overrides: list[str]) -> Path:
    url = next(o for o in overrides if o.startswith("registry.url="))
    return Path(url.split("sqlite:///", 1)[1])


# --- bad input: one line, exit 2, before any training and without a registry row -------------

BAD = {
    "empty space": ({}, [], "tune.space: the search space is empty"),
    "unknown key": ({"optim.lrr": {"low": 1e-4, "high": 1e-3}}, [], "tune.space.optim.lrr: optim.lrr=0.0001"),
    "low above high": ({"optim.lr": {"low": 1e-3, "high": 1e-4}}, [], "tune.space.optim.lr: low (0.001) must be below"),
    "log range from 0": ({"optim.lr": {"low": 0.0, "high": 1e-3, "log": True}}, [], "tune.space.optim.lr.low: a log range needs low > 0"),
    "unknown preset": ({"targets": {"choices": ["qv_only", "no_such_preset"]}}, [], "tune.space.targets: targets=no_such_preset"),
    "budget 0": (LRS, ["tune.budget_runs=0"], "tune.budget_runs: the budget must be at least one run"),
    "misspelled setting": (LRS, ["tune.budget_run=3"], "tune.budget_run: Key 'budget_run' not in 'TuneConf'"),
    "unreachable storage": (LRS, ["registry.url=postgresql+psycopg://nobody@127.0.0.1:9/none"],
                            "cannot open the registry database"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_before_any_training(case, run_overrides, tmp_path, capsys):
    space, extra, expected = BAD[case]
    with pytest.raises(SystemExit) as exit_:
        cli_main(["tune", *run_overrides, settings_file(tmp_path, space), *extra])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "(fix: " in err, err
    assert expected in err, err
    assert not registry_path(run_overrides).exists() or Store(f"sqlite:///{registry_path(run_overrides)}").list_runs() == []
    assert not (tmp_path / "outputs").exists() or not any(p.name != ".audio_cache" for p in (tmp_path / "outputs").iterdir())


# --- the pieces ---------------------------------------------------------------------------------

def at(step: int, domain: float, heldout: float) -> Interval:
    return Interval(step=step, lr=None, train_loss=None, eval_loss=None, domain_wer=domain, heldout_wer=heldout,
                    domain_utts=10, heldout_utts=10)


def test_guard_rule_stops_only_beyond_slack_for_patience_intervals():
    rule = GuardRule(max_regression=0.2, slack=1.0, patience=2)
    base = at(0, 0.50, 0.10)
    assert rule.blown([base, at(2, 0.40, 0.125)]) is None  # +2.5 points, but once
    assert rule.blown([base, at(2, 0.40, 0.125), at(4, 0.40, 0.111)]) is None  # back to +1.1: within slack
    reason = rule.blown([base, at(2, 0.40, 0.125), at(4, 0.40, 0.13)])
    assert reason.startswith("heldout guard blown beyond recovery: +3.00 points at step 4"), reason
    assert GuardRule(0.2, 0.0, 1).blown([base, at(2, 0.4, 0.102)]) is None  # +0.2 (and float noise): within


def test_sampled_values_compose_back_to_the_same_run(run_overrides):
    params = {"optim.lr": 0.00031622776601683794, "adapter.r": 12, "targets": "qv_only"}
    spec = compose_spec([*run_overrides, *spaces.overrides(params)])
    assert (spec.optim.lr, spec.adapter.r, spec.targets.name) == (0.00031622776601683794, 12, "qv_only")
    dists = spaces.distributions({"optim.lr": ParamConf(low=1e-5, high=1e-3, log=True),
                                  "adapter.r": ParamConf(type="int", low=4, high=16, step=4),
                                  "targets": ParamConf(choices=["qv_only", "global_qkvo"])})
    assert dists["adapter.r"].step == 4 and dists["optim.lr"].log and dists["targets"].choices == ("qv_only", "global_qkvo")


def test_a_pruned_trial_keeps_its_intervals_and_optunas_tables_do_not_disturb_the_registry(run_overrides, tmp_path):
    """A real run stopped through the hook by the guard rule (a guard nothing can keep) and by
    nothing else: `pruned` with its reason in the registry, PRUNED in the study."""
    import optuna

    from orchestrator.training import loop
    from orchestrator.tuning.pruning import interval_hook
    from orchestrator.tuning.settings import TuneConf
    from orchestrator.tuning.study import open_study

    spec = compose_spec(run_overrides)
    url = spec.registry.url
    study = open_study(url, "tune-pruned", TuneConf(), create=True)
    trial = study.ask({"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    store = Store(url)
    run_id = loop.run(spec, store, progress=False, sweep_id="tune-pruned",
                      on_interval=interval_hook(trial, GuardRule(-1.0, 0.0, 1), "median", lambda: None, spec.optim.steps))
    run = store.get_run(run_id)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert run.status == "pruned" and run.stop_reason.startswith("heldout guard blown beyond recovery"), run
    assert [i.step for i in run.intervals] == [0, 2] and measure(run, 0.2).train_steps == 2
    assert study.trials[0].state.name == "PRUNED" and study.trials[0].intermediate_values == {2: 1.0}
    store.close()
    store = Store(url)  # reopened: the registry is still at its head, and doctor sees nothing wrong
    assert store.get_run(run_id).status == "pruned"
    assert diagnose(store, outputs=Path(spec.output_dir)).healthy
    store.close()
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": is_registry_object})
        assert compare_metadata(context, Base.metadata) == []
        assert "trials" in connection.dialect.get_table_names(connection)  # Optuna's, beside ours
    engine.dispose()


def test_campaign_stops_at_the_first_pass_and_the_report_shows_it(run_overrides, tmp_path, capsys):
    """One worker, budget 3: the first trial passes (reachable criteria), so the campaign ends
    MET after one run; the study and the registry agree; the block is in EXPERIMENTS.md."""
    from conftest import cli

    # 6 steps, an interval every 2: three trained intervals, what the stability criterion needs
    args = ["tune", *run_overrides, "optim.steps=6", REACHABLE, settings_file(tmp_path, LRS), "tune.budget_runs=3",
            "tune.study=once"]
    proc = cli(*args, check=True)
    assert "campaign tune-once: MET by" in proc.stdout, proc.stdout
    url = f"sqlite:///{registry_path(run_overrides)}"
    trials, runs = agree(url, "tune-once")
    assert len(runs) == 1 and trials[0].user_attrs["verdict"] == "PASS"
    check = runs[0].check("tune")  # what the report's family-wise verdict reads back
    assert check.details == {"study": "tune-once", "trial": 0, "budget_runs": 3}
    cli_main(args)  # met already: nothing trains (in this process: no second interpreter to start)
    assert "MET by" in capsys.readouterr().out and len(Store(url).list_runs()) == 1
    out = tmp_path / "EXPERIMENTS.md"
    cli("report", "--registry", url, "--output", str(out), check=True)
    text = out.read_text()
    block = text[text.index("<!-- BEGIN GENERATED: tune -->"):text.index("<!-- END GENERATED: tune -->")]
    assert "### tune-once" in block and f"**MET by {runs[0].id}" in block and "| PASS |" in block
    assert "every trial judged at 98.33% confidence, Bonferroni over 3 possible trials" in block


def test_a_campaign_judged_family_wise_keeps_a_lucky_met_at_the_nominal_level():
    """A campaign ends at whichever of its B trials passes first, so it is MET by luck whenever
    any trial is: 6 simulated trials each exactly at the 1.0-point margin (dev-set pick, the
    plain bootstrap) MET a campaign far above 2.5 % when each is judged alone; judged family-wise
    (Bonferroni over the budget, what tune and the report do) the campaign stays near it."""
    import numpy as np

    from orchestrator.acceptance.verdicts import judge
    from orchestrator.config.criteria import CriteriaConf
    from simulate_runs import simulate

    budget, campaigns = 6, 60
    conf = CriteriaConf(bootstrap_replicates=1000)
    assert conf.family_wise(budget).confidence == pytest.approx(1 - 0.05 / 6) and conf.family_wise(1) is conf
    rng = np.random.default_rng(21)
    met = {"alone": 0, "family-wise": 0}
    for _ in range(campaigns):
        hit = dict.fromkeys(met, False)
        for _ in range(budget):
            run, found = simulate(rng, reduction=1.0, dev=True, k=3)
            load = lambda run_id, step, split, found=found: found.get((step, split), (np.zeros(0, int),) * 2)  # noqa: E731
            hit["alone"] |= judge(run, load, conf)["domain_reduction"].status == "PASS"
            hit["family-wise"] |= judge(run, load, conf.family_wise(budget))["domain_reduction"].status == "PASS"
        met = {k: met[k] + hit[k] for k in met}
    assert met["alone"] / campaigns >= 0.10, met  # the optimism it guards against is real
    assert met["family-wise"] / campaigns <= 0.05, met


def test_a_trials_draw_depends_on_its_number_not_on_the_worker_that_asks(tmp_path):
    """Two workers load the study at different times (the second after trial 0 exists) and ask
    one trial each: the points are the ones one process asking twice draws, so the demo's first
    round repeats on any machine; each trial draws a new point."""
    from orchestrator.tuning.settings import TuneConf
    from orchestrator.tuning.study import open_study
    from orchestrator.tuning.worker import ask_next

    space = {"optim.lr": ParamConf(low=1e-4, high=1e-3, log=True), "targets": ParamConf(choices=["a", "b", "c"])}
    settings = TuneConf(space=space, sampler="tpe", budget_runs=8)
    dists = spaces.distributions(space)

    def draws(url: str, workers: bool) -> list[dict]:
        open_study(url, "tune-x", settings, create=True)
        first = open_study(url, "tune-x", settings)
        t0 = ask_next(first, settings, dists)
        second = open_study(url, "tune-x", settings) if workers else first  # loaded after trial 0
        t1 = ask_next(second, settings, dists)
        return [t0.params, t1.params]

    two = draws(f"sqlite:///{tmp_path / 'two.db'}", workers=True)
    one = draws(f"sqlite:///{tmp_path / 'one.db'}", workers=False)
    assert two == one and two[0] != two[1]


def test_a_trial_whose_worker_died_says_how_the_campaign_takes_it_up(tmp_path):
    """A trial's run left `running` by a dead worker (its lock free) reads `interrupted` in the
    block, with the advice that fits a trial: re-run the tune command, which resumes it."""
    from orchestrator.artifacts.run_folder import RunFolder

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    store = Store(url)
    store.create_run(experiment="e", config={"output_dir": str(tmp_path / "outputs")}, config_hash="h", model_id="m",
                     targets=[], target_summary="", lr=1e-4, steps=10, dora=False, git_commit=None, run_id="dead",
                     sweep_id="tune-e")
    store.close()
    folder = RunFolder(tmp_path / "outputs", "dead")
    folder.path.mkdir(parents=True)
    folder.lock.touch()  # a lock file nobody holds: the worker that trained it is gone
    out = tmp_path / "EXPERIMENTS.md"
    cli_main(["report", "--registry", url, "--output", str(out)])
    text = out.read_text()
    block = text[text.index("<!-- BEGIN GENERATED: tune -->"):text.index("<!-- END GENERATED: tune -->")]
    row = next(line for line in block.splitlines() if "| dead |" in line)
    assert "| interrupted |" in row and "lock free" in row
    assert "re-running the \\`orchestrator tune\\` command retries its trial and resumes this run" in row


def test_trial_order_is_the_studys_not_the_start_times(tmp_path):
    """Two workers start two trials in the same second: the campaign's "first PASS" and its table
    follow the study's trial numbers (what the workers stop on), whichever run row was created
    first; a run whose trial recorded no number yet (in flight, or killed) comes last."""
    from orchestrator.report.tune import TUNE_CHECK, campaign_runs, trial_order

    store = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    for run_id in ("started-first", "started-second", "in-flight"):
        store.create_run(experiment="e", config={}, config_hash=run_id, model_id="m", targets=[], target_summary="",
                         lr=1e-4, steps=10, dora=False, git_commit=None, run_id=run_id, sweep_id="tune-e")
    store.add_check("started-first", TUNE_CHECK, True, {"study": "tune-e", "trial": 1, "budget_runs": 4})
    store.add_check("started-second", TUNE_CHECK, True, {"study": "tune-e", "trial": 0, "budget_runs": 4})
    runs = store.list_runs(sweep_id="tune-e")
    store.close()
    assert [r.id for r in sorted(runs, key=lambda r: r.started_at)][:2] == ["started-first", "started-second"]
    assert [r.id for r in trial_order(runs)] == ["started-second", "started-first", "in-flight"]
    assert [r.id for r in campaign_runs(runs)["tune-e"]] == ["started-second", "started-first", "in-flight"]


# --- the whole thing: 2 workers, one SIGKILLed mid-trial, then the command again -------------

def agree(url: str, name: str):
    """Every registry run of the study is a finished trial's run and vice versa, with the same
    state, parameters and value; no trial is left running or waiting. Returns (trials, runs)."""
    from orchestrator.tuning.study import load_trials

    trials = load_trials(url, name)
    store = Store(url)
    runs = {r.id: r for r in store.list_runs(sweep_id=name)}
    store.close()
    states = {t.number: t.state.name for t in trials}
    assert not {"RUNNING", "WAITING"} & set(states.values()), states
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    for t in finished:
        run = runs[t.user_attrs["run_id"]]
        assert run.status == {"COMPLETE": "completed", "PRUNED": "pruned"}[t.state.name], (t.number, run.status)
        assert run.config_hash == t.user_attrs["config_hash"]
        flat = run.config
        for key, value in t.params.items():
            node = flat
            for part in key.split("."):
                node = node[part]
            assert node == value, (key, node, value)
        if t.state.name == "COMPLETE":
            assert t.values == [measure(run, 0.2).value]
    assert set(runs) == {t.user_attrs["run_id"] for t in finished}, (set(runs), states)
    for t in trials:
        if t.state.name == "FAIL":  # killed: its parameters were enqueued again and that trial finished
            retried = [u for u in finished if u.system_attrs.get("failed_trial") == t.number]
            assert retried and retried[0].params == t.params, (t.number, states)
    return trials, list(runs.values())


@pytest.mark.slow  # about 1.5 min on 2 busy cores: three interpreters import torch, twice
def test_two_workers_one_sigkilled_lose_no_trial_and_the_command_continues_the_study(run_overrides, tmp_path):
    url = f"sqlite:///{registry_path(run_overrides)}"
    space = {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}}
    base = ["tune", *run_overrides, "optim.steps=6", settings_file(tmp_path, space), "tune.workers=2",
            "tune.heartbeat_s=1", "tune.grace_s=3", "tune.study=kill", "tune.pruning.pruner=none"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "tune.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *base, "tune.budget_runs=3"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    victim = None
    deadline = time.time() + 240
    while victim is None:  # a trial's run with a trained interval, still training: kill its worker
        assert time.time() < deadline and proc.poll() is None, (tmp_path / "tune.log").read_text()[-3000:]
        if registry_path(run_overrides).exists():
            store = Store(url)
            victim = next((r for r in store.list_runs(sweep_id="tune-kill")
                           if r.status == "running" and any(i.step == 2 for i in r.intervals)), None)
            store.close()
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    assert proc.wait(timeout=300) == 0, (tmp_path / "tune.log").read_text()[-3000:]
    trials, runs = agree(url, "tune-kill")
    killed = [t for t in trials if t.state.name == "FAIL"]
    assert len(killed) == 1 and killed[0].user_attrs["pid"] == victim.pid
    resumed = next(r for r in runs if r.id == victim.id)  # the same registry run, finished by the retry
    assert resumed.status == "completed" and [i.step for i in resumed.intervals] == [0, 2, 4, 6]
    assert len([t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]) == 3

    again = subprocess.run([sys.executable, "-m", "orchestrator", *base, "tune.budget_runs=4"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "study tune-kill: 4 trial(s) so far" in again.stdout, again.stdout
    trials, runs = agree(url, "tune-kill")
    assert len([t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]) == 4 and len(runs) == 4
    assert "campaign tune-kill: NOT MET" in again.stdout  # the real criteria: tiny_random gains nothing


@pytest.mark.slow  # submitit starts its own interpreter per task
def test_submitit_local_launcher_runs_the_workers(run_overrides, tmp_path, capsys):
    """The SLURM path (submitit array tasks), on submitit's LocalExecutor: same study, same rules."""
    cli_main(["tune", *run_overrides, "optim.steps=6", REACHABLE, settings_file(tmp_path, LRS), "tune.budget_runs=2",
              "tune.launcher=submitit_local", "tune.study=submitit"])  # 3 trained intervals: stability is judged
    assert "campaign tune-submitit: MET by" in capsys.readouterr().out
    trials, runs = agree(f"sqlite:///{registry_path(run_overrides)}", "tune-submitit")
    assert len(runs) == 1 and trials[0].user_attrs["pid"] != os.getpid()  # trained in the task's process
    assert list((tmp_path / "outputs" / ".tune" / "tune-submitit").glob("submitit-0/*_log.out"))
