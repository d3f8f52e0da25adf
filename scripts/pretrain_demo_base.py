"""Pretrain the demo's base model: a small Moonshine v2 trained from scratch on general espeak speech.

    python -m orchestrator.data.synth --set demo        # heldout + domain eval sets (manifests/demo)
    python -m orchestrator.data.synth --set pretrain    # 10,200 training utterances (data/pretrain)
    python scripts/pretrain_demo_base.py --out demo/base

Same code path as the real model: `MoonshineStreamingForConditionalGeneration` built from a
`MoonshineStreamingConfig`, the project's character tokenizer and processor, audio through
orchestrator.audio.load_audio, saved with save_pretrained and loaded back with from_pretrained.
Full training (no adapter), AdamW, one-cycle LR, batches of similar duration, and an auxiliary
CTC loss on the encoder (hybrid CTC/attention; without it the model sat at the language-model
floor for 3,000 steps). The CTC head is thrown away: the saved model is a plain Moonshine v2. Every
`--eval-every` steps it decodes heldout and domain samples and saves the model, so the newest
save is usable whenever the script is stopped.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path

import jiwer
import numpy as np
import torch
from transformers import (AutoModelForSpeechSeq2Seq, MoonshineStreamingConfig,
                          MoonshineStreamingForConditionalGeneration)

from orchestrator.data.audio import load_audio
from orchestrator.data.manifest import read_manifest
from orchestrator.training.modeling import char_tokenizer, streaming_processor
from orchestrator.data.textnorm import normalize

log = logging.getLogger("pretrain")


def build(hidden: int, layers: int, heads: int, seed: int) -> tuple[torch.nn.Module, object]:
    tokenizer = char_tokenizer()
    layer = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                 num_attention_heads=heads, num_key_value_heads=heads)
    windows = [[16, 4] if i % 2 == 0 else [16, 0] for i in range(layers)]
    config = MoonshineStreamingConfig(
        vocab_size=len(tokenizer), **layer, max_position_embeddings=512,
        encoder_config=dict(**layer, sliding_windows=windows),
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(seed)
    model = MoonshineStreamingForConditionalGeneration(config)
    model.generation_config.decoder_start_token_id = 1
    return model, streaming_processor(tokenizer)


def batches(durations: list[float], batch_size: int, rng: random.Random):
    """Endless epochs of batches of similar duration, in shuffled order."""
    order = sorted(range(len(durations)), key=lambda i: durations[i])
    while True:
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        rng.shuffle(chunks)
        yield from chunks
        # re-sort with jitter so batch membership changes between epochs
        order = sorted(range(len(durations)), key=lambda i: durations[i] + rng.uniform(-0.15, 0.15))


def inputs(processor, waves: list[np.ndarray], texts: list[str] | None):
    # lengths rounded up to 0.1 s: few distinct shapes, so oneDNN reuses its kernels
    feats = processor(audio=waves, sampling_rate=16000, return_tensors="pt", pad_to_multiple_of=1600)
    out = {"input_values": feats["input_values"], "attention_mask": feats["attention_mask"]}
    if texts is not None:
        tok = processor.tokenizer
        rows = [ids + [tok.eos_token_id] for ids in tok(texts, add_special_tokens=False).input_ids]
        width = max(map(len, rows))
        out["labels"] = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
    return out


@torch.no_grad()
def wer(model, processor, waves, texts, batch_size: int = 32) -> float:
    model.eval()
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    hyps = [""] * len(waves)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        feats = inputs(processor, [waves[j] for j in idx], None)
        budget = math.ceil(max(len(waves[j]) for j in idx) / 16000 * 20) + 4
        out = model.generate(**feats, max_new_tokens=budget, num_beams=1, do_sample=False)
        for j, text in zip(idx, processor.batch_decode(out, skip_special_tokens=True)):
            hyps[j] = text
    model.train()
    return jiwer.wer([normalize(t) for t in texts], [normalize(h) or "<empty>" for h in hyps])


def ctc_loss(head: torch.nn.Module, out, batch) -> torch.Tensor:
    """CTC of the encoder's frames (one per 320 samples) against the transcript without EOS."""
    frames = out.encoder_last_hidden_state
    log_probs = head(frames).log_softmax(-1).transpose(0, 1)  # (T, B, V)
    frame_lengths = (batch["attention_mask"].sum(-1) // 320).clamp(max=frames.shape[1])
    targets, target_lengths = [], []
    for row in batch["labels"]:
        ids = row[(row >= 0) & (row != 2)]
        targets.append(ids)
        target_lengths.append(len(ids))
    return torch.nn.functional.ctc_loss(log_probs, torch.cat(targets), frame_lengths,
                                        torch.tensor(target_lengths), blank=0, zero_infinity=True)


def load(manifest: str, limit: int | None = None):
    utts = read_manifest(manifest)[:limit]
    return [load_audio(u.audio_filepath) for u in utts], [u.text for u in utts]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", default="data/pretrain/train.jsonl")
    p.add_argument("--heldout", default="manifests/demo/heldout.jsonl")
    p.add_argument("--domain", default="manifests/demo/domain_eval.jsonl")
    p.add_argument("--out", default="demo/base")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--hidden", type=int, default=96)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-utts", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ctc-weight", type=float, default=0.3,
                   help="weight of an auxiliary CTC loss on the encoder (hybrid CTC/attention training; "
                        "the CTC head is discarded, the saved model is a plain Moonshine v2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for this size; 0: torch default)")
    p.add_argument("--time-only", type=int, default=0, help="time this many steps and exit")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(out / "pretrain.log")])
    log.info("args: %s", json.dumps(vars(args)))

    if args.threads:
        torch.set_num_threads(args.threads)
    model, processor = build(args.hidden, args.layers, args.heads, args.seed)
    log.info("parameters: %d", sum(p.numel() for p in model.parameters()))
    t0 = time.time()
    waves, texts = load(args.train)
    held_w, held_t = load(args.heldout, args.eval_utts)
    dom_w, dom_t = load(args.domain, args.eval_utts)
    log.info("loaded %d training utterances (%.1f h) in %.0f s", len(waves),
             sum(map(len, waves)) / 16000 / 3600, time.time() - t0)

    # blank = <pad> (id 0), which never appears inside a transcript
    ctc_head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size)
    params = [*model.parameters(), *ctc_head.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    rng = random.Random(args.seed)
    stream = batches([len(w) for w in waves], args.batch_size, rng)
    model.train()
    t0, losses = time.time(), []
    for step in range(1, args.steps + 1):
        idx = next(stream)
        batch = inputs(processor, [waves[i] for i in idx], [texts[i] for i in idx])
        result = model(**batch)
        loss = result.loss
        if args.ctc_weight:
            loss = (1 - args.ctc_weight) * loss + args.ctc_weight * ctc_loss(ctc_head, result, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if args.time_only and step == args.time_only:
            log.info("%.3f s/step", (time.time() - t0) / step)
            return
        if step % 100 == 0:
            log.info("step %d  loss %.4f  lr %.2e  %.2f s/step", step, np.mean(losses), sched.get_last_lr()[0],
                     (time.time() - t0) / step)
            losses.clear()
        if step % args.eval_every == 0 or step == args.steps:
            log.info("step %d  heldout WER %.2f%%  domain WER %.2f%%  (%d utterances each)", step,
                     100 * wer(model, processor, held_w, held_t), 100 * wer(model, processor, dom_w, dom_t),
                     args.eval_utts)
            model.save_pretrained(out)
            processor.save_pretrained(out)
    # the saved folder must load through the same path every run uses
    AutoModelForSpeechSeq2Seq.from_pretrained(out)
    log.info("saved %s (%.1f MB)", out, sum(f.stat().st_size for f in out.iterdir()) / 1e6)


if __name__ == "__main__":
    main()
