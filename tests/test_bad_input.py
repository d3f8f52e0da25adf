"""Every bad input the issue lists, through the real CLI: one actionable line, a non-zero exit, no
traceback, and the registry unchanged; the inputs a run accepts with a warning are counted.

The cases run as real `orchestrator run` (or `plan`) processes, all started up front a few at a
time (module fixture `outcomes`); each test then reads its own case. Manifest and config problems
that need no decoding fail before torch is imported (about a second each); the rest load torch.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from orchestrator.registry import Store

from conftest import cli


@dataclass(frozen=True)
class World:
    root: Path
    m: dict[str, Path]  # manifests by name
    base: list[str]  # overrides of a good, tiny run (registry and outputs added per case)
    template: Path  # a registry holding one run, copied for each case

    def run(self, case_dir: Path, *extra: str) -> list[str]:
        return ["run", *self.base, f"registry.url=sqlite:///{case_dir / 'registry.db'}",
                f"output_dir={case_dir / 'outputs'}", *extra]

    def train(self, name: str) -> str:
        return f"data.train_manifest={self.m[name]}"


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def world(speech, tiny_checkpoint, tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("bad_input")
    wavs = root / "wavs"
    wavs.mkdir()

    def rows(split: str) -> list[dict]:
        out = [json.loads(line) for line in speech[split].read_text().splitlines()]
        for row in out:
            row["audio_filepath"] = str(speech[split].parent / row["audio_filepath"])
        return out

    good, domain, heldout = rows("train"), rows("domain"), rows("heldout")
    speech0, rate = sf.read(good[0]["audio_filepath"], dtype="float32")
    real = Path(good[1]["audio_filepath"]).read_bytes()

    def wav(name: str, data, sr: int = 16000, subtype: str | None = None) -> str:
        sf.write(wavs / name, data, sr, subtype=subtype)
        return str(wavs / name)

    def raw(name: str, data: bytes) -> str:
        (wavs / name).write_bytes(data)
        return str(wavs / name)

    nan, inf = speech0.copy(), speech0.copy()
    nan[100], inf[200] = np.nan, np.inf
    stereo = soxr.resample(speech0, rate, 44100)
    audio = {
        "nan": wav("nan.wav", nan, subtype="FLOAT"), "inf": wav("inf.wav", inf, subtype="FLOAT"),
        "silent": wav("silent.wav", np.zeros(16000, np.float32)),
        "zero": raw("zero.wav", b""), "header": raw("header.wav", real[:20]),
        "noise": raw("noise.wav", np.random.default_rng(0).bytes(4096)), "text": raw("text.wav", b"not audio at all"),
        "half": raw("half.wav", real[:len(real) // 2]),
        "stereo": wav("stereo44k.wav", np.stack([stereo, 0.5 * stereo], axis=1), 44100),
        "8k": wav("mono8k.wav", soxr.resample(speech0, rate, 8000), 8000),
        "long": wav("long.wav", np.tile(speech0, int(25 * rate / speech0.size) + 1)),
        "copy": raw("copy.wav", Path(good[0]["audio_filepath"]).read_bytes()),
    }
    (wavs / "folder.wav").mkdir()
    g0, g1 = good[0], good[1]

    def line(key: str, **kw) -> dict:
        return {"audio_filepath": audio[key], "text": "some words", **kw}

    m = {name: _write(root / f"{name}.jsonl", body) for name, body in {
        "malformed": [g0, '{"audio_filepath": "x.wav", "text": '],
        "not_object": [g0, '["a.wav", "words"]'],
        "no_audio_key": [g0, {"text": "hello there"}],
        "no_text": [g0, {"audio_filepath": g1["audio_filepath"]}],
        "audio_missing": [g0, {"audio_filepath": "nope.wav", "text": "hello"}],
        "audio_folder": [g0, {"audio_filepath": str(wavs / "folder.wav"), "text": "hello"}],
        "zero_length": [g0, line("zero")],
        "header_cut": [g0, line("header")],
        "random_bytes": [g0, line("noise")],
        "text_file": [g0, line("text", duration=1.0)],
        "nan": [g0, line("nan")],
        "inf": [g0, line("inf")],
        "silent": [g0, g1, line("silent")],
        "empty_text": [g0, {**g1, "text": ""}],
        "blank_text": [g0, {**g1, "text": " \t "}],
        "no_words": [g0, {**g1, "text": "?!..."}],
        "duration_off": [g0, {**g1, "duration": g1["duration"] + 2.0}],
        "truncated": [g0, line("half", duration=g1["duration"])],
        "duplicate": [g0, g1, g0],
        "same_bytes": [g0, g1, line("copy")],
        "negative_duration": [g0, {**g1, "duration": -1}],
        "all_too_long": [line("long")],
        "empty": [],
        # accepted, with counts: silent skipped, resampled, down-mixed, too long dropped
        "mixed": [*good[:6], line("silent"), line("stereo"), line("8k"), line("long")],
        # 2 utterances are training audio, 1 more shares a training transcript
        "overlapping_eval": [good[2], good[3], {**domain[0], "text": good[4]["text"]}, domain[1]],
        "silent_eval": [domain[0], line("silent")],
        "domain": domain[:2],  # small evaluation sets: the runs that get that far stay cheap
        "heldout": heldout[:2],
    }.items()}
    (root / "latin1.jsonl").write_bytes(json.dumps(g0).encode() + b"\n" + b'{"text": "caf\xe9"}\n')
    m["latin1"] = root / "latin1.jsonl"
    (root / "garbage.db").write_bytes(b"not a database " * 100)

    template = root / "template.db"
    store = Store(f"sqlite:///{template}")
    store.record_external(experiment="earlier", model_id="m", steps=10, lr=1e-4, target_summary="q",
                          dora=False, intervals=[{"step": 0, "domain_wer": 0.2}])
    store.close()
    base = ["+exp=smoke_tiny_random", f"model.id={tiny_checkpoint}", f"data.train_manifest={speech['train']}",
            f"eval.domain_manifest={m['domain']}", f"eval.heldout_manifest={m['heldout']}",
            "optim.steps=1", "eval.interval=1", "model.tokens_per_second=1"]
    return World(root, m, base, template)


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[World, Path], list[str]]
    phrase: str  # must be in the one error line (or, for ok cases, in stderr)
    rc: int = 2
    registry: bool = True  # the case has a registry whose runs must stay as they were


def _tr(name: str, *extra: str) -> Callable[[World, Path], list[str]]:
    return lambda w, d: w.run(d, w.train(name), *extra)


def _ov(*extra: str) -> Callable[[World, Path], list[str]]:
    return lambda w, d: w.run(d, *extra)


CASES = [
    # manifests: every line checked before torch loads
    Case("malformed-json", _tr("malformed"), "malformed.jsonl:2: malformed JSON"),
    Case("not-an-object", _tr("not_object"), "not_object.jsonl:2: expected a JSON object"),
    Case("missing-audio_filepath", _tr("no_audio_key"), 'no_audio_key.jsonl:2: "audio_filepath" is missing'),
    Case("missing-text", _tr("no_text"), 'no_text.jsonl:2: missing "text"'),
    Case("audio-missing", _tr("audio_missing"), "audio_missing.jsonl:2: audio file not found: nope.wav"),
    Case("audio-is-a-folder", _tr("audio_folder"), "audio_folder.jsonl:2: audio file is a directory"),
    Case("zero-length-audio", _tr("zero_length"), "zero.wav: cannot decode audio: the file is empty (0 bytes)"),
    Case("header-cut-short", _tr("header_cut"), "header.wav: cannot read audio header (Error in WAV"),
    Case("random-bytes", _tr("random_bytes"), "noise.wav: cannot read audio header (Format not recognised"),
    Case("text-file-as-audio", _tr("text_file"), "text.wav: cannot read audio header"),
    Case("empty-text", _tr("empty_text"), 'empty_text.jsonl:2: "text" is empty'),
    Case("whitespace-text", _tr("blank_text"), 'blank_text.jsonl:2: "text" is empty'),
    Case("punctuation-only-text", _tr("no_words"), "no_words.jsonl:2: \"text\" '?!...' has no words"),
    Case("duration-disagrees", _tr("duration_off"), "duration_off.jsonl:2: \"duration\""),
    Case("truncated-audio", _tr("truncated"), "truncated.jsonl:2: \"duration\""),
    Case("duplicate-line", _tr("duplicate"), "duplicate.jsonl:3: duplicate: same audio file as line 1"),
    Case("negative-duration", _tr("negative_duration"), "negative_duration.jsonl:2: \"duration\" must be a positive"),
    Case("not-utf8", _tr("latin1"), "latin1.jsonl:2: line is not valid UTF-8"),
    Case("empty-manifest", _tr("empty"), "empty.jsonl: manifest has no utterances"),
    Case("manifest-missing", lambda w, d: w.run(d, f"eval.heldout_manifest={w.root / 'nope.jsonl'}"),
         "nope.jsonl: manifest not found"),
    # manifests: decoded once (after torch loads), still before the registry gets a row
    Case("nan-samples", _tr("nan"), "nan.jsonl:2: " + "{}/nan.wav: audio contains NaN or infinite samples"),
    Case("infinite-samples", _tr("inf"), "inf.jsonl:2: " + "{}/inf.wav: audio contains NaN or infinite samples"),
    Case("silent-refused", _tr("silent", "data.on_silent=refuse"),
         "silent.jsonl:3: {}/silent.wav: audio is all silent (RMS 0) (fix: drop the line, or set data.on_silent=skip"),
    Case("silent-in-eval", lambda w, d: w.run(d, f"eval.domain_manifest={w.m['silent_eval']}"),
         "silent_eval.jsonl:2: {}/silent.wav: audio is all silent (RMS 0) (fix: drop the line: an evaluation "
         "manifest is scored whole"),
    Case("same-bytes-other-name", _tr("same_bytes"), "same_bytes.jsonl:3: duplicate: "),
    Case("all-over-max_seconds", _tr("all_too_long"), "all_too_long.jsonl: no usable utterance: 0 all-silent"),
    # config
    Case("unknown-experiment", lambda w, d: ["run", "+exp=exp_9_9_nope", *w.run(d)[2:]],
         "+exp=exp_9_9_nope: unknown experiment (fix: use one of "),
    Case("misspelled-key", _ov("optim.lrr=1e-4"), "Key 'lrr' not in 'OptimConf'"),
    Case("appended-unknown-key", _ov("+optim.lrr=1e-4"), "unknown config key 'optim.lrr' (fix: did you mean optim.lr?"),
    Case("unknown-group-option", _ov("adapter=lorra"), "adapter=lorra: no config 'adapter/lorra' (fix: use one of dora, lora"),
    Case("lr-zero", _ov("optim.lr=0"), "optim.lr: learning rate must be a finite number > 0, got 0.0"),
    Case("lr-negative", _ov("optim.lr=-1e-4"), "optim.lr: learning rate must be a finite number > 0"),
    Case("lr-infinite", _ov("optim.lr=inf"), "optim.lr: learning rate must be a finite number > 0, got inf"),
    Case("lr-not-a-number", _ov("optim.lr=fast"), "optim.lr: Value 'fast' of type 'str' could not be converted to Float"),
    Case("warmup-ratio-over-1", _ov("optim.warmup_ratio=1.5"), "optim.warmup_ratio: warmup must be shorter"),
    Case("warmup-rounds-to-the-run", _ov("optim.warmup_ratio=0.8"),
         "optim.warmup_ratio: warmup (1 steps) must be shorter than the run (optim.steps=1)"),
    Case("eval-interval-over-the-run", _ov("eval.interval=50"),
         "eval.interval: interval 50 must be between 1 and optim.steps (1)"),
    Case("dora-on-unsupported-module", _ov("adapter=dora", "targets.kinds=[]",
                                           "targets.patterns=[model\\.encoder\\.embedder\\.conv1]"),
         "a Conv1d with its own forward on this model; PEFT cannot put an adapter on it"),
    Case("registry-folder-missing", lambda w, d: [*w.run(d), f"registry.url=sqlite:///{d / 'no' / 'dir' / 'r.db'}"],
         "cannot open the registry database (unable to open database file)", registry=False),
    Case("registry-not-a-database", lambda w, d: [*w.run(d), f"registry.url=sqlite:///{w.root / 'garbage.db'}"],
         "cannot open the registry database (file is not a database)", registry=False),
    Case("output-folder-not-writable", lambda w, d: [*w.run(d), f"output_dir={w.m['empty']}/sub"],
         "output folder is not writable (Not a directory)"),
]
OK_CASES = [  # accepted and counted, in one run: (id, argv, lines that must be in stderr)
    ("silent-resampled-downmixed-too-long-overlapping",
     lambda w, d: w.run(d, w.train("mixed"), f"eval.domain_manifest={w.m['overlapping_eval']}"),
     ["mixed.jsonl: skipped 1 all-silent utterances (data.on_silent=skip)",
      "mixed.jsonl: 2 utterances resampled to 16000 Hz, 1 down-mixed to mono",
      "mixed.jsonl: dropped 1 utterances over max_seconds=20.0",
      "overlapping_eval.jsonl (domain): 2 of 4 utterances are also in the training manifest (same audio) and 1 "
      "more share a transcript with it"]),
]


def _runs(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT id, status, failure_reason FROM runs ORDER BY id").fetchall()


@pytest.fixture(scope="module")
def outcomes(world: World) -> dict[str, tuple]:
    """(process, case folder) of every case, run a few at a time with one torch thread each."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the children inherit it: no oversubscribed cores

    def go(case_id: str, argv) -> tuple[str, tuple]:
        folder = world.root / "cases" / case_id
        folder.mkdir(parents=True)
        shutil.copy(world.template, folder / "registry.db")
        return case_id, (cli(*argv(world, folder)), folder)

    try:
        jobs = [(c.id, c.argv) for c in CASES] + [(case_id, argv) for case_id, argv, _ in OK_CASES]
        with ThreadPoolExecutor(max_workers=3) as pool:
            return dict(pool.map(lambda job: go(*job), jobs))
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_actionable_line(case: Case, outcomes, world: World):
    proc, folder = outcomes[case.id]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == case.rc, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert case.phrase.format(world.root / "wavs") in lines[0], lines[0]
    assert "(fix: " in lines[0] and "Traceback" not in proc.stderr + proc.stdout
    if case.registry:
        assert _runs(folder / "registry.db") == _runs(world.template)  # unchanged: no new row


