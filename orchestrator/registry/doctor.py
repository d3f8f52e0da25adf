"""`orchestrator doctor`: check a registry against the disk; report, and when asked repair statuses.

What it checks, run by run (runs entered with `record` have no files and only get the first):
- a run recorded `running` whose process is gone (orchestrator.liveness: its lock is free on
  this host, or its heartbeat is stale): a problem; `--repair` records it `interrupted` with why,
  so it reads as what it is and the same command resumes it;
- the run's folder exists when the registry holds intervals or artifacts of it;
- every artifact the registry lists exists, and the sha256 of its weights matches the registry;
- a completed run has its `lora_adapter_best` and `lora_adapter_last` rows;
- a run with intervals has its `config.yaml` (what `orchestrator eval` reads) and it parses;
- `checkpoint.pt` is a sound archive (CRCs checked, without loading torch);
- rows whose parent row is missing (intervals, artifacts and checks without their run, utterance
  results without their interval);
- folders under the outputs with no run in this registry, and leftovers of interrupted writes (info).

An artifact whose hash differs in a run that stopped mid-interval (interrupted, or `running` with
a dead process) is a warning, not a problem: the run was killed between writing the adapter and
recording it, and resuming redoes that interval and records the adapter again.

`--repair` changes statuses only (running -> interrupted, with a note); it never deletes or
rewrites data. Exit status 0 when nothing is wrong (or everything found was repaired), 1 when
problems remain. Light on purpose: no torch.
"""
from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.registry import liveness
from orchestrator.artifacts.atomic import sha256_file
from orchestrator.artifacts.run_folder import ADAPTER_KINDS, ADAPTER_WEIGHTS, CONFIG, RunFolder
from orchestrator.registry import Run, RunStatus, Store

REQUIRED_ARTIFACTS = ADAPTER_KINDS
LEFTOVER_SUFFIXES = (".tmp", ".old")


@dataclass
class Finding:
    kind: str  # e.g. stale_running, missing_artifact, artifact_mismatch, orphan_rows
    severity: str  # problem | warning | info
    what: str
    run: str | None = None
    fix: str | None = None
    repaired: bool = False

    def line(self) -> str:
        head = f"{self.severity}: " + (f"{self.run}: " if self.run else "")
        tail = " [repaired]" if self.repaired else (f" (fix: {self.fix})" if self.fix else "")
        return f"{head}{self.what}{tail}"


