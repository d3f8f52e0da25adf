"""Deterministic synthetic speech (espeak-ng + sox) and manifests, for tests and the demo.

Seeded text generators give everyday English and air-traffic-control phraseology; `synthesize`
renders them as 16 kHz mono 16-bit WAVs and returns manifest rows. Same inputs, same bytes:
re-running skips files that already exist.

    python -m orchestrator.data.synth --out manifests/test
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from orchestrator.data.audio import audio_info
from orchestrator.data.sentences import atc_sentences, general_sentences, spell_number  # noqa: F401 (re-exported)
from orchestrator.errors import OrchestratorError

# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

_FIX_INSTALL = "install them: apt-get install espeak-ng sox"


def _run(cmd: list[str], stdin: str | None = None) -> None:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        fix = ("pick a voice listed by `espeak-ng --voices`" if "voice" in proc.stderr
               else "run the command by hand to see what is wrong")
        raise OrchestratorError(f"{' '.join(cmd[:3])}... failed: {proc.stderr.strip()}",
                                where=cmd[0], fix=fix)


def _render(text: str, voice: str, speed: int, pitch: int, dest: Path) -> None:
    """espeak-ng -> temp WAV -> sox (16 kHz, mono, 16-bit) -> atomic rename to `dest`."""
    if dest.exists():
        return
    raw = tempfile.mkstemp(prefix=".espeak-", suffix=".wav", dir=dest.parent)
    tmp = tempfile.mkstemp(prefix=".sox-", suffix=".wav", dir=dest.parent)
    for fd, _ in (raw, tmp):
        os.close(fd)
    try:
        _run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", raw[1],
              "--stdin"], stdin=text)
        # -D: no dither, so output bytes are reproducible.
        _run(["sox", "-D", raw[1], "-b", "16", tmp[1], "rate", "16k", "channels", "1"])
        os.replace(tmp[1], dest)
    finally:
        for _, name in (raw, tmp):
            if os.path.exists(name):
                os.unlink(name)


def _pick(value: int | tuple[int, int], rng: random.Random) -> int:
    return value if isinstance(value, int) else rng.randint(*value)


def synthesize(
    sentences: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    prefix: str,
    voice: str | Sequence[str] = "en-us",
    speed: int | tuple[int, int] = 160,
    pitch: int | tuple[int, int] = 50,
    seed: int = 0,
    jobs: int = 2,
) -> list[dict]:
    """Render `sentences` to `out_dir/wavs/`; return manifest rows relative to `out_dir`.

    `voice` may be a list and `speed`/`pitch` an inclusive (lo, hi) range: each sentence then
    draws its own from a `seed`ed RNG. Existing WAVs are kept (file names hash the text and
    the voice settings, so a changed sentence gets a new file).
    """
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise OrchestratorError(f"{' and '.join(missing)} not found on PATH", where="synth",
                                fix=_FIX_INSTALL)
    if any(not s.strip() for s in sentences):
        raise ValueError("cannot synthesize an empty sentence")
    voices = [voice] if isinstance(voice, str) else list(voice)
    wav_dir = Path(out_dir) / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)

    rng = random.Random(seed)
    jobs_args = []
    for i, text in enumerate(sentences):
        v, s, p = rng.choice(voices), _pick(speed, rng), _pick(pitch, rng)
        key = hashlib.sha1(f"{v}|{s}|{p}|{text}".encode()).hexdigest()[:10]
        jobs_args.append((text, v, s, p, wav_dir / f"{prefix}-{i:04d}-{key}.wav"))

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(jobs_args), desc=f"synth {prefix}", unit="utt", disable=None) as bar:
        futures = [pool.submit(_render, *args) for args in jobs_args]
        try:
            for fut in as_completed(futures):
                fut.result()
                bar.update()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise

    return [{"audio_filepath": f"wavs/{dest.name}", "text": text,
             "duration": round(audio_info(dest)[0], 3)}
            for text, _, _, _, dest in jobs_args]


def write_manifest(rows: Sequence[dict], path: str | os.PathLike[str]) -> Path:
    """Write `rows` as JSONL to `path` (parent folders created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                    encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# The test set
# ---------------------------------------------------------------------------------------------

TEST_SEED = 20240611


def make_test_set(out_dir: str | os.PathLike[str], *, jobs: int = 2) -> dict[str, Path]:
    """Small fixed set: train (8 general + 8 ATC, en-us), domain (8 ATC, en-gb male voice),
    heldout (8 general, en-us). No sentence is in more than one manifest."""
    out = Path(out_dir)
    general = general_sentences(16, TEST_SEED)
    atc = atc_sentences(16, TEST_SEED)
    train = [s for pair in zip(general[:8], atc[:8]) for s in pair]
    rows = {
        "train": synthesize(train, out, prefix="train", voice="en-us", speed=(150, 175),
                            seed=1, jobs=jobs),
        "domain": synthesize(atc[8:], out, prefix="domain", voice="en-gb+m3", speed=(160, 185),
                             seed=2, jobs=jobs),
        "heldout": synthesize(general[8:], out, prefix="heldout", voice="en-us", speed=(150, 175),
                              seed=3, jobs=jobs),
    }
    return {name: write_manifest(r, out / f"{name}.jsonl") for name, r in rows.items()}


# ---------------------------------------------------------------------------------------------
# The demo: general English in two voices, air-traffic control in a third
# ---------------------------------------------------------------------------------------------

DEMO_SEED = 20261121
GENERAL_VOICES = ("en-us", "en-gb-x-rp")  # what the demo base model is pretrained on
DOMAIN_VOICE = "en-gb-scotland"  # the domain's accent, never heard in pretraining
# Sentence pools, sliced into disjoint sets: (first, last) index ranges into one seeded unique
# list. The pool's start is rich in short sentences (their templates run out of new sentences
# early); its later part is like the base's pretraining data. The heldout set takes from both:
# 1,500 utterances make the 95% interval of a heldout WER change narrow enough to judge the
# 0.2-point criterion (500 left it at about +-0.55 points).
# The accent sets (the tune campaign's domain: everyday English in the domain's voice) come after
# every earlier range, so adding them changed no existing set.
DEMO_GENERAL = {"heldout": ((0, 500), (11500, 12500)), "replay": ((500, 1500),), "pretrain": ((1500, 11500),),
                "accent_eval": ((12500, 13100),), "accent_train": ((13100, 13900),), "accent_dev": ((13900, 14200),),
                "heldout_extra": ((14200, 18700),), "replay_extra": ((18700, 19700),),
                "accent_eval_extra": ((19700, 21500),)}
# domain_dev (the dev set that picks a run's checkpoint, eval.select_manifest) comes after every
# other range, so adding it changed no existing set.
DEMO_ATC = {"domain_eval": ((0, 500),), "domain_train": ((600, 1100),), "pretrain": ((1100, 1300),),
            "domain_dev": ((1300, 1600),)}
DEMO_SETS = {  # name -> (sentence family, voices, speed range, seed for voice/speed/pitch draws)
    "heldout": ("general", GENERAL_VOICES, (140, 200), 11),
    "replay": ("general", GENERAL_VOICES, (140, 200), 12),
    "domain_eval": ("atc", (DOMAIN_VOICE,), (160, 190), 13),
    "domain_train": ("atc", (DOMAIN_VOICE,), (160, 190), 14),
    "domain_dev": ("atc", (DOMAIN_VOICE,), (160, 190), 15),
    "accent_eval": ("general", (DOMAIN_VOICE,), (160, 190), 16),
    "accent_train": ("general", (DOMAIN_VOICE,), (160, 190), 17),
    "accent_dev": ("general", (DOMAIN_VOICE,), (160, 190), 18),
    "heldout_extra": ("general", GENERAL_VOICES, (140, 200), 19),
    "replay_extra": ("general", GENERAL_VOICES, (140, 200), 20),
    "accent_eval_extra": ("general", (DOMAIN_VOICE,), (160, 190), 21),
}
# Manifests made of several sets, in order, for the tune campaign. Its heldout set is the demo's
# 1,500 utterances and 4,500 more, so that its max-type band can resolve the 0.2-point guard
# even judged family-wise (at 1,500 the band spans about +-0.27 points over 8 intervals at 95 %,
# at 3,000 +-0.2 at the campaign's 98.75 %). Its replay set adds 1,000 sentences from the part of
# the pool the base was pretrained on to the demo's 1,000 from its start, as replay should
# resemble what the base knows (with the start alone, heldout sentences of the later kind were
# forgotten: EXPERIMENTS.md).
# Its domain set is the accent's 600 evaluation utterances and 1,800 more: the stability bound
# (criterion 4) is the observed range plus the churn between checkpoints, which shrinks as
# 1/sqrt(n); at 600 it was about 0.45 points at 98.75 % even for a run that had settled.
# The first command's campaign (scripts/demo.sh) evaluates on the accent's 2,400 and the first half
# of the 6,000 heldout utterances (a part (name, n) is the set's first n utterances: rendering is
# prefix-stable, so they are the same files as in the full set); the CAMPAIGN sets are all it
# renders (--set campaign).
DEMO_UNIONS = {"heldout_6000": ("heldout", "heldout_extra"), "replay_2000": ("replay", "replay_extra"),
               "accent_eval_2400": ("accent_eval", "accent_eval_extra"),
               "heldout_3000": ("heldout", ("heldout_extra", 1500))}
CAMPAIGN = {"accent_train": None, "accent_dev": None, "replay": None, "replay_extra": None, "accent_eval": None,
            "accent_eval_extra": None, "heldout": None, "heldout_extra": 1500}  # set -> first n (None: all)


def demo_sentences() -> dict[str, list[str]]:
    """Every demo and pretraining set's sentences; no sentence is in two sets (checked)."""
    def sliced(pool: list[str], ranges: Sequence[tuple[int, int]]) -> list[str]:
        return [s for a, b in ranges for s in pool[a:b]]

    # prefix-stable generators: a longer pool starts with the same sentences
    general = general_sentences(max(b for ranges in DEMO_GENERAL.values() for _, b in ranges), DEMO_SEED)
    atc = atc_sentences(max(b for ranges in DEMO_ATC.values() for _, b in ranges), DEMO_SEED)
    out = {name: sliced(general, ranges) for name, ranges in DEMO_GENERAL.items() if name != "pretrain"}
    out |= {name: sliced(atc, ranges) for name, ranges in DEMO_ATC.items() if name != "pretrain"}
    out["pretrain"] = sliced(general, DEMO_GENERAL["pretrain"]) + sliced(atc, DEMO_ATC["pretrain"])
    check_disjoint(out)
    return out


def check_disjoint(sets: dict[str, Sequence[str]]) -> None:
    names = list(sets)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            shared = set(sets[x]) & set(sets[y])
            if shared:
                raise ValueError(f"{len(shared)} sentences are in both {x} and {y}, e.g. {next(iter(shared))!r}")


def make_demo_set(out_dir: str | os.PathLike[str], *, jobs: int = 2,
                  only: dict[str, int | None] | None = None) -> dict[str, Path]:
    """The demo's manifests: heldout (1,500 general), replay (1,000 general), domain_eval (500 ATC),
    domain_train (500 ATC, a voice the base never heard) and domain_dev (300 ATC in that voice: the
    ATC dev set); the accent domain, everyday English in that voice: accent_eval (600), accent_train
    (800) and accent_dev (300); and the unions of DEMO_UNIONS. `only` {set: first n or None}: render
    just those (a set cut short gets no manifest of its own) and the unions they make up."""
    out = Path(out_dir)
    sentences = demo_sentences()
    wanted = only if only is not None else dict.fromkeys(DEMO_SETS)
    paths, rendered = {}, {}
    for name, (_, voices, speed, seed) in DEMO_SETS.items():
        if name not in wanted:
            continue
        texts = sentences[name][:wanted[name]]
        rendered[name] = synthesize(texts, out, prefix=name, voice=voices, speed=speed, pitch=(35, 65),
                                    seed=seed, jobs=jobs)
        if len(texts) == len(sentences[name]):
            paths[name] = write_manifest(rendered[name], out / f"{name}.jsonl")
    for name, parts in DEMO_UNIONS.items():
        parts = [(part, None) if isinstance(part, str) else part for part in parts]
        if all(part in rendered and (n is not None or part in paths) for part, n in parts):
            paths[name] = write_manifest([row for part, n in parts for row in rendered[part][:n]],
                                         out / f"{name}.jsonl")
    return paths


def make_pretrain_set(out_dir: str | os.PathLike[str], *, jobs: int = 2) -> Path:
    """The demo base model's training set: 10,000 general sentences + 200 ATC ones, general voices."""
    out = Path(out_dir)
    rows = synthesize(demo_sentences()["pretrain"], out, prefix="pretrain", voice=GENERAL_VOICES,
                      speed=(140, 200), pitch=(35, 65), seed=10, jobs=jobs)
    return write_manifest(rows, out / "train.jsonl")


SETS = {"test": make_test_set, "demo": make_demo_set,
        "campaign": lambda out, jobs: make_demo_set(out, jobs=jobs, only=CAMPAIGN),
        "pretrain": lambda out, jobs: {"train": make_pretrain_set(out, jobs=jobs)}}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.data.synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=sorted(SETS), default="test",
                        help="test: 24 utterances for the tests; demo: every demo manifest; campaign: only "
                             "those of the first command's campaign (scripts/demo.sh); "
                             "pretrain: the demo base model's training set")
    parser.add_argument("--out", default=None, help="output folder (manifests + wavs/); "
                                                    "default manifests/test, manifests/demo or data/pretrain")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel renders")
    args = parser.parse_args(argv)
    out = args.out or {"test": "manifests/test", "demo": "manifests/demo", "campaign": "manifests/demo",
                       "pretrain": "data/pretrain"}[args.set]
    for name, path in SETS[args.set](out, jobs=args.jobs).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
