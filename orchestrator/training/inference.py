"""Evaluate or use a saved adapter exactly as its run did: `orchestrator eval` and `transcribe`.

`load_adapter` reads the run's own `config.yaml` (saved beside the adapter by train.py), so the
model id, decoding budget, audio settings and eval batch size are the run's; the base model and
processor come through modeling.load (the same from_pretrained path), the adapter through PEFT.
`evaluate_manifest` then runs the trainer's code path (manifest.load_splits, as an evaluation split ->
evaluate.evaluate), which makes its WER the registry's, bit for bit, on the same device; its audio
comes from the run's decoded-audio cache (`<output_dir>/.audio_cache`), identical to load_audio.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from orchestrator.training import modeling
from orchestrator.training import precision as precisions
from orchestrator.data.audio import audio_info
from orchestrator.artifacts.run_folder import ADAPTER_CONFIG, BEST_ADAPTER, CONFIG as RUN_CONFIG, RunFolder
from orchestrator.data.batching import AudioBank
from orchestrator.errors import OrchestratorError
from orchestrator.training.evaluate import EvalResult, batch_seconds_for, decode, evaluate
from orchestrator.data.manifest import Utterance, load_splits
from orchestrator.config.schema import DataConf, EvalConf, ModelConf

log = logging.getLogger(__name__)

EXPORT_CONFIG = "orchestrator_config.yaml"  # the run's config.yaml, inside a folder `orchestrator export` wrote


@dataclass(frozen=True)
class Loaded:
    """A base model with its adapter, ready to decode, and the run settings to decode with."""

    peft_model: Any  # peft.PeftModel (or a merged plain model: load_merged), eval mode, on `device`
    processor: Any
    model: ModelConf
    data: DataConf
    eval: EvalConf
    device: torch.device
    adapter_dir: Path
    run_config: Path | None  # the config.yaml the settings came from; None: schema defaults
    audio_cache: Path | None  # the run's decoded-audio cache (<output_dir>/.audio_cache); None: in memory
    precision: str = "fp32"  # the run's (training/precision.py), unless the command overrides it

    def decoding(self) -> dict[str, Any]:
        """The keyword arguments of evaluate.decode / evaluate that make it decode as the run did."""
        return dict(batch_size=self.eval.batch_size, tokens_per_second=self.model.tokens_per_second,
                    device=self.device, batch_seconds=batch_seconds_for(self.eval, self.device),
                    precision=self.precision)

    def bank(self, digests: dict[str, str] | None = None) -> AudioBank:
        """The run's audio path and cache (`digests`: sha256 of files hashed already)."""
        return AudioBank(self.data, cache_dir=self.audio_cache, digests=digests)


