"""`orchestrator tune +exp=NAME tune.budget_runs=N [tune.budget_steps=S] [tune.workers=K] [tune=SETTINGS]`

The command: compose and check the experiment, the settings and every search-space entry
(one-line errors, exit 2, before any training or registry row); check the data and open the
registry; create the study once; start K workers (local processes, or SLURM array tasks through
submitit) that share it; when they end, recover trials whose worker died and start another round
for them; finally print the campaign verdict (the same one `orchestrator report` writes to
EXPERIMENTS.md). Re-running the command continues the study: its budget counts every trial so far.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from orchestrator.errors import ConfigError
from orchestrator.tuning import settings as tune_settings
from orchestrator.tuning import space as spaces
from orchestrator.tuning.worker import Campaign, compose_spec, run_worker, stop_reason
from orchestrator.registry.engine import safe_url

log = logging.getLogger("orchestrator")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="orchestrator tune", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="+exp=NAME, run overrides, tune.KEY=VALUE, tune=SETTINGS")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # internal: run as worker N
    return parser.parse_args(argv)


def prepare(overrides: list[str], *, check_space: bool = True) -> tuple[Campaign, object]:
    """Everything that can be refused, refused: returns the campaign and the base run's spec."""
    choice, dotlist, run_overrides = tune_settings.split_overrides(overrides)
    if not any(o.lstrip("+~").startswith("exp=") for o in run_overrides):
        raise ConfigError("a tune campaign needs an experiment", where="tune",
                          fix="orchestrator tune +exp=NAME tune.budget_runs=8")
    try:
        spec = compose_spec(run_overrides)
    except Exception as exc:
        from orchestrator.config.compose import config_error

        error = config_error(exc, run_overrides)  # Hydra's composition errors, as one line naming the key
        if error is None:
            raise
        raise error from None
    exp = next(o.split("=", 1)[1] for o in run_overrides if o.lstrip("+~").startswith("exp="))
    conf = tune_settings.load_settings(choice, exp, dotlist)
    if check_space:
        spaces.check_shape(conf.space)
        spaces.check_against(conf.space, run_overrides, compose_spec)
    from orchestrator.tuning.study import study_name

    campaign = Campaign(url=spec.registry.url, name=study_name(conf, spec.experiment), settings=conf,
                        run_overrides=tuple(run_overrides), guard=spec.criteria.max_heldout_regression,
                        output_dir=spec.output_dir)
    return campaign, spec


def main(argv: list[str]) -> None:
    args = parse(argv)
    logging.basicConfig(format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S", level=logging.WARNING)
    logging.getLogger("orchestrator").setLevel(logging.INFO)
    if args.worker is not None:  # a worker: the command checked everything and created the study
        campaign, _ = prepare(args.overrides, check_space=False)
        if campaign.settings.workers > 1:
            import torch

            torch.set_num_threads(1)
        run_worker(campaign, args.worker)
        return
    campaign, spec = prepare(args.overrides)
    from orchestrator.training.preflight import check_before_torch

    check_before_torch(spec)  # bad data, an unwritable output folder, an unreachable registry: in seconds
    from orchestrator.tuning.study import open_study, recover

    study = open_study(campaign.url, campaign.name, campaign.settings, create=True, attrs={
        "experiment": spec.experiment, "run_overrides": list(campaign.run_overrides),
        "space": {k: _plain(v) for k, v in campaign.settings.space.items()}})
    print(f"study {campaign.name}: {len(study.trials)} trial(s) so far, in {safe_url(campaign.url)}", flush=True)
    for round_ in range(campaign.settings.max_retry + 1):
        reason = stop_reason(study, campaign.settings)
        if reason is not None:
            break
        launch(args.overrides, campaign, spec, round_)
        recover(study, campaign.settings)
    print_summary(campaign)


def launch(overrides: list[str], campaign: Campaign, spec, round_: int) -> None:
    """One round of K workers; returns when every one has ended (killed ones included)."""
    t = campaign.settings
    if t.launcher == "local" and t.workers == 1:
        run_worker(campaign, 0)
        return
    if t.launcher == "local":
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        command = [sys.executable, "-m", "orchestrator", "tune", *overrides]
        procs = [subprocess.Popen([*command, "--worker", str(i)], env=env) for i in range(t.workers)]
        for i, proc in enumerate(procs):
            if proc.wait() != 0:
                log.warning("worker %d (pid %d) ended with exit %d; its trial is recovered", i, proc.pid,
                            proc.returncode)
        return
    import submitit

    folder = Path(spec.output_dir) / ".tune" / campaign.name / f"submitit-{round_}"
    executor = submitit.AutoExecutor(folder=folder, cluster="local" if t.launcher == "submitit_local" else "slurm")
    params = dict(timeout_min=t.slurm.timeout_min, cpus_per_task=t.slurm.cpus_per_task, mem_gb=t.slurm.mem_gb,
                  slurm_array_parallelism=t.workers)
    if t.slurm.gpus_per_node:
        params["gpus_per_node"] = t.slurm.gpus_per_node
    if t.slurm.partition:
        params["slurm_partition"] = t.slurm.partition
    executor.update_parameters(**params)
    jobs = executor.map_array(worker_entry, [list(overrides)] * t.workers, list(range(t.workers)))
    for job in jobs:
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001 - a lost task's trial is recovered by the next round
            log.warning("worker job %s ended: %s", job.job_id, str(exc).splitlines()[-1] if str(exc) else exc)


def worker_entry(overrides: list[str], index: int) -> None:
    """A submitit task (a SLURM array element): one worker."""
    main([*overrides, "--worker", str(index)])


def print_summary(campaign: Campaign) -> None:
    from orchestrator.registry import Store
    from orchestrator.report.tune import campaign_verdict, family_judge

    store = Store(campaign.url)
    try:
        runs = store.list_runs(sweep_id=campaign.name)
        result = campaign_verdict(runs, family_judge(runs, store))
    finally:
        store.close()
    print(f"campaign {campaign.name}: {result.headline}")
    for line in result.details:
        print(f"  {line}")
    print("(orchestrator report writes it to EXPERIMENTS.md, block `tune`)")


def _plain(p) -> dict:
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(p).items() if v is not None and v is not False}
