"""Manifest statistics and evaluation-set expansion, on top of manifest.py (pandas / numpy).

`manifest_stats` summarises a manifest (utterances, hours, duration percentiles, words, speakers).
`expand_manifest` draws a stable evaluation manifest from a pool: seeded, stratified by duration,
and free of any overlap with the given training manifests, by audio content (sha256 of the file
bytes) or by normalised text (the normaliser WER uses).

Words are counted after that normaliser, exactly as WER counts reference words. It lives in
orchestrator.evaluate, which imports torch, so it is imported inside the functions that use it.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.artifacts.atomic import atomic_write, sha256_file
from orchestrator.errors import ManifestError, OrchestratorError
from orchestrator.data.manifest import Utterance, read_manifest, read_rows, speaker_summary

PERCENTILES = (5, 50, 95)


# --- stats -------------------------------------------------------------------------------------

def manifest_stats(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Utterances, hours, duration percentiles (linear interpolation), words total and per utterance,
    and the speakers (`{name: utterances}`, most first; empty when no line names one)."""
    from orchestrator.data.manifest_compare import speaker_counts
    from orchestrator.data.textnorm import normalize

    utts = read_manifest(path)
    frame = pd.DataFrame({"duration": [u.duration for u in utts],
                          "words": [len(normalize(u.text).split()) for u in utts]})
    seconds = frame["duration"]
    quantiles = seconds.quantile([p / 100 for p in PERCENTILES])
    return {
        "manifest": os.fspath(path),
        "utterances": len(frame),
        "hours": float(seconds.sum() / 3600),
        "seconds": {"total": float(seconds.sum()), "mean": float(seconds.mean()), "min": float(seconds.min()),
                    **{f"p{p}": float(q) for p, q in zip(PERCENTILES, quantiles)}, "max": float(seconds.max())},
        "words": {"total": int(frame["words"].sum()), "per_utterance": float(frame["words"].mean())},
        "speakers": dict(speaker_counts(utts).most_common()),
    }


def render_stats(stats: dict[str, Any]) -> str:
    s, w = stats["seconds"], stats["words"]
    percentiles = "  ".join(f"p{p} {s[f'p{p}']:.2f}" for p in PERCENTILES)
    return "\n".join([
        f"{stats['manifest']}",
        f"  utterances  {stats['utterances']}",
        f"  hours       {stats['hours']:.3f}  ({s['total']:.1f} s)",
        f"  duration s  min {s['min']:.2f}  {percentiles}  max {s['max']:.2f}  mean {s['mean']:.2f}",
        f"  words       {w['total']}  ({w['per_utterance']:.2f} per utterance)",
        *([f"  speakers    {speaker_summary(Counter(stats['speakers']))}"] if stats.get("speakers") else []),
    ])


# --- expand ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Expansion:
    """What `expand_manifest` wrote and why the pool shrank."""

    out: Path
    selected: int
    pool: int
    eligible: int
    excluded_audio: int  # same audio bytes as an utterance of an excluded manifest
    excluded_text: int  # same normalised text as an utterance of an excluded manifest
    duplicate_audio: int  # same audio bytes as an earlier pool utterance (the first is kept)
    empty_text: int  # nothing left after normalisation: WER has no reference words
    bins: int  # duration strata actually used

    def summary(self) -> str:
        return (f"{self.out}: {self.selected} utterances from {self.eligible} eligible of {self.pool} in the pool "
                f"(excluded: {self.excluded_audio} same audio, {self.excluded_text} same text, "
                f"{self.duplicate_audio} duplicate audio, {self.empty_text} empty text; {self.bins} duration bins)")


def _overlap_keys(manifests: Iterable[str | os.PathLike[str]], normalize) -> tuple[set[str], set[str]]:
    hashes, texts = set(), set()
    for path in manifests:
        for u in read_manifest(path):
            hashes.add(sha256_file(Path(u.audio_filepath)))
            texts.add(normalize(u.text))
    return hashes, texts