def _section(cls, values: dict[str, Any] | None):
    """A schema dataclass from a saved config section; keys the schema no longer has are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in (values or {}).items() if k in names})


def run_settings(adapter_dir: Path) -> tuple[ModelConf, DataConf, EvalConf, Path | None, str]:
    """(model, data, eval) confs, config path and precision of the run that saved `adapter_dir`.

    From `<run>/config.yaml` (or the copy an export keeps inside the folder) when present, else
    the base model named in adapter_config.json with the schema defaults for everything else."""
    for run_config in (adapter_dir / EXPORT_CONFIG, RunFolder.of_adapter(adapter_dir).config):
        if run_config.is_file():
            cfg = OmegaConf.to_container(OmegaConf.load(run_config), resolve=True)
            return _section(ModelConf, cfg.get("model")), _section(DataConf, cfg.get("data")), \
                _section(EvalConf, cfg.get("eval")), run_config, str(cfg.get("precision") or "fp32")
    base = json.loads((adapter_dir / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise OrchestratorError(f"no {RUN_CONFIG} beside the adapter and no base model in its {ADAPTER_CONFIG}",
                                where=str(adapter_dir), fix="pass --model ID")
    log.warning("%s: no %s in the run folder; using base model %s and default settings",
                adapter_dir, RUN_CONFIG, base)
    return ModelConf(name=Path(base).name, id=base), DataConf(), EvalConf(), None, "fp32"


def load_adapter(adapter_dir: str | os.PathLike[str], *, model_id: str | None = None,
                 device: str = "auto", precision: str | None = None) -> Loaded:
    """The adapter at `adapter_dir` on its base model (or `model_id`), with its run's settings
    (`precision`: another than the run's); a merged model folder (`orchestrator export --merge`)
    loads without PEFT (load_merged)."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / ADAPTER_CONFIG).is_file() and (adapter_dir / EXPORT_CONFIG).is_file():
        return load_merged(adapter_dir, device=device, precision=precision)
    from peft import PeftModel

    if not (adapter_dir / ADAPTER_CONFIG).is_file():
        raise OrchestratorError(f"not an adapter folder (no {ADAPTER_CONFIG})", where=str(adapter_dir),
                                fix=f"point --adapter at a run's adapter, e.g. outputs/<run>/{BEST_ADAPTER}")
    model, data, eval_conf, run_config, run_precision = run_settings(adapter_dir)
    if model_id is not None:  # another base model: nothing to build, no revision of the old id
        model = dataclasses.replace(model, name=Path(model_id).name, id=model_id, revision=None, build=None)
    torch_device = modeling.resolve_device(device)
    precision = precision or run_precision
    precisions.setup(torch_device, precision)
    base, processor = modeling.load(model, torch_device)
    peft_model = PeftModel.from_pretrained(base, adapter_dir).to(torch_device).eval()
    if run_config is not None and OmegaConf.select(OmegaConf.load(run_config), "adapter.share_a", default=False):
        from orchestrator.training.adapter import tie_shared_a

        tie_shared_a(peft_model)  # saved under all three names, equal: one Parameter again, as in training
    # a run's folder is <output_dir>/<run>/, so its adapters share the cache the run trained with
    audio = None if run_config is None else RunFolder.of_adapter(adapter_dir).audio_cache
    return Loaded(peft_model, processor, model, data, eval_conf, torch_device, adapter_dir, run_config, audio,
                  precision)


def load_merged(folder: str | os.PathLike[str], *, device: str = "auto", precision: str | None = None) -> Loaded:
    """A merged model folder (`orchestrator export RUN --merge`) with its run's settings: plain
    transformers (modeling.load: AutoModelForSpeechSeq2Seq + AutoProcessor), no PEFT."""
    folder = Path(folder)
    model, data, eval_conf, run_config, run_precision = run_settings(folder)
    model = dataclasses.replace(model, id=str(folder), revision=None, build=None)
    torch_device = modeling.resolve_device(device)
    precision = precision or run_precision
    precisions.setup(torch_device, precision)
    net, processor = modeling.load(model, torch_device)
    return Loaded(net, processor, model, data, eval_conf, torch_device, folder, run_config, None, precision)


def evaluate_manifest(loaded: Loaded, manifest_path: str | os.PathLike[str], *,
                      progress: bool = True, with_loss: bool = True) -> EvalResult:
    """WER and (`with_loss`) eval loss of `manifest_path`, by the trainer's own path and settings."""
    # the runner's own reading of an evaluation manifest: same checks, same refusals, same drops
    part = load_splits({"eval": os.fspath(manifest_path)}, loaded.data)["eval"]
    if part.dropped_too_long:
        log.warning("%s: dropped %d utterances over max_seconds=%s", manifest_path, part.dropped_too_long,
                    loaded.data.max_seconds)
    return evaluate(loaded.peft_model, loaded.processor, loaded.bank(part.sha256), part.kept,
                    desc=f"eval {Path(manifest_path).name}", progress=progress, with_loss=with_loss,
                    **loaded.decoding())


def transcribe(loaded: Loaded, paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The decoded text of each audio file, in the order given, through evaluate.decode: same
    audio path, same longest-first batches and the same token budget as evaluation."""
    files = [os.path.abspath(p) for p in paths]
    utts = [Utterance(audio_filepath=f, text="", duration=audio_info(f)[0], line=i + 1)
            for i, f in enumerate(files)]
    return decode(loaded.peft_model, loaded.processor, AudioBank(loaded.data), utts,  # ad hoc files: not cached
                  with_loss=False, progress=False, **loaded.decoding()).texts
