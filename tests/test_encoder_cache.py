"""The encoder cache (training/encoder_cache.py): a frozen encoder's states computed once per
utterance give the training step the loss and gradients of the ordinary step, on real speech,
the real tiny_random model and the demo base model; runs with it end with the same metrics."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from orchestrator.config.schema import AdapterConf, DataConf, OptimConf, TargetsConf
from orchestrator.config.spec import spec_from_overrides
from orchestrator.data.batching import AudioBank, model_inputs, training_stream
from orchestrator.data.manifest import load_split
from orchestrator.registry import Store
from orchestrator.training import adapter as adapters
from orchestrator.training import encoder_cache, loop, modeling, targets
from orchestrator.training.encoder_cache import encoder_length, ineligible, saturated_width, valid_frames

ROOT = Path(__file__).resolve().parent.parent
DEMO_BASE = ROOT / "demo" / "base"
CPU = torch.device("cpu")
# Measured (demo base, 8 batches of 8): loss equal to 6e-8, gradients to 3e-6 of each tensor's
# largest entry. The cache's states come from other batch shapes than the ordinary step's, so
# they differ in float rounding only; the bounds leave a margin over that.
LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-4


def _model(path: Path, components=("decoder",), kinds=("self_attn",), dropout: float = 0.05):
    model, processor = _load(path)
    resolution = targets.resolve(model, TargetsConf(components=list(components), kinds=list(kinds),
                                                    on_unsupported="skip"))  # demo base: decoder.proj is Identity
    torch.manual_seed(0)
    peft_model = adapters.attach(model, AdapterConf(dropout=dropout), resolution)
    for name, param in peft_model.named_parameters():  # non-zero B: the adapter changes the gradients
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    return peft_model, processor


def _load(path: Path):
    from orchestrator.config.schema import ModelConf

    return modeling.load(ModelConf(name="t", id=str(path)), CPU)


@pytest.fixture(scope="module")
def train_utts(speech):
    return load_split(speech["train"], max_seconds=20.0).kept


def test_frame_arithmetic_is_the_encoders_own_mask(tiny_checkpoint):
    model, _ = _load(tiny_checkpoint)
    frame_len, convs = encoder_cache._convs(model)
    encoder = model.model.encoder
    gen = torch.Generator().manual_seed(0)
    for samples in (80 * 37, 80 * 37 + 1, 80 * 40 - 1, 80 * 41 + 42, 80 * 3):
        lo = -(-samples // 80) * 80
        widths = range(lo, lo + 80 * 14, 80)
        wave = torch.randn(samples, generator=gen)
        for width in widths:
            values = torch.zeros(1, width)
            values[0, :samples] = wave
            mask = (torch.arange(width) < samples).int()[None]
            with torch.no_grad():
                out = encoder(values, attention_mask=mask)
            assert out.last_hidden_state.shape[1] == encoder_length(width, frame_len, convs)
            assert int(out.attention_mask.sum()) == valid_frames(samples, width, frame_len, convs), (samples, width)
        assert valid_frames(samples, saturated_width(samples, 80, frame_len, convs) + 80 * 20, frame_len, convs) \
            == valid_frames(samples, saturated_width(samples, 80, frame_len, convs), frame_len, convs)


def test_padding_changes_the_last_states_until_it_saturates(tiny_checkpoint, train_utts):
    """Why the cache keeps padding classes: the longest utterance of a batch (no padding) ends
    with other states than the same utterance padded in a batch; past saturation they agree."""
    model, _ = _load(tiny_checkpoint)
    frame_len, convs = encoder_cache._convs(model)
    bank = AudioBank(DataConf())
    wave = torch.from_numpy(bank[train_utts[0].audio_filepath].copy())
    tight = -(-wave.numel() // 80) * 80
    full = saturated_width(wave.numel(), 80, frame_len, convs)

    def states(width):
        values = torch.zeros(1, width)
        values[0, :wave.numel()] = wave
        with torch.no_grad():
            out = model.model.encoder(values, attention_mask=(torch.arange(width) < wave.numel()).int()[None])
        return out.last_hidden_state[0, :int(out.attention_mask.sum())]

    alone, saturated, wider = states(tight), states(full), states(full + 80 * 30)
    assert alone.shape[0] < saturated.shape[0] == wider.shape[0]
    assert (alone - saturated[:alone.shape[0]]).abs().max() > 1e-3  # the tail frames reach back
    torch.testing.assert_close(saturated, wider, rtol=1e-5, atol=1e-5)


def _compare_steps(peft_model, processor, utts, n_batches: int, batch_size: int) -> None:
    bank = AudioBank(DataConf())
    step = encoder_cache.step_inputs(OptimConf(), peft_model, processor, bank, utts, CPU)
    cache = step.__self__
    assert isinstance(cache, encoder_cache.EncoderCache)
    flat = cache.flat.clone()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    peft_model.train()
    for _, batch in zip(range(n_batches), training_stream(utts, batch_size, 42)):
        results = []
        for inputs in (model_inputs(processor, bank, batch, CPU), step(batch)):
            torch.manual_seed(7)  # the same LoRA dropout masks: the encoder draws no random numbers
            peft_model.zero_grad(set_to_none=True)
            loss = peft_model(**inputs).loss
            loss.backward()
            results.append((loss.item(), [p.grad.clone() for p in params]))
        (plain_loss, plain_grads), (cached_loss, cached_grads) = results
        assert cached_loss == pytest.approx(plain_loss, rel=LOSS_RTOL)
        for a, b in zip(plain_grads, cached_grads):
            assert (a - b).abs().max() <= GRAD_RTOL * a.abs().max(), (a - b).abs().max() / a.abs().max()
    assert cache.extra, "no batch padded an utterance less than saturation: the memoised classes went untested"
    assert torch.equal(cache.flat, flat)  # the decoder's in-place position embeddings never reach the cache
    extra = {k: v.clone() for k, v in cache.extra.items()}
    for _, batch in zip(range(n_batches), training_stream(utts, batch_size, 42)):
        peft_model(**step(batch)).loss.backward()
    assert all(torch.equal(cache.extra[k], v) for k, v in extra.items())


def test_cached_step_gives_the_ordinary_loss_and_gradients_tiny_random(tiny_checkpoint, train_utts):
    peft_model, processor = _model(tiny_checkpoint)
    _compare_steps(peft_model, processor, train_utts, n_batches=6, batch_size=4)


def test_cached_step_gives_the_ordinary_loss_and_gradients_demo_base(train_utts):
    peft_model, processor = _model(DEMO_BASE, components=("decoder", "adapter"), kinds=("self_attn", "bridge"))
    _compare_steps(peft_model, processor, train_utts, n_batches=4, batch_size=8)


def test_encoder_side_that_can_change_is_not_cached(tiny_checkpoint, train_utts, caplog):
    bank = AudioBank(DataConf())
    model, processor = _model(tiny_checkpoint, components=("encoder", "decoder"), kinds=("q_proj",))
    assert "an adapter wraps model.encoder.layers.0.self_attn.q_proj" == ineligible(model, processor, bank)

    model, processor = _model(tiny_checkpoint)
    assert ineligible(model, processor, bank) is None
    model.get_base_model().model.encoder.embedder.comp.log_k.requires_grad_(True)
    assert ineligible(model, processor, bank) == "model.encoder.embedder.comp.log_k is trainable"
    model.get_base_model().model.encoder.embedder.comp.log_k.requires_grad_(False)
    model.get_base_model().model.encoder.layers[1].self_attn.attention_dropout = 0.1
    assert ineligible(model, processor, bank) == "model.encoder.layers.1.self_attn has attention_dropout 0.1"
    model.get_base_model().model.encoder.layers[1].self_attn.attention_dropout = 0.0

    with caplog.at_level(logging.INFO, logger="orchestrator.training.encoder_cache"):
        off = encoder_cache.step_inputs(OptimConf(cache_encoder="off"), model, processor, bank, train_utts, CPU)
        capped = encoder_cache.step_inputs(OptimConf(cache_encoder_max_mb=0.001), model, processor, bank, train_utts,
                                           CPU)
    for plain in (off, capped):
        assert set(plain(train_utts[:2])) == {"input_values", "attention_mask", "labels"}
    assert "over optim.cache_encoder_max_mb=0.001" in caplog.text


def _run(overrides: list[str], folder: Path, extra: list[str], on_interval=None):
    folder.mkdir(exist_ok=True)
    overrides = [o for o in overrides if not o.startswith(("registry.url", "output_dir"))]
    overrides += [f"registry.url=sqlite:///{folder / 'registry.db'}", f"output_dir={folder / 'outputs'}", *extra]
    store = Store(f"sqlite:///{folder / 'registry.db'}")
    spec = spec_from_overrides(overrides)
    try:
        run_id = loop.run(spec, store, progress=False, on_interval=on_interval)
    except KeyboardInterrupt:
        run_id = loop.run(spec, store, progress=False)  # the same command again: resumes
    return store.get_run(run_id)


def _metrics(run):
    return [(i.step, i.domain_wer, i.heldout_wer, i.eval_loss, i.train_loss) for i in run.intervals]


def test_runs_with_and_without_the_cache_end_alike_and_resume_exactly(run_overrides, tmp_path, caplog):
    """Decoder-only targets: `auto` caches (logged), `off` does not; same interval metrics to float
    rounding (WERs equal, losses within 1e-5 relative); a run interrupted at an interval and resumed
    with the cache ends exactly like the uninterrupted cached run."""
    decoder_only = ["targets.components=[decoder]", "optim.steps=6", "eval.interval=3", "adapter.dropout=0.1"]
    with caplog.at_level(logging.INFO, logger="orchestrator.training.encoder_cache"):
        cached = _run(run_overrides, tmp_path / "auto", decoder_only)
    assert "training steps skip the encoder" in caplog.text
    plain = _run(run_overrides, tmp_path / "off", [*decoder_only, "optim.cache_encoder=off"])
    assert cached.config_hash == plain.config_hash  # how the step is computed is not the run's identity
    for a, b in zip(_metrics(cached), _metrics(plain), strict=True):
        assert a[:3] == b[:3]
        assert a[3] == pytest.approx(b[3], rel=1e-5)
        assert a[4] == b[4] or a[4] == pytest.approx(b[4], rel=1e-5)  # None at step 0

    def stop_at_3(intervals):
        if intervals[-1].step == 3:
            raise KeyboardInterrupt
    resumed = _run(run_overrides, tmp_path / "resumed", decoder_only, on_interval=stop_at_3)
    assert resumed.status == "completed" and _metrics(resumed) == _metrics(cached)


def test_runs_of_one_folder_encode_the_training_set_once_and_end_as_if_each_had(run_overrides, tmp_path, caplog):
    """The states are stored under the output folder's .encoder_cache/: a second run with another LR
    reads them and ends exactly as its twin that encoded its own; a damaged file is encoded again."""
    decoder_only = ["targets.components=[decoder]", "optim.steps=4", "eval.interval=2"]
    _run(run_overrides, tmp_path / "shared", [*decoder_only, "optim.lr=3e-3"])
    (entry,) = (tmp_path / "shared" / "outputs" / encoder_cache.SHARED_DIR).glob("*.pt")
    with caplog.at_level(logging.INFO, logger="orchestrator.training.encoder_cache"):
        second = _run(run_overrides, tmp_path / "shared", decoder_only)
    assert f"read from {entry}" in caplog.text
    own = _run(run_overrides, tmp_path / "own", decoder_only)
    assert second.config_hash == own.config_hash and _metrics(second) == _metrics(own)
    entry.write_bytes(entry.read_bytes()[:100])  # torn
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="orchestrator.training.encoder_cache"):
        again = _run(run_overrides, tmp_path / "shared", [*decoder_only, "rerun=true"])
    assert "is damaged; encoding again" in caplog.text and _metrics(again) == _metrics(own)
