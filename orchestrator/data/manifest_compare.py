"""What one manifest shares with, or writes differently from, another: the run preflight's
checks across manifests (training/loop.py `load_splits`), on top of the per-line rules.

Shared speakers: an evaluation manifest whose speakers also speak in the training manifest
measures speaker adaptation, not generalisation. Lines without a "speaker" field are left out;
the check needs both manifests to name speakers. A run warns (data.speaker_overlap=warn, the
default) or refuses (data.speaker_overlap=refuse).

Orthography: how the transcripts are written. The rule for "the model's orthography": it is the
training manifest's. The adapter is trained to write exactly like the training transcripts, so
that is what it will produce, whatever the base model wrote before; and the preflight runs
before the model (or its tokenizer) is loaded, so it cannot ask the tokenizer. Each evaluation
manifest is compared with the training manifest on two traits, counted per line:
- case: a line is upper case when it has at least two letters with case and all are upper.
  A manifest is "upper case" when more than half its lines are. One manifest upper case and the
  other not is reported with the count of the other style's lines. (The WER normaliser lower-cases,
  so case changes no WER; it changes what the model is taught to write.)
- numbers: a line has digits ("7") or spelled-out numbers ("seven", "twenty"). The training
  manifest writing numbers one way and the evaluation manifest the other is reported with the
  count of lines that differ. This one does change WER: "7" and "seven" are different words.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.errors import ManifestError

if TYPE_CHECKING:
    from orchestrator.data.manifest import Filtered, Utterance

SPEAKER_OVERLAP_POLICIES = ("warn", "refuse")
_NUMBER_WORDS = re.compile(
    r"\b(zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
    r"seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred|thousand|"
    r"million)\b", re.IGNORECASE)
_DIGIT = re.compile(r"[0-9]")


@dataclass(frozen=True)
class SharedSpeakers:
    speakers: tuple[str, ...]  # in both manifests, sorted
    utterances: int  # of the evaluation manifest, spoken by them
    total: int  # utterances of the evaluation manifest

    def __bool__(self) -> bool:
        return bool(self.speakers)

    def describe(self, shown: int = 5) -> str:
        names = ", ".join(self.speakers[:shown]) + (f", ... {len(self.speakers) - shown} more"
                                                    if len(self.speakers) > shown else "")
        return (f"{len(self.speakers)} speaker(s) ({names}) also speak in the training manifest: "
                f"{self.utterances} of {self.total} utterances")


def shared_speakers(train: Sequence[Utterance], other: Sequence[Utterance]) -> SharedSpeakers:
    """The speakers of `other` (an evaluation manifest) who also speak in `train`."""
    trained = {u.speaker for u in train if u.speaker}
    both = sorted({u.speaker for u in other if u.speaker in trained})
    return SharedSpeakers(tuple(both), sum(u.speaker in trained for u in other if u.speaker), len(other))


@dataclass(frozen=True)
class Orthography:
    """How many lines of a manifest are written each way (see the module doc)."""

    lines: int
    upper: int  # every cased letter upper case (at least two)
    digits: int  # a digit somewhere
    spelled: int  # a number word somewhere

    @property
    def mostly_upper(self) -> bool:
        return self.upper * 2 > self.lines


def _is_upper(text: str) -> bool:
    cased = [c for c in text if c.isupper() or c.islower()]
    return len(cased) >= 2 and all(c.isupper() for c in cased)


def orthography(utts: Sequence[Utterance]) -> Orthography:
    return Orthography(lines=len(utts), upper=sum(_is_upper(u.text) for u in utts),
                       digits=sum(bool(_DIGIT.search(u.text)) for u in utts),
                       spelled=sum(bool(_NUMBER_WORDS.search(u.text)) for u in utts))


def orthography_differences(train: Orthography, other: Orthography) -> list[str]:
    """What `other` (an evaluation manifest) writes differently from `train`, with counts; [] if nothing."""
    found = []
    if other.mostly_upper and not train.mostly_upper:
        found.append(f"{other.upper} of {other.lines} lines are upper case, the training manifest's are not "
                     f"({train.upper} of {train.lines})")
    elif train.mostly_upper and not other.mostly_upper:
        found.append(f"{other.lines - other.upper} of {other.lines} lines are not upper case, the training "
                     f"manifest's are ({train.upper} of {train.lines})")
    if other.digits and not train.digits and train.spelled:
        found.append(f"{other.digits} of {other.lines} lines write numbers as digits, the training manifest spells "
                     f"them out ({train.spelled} lines) and never uses digits")
    elif train.digits and not train.spelled and other.spelled and not other.digits:
        found.append(f"{other.spelled} of {other.lines} lines spell numbers out, the training manifest writes "
                     f"digits ({train.digits} lines)")
    return found


def refuse_shared_speakers(parts: Mapping[str, Filtered], manifests: Mapping[str, str], policy: str,
                           training: Sequence[str] = ("train", "replay")) -> None:
    """With policy "refuse": ManifestError naming the first evaluation manifest that shares
    speakers with the training manifest ("warn": the run logs it, see training/loop.py)."""
    if policy != "refuse" or "train" not in parts:
        return
    for name, part in parts.items():
        shared = None if name in training else shared_speakers(parts["train"].kept, part.kept)
        if shared:
            raise ManifestError(f"{shared.describe()}; its WER would measure adaptation to known speakers",
                                where=manifests[name],
                                fix="split the manifests by speaker, or set data.speaker_overlap=warn")


def speaker_counts(utts: Sequence[Utterance]) -> Counter[str]:
    return Counter(u.speaker for u in utts if u.speaker)
