"""Is a run recorded as `running` really running? Derived when the registry is read, never written.

A training process holds `<output_dir>/<run>/.lock` (train.run_lock) for the run's whole life and
beats the run's heartbeat (Store.heartbeat) as it trains. A `running` run is read as
`interrupted` when its lock file, on this host, is free, or, when the lock cannot decide (a run
on another host, or its folder not reachable from here), when its heartbeat is older than
STALE_AFTER. Deriving instead of writing means a reader (report, `runs`, `resume`) can never
mark a live run dead by mistake, and nothing in the registry is lost: the recorded status
stays `running` until a process resumes or finishes the run.

Light on purpose (no torch, no hydra): the report reads it.
"""
from __future__ import annotations

import dataclasses
import fcntl
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from orchestrator.artifacts.run_folder import RunFolder
from orchestrator.registry import Run, RunStatus

HEARTBEAT_EVERY_S = 30.0  # the trainer beats at most this often
# A heartbeat older than this means the process is gone. Generous: the trainer beats from its
# step loop, so one long evaluation (two manifests, no step) passes without a beat.
STALE_AFTER = timedelta(minutes=30)


def lock_held(run_dir: Path) -> bool | None:
    """True if a live process on this host holds the run's lock, False if the lock is free,
    None if there is no lock file to ask (folder elsewhere, or never started here).

    Asks with a shared, non-blocking lock released at once: it never waits, and a trainer's
    exclusive lock makes it fail."""
    try:
        handle = open(RunFolder.at(run_dir).lock, "rb")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def run_dir(run: Run, root: Path | None = None) -> Path | None:
    """The run's output folder (`<output_dir>/<run id>`, relative paths against `root` or the
    working directory); None for a run without one (external runs)."""
    output_dir = run.config.get("output_dir") if isinstance(run.config, dict) else None
    if run.external or not output_dir:
        return None
    return RunFolder(Path(root or ".") / output_dir, run.id).path


def why_dead(run: Run, *, now: datetime | None = None, host: str | None = None,
             stale_after: timedelta = STALE_AFTER, root: Path | None = None) -> str | None:
    """Why a run recorded as `running` has no live process, or None (not `running`, or alive as
    far as can be told)."""
    if run.status != RunStatus.RUNNING or run.external:
        return None
    if run.host is None or run.host == (host or socket.gethostname()):
        folder = run_dir(run, root)
        held = lock_held(folder) if folder is not None else None
        if held is not None:
            return None if held else "its training process is gone (lock free); resume it with `orchestrator resume`"
    now = now or datetime.now(timezone.utc)
    beat = run.heartbeat_at or run.started_at
    if now - beat <= stale_after:
        return None
    minutes = int((now - beat).total_seconds() // 60)
    where = f" on {run.host}" if run.host else ""
    return (f"no heartbeat{where} for {minutes} min (since {beat:%Y-%m-%d %H:%M} UTC); "
            "resume it with `orchestrator resume`")


def settle(runs: Sequence[Run], **how) -> list[Run]:
    """The runs as they really are: each `running` run without a live process is returned as
    `interrupted`, with why as its failure reason (see `why_dead` for `how`)."""
    settled = []
    for run in runs:
        why = why_dead(run, **how)
        settled.append(dataclasses.replace(run, status=RunStatus.INTERRUPTED.value, failure_reason=why) if why else run)
    return settled