@pytest.mark.parametrize("case_id, argv, expected", OK_CASES, ids=[c[0] for c in OK_CASES])
def test_accepted_input_is_counted_and_warned(case_id, argv, expected, outcomes, world: World):
    proc, folder = outcomes[case_id]
    assert proc.returncode == 0 and "error:" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    for line in expected:
        assert sum(line in err for err in proc.stderr.splitlines()) == 1, (line, proc.stderr)
    runs = Store(f"sqlite:///{folder / 'registry.db'}").list_runs()
    new = [r for r in runs if not r.external]
    assert len(new) == 1 and new[0].status == "completed"
    assert new[0].data_stats["train"] == {"utterances": 8, "dropped_too_long": 1, "skipped_silent": 1,
                                          "resampled": 2, "downmixed": 1}
    assert new[0].data_stats["domain"] == {"utterances": 4, "dropped_too_long": 0}


def test_every_listed_bad_input_has_a_case():
    """The issue's list, by the case ids that cover it (a reminder to keep the table whole)."""
    listed = {"malformed-json", "missing-audio_filepath", "missing-text", "audio-missing", "zero-length-audio",
              "random-bytes", "header-cut-short", "nan-samples", "infinite-samples", "silent-refused",
              "empty-text", "whitespace-text", "duration-disagrees", "duplicate-line", "unknown-experiment",
              "misspelled-key", "lr-zero", "lr-negative", "warmup-ratio-over-1", "eval-interval-over-the-run",
              "dora-on-unsupported-module", "registry-folder-missing", "output-folder-not-writable"}
    assert listed <= {c.id for c in CASES}
    assert {"silent-resampled-downmixed-too-long-overlapping"} == {c[0] for c in OK_CASES}
