"""Sweeps through the real CLI on tiny_random: one registry sweep per multirun, the report's sweep
table and chart, re-running is a no-op, `--rerun`, launchers (basic, joblib in parallel,
submitit's local executor, the SLURM config) and launchers set inside exp files."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from orchestrator.registry import Store

from conftest import cli

LRS = ("5e-05", "0.0001", "0.00015")


@pytest.fixture
def sweep_overrides(run_overrides) -> list[str]:
    """exp_3_1_lr_sweep shrunk to a 2-step run of tiny_random on espeak-ng speech."""
    keep = [o for o in run_overrides if not o.startswith(("+exp=", "optim.steps", "eval.interval"))]
    return ["+exp=exp_3_1_lr_sweep", "model=tiny_random", *keep, "optim.steps=2", "eval.interval=2",
            "optim.batch_size=4", "eval.batch_size=8"]


def registry(overrides: list[str]) -> Store:
    return Store(next(o.split("=", 1)[1] for o in overrides if o.startswith("registry.url=")))


def overlap(a, b) -> bool:
    return max(a.started_at, b.started_at) < min(a.ended_at, b.ended_at)


def test_lr_sweep_is_one_registry_sweep_with_a_report_table_and_reruns_nothing(sweep_overrides, tmp_path):
    sweep = ["-m", *sweep_overrides, f"optim.lr={','.join(LRS)}"]
    cli(*sweep, check=True)
    store = registry(sweep_overrides)
    runs = store.list_runs()
    assert sorted(r.lr for r in runs) == sorted(map(float, LRS))
    assert {r.status for r in runs} == {"completed"} and {r.experiment for r in runs} == {"exp_3_1_lr_sweep"}
    (sweep_id,) = {r.sweep_id for r in runs}
    assert sweep_id and sweep_id.startswith("exp_3_1_lr_sweep-")
    assert len({r.pid for r in runs}) == 1  # the basic launcher: one process, one point after another

    report = tmp_path / "EXPERIMENTS.md"
    cli("report", "--registry", store.url, "--output", str(report), check=True)
    section = report.read_text().split("<!-- BEGIN GENERATED: sweeps -->")[1].split("<!-- END GENERATED")[0]
    assert f"### {sweep_id}" in section and "swept: `optim.lr`" in section
    rows = [line for line in section.splitlines() if line.startswith("| exp_3_1_lr_sweep-")]
    assert [row.split("|")[2].strip() for row in rows] == ["5e-05", "0.0001", "0.00015"]  # by learning rate
    assert "xychart-beta" in section and 'x-axis "learning rate" ["5.0e-05", "1.0e-04", "1.5e-04"]' in section

    again = cli(*sweep, check=True)  # the same sweep again: every point is identical to a finished run
    assert again.stderr.count("skipped: identical to run") == 3
    assert sorted(r.id for r in store.list_runs()) == sorted(r.id for r in runs)

    forced = cli(*sweep_overrides, "optim.lr=5e-05", "--rerun", check=True)  # --rerun = rerun=true
    assert "skipped" not in forced.stderr
    assert len(store.list_runs()) == 4
    listing = cli("runs", "--registry", store.url, check=True).stdout
    assert listing.count(sweep_id) == 3  # the forced run is no sweep's
    store.close()


def test_joblib_launcher_runs_sweep_points_in_parallel(sweep_overrides):
    cli("-m", *sweep_overrides, f"optim.lr={','.join(LRS)}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        check=True)
    store = registry(sweep_overrides)
    runs = store.list_runs()
    store.close()
    assert len(runs) == 3 and {r.status for r in runs} == {"completed"} and len({r.sweep_id for r in runs}) == 1
    assert len({r.pid for r in runs}) >= 2  # worker processes ...
    assert any(overlap(a, b) for a in runs for b in runs if a.id < b.id)  # ... training at the same time


def test_submitit_local_launcher_runs_a_sweep_point(sweep_overrides):
    cli("-m", *sweep_overrides, "optim.lr=1e-4", "hydra/launcher=submitit_local", check=True)
    store = registry(sweep_overrides)
    (run,) = store.list_runs()
    store.close()
    assert run.status == "completed" and run.sweep_id and [c.passed for c in run.checks] == [True]


def test_slurm_launcher_config_extends_submitits_schema():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from orchestrator.config.paths import CONF_DIR
    from orchestrator.config.schema import register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+exp=exp_3_1_lr_sweep", "hydra/launcher=slurm",
                                                       "hydra.launcher.partition=gpu"], return_hydra_config=True)
        launcher = OmegaConf.to_container(cfg.hydra.launcher)
        with pytest.raises(Exception, match="partitio"):  # the plugin's schema: typos fail
            compose(config_name="config", overrides=["hydra/launcher=slurm", "hydra.launcher.partitio=gpu"],
                    return_hydra_config=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert (launcher["partition"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == ("gpu", 1, 1)
    assert launcher["timeout_min"] > 0 and launcher["max_num_timeout"] > 0


@pytest.fixture
def exp_dir(tmp_path) -> Path:
    """Experiments outside conf/exp/, on Hydra's search path, that set a launcher."""
    folder = tmp_path / "more_conf" / "exp"
    folder.mkdir(parents=True)
    (folder / "with_joblib.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        defaults:
          - /exp/exp_3_1_lr_sweep
          - override /hydra/launcher: joblib
        hydra:
          launcher:
            n_jobs: 2
        """))
    (folder / "with_keys.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        defaults:
          - /exp/exp_3_1_lr_sweep
        hydra:
          launcher:
            n_jobs: 2
        """))
    return folder.parent


def test_a_launcher_in_a_swept_exp_is_refused_before_anything_runs(sweep_overrides, exp_dir, tmp_path):
    plain = [o for o in sweep_overrides if not o.startswith("+exp=")]
    search = f"hydra.searchpath=[file://{exp_dir}]"
    refused = cli("-m", search, "+exp=with_joblib,exp_3_1_lr_sweep", *plain)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "exp/with_joblib.yaml" in refused.stderr and "Hydra ignores when exp is swept" in refused.stderr
    assert "hydra/launcher=joblib" in refused.stderr
    keys = cli("-m", search, "+exp=with_keys", *plain, "optim.lr=1e-4,2e-4")
    assert keys.returncode == 2 and len(keys.stderr.strip().splitlines()) == 1, keys.stderr
    assert "exp/with_keys.yaml" in keys.stderr and "hydra.launcher.n_jobs" in keys.stderr
    assert not (tmp_path / "registry.db").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.slow  # two more tiny runs; the refusal above is the default suite's check
def test_a_launcher_in_a_single_exp_is_used(sweep_overrides, exp_dir):
    plain = [o for o in sweep_overrides if not o.startswith("+exp=")]
    cli("-m", f"hydra.searchpath=[file://{exp_dir}]", "+exp=with_joblib", *plain, "optim.lr=1e-4,2e-4",
        check=True)
    store = registry(sweep_overrides)
    runs = store.list_runs()
    store.close()
    assert sorted(r.lr for r in runs) == [1e-4, 2e-4] and {r.experiment for r in runs} == {"with_joblib"}
    assert len({r.pid for r in runs}) == 2  # joblib's worker processes, as the exp file asked
