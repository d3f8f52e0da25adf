"""`orchestrator eval`: WER of a saved adapter on a manifest, with its run's settings."""
from __future__ import annotations

import json
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")  # config/schema.Device, without importing Hydra here
PRECISIONS = ("fp32", "bf16", "fp16")  # config/schema.Precision


def register(sub) -> None:
    p = sub.add_parser("eval", help="WER of a saved adapter on a manifest, with its run's settings")
    p.add_argument("--adapter", required=True, type=Path, help="adapter folder, e.g. outputs/<run>/lora_adapter_best")
    p.add_argument("--manifest", required=True, type=Path, help="JSONL manifest to evaluate")
    p.add_argument("--model", help="base model id or folder (default: the run's)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--precision", choices=PRECISIONS, help="fp32, bf16 or fp16 autocast (default: the run's)")
    p.add_argument("--json", action="store_true",
                   help="wer (a fraction, as in the registry), eval_loss, utterances, manifest, adapter")


def run(args) -> None:
    from orchestrator.training.inference import evaluate_manifest, load_adapter

    loaded = load_adapter(args.adapter, model_id=args.model, device=args.device, precision=args.precision)
    result = evaluate_manifest(loaded, args.manifest, progress=not args.json)
    if args.json:
        print(json.dumps({"wer": result.wer, "eval_loss": result.loss, "utterances": result.n,
                          "manifest": str(args.manifest), "adapter": str(args.adapter)}))
    else:
        print(f"WER {100 * result.wer:.2f}%  utterances {result.n}  eval loss {result.loss:.4f}  ({args.manifest})")
