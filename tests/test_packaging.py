"""The wheel carries conf/ (as orchestrator/conf/) and works from any folder; a team's own config
folder joins Hydra's search path for `plan` and runs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, cli


def test_the_installed_wheel_plans_an_experiment_from_outside_the_checkout(tmp_path):
    source = tmp_path / "src"  # pip writes build/ beside the sources: build a copy, not the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("orchestrator", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("moonshine_orchestrator-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True,
                   timeout=300)
    assert (site / "orchestrator" / "conf" / "exp" / "exp_2_5_v2_universal_lora.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    where = subprocess.run([sys.executable, "-c", "import orchestrator.config.paths as p; print(p.__file__, p.CONF_DIR)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert Path(where[0]).is_relative_to(site) and Path(where[1]) == site / "orchestrator" / "conf"
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "plan", "+exp=exp_2_5_v2_universal_lora", "--json"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["experiment"] == "exp_2_5_v2_universal_lora" and plan["targets"]["total"] > 0
    assert set(plan["targets"]["by_component"]) >= {"encoder", "decoder"}
    assert "error" in plan["data"]["train"]  # the seeds' manifests are not here; the plan still resolves


@pytest.fixture
def team_conf(tmp_path) -> Path:
    """A team's own config folder: an experiment of theirs, built on one of ours."""
    folder = tmp_path / "team_conf"
    (folder / "exp").mkdir(parents=True)
    (folder / "exp" / "team_qv_r4.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        defaults:
          - /exp/exp_2_2_qv_only
        adapter:
          r: 4
        """))
    return folder


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_plan_finds_a_teams_own_experiment(team_conf, tmp_path, how):
    args = (["--config-dir", str(team_conf)] if how == "--config-dir"
            else [f"hydra.searchpath=[file://{team_conf}]"])
    proc = cli("plan", "+exp=team_qv_r4", *args, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["experiment"] == "team_qv_r4" and plan["adapter"]["r"] == 4 and plan["targets"]["spec"] == "qv_only"


def test_a_run_with_a_teams_config_dir_is_checked_and_lists_its_experiments(team_conf, tmp_path):
    """The run path: the up-front checks see --config-dir (they fail on the missing manifests,
    not on the experiment), and an unknown experiment's fix lists the team's too."""
    proc = cli("--config-dir", str(team_conf), "+exp=team_qv_r4", f"output_dir={tmp_path / 'out'}",
               f"registry.url=sqlite:///{tmp_path / 'r.db'}", cwd=tmp_path)
    assert proc.returncode == 2 and "data/train_manifest_expanded.jsonl" in proc.stderr, proc.stderr
    proc = cli("--config-dir", str(team_conf), "+exp=team_nope", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "+exp=team_nope: unknown experiment" in proc.stderr and "team_qv_r4" in proc.stderr
    assert "exp_2_5_v2_universal_lora" in proc.stderr
    assert not (tmp_path / "r.db").exists()
