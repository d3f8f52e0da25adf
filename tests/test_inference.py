"""`orchestrator eval` / `transcribe` on adapters from a real run reproduce the registry exactly."""
from __future__ import annotations

import json
import shutil

import pytest

from orchestrator.training import loop as train
from orchestrator.cli import main
from orchestrator.data.textnorm import normalize
from orchestrator.training.inference import evaluate_manifest, load_adapter, transcribe
from orchestrator.registry import Store
from orchestrator.config.schema import DataConf
from orchestrator.config.spec import spec_from_overrides

from conftest import cli


@pytest.fixture(scope="module")
def trained(speech, tiny_checkpoint, tmp_path_factory):
    """One real 4-step LoRA run on tiny_random: (run entity, run folder).

    lr 1e-2 moves the random model enough that the last interval's WERs are not a trivial 1.0
    (about 4.3 on both manifests here: the decoder now inserts words), a sharper parity check."""
    tmp = tmp_path_factory.mktemp("run")
    url = f"sqlite:///{tmp / 'registry.db'}"
    spec = spec_from_overrides([
        "+exp=smoke_tiny_random", f"model.id={tiny_checkpoint}", f"data.train_manifest={speech['train']}",
        f"eval.domain_manifest={speech['domain']}", f"eval.heldout_manifest={speech['heldout']}",
        f"registry.url={url}", f"output_dir={tmp / 'outputs'}", "optim.steps=4", "eval.interval=2",
        "optim.lr=1e-2"])
    store = Store(url)
    run_id = train.run(spec, store, progress=False)
    run = store.get_run(run_id)
    store.close()
    return run, tmp / "outputs" / run_id


def _artifact(run, kind: str):
    return next(a for a in run.artifacts if a.kind == kind)


def _interval(run, step: int):
    return next(i for i in run.intervals if i.step == step)


def test_cli_eval_prints_the_registry_wer_of_the_best_adapter(trained, speech):
    run, run_dir = trained
    best = _artifact(run, "lora_adapter_best")
    cache = run_dir.parent / ".audio_cache"
    entries = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    proc = cli("eval", "--adapter", str(run_dir / "lora_adapter_best"), "--manifest", str(speech["domain"]),
               "--json", check=True)
    # the audio came from the run's own cache entry: nothing decoded, written or added
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == entries and len(entries) == 6
    out = json.loads(proc.stdout)
    recorded = _interval(run, best.step)
    assert out["wer"] == recorded.domain_wer and out["eval_loss"] == recorded.eval_loss
    assert out["utterances"] == recorded.domain_utts == 8
    assert out["manifest"] == str(speech["domain"]) and out["adapter"] == str(run_dir / "lora_adapter_best")



