"""Who speaks each utterance of an evaluation set, for the speaker-level (block) bootstrap.

A manifest line may carry an optional `"speaker"`; when every kept utterance has one, the run
records one small integer per utterance (its speaker, in first-seen order) in its data_stats
(`speakers.<split>`), and the judge resamples speakers instead of utterances: one speaker's
utterances are not independent. Read from the utterance (`Utterance.speaker`) when the manifest
reader keeps it, else from the manifest's own line (`Utterance.line`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def speaker_ids(path: str | Path, utts: Sequence) -> list[int] | None:
    """One integer per utterance (same speaker, same integer), or None if any lacks a speaker."""
    names = [getattr(u, "speaker", None) for u in utts]
    if None in names:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
            names = [json.loads(lines[u.line - 1]).get("speaker") for u in utts]
        except (OSError, ValueError, IndexError, AttributeError):
            return None
    if not names or any(name is None or name == "" for name in names):
        return None
    first_seen: dict[str, int] = {}
    return [first_seen.setdefault(str(name), len(first_seen)) for name in names]
