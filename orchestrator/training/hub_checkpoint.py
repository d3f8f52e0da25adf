"""A local checkpoint shaped as the hub's `UsefulSensors/moonshine-streaming-tiny`, random weights.

The real weights cannot be downloaded everywhere (this project's machines reach no hub), yet the
real-scale path has to be proven: the exact architecture (6+6 layers, width 320, 44M parameters,
half of them in the untied 32768 x 320 embedding and output head), the real vocabulary size, and the
same files a hub download lays out (`config.json`, `generation_config.json`, `model.safetensors`,
the processor's `processor_config.json` and the tokenizer's `tokenizer.json` +
`tokenizer_config.json`), so that `AutoModelForSpeechSeq2Seq.from_pretrained(folder)` and
`AutoProcessor.from_pretrained(folder)` load it with no project code, exactly as they load the hub.

What it is not: the real model. Its weights are random (seeded), so a WER measured on it says
nothing about Moonshine; only shapes, module names, memory and step cost are real.

- The config is transformers' own: `MoonshineStreamingConfig()`'s defaults are documented as the
  streaming-tiny checkpoint (`auto_docstring(checkpoint="UsefulSensors/moonshine-streaming-tiny")`);
  only what they leave open is set here: the decoder's `num_key_value_heads` (no default; the
  encoder's default is one per attention head, plain multi-head attention, and so is this) and
  `decoder_start_token_id` (= bos). orchestrator/training/architectures/moonshine-streaming-tiny.json,
  which `plan` reads offline for the hub id, is this config (tests/test_hub_checkpoint.py).
- The tokenizer is a SentencePiece-style BPE with byte fallback, as Moonshine's is: pieces carry
  `▁` for a leading space (Metaspace), any character outside the pieces falls back to its UTF-8
  bytes (`<0x00>` .. `<0xFF>`), and it is cased (no normaliser). Its merges are trained, with the
  `tokenizers` library, on the project's own English sentence generators (orchestrator/data/synth.py:
  everyday English and air-traffic control, the text every test and the demo speak). Those
  generators use about 300 distinct words, so training learns a few hundred pieces; the rest of
  the 32768 ids are `<reserved_N>` pieces that no text encodes to (no merge produces them), kept so
  that the vocabulary, and with it the embedding and head, have the real size. Ids: 0 `<pad>`,
  1 `<s>` (bos = decoder start), 2 `</s>` (eos), 3 `<unk>`, then the 256 bytes, the learned pieces,
  the reserved ones. Like the project's other tokenizers it adds no BOS/EOS itself (batching adds EOS).
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from transformers import (MoonshineStreamingConfig, MoonshineStreamingForConditionalGeneration,
                          PreTrainedTokenizerFast)

from orchestrator.training.modeling import SPECIAL_TOKENS, streaming_processor

HUB_ID = "UsefulSensors/moonshine-streaming-tiny"
ARCHITECTURE = "moonshine-streaming-tiny"  # orchestrator/training/architectures/<this>.json
BYTE_PIECES = tuple(f"<0x{b:02X}>" for b in range(256))
ALPHABET = ["▁", *string.ascii_letters, *string.digits, *string.punctuation]  # pieces even if unseen
CORPUS_SEED = 20260421  # the sentence draws the merges are learned from (any fixed value)
CORPUS_SIZE = 20_000  # sentences per family; more adds no new word (the generators have ~300)


def streaming_tiny_config() -> MoonshineStreamingConfig:
    """transformers' streaming-tiny defaults plus the two values they leave open."""
    defaults = MoonshineStreamingConfig()
    return MoonshineStreamingConfig(num_key_value_heads=defaults.num_attention_heads,
                                    decoder_start_token_id=defaults.bos_token_id)


def corpus() -> list[str]:
    """The English text the merges are learned from: the project's seeded sentence generators."""
    from orchestrator.data.synth import atc_sentences, general_sentences

    return general_sentences(CORPUS_SIZE, CORPUS_SEED) + atc_sentences(CORPUS_SIZE, CORPUS_SEED)


def _learned_pieces(texts: list[str], room: int) -> tuple[list[str], list[tuple[str, str]]]:
    """(pieces in the order BPE training made them, merges), at most `room` pieces."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    trainee = Tokenizer(models.BPE(unk_token="<unk>"))
    trainee.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=room, min_frequency=2, initial_alphabet=ALPHABET,
                                  show_progress=False)
    trainee.train_from_iterator(texts, trainer)
    model = json.loads(trainee.to_str())["model"]
    pieces = sorted(model["vocab"], key=model["vocab"].__getitem__)
    return pieces, [tuple(m) for m in model["merges"]]


def subword_tokenizer(vocab_size: int, texts: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-fallback BPE of exactly `vocab_size` ids: specials, bytes, learned, reserved."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    fixed = [*SPECIAL_TOKENS, *BYTE_PIECES]
    pieces, merges = _learned_pieces(corpus() if texts is None else texts, vocab_size - len(fixed))
    ordered = [*fixed, *(p for p in pieces if p not in fixed)]
    ordered += [f"<reserved_{i}>" for i in range(vocab_size - len(ordered))]
    tok = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(ordered)}, merges=merges,
                               unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first"),
                                     decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def build_streaming_tiny(path: Path, *, seed: int = 0) -> Path:
    """Write the hub-shaped streaming-tiny folder to `path`: same seed, same bytes."""
    config = streaming_tiny_config()
    tokenizer = subword_tokenizer(config.vocab_size)
    assert len(tokenizer) == config.vocab_size, (len(tokenizer), config.vocab_size)
    ids = (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert ids == (config.pad_token_id, config.decoder_start_token_id, config.eos_token_id), ids
    torch.manual_seed(seed)
    model = MoonshineStreamingForConditionalGeneration(config)
    model.generation_config.decoder_start_token_id = config.decoder_start_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    streaming_processor(tokenizer).save_pretrained(path)
    return path
