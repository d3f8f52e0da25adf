"""`orchestrator transcribe`: decode audio files with a saved adapter, one `path<TAB>text` line each."""
from __future__ import annotations

from pathlib import Path

from orchestrator.commands.eval import DEVICES, PRECISIONS


def register(sub) -> None:
    p = sub.add_parser("transcribe", help="decode audio files with a saved adapter: one `path<TAB>text` line each")
    p.add_argument("--adapter", required=True, type=Path)
    p.add_argument("audio", nargs="+", help="audio files")
    p.add_argument("--model", help="base model id or folder (default: the run's)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--precision", choices=PRECISIONS, help="fp32, bf16 or fp16 autocast (default: the run's)")


def run(args) -> None:
    from orchestrator.data.audio import audio_info

    for path in args.audio:  # fail before loading a model
        audio_info(path)
    from orchestrator.training.inference import load_adapter, transcribe

    loaded = load_adapter(args.adapter, model_id=args.model, device=args.device, precision=args.precision)
    for path, text in zip(args.audio, transcribe(loaded, args.audio)):
        print(f"{path}\t{' '.join(text.splitlines()).replace(chr(9), ' ')}")
