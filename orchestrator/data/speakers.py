"""Who speaks each utterance of an evaluation set, for the speaker-level (block) bootstrap.

A manifest line may carry an optional `"speaker"` (kept as `Utterance.speaker`); when every kept
utterance has one, the run records one small integer per utterance (its speaker, in first-seen
order) in its data_stats (`speakers.<split>`), and the judge resamples speakers instead of
utterances: one speaker's utterances are not independent.
"""
from __future__ import annotations

from collections.abc import Sequence


def speaker_ids(utts: Sequence) -> list[int] | None:
    """One integer per utterance (same speaker, same integer), or None if any lacks a speaker."""
    names = [u.speaker for u in utts]
    if not names or any(not name for name in names):
        return None
    first_seen: dict[str, int] = {}
    return [first_seen.setdefault(str(name), len(first_seen)) for name in names]
