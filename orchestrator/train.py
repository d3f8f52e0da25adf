"""One run: data -> model + adapter -> train loop with interval evaluation -> registry + artifacts.

Order matters for failures: manifests, model and targets are checked before the registry gets a
row, so bad input leaves the registry unchanged; after that every interval is committed as it
happens and any exception marks the run `failed` (Ctrl-C: `interrupted`) with the reason.
"""
from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import get_linear_schedule_with_warmup

from orchestrator import adapter as adapters
from orchestrator import checkpoint, modeling, targets
from orchestrator.artifacts import save_adapter
from orchestrator.batching import AudioBank, model_inputs, train_batches
from orchestrator.errors import OrchestratorError
from orchestrator.evaluate import EvalResult, evaluate
from orchestrator.manifest import Filtered, filter_by_duration, read_manifest
from orchestrator.registry import Store
from orchestrator.spec import RunSpec
from orchestrator.verdicts import select_best, target_report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    train: Filtered
    domain: Filtered
    heldout: Filtered
    replay: Filtered | None = None  # general speech mixed into training batches (data.replay_*)

    def stats(self) -> dict:
        parts = {"train": self.train, "domain": self.domain, "heldout": self.heldout, "replay": self.replay}
        return {name: {"utterances": len(part.kept), "dropped_too_long": part.dropped_too_long}
                for name, part in parts.items() if part is not None}


