"""The run registry: a SQLite (or any SQLAlchemy) store of runs, intervals and artifacts."""
from orchestrator.registry.entities import Artifact, Interval, Run
from orchestrator.registry.store import Store

__all__ = ["Artifact", "Interval", "Run", "Store"]
