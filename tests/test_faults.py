"""Faults leave the registry and the artifacts true: SIGKILL at random moments, Ctrl-C, a checkpoint
write that fails, a non-finite loss.

Every training process here is real: the CLI (`orchestrator.cli.main`) in its own OS process,
stopped by a real SIGKILL or SIGINT, writing through a real RLIMIT_FSIZE. The processes are forked
from a multiprocessing forkserver that has imported torch once, which keeps a chain of ten killed
processes affordable (a fresh interpreter costs seconds to import torch).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import resource
import signal
import time
from pathlib import Path

import pytest
import torch

from orchestrator.training import loop as train
from orchestrator.artifacts.run_folder import CHECKPOINT
from orchestrator.registry.doctor import diagnose
from orchestrator.registry import Store
from orchestrator.config.spec import spec_from_overrides

CTX = multiprocessing.get_context("forkserver")
CTX.set_forkserver_preload(["orchestrator.cli", "orchestrator.training.loop"])
DEADLINE_S = 240
SEED = 8  # the kill schedule: seeded, so a failure can be replayed


def _cli_child(argv: list[str], log: str, fsize_limit: int | None) -> None:
    """The child process: stdout/stderr to `log`, optionally a file-size limit, then the real CLI."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ["TQDM_DISABLE"] = "1"
    if fsize_limit:  # writes past the limit fail with EFBIG instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))
    torch.set_num_threads(1)  # as in the test process (one_thread): same arithmetic, no oversubscription
    from orchestrator.cli import main

    main(argv)


def _start(argv: list[str], log: Path, fsize_limit: int | None = None):
    proc = CTX.Process(target=_cli_child, args=(argv, str(log), fsize_limit))
    proc.start()
    return proc