def allocate(counts: np.ndarray, size: int) -> np.ndarray:
    """Proportional allocation of `size` over strata of `counts` (largest remainder, ties to the lower bin)."""
    exact = size * counts / counts.sum()
    quota = np.floor(exact).astype(int)
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:size - quota.sum()]] += 1
    return quota


def stratified_sample(durations: np.ndarray, size: int, *, bins: int, seed: int) -> tuple[np.ndarray, int]:
    """Indices (sorted) of `size` items drawn without replacement, stratified by duration quantile bins.

    Bins hold equal counts (ties in duration broken by position), each gets its proportional share,
    and one seeded generator draws inside each bin in turn: same input and seed, same indices."""
    n_bins = max(1, min(bins, len(durations)))
    rank = pd.Series(durations).rank(method="first").to_numpy()
    labels = pd.qcut(rank, q=n_bins, labels=False) if n_bins > 1 else np.zeros(len(durations), dtype=int)
    quota = allocate(np.bincount(labels, minlength=n_bins), size)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == b), size=quota[b], replace=False) for b in range(n_bins)]
    return np.sort(np.concatenate(chosen)), n_bins


def _write_jsonl_atomic(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def expand_manifest(pool: str | os.PathLike[str], out: str | os.PathLike[str], *, size: int = 500,
                    exclude: Iterable[str | os.PathLike[str]] = (), seed: int = 0, bins: int = 10) -> Expansion:
    """Write to `out` a `size`-utterance evaluation manifest drawn from `pool`.

    Pool utterances sharing audio content or normalised text with any `exclude` manifest are
    dropped, as are repeated audio within the pool and texts that normalise to nothing; the rest
    are stratified into `bins` duration quantile bins and sampled proportionally with `seed`.
    Rows keep their original fields, in pool order, with absolute audio paths (and "duration"
    filled in from the audio when the pool had none). Fewer eligible than `size` is an error.
    """
    from orchestrator.data.textnorm import normalize

    if size < 1:
        raise OrchestratorError(f"size must be at least 1, got {size}", where="--size", fix="pass --size 500")
    if bins < 1:
        raise OrchestratorError(f"bins must be at least 1, got {bins}", where="--bins", fix="pass --bins 10")
    utts: list[Utterance] = read_manifest(pool)
    rows = read_rows(pool)
    banned_hashes, banned_texts = _overlap_keys(exclude, normalize)

    eligible: list[Utterance] = []
    seen: set[str] = set()
    excluded_audio = excluded_text = duplicates = empty = 0
    for u in utts:
        digest, text = sha256_file(Path(u.audio_filepath)), normalize(u.text)
        if digest in banned_hashes:
            excluded_audio += 1
        elif text in banned_texts:
            excluded_text += 1
        elif digest in seen:
            duplicates += 1
        elif not text:
            empty += 1
        else:
            eligible.append(u)
        seen.add(digest)
    if len(eligible) < size:
        raise ManifestError(
            f"only {len(eligible)} eligible utterances, --size {size} requested ({len(utts)} in the pool; "
            f"excluded {excluded_audio} same audio and {excluded_text} same text as the excluded manifests, "
            f"{duplicates} duplicate audio, {empty} empty text)",
            where=os.fspath(pool), fix=f"lower --size to at most {len(eligible)} or add utterances to the pool")

    picked, n_bins = stratified_sample(np.array([u.duration for u in eligible]), size, bins=bins, seed=seed)
    out_rows = []
    for i in picked:
        u = eligible[i]
        row = {**rows[u.line], "audio_filepath": u.audio_filepath}
        row.pop("audio", None)  # the upstream trainer's name for it: one field, absolute, is written
        row.setdefault("duration", u.duration)
        out_rows.append(row)
    _write_jsonl_atomic(out_rows, Path(out))
    return Expansion(out=Path(out), selected=len(out_rows), pool=len(utts), eligible=len(eligible),
                     excluded_audio=excluded_audio, excluded_text=excluded_text, duplicate_audio=duplicates,
                     empty_text=empty, bins=n_bins)
