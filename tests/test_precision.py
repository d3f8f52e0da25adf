"""Precision as config (fp32 | bf16 | fp16) and what a run records of its cost, on real runs."""
from __future__ import annotations

import json

import pytest
import torch

from orchestrator.commands.eval import PRECISIONS
from orchestrator.config.schema import Precision
from orchestrator.registry import Store
from orchestrator.report import update_experiments_md
from orchestrator.training import loop as train
from orchestrator.training import precision as precisions

from conftest import cli


def _store(overrides: list[str]) -> Store:
    return Store(next(o.split("=", 1)[1] for o in overrides if o.startswith("registry.url=")))


def test_the_cli_choices_are_the_schemas():
    assert PRECISIONS == tuple(p.value for p in Precision)


def test_precision_is_part_of_a_runs_identity_and_how_it_is_computed_is_not(make_spec):
    fp32, bf16 = make_spec(), make_spec("precision=bf16")
    assert fp32.precision == "fp32" and bf16.precision == "bf16"
    assert fp32.config_hash != bf16.config_hash
    # how far ahead batches are prepared and how often the host reads the loss change nothing computed
    assert make_spec("data.prefetch=0", "optim.log_every=1").config_hash == fp32.config_hash


def test_an_unknown_precision_fails_while_composing(run_overrides):
    proc = cli("plan", *run_overrides, "precision=fp8")
    assert proc.returncode == 2 and "precision" in proc.stderr and "fp8" in proc.stderr, proc.stderr


def test_autocast_and_scaler_follow_the_precision():
    cpu = torch.device("cpu")
    x = torch.randn(4, 4)
    with precisions.autocast(cpu, "bf16"):
        assert (x @ x).dtype == torch.bfloat16
    with precisions.autocast(cpu, "fp32"):
        assert (x @ x).dtype == torch.float32
    assert precisions.grad_scaler(cpu, "fp16") is not None
    assert precisions.grad_scaler(cpu, "bf16") is None and precisions.grad_scaler(cpu, "fp32") is None
    assert precisions.setup(cpu, "bf16") is False  # TF32 is a CUDA (Ampere+) matter


def test_a_bf16_run_on_the_cpu_records_its_precision_peak_memory_and_speed(run_overrides, tmp_path):
    """Through the CLI, as a user runs it: the registry row names the precision and the device, and
    holds the peak memory, training throughput and evaluation speed; the report shows them; `eval`
    on the best adapter reproduces the registry's WER in the run's own precision."""
    proc = cli("run", *run_overrides, "precision=bf16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = _store(run_overrides)
    (run,) = store.list_runs()
    assert run.status == "completed" and run.precision == "bf16" and run.config["precision"] == "bf16"
    assert run.device.startswith("cpu (")
    assert run.peak_memory_mb > 50  # this process's peak RSS: torch alone is more
    assert run.train_utts_per_s > 0 and run.eval_realtime_x > 0
    assert run.check("parity").passed, run.check("parity").details  # reloaded, re-evaluated in bf16

    md = tmp_path / "EXPERIMENTS.md"
    update_experiments_md(md, store.list_runs())
    text = md.read_text()
    assert "cpu bf16 · " in text and "utt/s" in text and "x RT" in text
    assert f"- Compute: cpu ({run.device.split('(')[1]}" in text and "peak RSS" in text

    best = run.artifact("lora_adapter_best")
    domain = next(o.split("=", 1)[1] for o in run_overrides if o.startswith("eval.domain_manifest="))
    out = cli("eval", "--adapter", best.path, "--manifest", domain, "--json")
    assert out.returncode == 0, out.stderr
    interval = next(i for i in run.intervals if i.step == best.step)
    assert json.loads(out.stdout)["wer"] == interval.domain_wer
    store.close()


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_fp16_with_its_scaler_and_fp32_train_and_record(make_spec, run_overrides, precision):
    spec = make_spec(f"precision={precision}", "optim.log_every=3")
    store = _store(run_overrides)
    run = store.get_run(train.run(spec, store, progress=False))
    assert run.status == "completed" and run.precision == precision
    assert [i.step for i in run.intervals] == [0, 2, 4]
    assert all(i.train_loss > 0 for i in run.intervals[1:])  # read every 3 steps and at every interval
    assert run.peak_memory_mb > 0 and run.train_utts_per_s > 0
    store.close()


def test_the_losses_read_in_batches_are_the_losses_read_every_step(make_spec, run_overrides, tmp_path):
    """log_every only decides when the host looks: the interval metrics are the same to the bit."""
    def metrics(*extra):
        name = f"{len(list(tmp_path.iterdir()))}"
        store = Store(f"sqlite:///{tmp_path / (name + '.db')}")
        spec = make_spec(*extra, f"registry.url={store.url}", f"output_dir={tmp_path / ('out' + name)}")
        run = store.get_run(train.run(spec, store, progress=False))
        store.close()
        return [(i.step, i.lr, i.train_loss, i.domain_wer, i.heldout_wer, i.eval_loss) for i in run.intervals]

    assert metrics("optim.log_every=1", "data.prefetch=0") == metrics("optim.log_every=7", "data.prefetch=3")


def test_a_non_finite_loss_read_late_still_names_the_step_it_happened_at(make_spec, run_overrides, tmp_path):
    """The host reads losses every optim.log_every steps; a divergence found at a read fails the run
    with the first step that went non-finite, the step an every-step read names, and records no
    interval after it."""
    from orchestrator.errors import OrchestratorError

    def failing_step(log_every: int) -> tuple[str, list[int]]:
        name = f"{len(list(tmp_path.iterdir()))}"
        store = Store(f"sqlite:///{tmp_path / (name + '.db')}")
        spec = make_spec("optim.lr=1e3", "optim.steps=8", "eval.interval=8", f"optim.log_every={log_every}",
                         f"registry.url={store.url}", f"output_dir={tmp_path / ('out' + name)}")
        with pytest.raises(OrchestratorError) as caught:
            train.run(spec, store, progress=False)
        (run,) = store.list_runs()
        store.close()
        what = str(caught.value).split(": ", 1)[1].split(" (fix:")[0]  # after "run <id>: "
        assert run.status == "failed" and what in run.failure_reason
        return what, [i.step for i in run.intervals]

    every, late = failing_step(1), failing_step(8)
    assert every[0].startswith("non-finite") and every == late and late[1] == [0], (every, late)
