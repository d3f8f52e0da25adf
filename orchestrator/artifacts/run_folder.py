"""The layout of a run's output folder, in one place.

Everything a run leaves on disk lives under `<output_dir>/<run_id>/`:

    config.yaml             the composed config (what `orchestrator eval` and `resume` rebuild from)
    checkpoint.pt           the resumable state, rewritten at every evaluation interval
    .lock                   held (flock) by the training process for the run's whole life
    lora_adapter_best/      the adapter of the selected interval (PEFT save_pretrained folder)
    lora_adapter_last/      the adapter after the last step
    merged_model/           a model with the adapter merged in (written by an export)

and, shared by every run of one output folder, the decoded-audio cache `<output_dir>/.audio_cache/`.
The trainer writes these, the judge, `doctor`, liveness and `eval` read them: all of them ask a
`RunFolder` for the paths. Imports nothing but the standard library (the report reads it).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
LOCK = ".lock"
AUDIO_CACHE = ".audio_cache"  # under the output folder, beside the run folders
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # in an adapter folder (PEFT's name)
ADAPTER_CONFIG = "adapter_config.json"

# Artifact kinds: the registry's `artifacts.kind` and the folder name in the run folder.
BEST_ADAPTER = "lora_adapter_best"
LAST_ADAPTER = "lora_adapter_last"
MERGED_MODEL = "merged_model"
ADAPTER_KINDS = (BEST_ADAPTER, LAST_ADAPTER)  # what a completed run must have recorded


def audio_cache_dir(output_dir: str | os.PathLike[str]) -> Path:
    """The decoded-audio cache of an output folder (`outputs/` -> `outputs/.audio_cache/`)."""
    return Path(output_dir) / AUDIO_CACHE


@dataclass(frozen=True)
class RunFolder:
    """The paths of run `run_id` under `output_dir` (nothing is created or checked here)."""

    output_dir: Path
    run_id: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dir", Path(self.output_dir))

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> RunFolder:
        """The RunFolder whose folder is `path` (`<output_dir>/<run_id>`)."""
        path = Path(path)
        return cls(path.parent, path.name)

    @classmethod
    def of_adapter(cls, adapter_dir: str | os.PathLike[str]) -> RunFolder:
        """The RunFolder an adapter folder (`<output_dir>/<run_id>/lora_adapter_*`) lies in."""
        return cls.at(Path(adapter_dir).parent)

    @property
    def path(self) -> Path:
        return self.output_dir / self.run_id

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def best_adapter(self) -> Path:
        return self.artifact(BEST_ADAPTER)

    @property
    def last_adapter(self) -> Path:
        return self.artifact(LAST_ADAPTER)

    @property
    def merged(self) -> Path:
        return self.artifact(MERGED_MODEL)

    @property
    def audio_cache(self) -> Path:
        return audio_cache_dir(self.output_dir)

    def artifact(self, kind: str) -> Path:
        """The folder of artifact `kind` (e.g. BEST_ADAPTER) in this run folder."""
        return self.path / kind