def load_splits(spec: RunSpec) -> Splits:
    parts = {name: filter_by_duration(read_manifest(path), spec.data.max_seconds)
             for name, path in spec.manifests.items()}
    for path, part in zip(spec.manifests.values(), parts.values()):
        if part.dropped_too_long:
            log.warning("%s: dropped %d utterances over max_seconds=%s", path, part.dropped_too_long, spec.data.max_seconds)
        if not part.kept:
            raise OrchestratorError(f"no utterance is shorter than data.max_seconds={spec.data.max_seconds}",
                                    where=path, fix="raise data.max_seconds or use shorter audio")
    return Splits(**parts)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def check_output_dir(path: str) -> None:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OrchestratorError(f"output folder is not writable ({exc.strerror})", where=f"output_dir={path}",
                                fix="choose a writable folder: output_dir=/path/to/outputs") from None


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Held for a run's whole life: a run whose lock is free has no live process (same host)."""
    with open(run_dir / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OrchestratorError("this run is being trained by another live process", where=str(run_dir),
                                    fix="wait for it, or stop that process first") from None
        yield


def is_alive(run_dir: Path) -> bool:
    if not run_dir.exists():
        return False
    try:
        with run_lock(run_dir):
            return False
    except OrchestratorError:
        return True


def previous_run(spec: RunSpec, store: Store):
    """The identical run to skip (finished) or resume (interrupted, or `running` with a dead process)."""
    runs = store.runs_with_hash(spec.config_hash)
    if not runs or spec.rerun:
        return None
    last = runs[-1]
    run_dir = Path(spec.output_dir) / last.id
    if last.status == "running" and is_alive(run_dir):
        raise OrchestratorError(f"an identical run ({last.id}) is running now", where=str(run_dir),
                                fix="wait for it, or pass rerun=true to start another one")
    if last.status == "completed" or (last.status in ("interrupted", "running") and run_dir.exists()):
        return last
    return None


def run(spec: RunSpec, store: Store, *, progress: bool = True, sweep_id: str | None = None) -> str:
    """Train and evaluate one run, then check parity of its best adapter; returns its registry id.

    An identical configuration (same identity hash) that already finished is skipped; one that was
    interrupted or killed resumes from its last checkpoint; `rerun=true` forces a new run."""
    check_output_dir(spec.output_dir)
    previous = previous_run(spec, store)
    if previous is not None and previous.status == "completed":
        log.info("skipped: identical to run %s, which completed (rerun=true runs it again)", previous.id)
        return previous.id
    splits = load_splits(spec)
    device = modeling.resolve_device(spec.device)
    model, processor = modeling.load(spec.model, device)
    resolution = targets.resolve(model, spec.targets)
    torch.manual_seed(spec.optim.seed)
    peft_model = adapters.attach(model, spec.adapter, resolution)
    for name in resolution.empty_components:
        log.warning("targets: component %r contributes no module on %s", name, spec.model.id)

    if previous is not None:
        log.info("resuming run %s (%s)", previous.id, previous.status)
        store.reopen(previous.id)
        return _run_in(spec, store, previous.id, peft_model, processor, splits, device, progress)
    record = store.create_run(
        experiment=spec.experiment, config=spec.config, config_hash=spec.config_hash, model_id=spec.model.id,
        targets=resolution.names, target_summary=resolution.summary(), lr=spec.optim.lr,
        steps=spec.optim.steps, dora=spec.adapter.kind == "dora", git_commit=git_commit(),
        data_stats=splits.stats(), criteria=spec.config["criteria"], target_report=target_report(resolution),
        sweep_id=sweep_id)
    return _run_in(spec, store, record.id, peft_model, processor, splits, device, progress)


def _run_in(spec: RunSpec, store: Store, run_id: str, peft_model, processor, splits: Splits,
            device: torch.device, progress: bool) -> str:
    run_dir = Path(spec.output_dir) / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(run_dir), logging_redirect_tqdm():
            OmegaConf.save(OmegaConf.create(spec.config), run_dir / "config.yaml")
            _train(spec, store, run_id, run_dir, peft_model, processor, splits, device, progress)
            check_parity(spec, store, run_id, run_dir)
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted", "interrupted by the user (Ctrl-C); resume by running it again")
        raise
    except BaseException as exc:
        store.finish_run(run_id, "failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    store.finish_run(run_id, "completed")
    return run_id


def check_parity(spec: RunSpec, store: Store, run_id: str, run_dir: Path) -> None:
    """Reload `lora_adapter_best` from disk as `orchestrator eval` does and compare its WERs with
    the registry's (recorded as the `parity` check that criterion 7 reads)."""
    from orchestrator import inference

    run = store.get_run(run_id)
    best = next(a for a in run.artifacts if a.kind == "lora_adapter_best")
    interval = next(i for i in run.intervals if i.step == best.step)
    loaded = inference.load_adapter(Path(best.path), device=spec.device)
    domain = inference.evaluate_manifest(loaded, spec.eval.domain_manifest, progress=False)
    heldout = inference.evaluate_manifest(loaded, spec.eval.heldout_manifest, progress=False)
    passed = domain.wer == interval.domain_wer and heldout.wer == interval.heldout_wer
    store.add_check(run_id, "parity", passed, {
        "step": best.step, "sha256": best.sha256, "domain_wer": domain.wer, "heldout_wer": heldout.wer,
        "registry_domain_wer": interval.domain_wer, "registry_heldout_wer": interval.heldout_wer})
    log.info("parity of lora_adapter_best (step %d): %s", best.step, "reproduced" if passed else "MISMATCH")


def _train(spec: RunSpec, store: Store, run_id: str, run_dir: Path, model, processor, splits: Splits,
           device: torch.device, progress: bool) -> None:
    o = spec.optim
    bank = AudioBank(spec.data)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, spec.warmup_steps, o.steps)
    eval_steps = set(spec.eval_steps)
    start, consumed = 0, 0
    if checkpoint.exists(run_dir):  # resuming: continue exactly where the last interval left off
        state = checkpoint.load(run_dir, model=model, optimizer=optimizer, scheduler=scheduler)
        start, consumed = state.step, state.batches_consumed
        log.info("resuming %s from step %d", run_id, start)
    batches = itertools.islice(train_batches(splits.train.kept, o.batch_size, o.seed), consumed, None)

    def evaluate_interval(step: int, lr: float, train_loss: float | None) -> None:
        kw = dict(batch_size=spec.eval.batch_size, tokens_per_second=spec.model.tokens_per_second,
                  device=device, progress=progress)
        domain: EvalResult = evaluate(model, processor, bank, splits.domain.kept, desc=f"eval domain @{step}", **kw)
        heldout: EvalResult = evaluate(model, processor, bank, splits.heldout.kept, desc=f"eval heldout @{step}", **kw)
        store.add_interval(run_id, step=step, lr=lr, train_loss=train_loss, eval_loss=domain.loss,
                           domain_wer=domain.wer, heldout_wer=heldout.wer, domain_utts=domain.n,
                           heldout_utts=heldout.n, utterances={"domain": domain.utterances, "heldout": heldout.utterances})
        log.info("step %d: domain WER %.2f%%  heldout WER %.2f%%  eval loss %.4f",
                 step, 100 * domain.wer, 100 * heldout.wer, domain.loss)
        # lora_adapter_best: lowest domain WER among trained intervals inside the heldout guard
        pick = select_best(store.get_run(run_id).intervals, spec.criteria.max_heldout_regression)
        if pick is not None and pick.interval.step == step:
            digest = save_adapter(model, run_dir / "lora_adapter_best")
            store.add_artifact(run_id, kind="lora_adapter_best", path=str(run_dir / "lora_adapter_best"),
                               sha256=digest, step=step)
        checkpoint.save(run_dir, step=step, model=model, optimizer=optimizer, scheduler=scheduler,
                        batches_consumed=consumed)

    if start == 0:
        evaluate_interval(0, scheduler.get_last_lr()[0], None)
    losses: list[float] = []
    bar = tqdm(range(start + 1, o.steps + 1), desc=f"train {run_id}", unit="step", initial=start,
               total=o.steps, disable=not progress)
    for step in bar:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(o.grad_accum):
            loss = model(**model_inputs(processor, bank, next(batches), device)).loss / o.grad_accum
            consumed += 1
            loss.backward()
            step_loss += loss.item()
        if not math.isfinite(step_loss):
            raise OrchestratorError(f"non-finite loss at step {step}", where=f"run {run_id}",
                                    fix="lower optim.lr or check the training audio")
        torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        losses.append(step_loss)
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
        if step in eval_steps:
            evaluate_interval(step, lr, sum(losses) / len(losses))
            losses.clear()
    digest = save_adapter(model, run_dir / "lora_adapter_last")
    store.add_artifact(run_id, kind="lora_adapter_last", path=str(run_dir / "lora_adapter_last"),
                       sha256=digest, step=o.steps)