def _wait(condition, proc, log: Path, what: str) -> None:
    deadline = time.time() + DEADLINE_S
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}\n{log.read_text()[-3000:]}"
        assert proc.is_alive(), f"the process ended (exit {proc.exitcode}) before {what}\n{log.read_text()[-3000:]}"
        time.sleep(0.01)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here and in every child: the runs compared are computed alike, and two
    cores shared with other work are not oversubscribed (ten times faster on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_eval(speech, tmp_path_factory) -> dict[str, Path]:
    """Two-utterance domain and heldout manifests (absolute paths): cheap evaluations."""
    out = tmp_path_factory.mktemp("small_eval")
    paths = {}
    for split in ("domain", "heldout"):
        rows = [json.loads(line) for line in speech[split].read_text().splitlines()][:2]
        for row in rows:
            row["audio_filepath"] = str(speech[split].parent / row["audio_filepath"])
        paths[split] = out / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def _overrides(speech, tiny_checkpoint, small_eval, folder: Path, *extra: str) -> list[str]:
    return ["+exp=smoke_tiny_random", f"model.id={tiny_checkpoint}", f"data.train_manifest={speech['train']}",
            f"eval.domain_manifest={small_eval['domain']}", f"eval.heldout_manifest={small_eval['heldout']}",
            f"registry.url=sqlite:///{folder / 'registry.db'}", f"output_dir={folder / 'outputs'}",
            "model.tokens_per_second=1", "optim.lr=1e-2", "adapter.dropout=0.1", *extra]


# The run the SIGKILL chain and the Ctrl-C test interrupt: long enough that ten kills, each up to
# half a second after an interval, cannot carry it to its end on a fast machine.
STEPS = 40
LONG = (f"optim.steps={STEPS}", "eval.interval=2")


def _metrics(run) -> list[tuple]:
    def r(x, n):
        return None if x is None else round(x, n)
    return [(i.step, r(100 * i.domain_wer, 2), r(100 * i.heldout_wer, 2), r(i.eval_loss, 4), r(i.train_loss, 4))
            for i in run.intervals]


@pytest.fixture(scope="module")
def twin(speech, tiny_checkpoint, small_eval, tmp_path_factory) -> tuple[str, list[tuple]]:
    """(identity hash, interval metrics) of an uninterrupted run of the LONG configuration."""
    folder = tmp_path_factory.mktemp("twin")
    overrides = _overrides(speech, tiny_checkpoint, small_eval, folder, *LONG)
    store = Store(f"sqlite:///{folder / 'registry.db'}")
    run = store.get_run(train.run(spec_from_overrides(overrides), store, progress=False))
    store.close()
    assert run.status == "completed" and [i.step for i in run.intervals] == list(range(0, STEPS + 1, 2))
    return run.config_hash, _metrics(run)


def _assert_consistent(store: Store, outputs: Path) -> None:
    """After a kill: no half rows, complete files, and nothing doctor calls a problem except the
    dead process's `running` status (which makes the run resumable)."""
    runs = store.list_runs()
    assert len(runs) <= 1, [r.id for r in runs]
    for run in runs:
        assert run.status in ("running", "completed"), (run.status, run.failure_reason)
        for i in run.intervals:
            assert None not in (i.domain_wer, i.heldout_wer, i.eval_loss, i.lr)
            assert len(store.utterances(run.id, i.step, "domain")) == i.domain_utts == 2
            assert len(store.utterances(run.id, i.step, "heldout")) == i.heldout_utts == 2
        saved = outputs / run.id / CHECKPOINT
        if saved.exists():  # whole: it loads
            state = torch.load(saved, weights_only=False)
            assert state["step"] <= max(i.step for i in run.intervals) + 2
    diagnosis = diagnose(store, outputs=outputs)
    kinds = {f.kind for f in diagnosis.findings}
    assert kinds <= {"stale_running", "artifact_pending", "leftover"}, [f.line() for f in diagnosis.findings]
    assert all(f.run in {r.id for r in runs} for f in diagnosis.findings)


@pytest.mark.slow  # 33 s; test_resume's SIGKILL-then-resume twin runs in the default suite
def test_sigkill_at_random_moments_then_resume_matches_the_uninterrupted_twin(speech, tiny_checkpoint, small_eval,
                                                                               twin, tmp_path):
    overrides = _overrides(speech, tiny_checkpoint, small_eval, tmp_path, *LONG)
    store, outputs, log = Store(f"sqlite:///{tmp_path / 'registry.db'}"), tmp_path / "outputs", tmp_path / "log"
    rng = random.Random(SEED)
    kills = []
    for n in range(10):
        before = sum(len(r.intervals) for r in store.list_runs())
        proc = _start(["run", *overrides], log)
        if n % 2:  # anywhere from start-up on: hydra, manifests, model, registry row, training
            time.sleep(rng.uniform(0.05, 2.5))
        else:  # inside training: after this process committed an interval, at a random moment
            _wait(lambda: sum(len(r.intervals) for r in store.list_runs()) > before, proc, log, f"an interval ({n})")
            time.sleep(rng.uniform(0.0, 0.5))
        assert proc.is_alive(), f"kill {n}: the run ended before it was killed\n{log.read_text()[-2000:]}"
        proc.kill()
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        runs = store.list_runs()
        kills.append(max((i.step for r in runs for i in r.intervals), default=None))
        _assert_consistent(store, outputs)
    assert len(kills) == 10 and any(step is not None for step in kills), kills

    (killed,) = store.list_runs()
    assert killed.status == "running" and killed.intervals[-1].step < STEPS, kills
    done = store.get_run(train.run(spec_from_overrides(overrides), store, progress=False))  # resumes
    assert done.id == killed.id and done.status == "completed" and len(store.list_runs()) == 1
    assert [c.passed for c in done.checks] == [True]
    assert (done.config_hash, _metrics(done)) == twin, kills
    diagnosis = diagnose(store, outputs=outputs)
    assert diagnosis.healthy and not [f for f in diagnosis.findings if f.severity != "info"], diagnosis.findings
    store.close()


def test_ctrl_c_checkpoints_records_interrupted_and_resumes_exactly(speech, tiny_checkpoint, small_eval, twin,
                                                                    tmp_path, caplog):
    overrides = _overrides(speech, tiny_checkpoint, small_eval, tmp_path, *LONG)
    store, log = Store(f"sqlite:///{tmp_path / 'registry.db'}"), tmp_path / "log"
    proc = _start(["run", *overrides], log)
    _wait(lambda: any(len(r.intervals) >= 2 for r in store.list_runs()), proc, log, "interval 2")
    saved = tmp_path / "outputs" / store.list_runs()[0].id / CHECKPOINT

    def checkpoint_of_step_2() -> bool:  # written right after interval 2 is recorded; step 3 comes next
        try:
            return torch.load(saved, weights_only=False)["step"] == 2
        except (OSError, RuntimeError, EOFError, KeyError):
            return False

    _wait(checkpoint_of_step_2, proc, log, "the checkpoint of step 2")
    os.kill(proc.pid, signal.SIGINT)  # lands in step 3: held to the step's end, then checkpointed
    proc.join(DEADLINE_S)
    text = log.read_text()
    assert proc.exitcode == 130, text[-3000:]
    assert "Traceback" not in text and "interrupted (Ctrl-C)" in text
    step = int(re.search(r"Ctrl-C: checkpoint of step (\d+) saved", text).group(1))
    assert step % 2 == 1  # mid-interval: the training losses so far are in the checkpoint
    (run,) = store.list_runs()
    assert run.status == "interrupted" and "Ctrl-C" in run.failure_reason
    assert torch.load(saved, weights_only=False)["step"] == step

    with caplog.at_level("INFO", logger="orchestrator"):
        done = store.get_run(train.run(spec_from_overrides(overrides), store, progress=False))
    assert f"resuming {run.id} from step {step}" in caplog.text
    assert done.id == run.id and done.status == "completed" and len(store.list_runs()) == 1
    assert (done.config_hash, _metrics(done)) == twin
    store.close()


def test_a_failing_checkpoint_write_keeps_the_previous_one_and_fails_the_run(speech, tiny_checkpoint, small_eval,
                                                                             tmp_path):
    """RLIMIT_FSIZE between the size of the step-0 checkpoint (adapter only) and a later one (plus
    AdamW's two moments): the step-2 checkpoint write fails for real with EFBIG."""
    overrides = _overrides(speech, tiny_checkpoint, small_eval, tmp_path, "optim.steps=4", "eval.interval=2")
    log = tmp_path / "log"
    proc = _start(["run", *overrides], log, fsize_limit=220_000)
    proc.join(DEADLINE_S)
    text = log.read_text()
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert proc.exitcode == 2 and len(errors) == 1 and "Traceback" not in text, text[-3000:]
    assert "cannot write the checkpoint of step 2 (File too large); the previous checkpoint is intact" in errors[0]
    store = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    (run,) = store.list_runs()
    assert run.status == "failed" and "cannot write the checkpoint of step 2 (File too large)" in run.failure_reason
    assert [i.step for i in run.intervals] == [0, 2]
    run_dir = tmp_path / "outputs" / run.id
    assert torch.load(run_dir / CHECKPOINT, weights_only=False)["step"] == 0  # the previous one, whole
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # no temporary file left
    diagnosis = diagnose(store, outputs=tmp_path / "outputs")  # its best adapter (step 2) is whole
    assert diagnosis.healthy and run.artifact("lora_adapter_best").step == 2, diagnosis.findings
    store.close()


def test_non_finite_loss_stops_the_run_keeping_intervals_and_best_adapter(speech, tiny_checkpoint, small_eval,
                                                                          tmp_path):
    overrides = _overrides(speech, tiny_checkpoint, small_eval, tmp_path, "optim.steps=6", "eval.interval=2",
                           "optim.lr=1e3")  # diverges: finite until the weights overflow
    log = tmp_path / "log"
    proc = _start(["run", *overrides], log)
    proc.join(DEADLINE_S)
    text = log.read_text()
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert proc.exitcode == 2 and len(errors) == 1 and "Traceback" not in text, text[-3000:]
    match = re.search(r"non-finite (loss|gradients) at step (\d+)", errors[0])
    assert match, errors
    step = int(match.group(2))
    store = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    (run,) = store.list_runs()
    assert run.status == "failed" and match.group(0) in run.failure_reason
    assert [i.step for i in run.intervals] == list(range(0, step, 2)) and len(run.intervals) >= 2
    best = run.artifact("lora_adapter_best")
    assert best is not None and best.step < step and Path(best.path).is_dir()
    assert diagnose(store, outputs=tmp_path / "outputs").healthy  # the kept adapter matches its sha256
    store.close()


def _adapter_child(checkpoint_dir: str, dest: str, limit: int, out: str) -> None:
    """Save an adapter, change it, then save it again under a file-size limit it cannot fit."""
    torch.set_num_threads(1)
    from orchestrator.training import adapter, modeling, targets
    from orchestrator.artifacts.atomic import save_adapter
    from orchestrator.errors import WriteError
    from orchestrator.config.schema import AdapterConf, ModelConf, TargetsConf

    model, _ = modeling.load(ModelConf(name="t", id=checkpoint_dir), torch.device("cpu"))
    peft_model = adapter.attach(model, AdapterConf(), targets.resolve(model, TargetsConf(
        components=["decoder"], kinds=["q_proj"])))
    first = save_adapter(peft_model, Path(dest))
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        result = f"saved {save_adapter(peft_model, Path(dest))}"
    except WriteError as exc:
        result = str(exc)
    Path(out).write_text(json.dumps({"first": first, "result": result}))


def test_a_failing_adapter_write_keeps_the_previous_adapter(tiny_checkpoint, tmp_path):
    from orchestrator.artifacts.atomic import sha256_file
    from orchestrator.artifacts.run_folder import ADAPTER_WEIGHTS

    dest, out = tmp_path / "lora_adapter_best", tmp_path / "out.json"
    proc = CTX.Process(target=_adapter_child, args=(str(tiny_checkpoint), str(dest), 8_000, str(out)))
    proc.start()
    proc.join(DEADLINE_S)
    assert proc.exitcode == 0
    report = json.loads(out.read_text())
    assert report["result"].startswith(f"{dest}: cannot write lora_adapter_best (File too large); the previous one "
                                       "is intact"), report
    assert sha256_file(dest / ADAPTER_WEIGHTS) == report["first"]  # the first adapter, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora_adapter_best", "out.json"]  # no .tmp left


def test_a_swap_killed_between_renames_is_recovered(tmp_path):
    """Where renameat2(RENAME_EXCHANGE) is missing, the swap is two renames; a kill between them
    leaves `<name>.old` (complete) and no `<name>`: the next save, and recover(), put it back."""
    from orchestrator.artifacts.atomic import recover

    dest = tmp_path / "lora_adapter_best"
    (tmp_path / "lora_adapter_best.old").mkdir()
    (tmp_path / "lora_adapter_best.old" / "adapter_model.safetensors").write_bytes(b"weights")
    recover(dest)
    assert (dest / "adapter_model.safetensors").read_bytes() == b"weights"
    assert not (tmp_path / "lora_adapter_best.old").exists()
    recover(dest)  # nothing to do: a no-op
    assert (dest / "adapter_model.safetensors").read_bytes() == b"weights"


def test_parallel_points_check_one_output_folder_at_once(tmp_path):
    """The points of a parallel sweep start together and each proves the output folder writable:
    a shared probe file made one of them fail with ENOENT when the other removed it first."""
    from concurrent.futures import ThreadPoolExecutor

    from orchestrator.artifacts.atomic import check_output_dir

    out = tmp_path / "outputs"
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: check_output_dir(str(out)), range(2000)))
    assert out.is_dir() and list(out.iterdir()) == []  # every probe cleaned up
