"""One run: data -> model + adapter -> train loop with interval evaluation -> registry + artifacts.

Order matters for failures: manifests, model and targets are checked before the registry gets a
row, so bad input leaves the registry unchanged; after that every interval is committed as it
happens and any exception marks the run `failed` (Ctrl-C: `interrupted`) with the reason.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import logging
import math
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from orchestrator.training.optim import build_optimizer, build_scheduler
from orchestrator.training.steps import Steps

from orchestrator.training import adapter as adapters, baseline_cache
from orchestrator.training import checkpoint, encoder_cache, eval_cache, modeling, targets
from orchestrator.training import precision as precisions
from orchestrator.training.telemetry import Telemetry, describe, reset_peak
from orchestrator.training.pace import PARITY_SETS, Pace
from orchestrator.training.early_stopping import CHECK as EARLY_STOPPING, EarlyStopping
from orchestrator.registry import liveness
from orchestrator.artifacts.atomic import check_output_dir, save_adapter, write_text_atomic
from orchestrator.artifacts.run_folder import BEST_ADAPTER, LAST_ADAPTER, RunFolder
from orchestrator.data.batching import AudioBank, training_stream
from orchestrator.data.prefetch import Prefetcher
from orchestrator.errors import OrchestratorError
from orchestrator.training.evaluate import EvalResult, batch_seconds_for, evaluate
from orchestrator.data.manifest import TRAINING_SPLITS, Filtered, load_splits as read_splits, overlap
from orchestrator.data.manifest_compare import orthography, orthography_differences, shared_speakers
from orchestrator.data.speakers import speaker_ids
from orchestrator.registry import Interval, RunStatus, Store
from orchestrator.config.spec import RunSpec
from orchestrator.selection import select_best
from orchestrator.training.targets import target_report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    train: Filtered
    domain: Filtered
    heldout: Filtered
    replay: Filtered | None = None  # general speech mixed into training batches (data.replay_*)
    select: Filtered | None = None  # the dev set that picks the checkpoint (eval.select_manifest)
    speakers: dict | None = None  # {split: speaker id per utterance}, for the judge's block bootstrap

    def stats(self) -> dict:
        parts = {"train": self.train, "domain": self.domain, "heldout": self.heldout, "replay": self.replay,
                 "select": self.select}
        stats = {name: part.counts() for name, part in parts.items() if part is not None}
        return {**stats, "speakers": self.speakers} if self.speakers else stats


def load_splits(spec: RunSpec) -> Splits:
    """Every manifest read and its audio decoded once (manifest.load_splits), before the registry
    gets a row: bad input is refused naming its line; what is dropped or converted is counted
    and logged (and kept in the run's data_stats)."""
    d = spec.data
    parts = read_splits(spec.manifests, d)
    for name, path in spec.manifests.items():
        part = parts[name]
        if part.dropped_too_long:
            log.warning("%s: dropped %d utterances over max_seconds=%s", path, part.dropped_too_long, d.max_seconds)
        if part.skipped_silent:
            log.warning("%s: skipped %d all-silent utterances (data.on_silent=skip)", path, part.skipped_silent)
        if part.resampled or part.downmixed:
            log.warning("%s: %d utterances resampled to %d Hz, %d down-mixed to mono", path, part.resampled,
                        d.sample_rate, part.downmixed)
    for name in ("domain", "heldout"):
        shared = overlap(parts["train"], parts[name])
        if shared:
            log.warning("%s (%s): %d of %d utterances are also in the training manifest (same audio) and %d more "
                        "share a transcript with it; their WER flatters the model (fix: rebuild it with "
                        "`orchestrator manifest expand --exclude %s`)", spec.manifests[name], name,
                        shared.same_audio, shared.total, shared.same_text, spec.manifests["train"])
    _compare_with_training(spec, parts)
    speakers = {name: ids for name in ("domain", "heldout", "select") if name in parts
                and (ids := speaker_ids(parts[name].kept)) is not None}
    return Splits(**parts, speakers=speakers or None)


def _compare_with_training(spec: RunSpec, parts: dict[str, Filtered]) -> None:
    """Warn of speakers an evaluation manifest shares with the training manifest (refused by
    read_splits with data.speaker_overlap=refuse) and of transcripts written another way; see
    data/manifest_compare.py for the rules."""
    train = parts["train"].kept
    written = orthography(train)
    for name, path in spec.manifests.items():
        if name in TRAINING_SPLITS:
            continue
        shared = shared_speakers(train, parts[name].kept)
        if shared:
            log.warning("%s (%s): %s; its WER measures adaptation to known speakers (fix: split the manifests by "
                        "speaker; data.speaker_overlap=refuse makes this an error)", path, name, shared.describe())
        for difference in orthography_differences(written, orthography(parts[name].kept)):
            log.warning("%s (%s): orthography differs from the training manifest: %s (fix: write both the same "
                        "way)", path, name, difference)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Held for a run's whole life: a run whose lock is free has no live process (same host)."""
    with open(RunFolder.at(run_dir).lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OrchestratorError("this run is being trained by another live process", where=str(run_dir),
                                    fix="wait for it, or stop that process first") from None
        yield


def is_alive(run_dir: Path) -> bool:
    """A live process on this host holds the run's lock (liveness.lock_held asks without taking it)."""
    return liveness.lock_held(run_dir) is True


def previous_run(spec: RunSpec, store: Store):
    """The identical run to skip (finished) or resume (interrupted, or `running` with a dead process)."""
    runs = store.runs_with_hash(spec.config_hash)
    if not runs or spec.rerun:
        return None
    last = runs[-1]
    run_dir = RunFolder(spec.output_dir, last.id).path
    if last.status == RunStatus.RUNNING and is_alive(run_dir):
        raise OrchestratorError(f"an identical run ({last.id}) is running now", where=str(run_dir),
                                fix="wait for it, or pass rerun=true to start another one")
    if last.status == RunStatus.COMPLETED or (last.status in (RunStatus.INTERRUPTED, RunStatus.RUNNING)
                                              and run_dir.exists()):
        return last
    return None


# Called after each evaluation is recorded, with every interval so far; a returned reason stops
# the run after that interval (status `pruned`, the reason kept as its stop_reason).
IntervalHook = Callable[[list[Interval]], "str | None"]
PROGRESS_EVERY_S = 2.0  # at most this often the trainer writes its step and loss (store.progress)


class Stop(NamedTuple):
    """Why a run ended before optim.steps: early stopping (`completed`) or a hook (`pruned`)."""

    status: RunStatus
    reason: str


def run(spec: RunSpec, store: Store, *, progress: bool = True, sweep_id: str | None = None,
        resume=None, on_interval: IntervalHook | None = None) -> str:
    """Train and evaluate one run, then check parity of its best adapter; returns its registry id.

    An identical configuration (same identity hash) that already finished is skipped; one that was
    interrupted or killed resumes from its last checkpoint; `rerun=true` forces a new run.
    `resume`: the registry Run to continue (checked by orchestrator.resume), instead of looking one up.
    `on_interval`: see IntervalHook (a tune study prunes its trials through it)."""
    check_output_dir(spec.output_dir)
    previous = resume if resume is not None else previous_run(spec, store)
    if previous is not None and previous.status == RunStatus.COMPLETED:
        log.info("skipped: identical to run %s, which completed (rerun=true runs it again)", previous.id)
        return previous.id
    splits = load_splits(spec)
    device = modeling.resolve_device(spec.device)
    precisions.setup(device, spec.precision)  # refuses a precision the device lacks, before any row
    model, processor = modeling.load(spec.model, device)
    resolution = targets.resolve(model, spec.targets)
    torch.manual_seed(spec.optim.seed)
    peft_model = adapters.attach(model, spec.adapter, resolution)
    log.info("adapter: %s r %d on %d modules, %s trainable parameters%s", spec.adapter.kind, spec.adapter.r,
             len(resolution.names), f"{adapters.trainable_count(peft_model):,}",
             " (q/k/v of each attention block share one A)" if spec.adapter.share_a else "")
    for name in resolution.empty_components:
        log.warning("targets: component %r contributes no module on %s", name, spec.model.id)

    if previous is not None:
        log.info("resuming run %s (%s)", previous.id, previous.status)
        store.reopen(previous.id, device=describe(device))
        return _run_in(spec, store, previous.id, peft_model, processor, splits, device, progress, on_interval)
    record = store.create_run(
        experiment=spec.experiment, config=spec.config, config_hash=spec.config_hash, model_id=spec.model.id,
        targets=resolution.names, target_summary=resolution.summary(), lr=spec.optim.lr,
        steps=spec.optim.steps, dora=spec.adapter.kind == "dora", git_commit=git_commit(),
        data_stats=splits.stats(), criteria=spec.config["criteria"], target_report=target_report(resolution),
        sweep_id=sweep_id, device=describe(device), precision=str(spec.precision))
    return _run_in(spec, store, record.id, peft_model, processor, splits, device, progress, on_interval)


def _run_in(spec: RunSpec, store: Store, run_id: str, peft_model, processor, splits: Splits,
            device: torch.device, progress: bool, on_interval: IntervalHook | None = None) -> str:
    folder = RunFolder(spec.output_dir, run_id)
    run_dir = folder.path
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(run_dir), logging_redirect_tqdm():
            write_text_atomic(folder.config, OmegaConf.to_yaml(OmegaConf.create(spec.config)))
            sets = ("domain", "heldout", *(("select",) if splits.select is not None else ()))
            pace = Pace(spec.optim.steps, spec.eval_steps, sets)  # its forecast, for `orchestrator watch`
            stop = _train(spec, store, run_id, run_dir, peft_model, processor, splits, device, progress, on_interval,
                          pace)
            if stop is None or stop.status == RunStatus.COMPLETED:  # a pruned run is no candidate: not re-checked
                check_parity(spec, store, run_id, run_dir, pace)
    except KeyboardInterrupt:
        store.finish_run(run_id, RunStatus.INTERRUPTED, "interrupted by the user (Ctrl-C); resume by running it again")
        raise
    except BaseException as exc:
        store.finish_run(run_id, RunStatus.FAILED, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    if stop is not None:
        log.info("run %s stopped early: %s", run_id, stop.reason)
        store.finish_run(run_id, stop.status, stop_reason=stop.reason)
    else:
        store.finish_run(run_id, RunStatus.COMPLETED)
    return run_id


def _checkpoint_on_interrupt(run_dir: Path, step: int, saved: bool, **state) -> None:
    """After a Ctrl-C held to the end of `step`: checkpoint (unless the interval just did), then stop."""
    if not saved:
        try:
            checkpoint.save(run_dir, step=step, **state)
        except OrchestratorError as exc:  # still resumable, from the last interval's checkpoint
            log.warning("Ctrl-C: %s; the run resumes from its last interval", exc)
        else:
            log.warning("Ctrl-C: checkpoint of step %d saved; run the same command again to resume", step)
    raise KeyboardInterrupt


def check_parity(spec: RunSpec, store: Store, run_id: str, run_dir: Path, pace: Pace) -> None:
    """Reload `lora_adapter_best` (BEST_ADAPTER) from disk as `orchestrator eval` does and compare its
    WERs with the registry's (recorded as the `parity` check that criterion 7 reads)."""
    from orchestrator.training import inference

    run = store.get_run(run_id)
    best = run.artifact(BEST_ADAPTER)
    interval = next(i for i in run.intervals if i.step == best.step)
    loaded = inference.load_adapter(Path(best.path), device=spec.device)
    last = run.intervals[-1].step
    found = {}
    for i, split in enumerate(PARITY_SETS):  # WERs only: parity does not compare the loss (no loss pass)
        store.progress(run_id, step=last, phase=f"parity {split}",
                       seconds_left=pace.seconds_left(last, PARITY_SETS[i:], parity=False))
        found[split] = inference.evaluate_manifest(loaded, getattr(spec.eval, f"{split}_manifest"), progress=False,
                                                   with_loss=False)
    domain, heldout = found["domain"], found["heldout"]
    passed = domain.wer == interval.domain_wer and heldout.wer == interval.heldout_wer
    store.add_check(run_id, "parity", passed, {
        "step": best.step, "sha256": best.sha256, "domain_wer": domain.wer, "heldout_wer": heldout.wer,
        "registry_domain_wer": interval.domain_wer, "registry_heldout_wer": interval.heldout_wer})
    log.info("parity of %s (step %d): %s", BEST_ADAPTER, best.step, "reproduced" if passed else "MISMATCH")


def _train(spec: RunSpec, store: Store, run_id: str, run_dir: Path, model, processor, splits: Splits,
           device: torch.device, progress: bool, on_interval: IntervalHook | None, pace: Pace) -> Stop | None:
    """The train loop; returns why it stopped before optim.steps (early stopping, `on_interval`), else
    None. `pace` is told every training and evaluation time it measures (its forecast goes with
    each progress write)."""
    o = spec.optim
    telemetry = Telemetry(device)
    reset_peak(device)
    known = {path: digest for part in (splits.train, splits.domain, splits.heldout, splits.replay, splits.select)
             if part is not None for path, digest in part.sha256.items()}  # hashed by load_split already
    bank = AudioBank(spec.data, cache_dir=RunFolder(spec.output_dir, run_id).audio_cache, digests=known)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, o)
    scheduler = build_scheduler(optimizer, spec)
    steps = Steps(model, optimizer, scheduler, params, grad_accum=o.grad_accum, grad_clip=o.grad_clip,
                  device=device, precision=spec.precision, run_id=run_id)
    eval_steps, checkpoint_steps = set(spec.eval_steps), set(spec.checkpoint_steps)
    start, consumed, resumed_losses = 0, 0, ()
    if checkpoint.exists(run_dir):  # resuming: continue exactly where the last checkpoint left off
        state = checkpoint.load(run_dir, model=model, optimizer=optimizer, scheduler=scheduler)
        start, consumed, resumed_losses = state.step, state.batches_consumed, state.interval_losses
        log.info("resuming %s from step %d", run_id, start)
    replay = splits.replay.kept if splits.replay is not None else ()
    stream = training_stream(splits.train.kept, o.batch_size, o.seed, batching=spec.data.batching,
                             replay=replay, replay_fraction=spec.data.replay_fraction)
    batches = itertools.islice(stream, consumed, None)  # a pure function of data + seed: resume is exact
    for part in (splits.train.kept, replay):  # decoded once into the disk cache, one entry per manifest
        bank.prepare(u.audio_filepath for u in part)
    amp = functools.partial(precisions.autocast, device, spec.precision)
    with amp():  # cached encoder states are computed as the ordinary step would compute them
        step_inputs = encoder_cache.step_inputs(o, model, processor, bank, [*splits.train.kept, *replay], device,
                                                shared_dir=Path(spec.output_dir) / encoder_cache.SHARED_DIR)

    recorded = store.get_run(run_id)
    intervals: list[Interval] = list(recorded.intervals)  # so far (a resumed run has some)
    stopper = None
    if o.early_stopping.enabled:  # its history so far is in the registry (the check), up to the checkpoint
        found = recorded.check(EARLY_STOPPING)
        stopper = EarlyStopping.resumed(o.early_stopping, found.details if found else None, upto=start)
    eval_kw = dict(batch_size=spec.eval.batch_size, tokens_per_second=spec.model.tokens_per_second, device=device,
                   progress=progress, batch_seconds=batch_seconds_for(spec.eval, device), precision=spec.precision,
                   encoder_cache=eval_cache.for_run(model, spec.eval.cache_encoder, spec.eval.cache_encoder_max_mb))

    shared = baseline_cache.for_run(model, spec.eval.share_baseline, spec.output_dir) if start == 0 else None
    heldout_loss = stopper is not None and stopper.needs_heldout_loss
    # the registry keeps the domain eval loss only (criterion 3), so heldout skips the loss pass
    # unless early stopping on the dev loss (domain + heldout) needs it; the dev set: WER only
    sets = {"domain": (splits.domain.kept, True), "heldout": (splits.heldout.kept, heldout_loss),
            **({"select": (splits.select.kept, False)} if splits.select is not None else {})}

    def measure(split: str, step: int) -> EvalResult:
        utts, with_loss = sets[split]
        store.progress(run_id, step=step, phase=f"eval {split} @{step}",
                       seconds_left=pace.seconds_left(step, pace.sets[pace.sets.index(split):]))
        result = evaluate(model, processor, bank, utts, desc=f"eval {split} @{step}", **{**eval_kw, "with_loss": with_loss})
        telemetry.add_eval(result.audio_seconds, result.seconds)
        pace.evaluated(split, result.seconds)
        return result

    def baseline() -> dict[str, EvalResult]:
        """Step 0: from the shared baseline when this run's step 0 is its base model's (baseline_cache.py)."""
        if shared is None:
            return {split: measure(split, 0) for split in sets}
        base = baseline_cache.base_digest(model)
        settings = {k: v for k, v in eval_kw.items() if k not in ("progress", "encoder_cache", "device")}
        settings |= {"device": device.type, "audio": [spec.data.sample_rate, spec.data.rms_target]}
        jobs = {split: (baseline_cache.key(base, utts, known, {**settings, "with_loss": with_loss}),
                        functools.partial(measure, split, 0)) for split, (utts, with_loss) in sets.items()}
        found = shared.results(jobs)
        for split, result in found.items():  # read ones: the time of the run that computed them
            pace.evaluated(split, result.seconds)
        log.info("shared baseline: step 0 of %d set(s) read from %s, %d computed here",
                 shared.read, shared.folder, shared.computed)
        return found

    def evaluate_interval(step: int, lr: float, train_loss: float | None) -> Stop | None:
        found = baseline() if step == 0 else {split: measure(split, step) for split in sets}
        domain, heldout, dev = found["domain"], found["heldout"], found.get("select")
        point = Interval(step=step, lr=lr, train_loss=train_loss, eval_loss=domain.loss, domain_wer=domain.wer,
                         heldout_wer=heldout.wer, domain_utts=domain.n, heldout_utts=heldout.n,
                         select_wer=None if dev is None else dev.wer, select_utts=None if dev is None else dev.n)
        store.add_interval(run_id, **{k: v for k, v in point._asdict().items() if k != "created_at"},
                           utterances={"domain": domain.utterances, "heldout": heldout.utterances,
                                       **({"select": dev.utterances} if dev else {})})
        store.record_telemetry(run_id, **telemetry.values())
        intervals[:] = [i for i in intervals if i.step != step] + [point]  # in memory: no re-read per interval
        log.info("step %d: domain WER %.2f%%  heldout WER %.2f%%  eval loss %.4f",
                 step, 100 * domain.wer, 100 * heldout.wer, domain.loss)
        # lora_adapter_best: lowest dev-set (else domain) WER among trained intervals inside the heldout guard
        pick = select_best(intervals, spec.criteria.max_heldout_regression)
        if pick is not None and pick.interval.step == step:
            best = RunFolder.at(run_dir).best_adapter
            digest = save_adapter(model, best)
            store.add_artifact(run_id, kind=BEST_ADAPTER, path=str(best),
                               sha256=digest, step=step)
        stop = None
        if stopper is not None:  # recorded before the checkpoint: a resume re-evaluates what comes after it
            early = stopper.update(step, stopper.value(domain_loss=domain.loss, heldout_loss=heldout.loss,
                                                       select_wer=point.select_wer))
            store.add_check(run_id, EARLY_STOPPING, True, stopper.details(early))
            stop = Stop(RunStatus.COMPLETED, early) if early else None
        checkpoint.save(run_dir, step=step, model=model, optimizer=optimizer, scheduler=scheduler,
                        batches_consumed=consumed)
        model.train()  # evaluation left it in eval mode
        # the hook sees every interval; pruning wins over early stopping at the same interval
        pruned = on_interval(list(intervals)) if on_interval is not None and step > 0 else None
        return Stop(RunStatus.PRUNED, pruned) if pruned else stop

    if start == 0:
        evaluate_interval(0, scheduler.get_last_lr()[0], None)  # the baseline: never a stop
    losses: list[float] = list(resumed_losses)  # since the last evaluation (kept by a Ctrl-C checkpoint)
    bar = tqdm(range(start + 1, o.steps + 1), desc=f"train {run_id}", unit="step", initial=start,
               total=o.steps, disable=not progress)
    beat = time.monotonic()
    guard = checkpoint.InterruptGuard()  # Ctrl-C inside a step: finish it, checkpoint, stop
    stop, step = None, start
    model.train()
    mark, last_lr = telemetry.clock(), scheduler.get_last_lr()[0]

    def read_steps() -> None:
        """The host's look at the steps since the last one (steps.py): losses, progress, throughput."""
        nonlocal mark, last_lr, beat
        utterances, records = steps.utterances, steps.read()
        if records:
            now = telemetry.clock()
            telemetry.add_train(utterances, now - mark)
            pace.trained_for(len(records), now - mark)
            steps.utterances, mark = 0, now
            losses.extend(r.loss for r in records)
            last_lr = records[-1].lr
            bar.set_postfix(loss=f"{records[-1].loss:.4f}", lr=f"{records[-1].lr:.2e}")
            if time.monotonic() - beat >= PROGRESS_EVERY_S:  # where it is, for `orchestrator watch` (and alive)
                store.progress(run_id, step=records[-1].step, phase="train", loss=records[-1].loss,
                               seconds_left=pace.seconds_left(records[-1].step))
                beat = time.monotonic()

    with Prefetcher(batches, lambda batch: (len(batch), step_inputs(batch)), spec.data.prefetch, amp) as feed, guard:
        for step in bar:
            with guard.step():
                steps.run(step, feed)
                consumed += o.grad_accum
            if time.monotonic() - beat >= liveness.HEARTBEAT_EVERY_S:  # alive, for `runs` on other hosts
                store.heartbeat(run_id)
                beat = time.monotonic()
            at_eval = step in eval_steps
            if at_eval or guard.requested or step % o.log_every == 0 or step in checkpoint_steps:
                read_steps()
            if at_eval:
                stop = evaluate_interval(step, last_lr, sum(losses) / len(losses))
                losses.clear()
                mark = telemetry.clock()
            elif step in checkpoint_steps:  # before eval.start: nothing lost if the run dies here
                checkpoint.save(run_dir, step=step, model=model, optimizer=optimizer, scheduler=scheduler,
                                batches_consumed=consumed, interval_losses=losses)
            if guard.requested:
                _checkpoint_on_interrupt(run_dir, step, at_eval, model=model, optimizer=optimizer,
                                         scheduler=scheduler, batches_consumed=consumed, interval_losses=losses)
            if stop is not None:
                break
    if steps.skipped:
        log.warning("fp16: the gradient scaler skipped %d steps whose gradients overflowed", steps.skipped)
    last = RunFolder.at(run_dir).last_adapter
    digest = save_adapter(model, last)
    store.add_artifact(run_id, kind=LAST_ADAPTER, path=str(last),
                       sha256=digest, step=step)
    store.record_telemetry(run_id, **telemetry.values())
    return stop
