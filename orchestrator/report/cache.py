"""What `orchestrator report` keeps between reports: the rendered pieces of runs that did not
change (pieces.py), in `experiments/.report_cache.json` beside EXPERIMENTS.md (never in the
registry), so that a report of 10,000 runs reads and judges the intervals of the few that changed.

Each run has a digest (Store.report_runs: its row, artifacts, checks and its intervals' count,
last step and latest created_at, from aggregate queries), to which the report adds what it reads
outside the registry: the stat of the best adapter's file (the artifact check hashes it). A
piece is kept under the digests of the runs it shows: a run's rows of the run matrix and the
verdict matrix, a sweep's section (its band spans every run of it), a tune campaign's, a
replication group's row, and whether the run has per-utterance data (which decides, for every
run, whether verdicts are bootstrapped). The whole file is for one context: the sources of the
report, the judge and the reads (their hash), Python's and numpy's versions, the default
criteria and `root`; another context, a damaged file, or one another program wrote, is ignored.

Read with its intervals (and judged) each time: every run a kept piece does not cover, those
still `running` (liveness is read now, never kept), and the most recent ones, which the report
shows in full (interval tables, curves, verdict sections). The output is byte for byte the
report without the cache (`orchestrator report --no-cache`; tests/test_report_cache.py).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.acceptance.groups import replication_groups
from orchestrator.acceptance.outcome import BEST_ADAPTER
from orchestrator.artifacts.atomic import atomic_write
from orchestrator.artifacts.run_folder import ADAPTER_WEIGHTS
from orchestrator.config.criteria import CriteriaConf
from orchestrator.errors import WriteError, os_reason
from orchestrator.registry import Run, RunStatus
from orchestrator.report.blocks import INTERVAL_RUNS
from orchestrator.report.collect import ReportData, collect
from orchestrator.report.pieces import Pieces, StaleCache
from orchestrator.report.sweeps import sweeps_of
from orchestrator.report.tune import campaign_runs
from orchestrator.report.verdicts_md import VERDICT_RUNS

if TYPE_CHECKING:
    from orchestrator.registry import Store

CACHE_FILE = Path("experiments") / ".report_cache.json"  # relative to the folder of EXPERIMENTS.md
FORMAT = 1
_ORCHESTRATOR = Path(__file__).resolve().parent.parent
# what renders a piece from a run as the registry reads it: a change to any re-renders every piece
SOURCES = ("report", "acceptance", "selection.py", "config/criteria.py", "registry/entities.py", "registry/rows.py",
           "registry/reads.py", "registry/liveness.py", "artifacts/run_folder.py", "artifacts/atomic.py")


def code_version() -> str:
    """A hash of the sources in SOURCES, Python's version and numpy's (the bootstrap's random
    streams), without importing numpy."""
    digest = hashlib.blake2b(sys.version.encode(), digest_size=16)
    for name in SOURCES:
        where = _ORCHESTRATOR / name
        for path in sorted(where.glob("*.py")) if where.is_dir() else [where]:
            digest.update(path.relative_to(_ORCHESTRATOR).as_posix().encode() + b"\0" + path.read_bytes())
    spec = importlib.util.find_spec("numpy")
    if spec is not None and spec.origin:
        version = Path(spec.origin).with_name("version.py")
        digest.update(version.read_bytes() if version.is_file() else repr(os.stat(spec.origin)).encode())
    return digest.hexdigest()


def context(criteria: CriteriaConf | None, root: Path | None) -> str:
    """What every kept piece was rendered under, but the runs: the code, the default criteria, `root`."""
    default = None if criteria is None else criteria.as_dict()
    return hashlib.blake2b(repr((code_version(), default, None if root is None else str(root))).encode(),
                           digest_size=16).hexdigest()


def file_state(run: Run, root: Path | None) -> str:
    """What the artifact check reads of the disk, as a stat of the best adapter's weights file
    (follows links; "" for a run without one, "-" where it is missing)."""
    artifact = None if run.external else run.artifact(BEST_ADAPTER)
    if artifact is None:
        return ""
    path = os.path.join(artifact.path, ADAPTER_WEIGHTS)  # as criteria.artifact_integrity, without Path's cost
    if root is not None:
        path = os.path.join(root, path)  # an absolute path stays as it is
    try:
        found = os.stat(path)
    except OSError:
        return "-"
    return f"{found.st_mode}:{found.st_dev}:{found.st_ino}:{found.st_size}:{found.st_mtime_ns}:{found.st_ctime_ns}"


def units(runs: Sequence[Run]) -> Iterator[tuple[str, Sequence[Run]]]:
    """Every piece the blocks ask for (pieces.py), as (kind, the runs it shows)."""
    for run in runs:
        yield "matrix", [run]  # blocks.run_matrix
        yield "utterances", [run]  # collect._prefetched
    if len(runs) > VERDICT_RUNS:
        for run in runs:
            yield "verdicts", [run]  # verdicts_md.verdict_matrix
    yield from (("sweep", members) for members in sweeps_of(runs).values())
    yield from (("tune", members) for members in campaign_runs(runs).values())
    yield from (("group", members) for members in replication_groups(runs))


def plan(runs: Sequence[Run], pieces: Pieces) -> tuple[set[str], set[str]]:
    """(lean, full): the runs to read with their intervals, lean (the judged fields) or in full
    (the most recent, whose interval tables show every field)."""
    full = {run.id for run in runs[-max(INTERVAL_RUNS, VERDICT_RUNS):]}
    lean = set()
    for kind, members in units(runs):
        if not pieces.hit(kind, members):
            lean.update(run.id for run in members)
    return lean - full, full


class ReportCache:
    """The pieces file of one report output (`beside(EXPERIMENTS.md)`): `collect` reads the
    runs with what it holds, `save` writes back what the report used."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.pieces: Pieces | None = None
        self._context = ""
        self._held: tuple[str, bool | None, dict] = ("", None, {})

    @classmethod
    def beside(cls, report: Path) -> ReportCache:
        return cls(Path(report).parent / CACHE_FILE)

    def collect(self, store: Store, *, experiments: Sequence[str] = (), criteria: CriteriaConf | None = None,
                root: Path | None = None) -> ReportData:
        """`report.collect` of every run in `store`, reading and judging only what the kept pieces
        do not cover."""
        self._context = context(criteria, root)
        self._held = held = self._load()
        kept, utterances = (held[2], held[1]) if held[0] == self._context else ({}, None)
        while True:
            pieces = None

            def choose(runs: list[Run], digests: dict[str, str]) -> tuple[set[str], set[str]]:
                nonlocal pieces
                ours = {}
                for run in runs:
                    if run.status == RunStatus.RUNNING:
                        continue
                    state = file_state(run, root)
                    ours[run.id] = digests[run.id] if not state else hashlib.blake2b(
                        f"{digests[run.id]}/{state}".encode(), digest_size=16).hexdigest()
                pieces = Pieces(ours, kept, utterances)
                lean, full = plan(runs, pieces)
                pieces.loaded = lean | full
                return lean, full

            runs, _ = store.report_runs(choose)
            try:
                data = collect(runs, experiments=experiments, utterances=store, criteria=criteria, root=root,
                               pieces=pieces)
            except StaleCache:  # rendered with(out) per-utterance data that is gone (or new): all anew
                kept, utterances = {}, None
                continue
            self.pieces = pieces
            return data

    def rendered(self, kind: str = "matrix") -> int:
        """How many pieces of `kind` this report rendered (by default: runs judged anew)."""
        return 0 if self.pieces is None else len(self.pieces.rendered.get(kind, ()))

    def save(self) -> None:
        """Write what the report used (only that: the file never grows past one report), if it
        differs from what the file holds; atomically, without fsync (a lost cache is rebuilt)."""
        pieces = self.pieces
        if pieces is None or self._held == (self._context, pieces.utterances, pieces.used):
            return
        body = json.dumps(pieces.used, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        header = json.dumps({"format": FORMAT, "context": self._context, "utterances": pieces.utterances,
                             "body": hashlib.blake2b(body, digest_size=16).hexdigest()}).encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda fh: fh.write(header + b"\n" + body), durable=False)
        except Exception as exc:
            raise WriteError(f"cannot write {self.path.name} ({os_reason(exc)})", where=str(self.path),
                             fix="free disk space or make the folder writable, or run the report with --no-cache") \
                from exc

    def _load(self) -> tuple[str, bool | None, dict[str, dict[str, Any]]]:
        """(context, utterances, pieces) of the file; ("", None, {}) for a missing, damaged or
        foreign one (its body's hash is in its header: a torn or edited file does not match)."""
        nothing: tuple[str, bool | None, dict] = ("", None, {})
        try:
            header, _, body = self.path.read_bytes().partition(b"\n")
            head = json.loads(header)
            if not (isinstance(head, dict) and head.get("format") == FORMAT and isinstance(head.get("context"), str)
                    and head.get("utterances") in (True, False)
                    and head.get("body") == hashlib.blake2b(body, digest_size=16).hexdigest()):
                return nothing
            pieces = json.loads(body)
        except (OSError, ValueError):
            return nothing
        if not (isinstance(pieces, dict) and all(isinstance(kept, dict) for kept in pieces.values())):
            return nothing
        return head["context"], head["utterances"], pieces
