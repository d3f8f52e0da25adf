"""The step-0 evaluation of a base model, computed once and shared by every run that would compute it.

Every run evaluates its model before training (step 0: the baseline its verdicts compare against).
Under a plain LoRA adapter that evaluation is the base model's own, to the bit: lora_B starts at
zero, so each adapted layer adds exactly 0 whatever its targets, rank or A. Runs on the same base
weights, evaluation sets and settings (a sweep, a campaign, the seeds of a group) therefore compute
the same bytes; the first one stores each set's result and the others read it
(`eval.share_baseline=auto`, the default; `off` computes it in every run).

The key of a set's entry hashes everything its result depends on: the base weights as loaded
(every tensor that is not an adapter's, by content), the set's utterances (path, text and audio
digest, in order), the audio settings, the evaluation settings (batch size or seconds, token
budget, precision, device type, loss or not), the library versions and the source of the code
that decodes and scores. A DoRA adapter (its magnitude re-normalises the weights: equal in exact
arithmetic, not in floating point), or a LoRA whose B is not zero at step 0, computes its own.
tests/test_baseline_cache.py holds a shared step 0 to the one a run computes itself.

Entries live in `<output_dir>/.baseline_cache/`, one JSON file per set, written atomically.
Parallel runs split the work: each takes the first set nobody is computing (its lock free),
and waits at the end for the sets another run took; a lock dies with its process, so a crashed
run's set is computed by whoever waits for it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from orchestrator.artifacts.atomic import write_text_atomic
from orchestrator.training.evaluate import EvalResult, UtteranceResult

log = logging.getLogger(__name__)

CACHE_DIR = ".baseline_cache"  # under the output folder, beside the run folders and .audio_cache
# the code whose output an entry is: a change to any of these files makes new keys
SOURCES = ("training/evaluate.py", "training/inference.py", "training/modeling.py", "data/batching.py",
           "data/audio.py", "data/textnorm.py", "training/precision.py")


def ineligible(model: nn.Module) -> str | None:
    """Why `model`'s step-0 outputs may differ from its base model's (None: they cannot)."""
    from peft.tuners.lora import LoraLayer

    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if any(module.use_dora.values()):
            return f"{name} is a DoRA layer (its magnitude re-normalises the weight)"
        for b in [*module.lora_B.values(), *module.lora_embedding_B.values()]:
            weight = b.weight if hasattr(b, "weight") else b
            if torch.count_nonzero(weight):
                return f"{name}'s lora_B is not zero"
    return None


def base_digest(model: nn.Module) -> str:
    """sha256 of the base weights as loaded: every tensor that is not an adapter's, by name (PEFT's
    `base_layer.` left out, so any targets give the same names) and content."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if "lora_" in name:
            continue
        h.update(name.replace("base_layer.", "").replace("base_model.model.", "").encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def code_digest(sources: tuple[str, ...] = SOURCES) -> str:
    import peft
    import transformers

    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(f"{torch.__version__} {transformers.__version__} {peft.__version__}".encode())
    for rel in sources:
        h.update((root / rel).read_bytes())
    return h.hexdigest()


def key(base: str, utts: Sequence, digests: dict[str, str], settings: dict) -> str:
    """The entry's name: a hash of the base weights, the set (order, text, audio) and the settings."""
    h = hashlib.sha256(json.dumps({"base": base, "code": code_digest(), "settings": settings}, sort_keys=True).encode())
    for u in utts:
        h.update(json.dumps([u.audio_filepath, u.text, digests.get(u.audio_filepath)]).encode())
    return h.hexdigest()[:32]


def _dump(result: EvalResult) -> str:
    return json.dumps({"wer": result.wer, "loss": None if math.isnan(result.loss) else result.loss,
                       "seconds": result.seconds, "audio_seconds": result.audio_seconds,
                       "utterances": [list(asdict(u).values()) for u in result.utterances]})


def _load(text: str) -> EvalResult:
    d = json.loads(text)
    return EvalResult(wer=d["wer"], loss=math.nan if d["loss"] is None else d["loss"],
                      utterances=tuple(UtteranceResult(*u) for u in d["utterances"]),
                      seconds=d["seconds"], audio_seconds=d["audio_seconds"])


@contextmanager
def locked(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold `path`'s lock (True), or, with wait=False and another process holding it, don't (False)."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class SharedBaseline:
    """Step-0 results of one base model, read from or written to `folder` by set key."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.read = self.computed = 0

    def _entry(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def _get(self, name: str) -> EvalResult | None:
        path = self._entry(name)
        if not path.exists():
            return None
        try:
            return _load(path.read_text())
        except (OSError, ValueError, KeyError, TypeError):  # damaged: computed again
            log.warning("baseline cache: %s is damaged; computing it again", path)
            return None

    def results(self, jobs: dict[str, tuple[str, Callable[[], EvalResult]]]) -> dict[str, EvalResult]:
        """{set: result} for jobs {set: (key, compute)}: each read if stored, else computed by this
        process or waited for while another computes it."""
        out: dict[str, EvalResult] = {}
        for wait in (False, True):  # first what nobody is computing, then wait for the rest
            for split, (name, compute) in jobs.items():
                if split in out:
                    continue
                found = self._get(name)
                if found is None:
                    with locked(self.folder / f"{name}.lock", wait=wait) as held:
                        if not held:
                            continue
                        found = self._get(name)  # finished while this process waited for the lock
                        if found is None:
                            found = compute()
                            write_text_atomic(self._entry(name), _dump(found))
                            self.computed += 1
                            out[split] = found
                            continue
                self.read += 1
                out[split] = found
        return {split: out[split] for split in jobs}


def for_run(model: nn.Module, setting: str, output_dir: str | Path) -> SharedBaseline | None:
    """The shared step-0 cache of a run (`eval.share_baseline`: auto | off), or None, logged either way."""
    if setting == "off":
        return None
    reason = ineligible(model)
    if reason is not None:
        log.info("shared baseline: off (%s); this run evaluates its own step 0", reason)
        return None
    return SharedBaseline(Path(output_dir) / CACHE_DIR)
