"""Registry entities -> Markdown: the run matrix, per-run verdicts and interval tables in
EXPERIMENTS.md.

Reads plain `Run` entities (and, for the bootstrap, per-utterance errors through a
`verdicts.UtteranceSource` such as the Store); it must never import torch, hydra or the
training code. Text that users wrote (names, notes, target summaries) is escaped so it
cannot break a table or inject HTML / generated-block markers.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from orchestrator.errors import OrchestratorError
from orchestrator.registry import Interval, Run
from orchestrator.verdicts import (NA, PLANNED, Comparison, CriteriaConf, RunVerdict, UtteranceSource,
                                   criteria_for, judge, matrix_status)

MISSING = "—"
PLACEHOLDER = (
    "_Hand-written notes go here: what each experiment asks, what we expected and what we "
    "concluded. Only the generated blocks below are rewritten by the report; everything "
    "else in this file is yours._"
)
STATUS_NOTE = (
    "_Status is derived — `planned` (declared in conf/exp/, not run yet), `running`, "
    "`interrupted`, `failed` (crashed, or the verdict failed), `passed`, `inconclusive` — "
    "unless a person annotated the run (`orchestrator annotate`). Tuned = the best interval "
    "within the heldout guard (see Verdicts)._"
)


@dataclass(frozen=True)
class ReportData:
    """Everything the generated blocks show: runs oldest first, their verdicts by run id, and
    the declared experiments that have no run yet."""

    runs: Sequence[Run]
    verdicts: Mapping[str, RunVerdict] = field(default_factory=dict)
    planned: Sequence[str] = ()

    def verdict(self, run: Run) -> RunVerdict:
        return self.verdicts.get(run.id) or judge(run, None, criteria_for(run))


def collect(
    runs: Sequence[Run],
    *,
    experiments: Sequence[str] = (),
    utterances: UtteranceSource | None = None,
    criteria: CriteriaConf | None = None,
    root: Path | None = None,
) -> ReportData:
    """Judge every run (each by its recorded criteria, else `criteria`) and list the declared
    `experiments` that have no run as planned."""
    verdicts = {run.id: judge(run, utterances, criteria_for(run, criteria), root=root) for run in runs}
    ran = {run.experiment for run in runs}
    planned = [name for name in dict.fromkeys(experiments) if name not in ran]
    return ReportData(list(runs), verdicts, planned)


def run_matrix(runs: Sequence[Run] | ReportData) -> str:
    """One row per run, then one per planned experiment. WER cells read
    "baseline / tuned / final" in percent: tuned is the interval `verdicts.select_best` picks,
    and the heldout WER is shown at that same interval."""
    data = runs if isinstance(runs, ReportData) else ReportData(runs)
    headers = [
        "Run ID",
        "Experiment",
        "Model",
        "Steps",
        "LR",
        "Adapter",
        "Target Modules",
        "Status",
        "Run state",
        "Domain WER (baseline / tuned / final)",
        "Heldout WER (baseline / tuned / final)",
        "Note",
    ]
    rows = []
    for run in data.runs:
        verdict = data.verdict(run)
        tuned = verdict.selection.interval if verdict.selection else None
        rows.append([
            run.id,
            run.experiment,
            run.model_id,
            str(run.steps),
            f"{run.lr:g}",
            "DoRA" if run.dora else "LoRA",
            run.target_summary,
            matrix_status(run, verdict),
            "external" if run.external else run.status,
            _wer_triple(run, tuned, "domain_wer"),
            _wer_triple(run, tuned, "heldout_wer"),
            _note(run),
        ])
    triple = " / ".join([MISSING] * 3)
    for name in data.planned:
        rows.append([MISSING, name, *[MISSING] * 5, PLANNED, MISSING, triple, triple, ""])
    if not rows:
        return "_No runs recorded yet._"
    return _table(headers, rows, align="lllrrllllrrl") + "\n\n" + STATUS_NOTE


def verdict_sections(runs: Sequence[Run] | ReportData) -> str:
    """Per run: the overall verdict, baseline / tuned / delta per manifest with the bootstrap
    interval and P(improvement), and each criterion's verdict with what it measured."""
    data = runs if isinstance(runs, ReportData) else ReportData(runs)
    if not data.runs:
        return "_No runs recorded yet._"
    return "\n\n".join(_verdict_section(run, data.verdict(run)) for run in data.runs)


