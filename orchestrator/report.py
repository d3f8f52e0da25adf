"""Registry entities -> Markdown: the run matrix and per-run interval tables in EXPERIMENTS.md.

Reads plain `Run` entities only; it must never import torch or the training code.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from tabulate import tabulate

from orchestrator.errors import OrchestratorError
from orchestrator.registry import Interval, Run

MISSING = "—"
PLACEHOLDER = (
    "_Hand-written notes go here: what each experiment asks, what we expected and what we "
    "concluded. Only the generated blocks below are rewritten by the report; everything "
    "else in this file is yours._"
)


def run_matrix(runs: Sequence[Run]) -> str:
    """One row per run; WER cells read "baseline / best / final" in percent.

    "best" is the interval with the lowest domain WER, and the held-out WER is shown at
    that same interval (the checkpoint one would pick), not at its own minimum.
    """
    headers = [
        "Run ID",
        "Experiment",
        "Model",
        "Steps",
        "LR",
        "Target Modules",
        "Status",
        "Domain WER (baseline / best / final)",
        "Heldout WER (baseline / best / final)",
    ]
    rows = [
        [
            run.id,
            run.experiment,
            run.model_id,
            str(run.steps),
            f"{run.lr:g}",
            run.target_summary,
            run.status,
            _wer_triple(run, "domain_wer"),
            _wer_triple(run, "heldout_wer"),
        ]
        for run in runs
    ]
    return _table(headers, rows, align="lllrrllrr")


def interval_tables(runs: Sequence[Run]) -> str:
    """Per run, a `### <run id>` heading and a table of every recorded interval."""
    if not runs:
        return "_No runs recorded yet._"
    headers = ["Step", "LR", "Train loss", "Eval loss", "Domain WER %", "Heldout WER %"]
    sections = []
    for run in runs:
        rows = [
            [
                str(i.step),
                _num(i.lr, "g"),
                _num(i.train_loss, ".4f"),
                _num(i.eval_loss, ".4f"),
                _pct(i.domain_wer),
                _pct(i.heldout_wer),
            ]
            for i in run.intervals
        ]
        body = _table(headers, rows, align="rrrrrr") if rows else "_No intervals recorded._"
        sections.append(f"### {_cell(run.id)}\n\n{body}")
    return "\n\n".join(sections)


BLOCKS: dict[str, tuple[str, Callable[[Sequence[Run]], str]]] = {
    "run-matrix": ("## Run matrix", run_matrix),
    "intervals": ("## Intervals", interval_tables),
}


def update_experiments_md(path: Path, runs: Sequence[Run]) -> None:
    """Rewrite the generated blocks of `path`, keeping every other byte as it was.

    Missing blocks are appended under their own heading; a missing file is created.
    """
    path = Path(path)
    if path.exists():
        text = path.read_bytes().decode("utf-8")
    else:
        text = f"# Experiments\n\n{PLACEHOLDER}\n"
    newline = "\r\n" if "\r\n" in text else "\n"
    for name, (heading, render) in BLOCKS.items():
        begin, end = _markers(name)
        if begin not in text and end not in text:
            if text and not text.endswith("\n"):
                text += newline
            text += newline.join(["", heading, "", begin, end, ""])
        start, stop = _block_span(text, name, path)
        body = render(runs).replace("\n", newline)
        text = text[:start] + newline + body + newline + text[stop:]
    _write_atomic(path, text.encode("utf-8"))


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN GENERATED: {name} -->", f"<!-- END GENERATED: {name} -->"


def _block_span(text: str, name: str, path: Path) -> tuple[int, int]:
    """Where the generated content of block `name` lies: just after BEGIN, up to END."""
    begin, end = _markers(name)
    starts, ends = _find_all(text, begin), _find_all(text, end)
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        where = min(starts + ends)
        line = text.count("\n", 0, where) + 1
        raise OrchestratorError(
            f"generated block '{name}' needs exactly one BEGIN marker followed by one END "
            f"marker (found {len(starts)} and {len(ends)})",
            where=f"{path}:{line}",
            fix=f"leave one '{begin}' ... '{end}' pair, or delete both and rerun",
        )
    return starts[0] + len(begin), ends[0]


def _find_all(text: str, needle: str) -> list[int]:
    found, at = [], text.find(needle)
    while at != -1:
        found.append(at)
        at = text.find(needle, at + 1)
    return found


def _write_atomic(path: Path, data: bytes) -> None:
    """Write next to `path`, then rename over it: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _table(headers: list[str], rows: list[list[str]], align: str) -> str:
    """A GitHub Markdown table of pre-formatted text; `align` has one l/r per column."""
    cells = [[_cell(value) for value in row] for row in rows]
    sides = [{"l": "left", "r": "right"}[a] for a in align]
    return tabulate(
        cells, headers=headers, tablefmt="github", disable_numparse=True, colalign=sides
    )


def _cell(text: str) -> str:
    """Cell text that cannot split a Markdown table row or cell."""
    return "<br>".join(str(text).replace("|", "\\|").splitlines())


def _wer_triple(run: Run, field: str) -> str:
    picks: list[Interval | None] = [run.baseline, run.best, run.final]
    return " / ".join(_pct(getattr(i, field)) if i else MISSING for i in picks)


def _pct(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{fraction * 100:.2f}"


def _num(value: float | None, spec: str) -> str:
    return MISSING if value is None else format(value, spec)
