"""Load a Moonshine model and its processor through from_pretrained; build local checkpoints.

The loading path is the real one for every model: a hub id or a local folder. Checkpoints the
project builds itself (`tiny_random` for tests; `moonshine_streaming_tiny`, the hub model's shape
with random weights, in training/hub_checkpoint.py) are saved with save_pretrained, then loaded
like any other (a model preset's `build:` names the recipe; `orchestrator build-checkpoint`).
"""
from __future__ import annotations

import os
import shutil
import string
import uuid
from pathlib import Path

import torch
from transformers import (AutoConfig, AutoModelForSpeechSeq2Seq, AutoProcessor,
                          MoonshineStreamingConfig, MoonshineStreamingForConditionalGeneration,
                          MoonshineStreamingProcessor, PreTrainedTokenizerFast,
                          Wav2Vec2FeatureExtractor)

from orchestrator.errors import ConfigError, WriteError
from orchestrator.config.schema import ModelConf

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0..3: pad, bos (= decoder start), eos, unk


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible", where="device", fix="use device=auto or device=cpu")
    return torch.device(name)


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level SentencePiece-style tokenizer (Metaspace), built with `tokenizers`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    chars = ["▁", *string.ascii_lowercase, *string.digits, *"'.,?!-"]
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *chars])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def streaming_processor(tokenizer: PreTrainedTokenizerFast) -> MoonshineStreamingProcessor:
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                         do_normalize=False, return_attention_mask=True)
    return MoonshineStreamingProcessor(extractor, tokenizer)


def build_tiny_random(path: Path, *, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """Save a small randomly initialised Moonshine v2 checkpoint + processor to `path`."""
    tokenizer = char_tokenizer()
    layer = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                 num_attention_heads=heads, num_key_value_heads=heads)
    config = MoonshineStreamingConfig(
        vocab_size=len(tokenizer), **layer, max_position_embeddings=1024,
        encoder_config=dict(**layer, sliding_windows=[[16, 4]] * layers),
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(seed)
    model = MoonshineStreamingForConditionalGeneration(config)
    model.generation_config.decoder_start_token_id = 1
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    streaming_processor(tokenizer).save_pretrained(path)
    return path


def build_streaming_tiny(path: Path, *, seed: int = 0) -> Path:
    """The hub-shaped `UsefulSensors/moonshine-streaming-tiny`, random weights (training/hub_checkpoint.py)."""
    from orchestrator.training import hub_checkpoint

    return hub_checkpoint.build_streaming_tiny(path, seed=seed)


BUILDERS = {"tiny_random": build_tiny_random, "moonshine_streaming_tiny": build_streaming_tiny}


def build(recipe: str, path: Path, *, seed: int = 0) -> Path:
    """Run the recipe BUILDERS[recipe] into `path`, atomically: the folder appears complete or not at
    all (built beside it, then renamed), so an interrupted build is never taken for a checkpoint, and
    of two processes building the same folder at once one wins and the other finds its result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".{path.name}.building-{uuid.uuid4().hex[:12]}"
    try:
        BUILDERS[recipe](partial, seed=seed)
        try:
            os.replace(partial, path)  # onto a missing or empty folder only
        except OSError as exc:
            if not (path / "config.json").exists():
                raise WriteError(f"cannot build {recipe} here: {exc.strerror}", where=str(path),
                                 fix="remove the folder, or build into a new or empty one") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return path


def ensure_built(model: ModelConf) -> None:
    """Build a project-made checkpoint on first use (`model.build`), deterministically."""
    if model.build and not (Path(model.id) / "config.json").exists():
        if model.build not in BUILDERS:
            raise ConfigError(f"unknown build recipe {model.build!r}", where="model.build",
                              fix=f"use one of {sorted(BUILDERS)} or set model.build=null")
        build(model.build, Path(model.id))


def _loading(model: ModelConf, what: str, fn):
    try:
        return fn()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the {what} of {model.id!r}: {str(exc).splitlines()[0]}",
                          where="model.id",
                          fix="point model.id at a local checkpoint folder, or make the hub reachable "
                              "(HF_HOME with a cached copy)") from exc


def load(model: ModelConf, device: torch.device):
    """(model, processor) through from_pretrained, model in eval mode on `device`."""
    ensure_built(model)
    processor = _loading(model, "processor", lambda: AutoProcessor.from_pretrained(model.id, revision=model.revision))
    net = _loading(model, "weights", lambda: AutoModelForSpeechSeq2Seq.from_pretrained(model.id, revision=model.revision))
    return net.to(device).eval(), processor


ARCHITECTURES = Path(__file__).parent / "architectures"


def load_config(model: ModelConf):
    """The model's config: local folder or hub cache first, then the architecture shipped here."""
    ensure_built(model)
    try:
        return AutoConfig.from_pretrained(model.id, revision=model.revision, local_files_only=True)
    except (OSError, ValueError):
        if not model.architecture:
            return _loading(model, "config", lambda: AutoConfig.from_pretrained(model.id, revision=model.revision))
        return AutoConfig.from_pretrained(ARCHITECTURES / f"{model.architecture}.json")


def load_skeleton(model: ModelConf) -> torch.nn.Module:
    """The architecture from the config alone, weights on the meta device (for `plan`)."""
    config = load_config(model)
    with torch.device("meta"):
        return AutoModelForSpeechSeq2Seq.from_config(config)
