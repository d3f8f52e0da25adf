"""The shared baseline: a plain LoRA's step 0 is its base model's, computed once per output folder and
read by every other run on the same base weights, sets and settings, identical to computing it."""
from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import torch

from orchestrator.config.schema import AdapterConf, ModelConf, TargetsConf
from orchestrator.data.manifest import read_manifest
from orchestrator.registry import Store
from orchestrator.training import adapter, baseline_cache, loop as train, modeling, targets
from orchestrator.training.evaluate import EvalResult, UtteranceResult


def _step0(store: Store, run_id: str):
    run = store.get_run(run_id)
    base = run.intervals[0]
    per_utt = {split: [(u.audio_filepath, u.hypothesis, u.errors) for u in store.utterances(run_id, 0, split)]
               for split in ("domain", "heldout")}
    return (base.domain_wer, base.heldout_wer, base.eval_loss), per_utt


def test_runs_of_one_folder_share_a_step_0_identical_to_computing_it(make_spec, tmp_path, caplog):
    store = Store(f"sqlite:///{tmp_path / 'shared.db'}")
    common = (f"registry.url={store.url}", f"output_dir={tmp_path / 'shared'}")
    first = train.run(make_spec("targets=decoder_self_qkv", *common), store, progress=False)
    caplog.clear()
    with caplog.at_level("INFO", logger="orchestrator.training.loop"):  # other targets, LR and seed
        second = train.run(make_spec("targets=global_qkvo", "optim.lr=3e-3", "optim.seed=7", *common),
                           store, progress=False)
    assert "step 0 of 2 set(s) read from" in caplog.text and ", 0 computed here" in caplog.text
    own_store = Store(f"sqlite:///{tmp_path / 'own.db'}")
    own = train.run(make_spec("targets=global_qkvo", "eval.share_baseline=off", f"registry.url={own_store.url}",
                              f"output_dir={tmp_path / 'own'}"), own_store, progress=False)
    assert _step0(store, first) == _step0(store, second) == _step0(own_store, own)
    assert store.get_run(second).status == "completed" and store.get_run(second).check("parity").passed
    assert len(list((tmp_path / "shared" / baseline_cache.CACHE_DIR).glob("*.json"))) == 2  # domain + heldout
    assert not (tmp_path / "own" / baseline_cache.CACHE_DIR).exists()


def _peft(checkpoint: Path, kind: str = "lora"):
    model, _ = modeling.load(ModelConf(name="t", id=str(checkpoint)), torch.device("cpu"))
    return adapter.attach(model, AdapterConf(kind=kind), targets.resolve(model, TargetsConf(components=["decoder"], kinds=["self_attn"])))


def test_dora_or_a_trained_b_computes_its_own_and_the_key_follows_the_weights(tiny_checkpoint):
    dora = _peft(tiny_checkpoint, "dora")
    assert "DoRA" in baseline_cache.ineligible(dora) and baseline_cache.for_run(dora, "auto", "/x") is None
    lora = _peft(tiny_checkpoint)
    assert baseline_cache.ineligible(lora) is None and baseline_cache.for_run(lora, "off", "/x") is None
    plain, _ = modeling.load(ModelConf(name="t", id=str(tiny_checkpoint)), torch.device("cpu"))
    assert baseline_cache.base_digest(lora) == baseline_cache.base_digest(plain)  # adapter tensors left out
    with torch.no_grad():
        next(p for n, p in lora.named_parameters() if "lora_B" in n).fill_(0.1)
    assert "lora_B is not zero" in baseline_cache.ineligible(lora)
    with torch.no_grad():
        next(p for n, p in plain.named_parameters() if "decoder" in n and n.endswith("q_proj.weight")).add_(1e-6)
    assert baseline_cache.base_digest(plain) != baseline_cache.base_digest(lora)


def test_the_key_changes_with_the_set_and_the_settings(speech):
    utts = read_manifest(speech["domain"])
    digests = {u.audio_filepath: "a" for u in utts}
    k = baseline_cache.key("w", utts, digests, {"batch_size": 4})
    assert k == baseline_cache.key("w", list(utts), dict(digests), {"batch_size": 4})
    assert k != baseline_cache.key("w", utts, digests, {"batch_size": 8})
    assert k != baseline_cache.key("w2", utts, digests, {"batch_size": 4})
    assert k != baseline_cache.key("w", utts[::-1], digests, {"batch_size": 4})
    assert k != baseline_cache.key("w", utts, {**digests, utts[0].audio_filepath: "b"}, {"batch_size": 4})


def _result(tag: str) -> EvalResult:
    return EvalResult(wer=0.25, loss=float("nan") if tag == "b" else 1.5,
                      utterances=(UtteranceResult(f"{tag}.wav", "a b c d", "a b c x", 1, 4),))


def _take(folder: str, out: str) -> None:
    """One of two processes asking for the same three sets at once."""
    def compute(tag):
        def run():
            Path(out, f"{tag}.{os.getpid()}").touch()
            time.sleep(0.5)
            return _result(tag)
        return run
    shared = baseline_cache.SharedBaseline(Path(folder))
    got = shared.results({tag: (f"key-{tag}", compute(tag)) for tag in "abc"})
    assert [r.utterances[0].audio_filepath for r in got.values()] == ["a.wav", "b.wav", "c.wav"]


def test_parallel_runs_split_the_sets_and_each_gets_all(tmp_path):
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_take, args=(str(tmp_path / "cache"), str(tmp_path))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert [w.exitcode for w in workers] == [0, 0]
    computed = sorted(p.name.split(".")[0] for p in tmp_path.glob("[abc].*"))
    assert computed == ["a", "b", "c"]  # each set computed once, by one of the two
    assert len({p.name.split(".")[1] for p in tmp_path.glob("[abc].*")}) == 2  # and both did some
    shared = baseline_cache.SharedBaseline(tmp_path / "cache")
    again = shared.results({"b": ("key-b", lambda: 1 / 0)})  # stored: never computed again
    assert again["b"].loss != again["b"].loss and shared.read == 1 and shared.computed == 0


def test_a_damaged_entry_is_computed_again(tmp_path):
    shared = baseline_cache.SharedBaseline(tmp_path)
    (tmp_path / "key-a.json").write_text('{"wer": 0.1, "utter')  # a torn write from another tool
    got = shared.results({"a": ("key-a", lambda: _result("a"))})
    assert got["a"] == _result("a") and shared.computed == 1
    assert baseline_cache.SharedBaseline(tmp_path).results({"a": ("key-a", lambda: 1 / 0)})["a"] == _result("a")
