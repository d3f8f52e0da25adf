"""How long a live run has left, from what it measured of itself (`orchestrator watch`'s ETA).

A run's time is not spread evenly over its steps: its evaluations (domain, heldout and dev sets at
every interval, then the parity check's re-evaluation of the best adapter) can be most of it and
come late (eval.start), so steps per second since the start says "0s" for the last minutes of a
demo run. The forecast is instead what is left of the schedule at the pace measured so far: the
training steps left at the mean seconds per step, plus every evaluation left (the sets of each
interval after this step, then parity's domain and heldout) at the seconds its set's latest
evaluation took (the shared baseline's own time where step 0 was read from it). None until every
part of it has been measured once. An early stop or a pruned run ends sooner; a resumed run
measures its pace anew.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

PARITY_SETS = ("domain", "heldout")  # what loop.check_parity evaluates, in order


class Pace:
    """The measured pace of one run in this process, and the forecast of its time left."""

    def __init__(self, steps: int, eval_steps: Iterable[int], sets: Sequence[str], *, parity: bool = True):
        self.steps = steps
        self.eval_steps = sorted(s for s in eval_steps if s > 0)  # step 0 (the baseline) comes first
        self.sets = tuple(sets)  # evaluated at each interval, in order
        self.parity = parity
        self.trained = 0
        self.train_s = 0.0
        self.eval_s: dict[str, float] = {}  # the latest evaluation time of each set

    def trained_for(self, steps: int, seconds: float) -> None:
        self.trained += steps
        self.train_s += seconds

    def evaluated(self, split: str, seconds: float) -> None:
        self.eval_s[split] = seconds

    def seconds_left(self, step: int, now: Sequence[str] = (), *, parity: bool | None = None) -> float | None:
        """Seconds left once `step` steps are done and `now` (the sets still to evaluate at this
        point, the one under way first) are evaluated next; parity's sets at the end unless
        `parity` is False (it is under way: in `now`). None while any part is unmeasured."""
        later = [split for s in self.eval_steps if s > step for split in self.sets]
        evaluations = [*now, *later, *(PARITY_SETS if (self.parity if parity is None else parity) else ())]
        if any(split not in self.eval_s for split in evaluations):
            return None
        left = max(0, self.steps - step)
        if left and not self.trained:
            return None
        train = left * self.train_s / self.trained if left else 0.0
        return train + sum(self.eval_s[split] for split in evaluations)
