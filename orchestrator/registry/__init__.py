"""The run registry: a SQLite (or any SQLAlchemy) store of runs, intervals, per-utterance
results, artifacts and checks."""
from orchestrator.registry.entities import Artifact, Check, Interval, Run, RunStatus, UtteranceRow
from orchestrator.registry.store import Store

__all__ = ["Artifact", "Check", "Interval", "Run", "RunStatus", "Store", "UtteranceRow"]
