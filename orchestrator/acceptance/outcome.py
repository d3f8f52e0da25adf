"""What judging produces: statuses, the per-manifest comparison, a criterion's verdict, a run's.

Plain records and constants only (no numpy, no torch): the report, the judge and the criteria
share them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from orchestrator.config.criteria import CriteriaConf
from orchestrator.selection import Selection
from orchestrator.artifacts.run_folder import BEST_ADAPTER

__all__ = ["BEST_ADAPTER"]  # re-exported: the judge and report name the artifact through outcome

if TYPE_CHECKING:
    import numpy as np

PASS, FAIL, INCONCLUSIVE, NA = "PASS", "FAIL", "INCONCLUSIVE", "N/A"
PLANNED = "planned"  # matrix status of a declared experiment with no run
SPLITS = ("domain", "heldout")
PARITY = "parity"
NO_UTTERANCES = "point estimate, no per-utterance data"
TITLES = {
    "domain_reduction": "Domain WER reduction",
    "heldout_regression": "Heldout WER regression",
    "convergence": "Convergence (eval loss)",
    "stability": "Stability (domain WER)",
    "identity_errors": "Identity() target errors",
    "artifact_integrity": "Artifact integrity",
    "parity": "CLI parity",
}
DERIVED = {PASS: "passed", FAIL: "failed", INCONCLUSIVE: "inconclusive"}
# How the interval of criteria 1 and 2 was made (Comparison.method; the report prints it)
DEV_SET = "dev set"  # the checkpoint was picked on eval.select_manifest: a plain paired bootstrap
MAX_TYPE = "max-type"  # picked on this very set: a simultaneous band over every candidate interval
PLAIN = "single candidate"  # one trained interval: nothing was picked
POINT = "point estimate"


class UtteranceSource(Protocol):
    """Where per-utterance errors come from; `registry.Store` is one."""

    def utterance_errors(self, run_id: str, step: int, split: str) -> tuple[np.ndarray, np.ndarray]: ...


Loader = Callable[[str, int, str], "tuple[np.ndarray, np.ndarray]"]


@dataclass(frozen=True, slots=True)
class Comparison:
    """Baseline (step 0) vs tuned WER on one manifest. WERs are fractions; delta = tuned -
    baseline and its interval are points. `paired` is True when the bootstrap ran; otherwise
    ci_* and p_improvement are None and `note` says why. `method` is how the interval was made
    (DEV_SET, MAX_TYPE over `candidates` intervals, PLAIN, or POINT)."""

    split: str
    baseline_wer: float | None
    tuned_wer: float | None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_improvement: float | None = None
    paired: bool = False
    note: str = ""
    method: str = POINT
    candidates: int = 1


@dataclass(frozen=True, slots=True)
class RangeBound:
    """Criterion 4 from the bootstrap: the observed max - min domain WER over the window (points)
    and a simultaneous interval for the true range, from every pair of window intervals."""

    observed: float
    low: float
    high: float
    steps: tuple[int, ...]
    note: str


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str  # a key of TITLES
    status: str  # PASS | FAIL | INCONCLUSIVE | N/A
    value: str  # what was measured, human-readable
    detail: str  # why this status (or why not assessable)
    threshold: str = ""

    @property
    def title(self) -> str:
        return TITLES.get(self.name, self.name)


@dataclass(frozen=True, slots=True)
class RunVerdict:
    criteria: list[Verdict]
    overall: str  # PASS | FAIL | INCONCLUSIVE
    reason: str  # which criteria decided the overall verdict
    selection: Selection | None
    comparisons: dict[str, Comparison]
    thresholds: CriteriaConf

    def __getitem__(self, name: str) -> Verdict:
        return next(v for v in self.criteria if v.name == name)

    @property
    def method(self) -> str:
        """How criterion 1's interval accounts for the checkpoint pick (the report says it)."""
        return self.comparisons["domain"].method if "domain" in self.comparisons else POINT
