"""`orchestrator export RUN [--merge]`: a run's adapter as a folder other tools load.

With `--merge` the adapter is folded into the base weights (PEFT's `merge_and_unload`) and saved
with `save_pretrained`, processor included: `AutoModelForSpeechSeq2Seq.from_pretrained(folder)`
loads it with no PEFT installed. Without it, the PEFT adapter folder is copied with the
processor beside it. Either way the run's config travels as `orchestrator_config.yaml`, so
`orchestrator eval --adapter FOLDER` scores it with the run's settings (training/inference.py),
and `orchestrator_export.json` says where it came from. The folder is written as `<out>.tmp`
and moved into place, so a failed export leaves the previous one.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.artifacts.atomic import replace_dir, sha256_file
from orchestrator.artifacts.run_folder import ADAPTER_WEIGHTS, MERGED_MODEL, RunFolder
from orchestrator.errors import OrchestratorError
from orchestrator.registry import Store

EXPORT_INFO = "orchestrator_export.json"
PLAIN_EXPORT = "adapter_export"  # in the run folder, beside merged_model/
MERGED_WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class Exported:
    path: str
    run_id: str
    adapter: str  # lora_adapter_best | lora_adapter_last
    step: int | None
    adapter_sha256: str
    merged: bool
    weights_sha256: str  # of model.safetensors (merged) or adapter_model.safetensors


def default_out(adapter_dir: Path, merge: bool) -> Path:
    """In the adapter's run folder: `merged_model/` or `adapter_export/`."""
    return RunFolder.of_adapter(adapter_dir).artifact(MERGED_MODEL if merge else PLAIN_EXPORT)


def export_run(store: Store, run_id: str, *, merge: bool, out: Path | None = None, which: str = "best",
               device: str = "cpu") -> Exported:
    """Write the run's `lora_adapter_<which>` as a folder (merged into the base with `merge`)."""
    from orchestrator.training import inference

    kind = f"lora_adapter_{which}"
    artifact = store.get_run(run_id).artifact(kind)
    if artifact is None:
        raise OrchestratorError(f"run {run_id} has no {kind}", where=run_id,
                                fix="export a run that trained (see `orchestrator runs`), or choose --adapter last")
    adapter = Path(artifact.path)
    weights = adapter / ADAPTER_WEIGHTS
    if not weights.is_file() or sha256_file(weights) != artifact.sha256:
        raise OrchestratorError(f"{kind} is missing or differs from what the registry recorded", where=str(adapter),
                                fix="run `orchestrator doctor` to see what happened to the run folder")
    dest = Path(out) if out is not None else default_out(adapter, merge)
    dest.parent.mkdir(parents=True, exist_ok=True)
    loaded = inference.load_adapter(adapter, device=device)

    def fill(tmp: Path) -> Exported:
        if merge:
            # merge_and_unload folds B @ A * scale into each target's weight and drops the wrappers
            loaded.peft_model.merge_and_unload().save_pretrained(tmp)
            digest = sha256_file(tmp / MERGED_WEIGHTS)
        else:
            shutil.copytree(adapter, tmp)
            digest = artifact.sha256
        loaded.processor.save_pretrained(tmp)
        if loaded.run_config is not None:
            shutil.copyfile(loaded.run_config, tmp / inference.EXPORT_CONFIG)
        info = Exported(str(dest), run_id, kind, artifact.step, artifact.sha256, merge, digest)
        (tmp / EXPORT_INFO).write_text(json.dumps(asdict(info), indent=2) + "\n")
        return info

    info = replace_dir(dest, fill)  # the previous export stays whole until the new one is complete
    return info