def test_eval_human_output_and_bad_adapter(trained, speech, tmp_path, capsys):
    run, run_dir = trained
    recorded = _interval(run, _artifact(run, "lora_adapter_best").step)
    main(["eval", "--adapter", str(run_dir / "lora_adapter_best"), "--manifest", str(speech["heldout"])])
    out = capsys.readouterr().out
    assert f"WER {100 * recorded.heldout_wer:.2f}%  utterances 8  eval loss" in out

    with pytest.raises(SystemExit) as info:
        main(["eval", "--adapter", str(tmp_path), "--manifest", str(speech["heldout"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "not an adapter folder" in err[0] and "fix:" in err[0]


def test_trained_adapter_reproduces_both_manifests_bit_for_bit(trained, speech):
    """The last adapter carries trained weights (the best may be step 0's): same WERs, same loss."""
    run, run_dir = trained
    last = _artifact(run, "lora_adapter_last")
    recorded = _interval(run, last.step)
    assert recorded.eval_loss != _interval(run, 0).eval_loss  # the weights did move
    loaded = load_adapter(run_dir / "lora_adapter_last")
    assert loaded.run_config == run_dir / "config.yaml" and loaded.model.tokens_per_second == 20
    assert loaded.audio_cache == run_dir.parent / ".audio_cache"
    assert loaded.eval.batch_size == 8 and loaded.data.max_seconds == 20  # the run's, not the schema's 16
    domain = evaluate_manifest(loaded, speech["domain"], progress=False)
    heldout = evaluate_manifest(loaded, speech["heldout"], progress=False)
    assert (domain.wer, domain.loss, heldout.wer) == (recorded.domain_wer, recorded.eval_loss, recorded.heldout_wer)

    # transcribe decodes exactly what evaluate decoded (one batch of the same 8 files)
    files = [u.audio_filepath for u in domain.utterances]
    assert [normalize(t) for t in transcribe(loaded, files)] == [u.hypothesis for u in domain.utterances]


def test_cli_transcribe_prints_one_line_per_file(trained, speech):
    _, run_dir = trained
    wavs = sorted(str(p) for p in (speech["domain"].parent / "wavs").glob("domain-*.wav"))[:3]
    proc = cli("transcribe", "--adapter", str(run_dir / "lora_adapter_best"), *wavs, check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and [line.split("\t")[0] for line in lines] == wavs
    assert all(line.count("\t") == 1 for line in lines)

    missing = cli("transcribe", "--adapter", str(run_dir / "lora_adapter_best"), "nope.wav")
    assert missing.returncode == 2 and "audio file not found" in missing.stderr and "Traceback" not in missing.stderr


def test_model_override_and_adapter_without_run_config(trained, tiny_checkpoint, tmp_path):
    _, run_dir = trained
    loaded = load_adapter(run_dir / "lora_adapter_best", model_id=str(tiny_checkpoint))
    assert loaded.model.id == str(tiny_checkpoint) and loaded.model.tokens_per_second == 20  # the rest is the run's

    alone = shutil.copytree(run_dir / "lora_adapter_best", tmp_path / "somewhere" / "adapter")
    loaded = load_adapter(alone)
    assert loaded.run_config is None and loaded.model.id == str(tiny_checkpoint) and loaded.data == DataConf()
    assert loaded.audio_cache is None  # no run folder: decoded in memory


def test_one_encoder_pass_decodes_exactly_as_two(trained, speech):
    """evaluate encodes each batch once for both the loss and generate (Moonshine v2's decoder
    adds position embeddings to the encoder states in place, so each pass gets a copy): the
    texts and the loss are bit-identical to a fresh encoder pass for each, on trained PEFT weights."""
    import torch

    from orchestrator.data.batching import model_inputs
    from orchestrator.training.evaluate import decode, merged_lora, token_budget
    from orchestrator.data.manifest import read_manifest

    _, run_dir = trained
    loaded = load_adapter(run_dir / "lora_adapter_last")
    model, processor, bank = loaded.peft_model, loaded.processor, loaded.bank()
    utts = read_manifest(speech["domain"]) + read_manifest(speech["heldout"])
    kw = dict(batch_size=5, tokens_per_second=20.0, device=loaded.device)
    once = decode(model, processor, bank, utts, with_loss=True, progress=False, **kw)

    order = sorted(range(len(utts)), key=lambda i: -utts[i].duration)
    texts, loss_sum, tokens = {}, 0.0, 0
    with torch.no_grad(), merged_lora(model):  # as decode computes (test_merged_eval.py: as the adapter says)
        for start in range(0, len(order), 5):
            idx = order[start:start + 5]
            batch = [utts[i] for i in idx]
            inputs = model_inputs(processor, bank, batch, loaded.device, with_labels=True)
            labels = inputs.pop("labels")
            n = int((labels != -100).sum())
            loss_sum += float(model(**inputs, labels=labels).loss) * n  # encoder pass 1
            tokens += n
            out = model.generate(**inputs, max_new_tokens=token_budget(batch, 20.0))  # encoder pass 2
            texts.update(zip(idx, processor.batch_decode(out, skip_special_tokens=True)))
    assert once.texts == [texts[i] for i in range(len(utts))] and once.loss == loss_sum / tokens
    assert len(set(once.texts)) > 1  # a trained model that says different things, not one constant