@dataclass
class Diagnosis:
    registry: str
    runs: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        """Problems still there (repaired ones excluded)."""
        return [f for f in self.findings if f.severity == "problem" and not f.repaired]

    @property
    def healthy(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        repaired = sum(f.repaired for f in self.findings)
        warnings = sum(f.severity == "warning" for f in self.findings)
        state = "healthy" if self.healthy else f"{len(self.problems)} problem(s)"
        return (f"{self.registry}: {self.runs} runs checked: {state}"
                + (f", {repaired} repaired" if repaired else "") + (f", {warnings} warning(s)" if warnings else ""))

    def as_dict(self) -> dict[str, Any]:
        return {"registry": self.registry, "runs": self.runs, "healthy": self.healthy,
                "problems": len(self.problems), "findings": [dataclasses.asdict(f) for f in self.findings]}


def _folder(run: Run, outputs: Path | None) -> Path | None:
    if outputs is not None and not run.external:
        return RunFolder(outputs, run.id).path
    return liveness.run_dir(run)


def _as_seen_from(run: Run, outputs: Path | None) -> Run:
    """The run with its output_dir pointed at `outputs` (liveness looks for its lock there)."""
    if outputs is None or not isinstance(run.config, dict):
        return run
    return dataclasses.replace(run, config={**run.config, "output_dir": str(outputs)})


def _artifact_path(recorded: str, kind: str, folder: Path | None) -> Path:
    """Where the artifact is: its recorded path, or (outputs moved) its kind in the run folder."""
    path = Path(recorded)
    if folder is not None and not path.exists() and RunFolder.at(folder).artifact(kind).exists():
        return RunFolder.at(folder).artifact(kind)
    return path


def _check_liveness(store: Store, run: Run, outputs: Path | None, repair: bool) -> list[Finding]:
    why = liveness.why_dead(_as_seen_from(run, outputs))
    if why is None:
        return []
    finding = Finding("stale_running", "problem", f"recorded `running` but {why}", run.id,
                      fix="orchestrator doctor --repair records it `interrupted`; running the same command resumes it")
    if repair:
        note = f"marked interrupted by `orchestrator doctor`: {why}"
        finding.repaired = store.mark_interrupted(run.id, note, seen_heartbeat=run.heartbeat_at)
        if not finding.repaired and store.get_run(run.id).status != RunStatus.RUNNING:
            finding.severity, finding.what = "info", "was `running` with no live process; another process changed it meanwhile"
    return [finding]


def _check_artifacts(run: Run, folder: Path | None, resumable: bool) -> list[Finding]:
    found = []
    for a in run.artifacts:
        path = _artifact_path(a.path, a.kind, folder)
        weights = path / ADAPTER_WEIGHTS if path.is_dir() else path
        if not weights.is_file():
            found.append(Finding("missing_artifact", "problem", f"{a.kind}: {weights} is missing", run.id,
                                 fix="restore it from a backup, or run the configuration again with rerun=true"))
            continue
        try:
            digest = sha256_file(weights)
        except OSError as exc:
            found.append(Finding("unreadable_artifact", "problem", f"{a.kind}: cannot read {weights} ({exc.strerror})",
                                 run.id, fix="check the file's permissions and the disk"))
            continue
        if digest != a.sha256:
            what = f"{a.kind}: sha256 of {weights} is {digest[:12]}, the registry says {a.sha256[:12]}"
            if resumable:
                found.append(Finding("artifact_pending", "warning", what + " (the run stopped mid-interval)", run.id,
                                     fix="resume the run: it redoes the interval and records the adapter again"))
            else:
                found.append(Finding("artifact_mismatch", "problem", what, run.id,
                                     fix="the file changed after it was recorded: restore it, or rerun with rerun=true"))
    if run.status == RunStatus.COMPLETED:
        have = {a.kind for a in run.artifacts}
        for kind in REQUIRED_ARTIFACTS:
            if kind not in have:
                found.append(Finding("incomplete", "problem", f"completed, but no {kind} is recorded", run.id,
                                     fix="run the configuration again with rerun=true"))
    return found


def _check_folder(run: Run, folder: Path) -> list[Finding]:
    found = []
    config = RunFolder.at(folder).config
    if run.intervals and not config.is_file():
        found.append(Finding("no_config", "problem", f"has intervals but no {config}", run.id,
                             fix=f"resume the run (it rewrites {CONFIG}), or write the registry's config there: "
                                 "orchestrator runs --json"))
    elif config.is_file():
        from omegaconf import OmegaConf

        try:
            OmegaConf.load(config)
        except Exception as exc:  # noqa: BLE001 - any parse failure means the file is damaged
            found.append(Finding("damaged_config", "problem", f"{config} does not parse ({type(exc).__name__})",
                                 run.id, fix=f"resume the run (it rewrites {CONFIG})"))
    checkpoint = RunFolder.at(folder).checkpoint  # checked as a zip: no torch here
    if checkpoint.is_file():
        try:
            with zipfile.ZipFile(checkpoint) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            bad = str(exc) or type(exc).__name__
        if bad is not None:
            found.append(Finding("damaged_checkpoint", "problem", f"{checkpoint} is damaged ({bad})", run.id,
                                 fix="move it aside: the run then resumes from its start (its intervals are redone)"))
    for leftover in sorted(p for p in folder.iterdir() if p.name.endswith(LEFTOVER_SUFFIXES)):
        found.append(Finding("leftover", "info", f"{leftover.name}: left by an interrupted write (harmless; the next "
                                                  "save replaces it)", run.id))
    return found


def diagnose(store: Store, *, outputs: Path | None = None, repair: bool = False) -> Diagnosis:
    """Every finding about the registry `store` and the run folders (under `outputs`, else each
    run's own output_dir relative to the working directory); `repair` fixes statuses."""
    runs = store.list_runs()
    diagnosis = Diagnosis(registry=store.url, runs=len(runs))
    add = diagnosis.findings.extend
    for run in runs:
        add(_check_liveness(store, run, outputs, repair))
        if run.external:
            continue
        folder = _folder(run, outputs)
        dead_running = any(f.kind == "stale_running" for f in diagnosis.findings if f.run == run.id)
        alive = run.status == RunStatus.RUNNING and not dead_running
        if alive:  # its files are being written: nothing to compare yet
            diagnosis.findings.append(Finding("running", "info", "running now (its process is alive)", run.id))
            continue
        if folder is not None and not folder.is_dir() and (run.intervals or run.artifacts):
            add([Finding("missing_run_dir", "problem", f"has {len(run.intervals)} interval(s) and "
                         f"{len(run.artifacts)} artifact(s) recorded, but its folder {folder} is missing", run.id,
                         fix="pass --outputs DIR if the outputs moved; if they are gone, run it again with rerun=true")])
            continue
        add(_check_artifacts(run, folder, resumable=run.status == RunStatus.INTERRUPTED or dead_running))
        if folder is not None and folder.is_dir():
            add(_check_folder(run, folder))
    for table, count in store.orphan_counts().items():
        if count:
            add([Finding("orphan_rows", "problem", f"{count} row(s) in {table} belong to no "
                         f"{'interval' if table == 'utterance_results' else 'run'}",
                         fix="they were written with foreign keys off; inspect them with sqlite3 (doctor deletes nothing)")])
    known = {run.id for run in runs}
    roots = {outputs} if outputs is not None else {Path(r.config["output_dir"]) for r in runs
                                                   if not r.external and isinstance(r.config, dict)
                                                   and r.config.get("output_dir")}
    for root in sorted(roots):
        if root.is_dir():
            for child in sorted(root.iterdir()):
                if child.is_dir() and not child.name.startswith(".") and child.name not in known:
                    add([Finding("unregistered_folder", "info", f"{child} has no run in this registry "
                                 "(another registry's, or its row was never written)")])
    return diagnosis