def _verdict_section(run: Run, verdict: RunVerdict) -> str:
    lines = [f"### {_inline(run.id)}", "", f"- **Overall: {verdict.overall}** — {_inline(verdict.reason)}"]
    if run.annotation_status:
        note = f": {_inline(run.annotation_note)}" if run.annotation_note else ""
        lines.append(f"- Annotated **{_inline(run.annotation_status)}**{note}")
    selection = verdict.selection
    if selection is None:
        lines.append("- Tuned: no trained interval yet.")
    else:
        guard = ("within the heldout guard" if selection.within_guard else
                 "**outside the heldout guard**: no trained interval stayed within "
                 f"{verdict.thresholds.max_heldout_regression:g} pts, lowest domain WER kept")
        lines.append(f"- Tuned: step {selection.interval.step} ({guard}).")
    if run.external:
        lines.append("- External run (entered with `orchestrator record`): judged on what it reported.")
    comparison = _table(
        ["Manifest", "Baseline WER %", "Tuned WER %", "Delta (pts)",
         f"{verdict.thresholds.confidence:.0%} CI (pts)", "P(improvement)", "How"],
        [_comparison_row(c) for c in verdict.comparisons.values()],
        align="lrrrrrl",
    )
    criteria = _table(
        ["#", "Criterion", "Threshold", "Verdict", "Value", "Detail"],
        [[str(n), v.title, v.threshold, v.status if v.status != NA else "N/A", v.value, v.detail]
         for n, v in enumerate(verdict.criteria, start=1)],
        align="rlllll",
    )
    return "\n".join(lines) + "\n\n" + comparison + "\n\n" + criteria


def _comparison_row(c: Comparison) -> list[str]:
    ci = MISSING if c.ci_low is None else f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]"
    return [
        c.split,
        _pct(c.baseline_wer),
        _pct(c.tuned_wer),
        MISSING if c.delta is None else f"{c.delta:+.2f}",
        ci,
        MISSING if c.p_improvement is None else f"{c.p_improvement:.3f}",
        c.note,
    ]


def interval_tables(runs: Sequence[Run] | ReportData) -> str:
    """Per run, a `### <run id>` heading and a table of every recorded interval."""
    runs = runs.runs if isinstance(runs, ReportData) else runs
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
        sections.append(f"### {_inline(run.id)}\n\n{body}")
    return "\n\n".join(sections)


BLOCKS: dict[str, tuple[str, Callable[[ReportData], str]]] = {
    "run-matrix": ("## Run matrix", run_matrix),
    "verdicts": ("## Verdicts", verdict_sections),
    "intervals": ("## Intervals", interval_tables),
}


def update_experiments_md(
    path: Path,
    runs: Sequence[Run] | ReportData,
    *,
    experiments: Sequence[str] = (),
    utterances: UtteranceSource | None = None,
    criteria: CriteriaConf | None = None,
    root: Path | None = None,
) -> None:
    """Rewrite the generated blocks of `path`, keeping every other byte as it was.

    `experiments` are the declared experiment names (conf/exp/); those without a run show as
    planned. `utterances` (the Store) feeds the paired bootstrap; `criteria` judges runs that
    recorded none. Missing blocks are appended under their own heading; a missing file is
    created.
    """
    data = runs if isinstance(runs, ReportData) else collect(
        runs, experiments=experiments, utterances=utterances, criteria=criteria, root=root)
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
        body = render(data).replace("\n", newline)
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


def _escape(text: object) -> str:
    """Text shown literally in Markdown: HTML special characters become entities (so no tag,
    comment or generated-block marker can be injected), and backslashes, pipes and backticks
    are backslash-escaped (no cell split, no code span)."""
    text = str(text).replace("\\", "\\\\")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("`", "\\`")


def _cell(text: object) -> str:
    """Cell text that cannot split a Markdown table row or cell: escaped, lines joined by <br>."""
    return "<br>".join(_escape(text).splitlines())


def _inline(text: object) -> str:
    """Escaped text on one line (headings, prose)."""
    return " ".join(_escape(text).split())


def _note(run: Run) -> str:
    if run.annotation_note:
        return run.annotation_note
    if run.status in ("failed", "interrupted") and run.failure_reason:
        return run.failure_reason
    return ""


def _wer_triple(run: Run, tuned: Interval | None, field: str) -> str:
    picks: list[Interval | None] = [run.baseline, tuned, run.final]
    return " / ".join(_pct(getattr(i, field)) if i else MISSING for i in picks)


def _pct(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{fraction * 100:.2f}"


def _num(value: float | None, spec: str) -> str:
    return MISSING if value is None else format(value, spec)
