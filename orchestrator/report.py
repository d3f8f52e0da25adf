"""Registry entities -> Markdown: the run matrix, sweeps (table + chart), per-run verdicts and
interval tables in EXPERIMENTS.md.

Reads plain `Run` entities (and, for the bootstrap, per-utterance errors through a
`verdicts.UtteranceSource` such as the Store; `write_report` reads the runs from the Store
too); it must never import torch, hydra or the training code. Past VERDICT_RUNS and
INTERVAL_RUNS runs, the verdict and interval sections cover the most recent runs, and a verdict
matrix has every run's verdict on each criterion: 10,000 runs make 5 MB, not 28. Text that
users wrote (names, notes, target summaries) is escaped so it cannot break a table or inject
HTML / generated-block markers.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.artifacts.atomic import atomic_write
from orchestrator.errors import OrchestratorError
from orchestrator.registry.liveness import settle
from orchestrator.registry import Interval, Run, RunStatus
from orchestrator.config.criteria import LR_WARNING, CriteriaConf
from orchestrator.acceptance.verdicts import (NA, PLANNED, TITLES, Comparison, RunVerdict, UtteranceSource, criteria_for, judge, matrix_status)
from orchestrator.selection import Selection, select_best
from orchestrator.tuning.render import tune_sections

if TYPE_CHECKING:
    import numpy as np

    from orchestrator.registry import Store

MISSING = "—"
PLACEHOLDER = (
    "_Hand-written notes go here: what each experiment asks, what we expected and what we "
    "concluded. Only the generated blocks below are rewritten by the report; everything "
    "else in this file is yours._"
)
STATUS_NOTE = (
    "_Status is derived — `planned` (declared in conf/exp/, not run yet), `running`, "
    "`interrupted`, `failed` (crashed, or the verdict failed), `passed`, `inconclusive` — "
    "unless a person annotated the run (`orchestrator annotate`); a run left `running` by a "
    "process that died shows `interrupted`. Tuned = the best interval within the heldout guard "
    "(see Verdicts). ⚠ marks a learning rate at or above 2e-4, where the seeds saw catastrophic "
    "forgetting._"
)
SWEEP_NOTE = (
    "_One section per sweep (`python -m orchestrator -m +exp=... optim.lr=a,b,c`), its runs by "
    "learning rate. WERs are at the tuned step, the interval `verdicts.select_best` picks (as in the "
    "run matrix); Verdict is the run matrix's Status. Chart: the first line is domain WER, the "
    "second heldout WER._"
)
VERDICT_MATRIX_NOTE = (
    "_Every run's verdict on each acceptance criterion, oldest first (Overall `pending`: the run is "
    "still training). The sections after the table show what each criterion measured, for the "
    "{recent} most recent of {total} runs; `orchestrator report --run RUN_ID` prints any run's._"
)
LR_FLAG = "⚠"
# What _escape changes or str.splitlines splits on; text without any is a cell as it is.
_NEEDS_ESCAPE = re.compile(r"[\\&<>|`\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")


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
    runs = settle(runs, root=root)  # a `running` run whose process died reads `interrupted`
    confs = _thresholds(runs, criteria)
    selections = {run.id: select_best(run.intervals, confs[run.id].max_heldout_regression) for run in runs}
    utterances = _prefetched(runs, selections, utterances)
    verdicts = {run.id: judge(run, utterances, confs[run.id], root=root, selection=selections[run.id])
                for run in runs}
    ran = {run.experiment for run in runs}
    planned = [name for name in dict.fromkeys(experiments) if name not in ran]
    return ReportData(list(runs), verdicts, planned)


def _thresholds(runs: Sequence[Run], default: CriteriaConf | None) -> dict[str, CriteriaConf]:
    """Each run's thresholds (`criteria_for`) by run id, parsed once per distinct recorded set:
    10,000 runs share a handful. Runs with equal criteria share one (unmodified) CriteriaConf."""
    parsed: dict[str, CriteriaConf] = {}
    confs = {}
    for run in runs:
        key = repr(run.criteria)
        if key not in parsed:
            parsed[key] = criteria_for(run, default)
        confs[run.id] = parsed[key]
    return confs


@dataclass(frozen=True)
class _Prefetched:
    """Per-utterance errors read up front, in a few set-based queries instead of four per run."""

    found: Mapping[tuple[str, int, str], tuple[np.ndarray, np.ndarray]]

    def utterance_errors(self, run_id: str, step: int, split: str) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np  # loaded already: the Store built `found` with it

        return self.found.get((run_id, step, split)) or (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


def _prefetched(runs: Sequence[Run], selections: Mapping[str, Selection | None],
                source: UtteranceSource | None) -> UtteranceSource | None:
    """`source`, or (when it can read many at once, as the Store can) what judging `runs` will
    ask of it: the baseline and the tuned step (`selections`) of each run; None if it holds
    none of those (every verdict is then a point estimate, as without a source)."""
    many = getattr(source, "utterance_errors_many", None)
    if many is None:
        return source

    def keys() -> Iterator[tuple[str, int]]:  # lazily: a registry without utterances never asks
        for run in runs:
            selection = selections[run.id]
            if selection is not None and run.baseline is not None:
                yield from ((run.id, 0), (run.id, selection.interval.step))

    found = many(keys())
    return _Prefetched(found) if found else None


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
        picks = (run.baseline, verdict.selection.interval if verdict.selection else None, run.final)
        rows.append([
            run.id,
            run.experiment,
            run.model_id,
            str(run.steps),
            _lr(run.lr),
            "DoRA" if run.dora else "LoRA",
            run.target_summary,
            matrix_status(run, verdict),
            "external" if run.external else run.status,
            _wer_triple(picks, "domain_wer"),
            _wer_triple(picks, "heldout_wer"),
            _note(run),
        ])
    triple = " / ".join([MISSING] * 3)
    for name in data.planned:
        rows.append([MISSING, name, *[MISSING] * 5, PLANNED, MISSING, triple, triple, ""])
    if not rows:
        return "_No runs recorded yet._"
    return _table(headers, rows, align="lllrrllllrrl") + "\n\n" + STATUS_NOTE


def sweep_sections(runs: Sequence[Run] | ReportData) -> str:
    """Per sweep (runs sharing a sweep_id): what was swept, a table of its runs by learning rate
    with the tuned step's domain and heldout WER and the verdict, and a Mermaid xychart of those
    two WERs against the learning rate (GitHub renders it)."""
    data = runs if isinstance(runs, ReportData) else ReportData(runs)
    sweeps: dict[str, list[Run]] = {}
    for run in data.runs:
        if run.sweep_id:
            sweeps.setdefault(run.sweep_id, []).append(run)
    sweeps = {key: members for key, members in sweeps.items() if len(members) > 1}  # one run sweeps nothing
    if not sweeps:
        return "_No sweeps recorded yet (`python -m orchestrator -m ...` records one)._"
    sections = [_sweep_section(sweep_id, members, data) for sweep_id, members in sweeps.items()]
    return "\n\n".join(sections) + "\n\n" + SWEEP_NOTE


def _sweep_section(sweep_id: str, runs: list[Run], data: ReportData) -> str:
    runs = sorted(runs, key=lambda r: (r.lr, r.started_at, r.id))
    varied = _varied_keys([r.config for r in runs])
    others = [key for key in varied if key != "optim.lr"]
    experiments = ", ".join(dict.fromkeys(_inline(r.experiment) for r in runs))
    swept = ", ".join(f"`{_escape(key)}`" for key in varied) or "nothing (identical runs)"
    lines = [f"### {_inline(sweep_id)}", "", f"Experiment {experiments} · {len(runs)} runs · swept: {swept}"]
    baselines = {(r.baseline.domain_wer, r.baseline.heldout_wer) for r in runs if r.baseline}
    if len(baselines) == 1:
        domain, heldout = baselines.pop()
        lines[-1] += f" · baseline WER {_pct(domain)} domain, {_pct(heldout)} heldout"
    headers = ["Run ID", "LR", *(["Also varies"] if others else []), "Best step", "Domain WER %",
               "Heldout WER %", "Verdict"]
    rows, points = [], []
    for run in runs:
        verdict = data.verdict(run)
        selection = verdict.selection
        tuned = selection.interval if selection else None
        step = MISSING if selection is None else (
            str(tuned.step) + ("" if selection.within_guard else " (outside guard)"))
        also = ([", ".join(f"{key}={_flat(run.config).get(key, MISSING)}" for key in others)]
                if others else [])
        rows.append([run.id, _lr(run.lr), *also, step, _pct(tuned.domain_wer if tuned else None),
                     _pct(tuned.heldout_wer if tuned else None), matrix_status(run, verdict)])
        if tuned is not None and tuned.domain_wer is not None and tuned.heldout_wer is not None:
            points.append((run.lr, 100 * tuned.domain_wer, 100 * tuned.heldout_wer))
    lines += ["", _table(headers, rows, align="lr" + "l" * len(others[:1]) + "rrrl"), ""]
    lrs = [lr for lr, _, _ in points]
    if len(points) < 2:
        lines.append("_No chart: fewer than two runs have a tuned step yet._")
    elif len(set(lrs)) != len(lrs):
        lines.append("_No chart: several runs share a learning rate (the sweep varies more than it)._")
    else:
        lines.append(_xychart(sweep_id, points))
    return "\n".join(lines)


def _xychart(title: str, points: list[tuple[float, float, float]]) -> str:
    """A Mermaid xychart-beta: learning rate (categories, in order) on x, WER % on y, one line
    for domain and one for heldout."""
    values = [v for _, domain, heldout in points for v in (domain, heldout)]
    low, high = max(0, math.floor(min(values)) - 1), math.ceil(max(values)) + 1
    labels = ", ".join(f'"{_lr(lr, fmt=".1e")}"' for lr, _, _ in points)
    safe = "".join(c for c in title if c.isalnum() or c in "-_.: ")
    return "\n".join([
        "```mermaid",
        "xychart-beta",
        f'    title "{safe}: WER % at the tuned step (domain, heldout)"',
        f'    x-axis "learning rate" [{labels}]',
        f'    y-axis "WER %" {low} --> {high}',
        f"    line [{', '.join(f'{d:.2f}' for _, d, _ in points)}]",
        f"    line [{', '.join(f'{h:.2f}' for _, _, h in points)}]",
        "```",
    ])


def _flat(config: Mapping, prefix: str = "") -> dict[str, object]:
    """A nested config as {dotted.key: leaf value}."""
    return dict(_leaves(config, prefix))


def _leaves(config: Mapping, prefix: str) -> Iterator[tuple[str, object]]:
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _varied_keys(configs: Sequence[Mapping]) -> list[str]:
    """The dotted config keys whose values differ between `configs` (sorted; optim.lr first)."""
    flats = [_flat(c) for c in configs]
    keys = sorted({key for flat in flats for key in flat}, key=lambda k: (k != "optim.lr", k))
    return [key for key in keys if len({repr(flat.get(key)) for flat in flats}) > 1]


VERDICT_RUNS = 25  # detailed verdict sections for the most recent runs; the verdict matrix has every run


def verdict_sections(runs: Sequence[Run] | ReportData) -> str:
    """Per run: the overall verdict, baseline / tuned / delta per manifest with the bootstrap
    interval and P(improvement), and each criterion's verdict with what it measured.

    Past VERDICT_RUNS runs, a verdict matrix (every run's verdict on each criterion) comes first
    and the detailed sections cover the VERDICT_RUNS most recent runs: two tables for each of
    10,000 runs would be 25 MB nobody reads. `orchestrator report --run RUN_ID` prints any run's."""
    data = runs if isinstance(runs, ReportData) else ReportData(runs)
    if not data.runs:
        return "_No runs recorded yet._"
    runs, parts = data.runs, []
    if len(runs) > VERDICT_RUNS:
        parts += [VERDICT_MATRIX_NOTE.format(recent=VERDICT_RUNS, total=len(runs)), verdict_matrix(data)]
        runs = runs[-VERDICT_RUNS:]
    parts += [_verdict_section(run, data.verdict(run)) for run in runs]
    return "\n\n".join(parts)


def verdict_matrix(runs: Sequence[Run] | ReportData) -> str:
    """One row per run: its overall verdict and its verdict on each criterion (PASS, FAIL,
    INCONCLUSIVE or N/A)."""
    data = runs if isinstance(runs, ReportData) else ReportData(runs)
    rows = []
    for run in data.runs:
        verdict = data.verdict(run)
        status = {v.name: v.status for v in verdict.criteria}
        rows.append([run.id, "pending" if run.status == RunStatus.RUNNING else verdict.overall, *map(status.get, TITLES)])
    headers = ["Run ID", "Overall", *TITLES.values()]
    return _table(headers, rows, align="l" * len(headers))


def _verdict_section(run: Run, verdict: RunVerdict) -> str:
    overall = f"**Overall: {verdict.overall}** — {_inline(verdict.reason)}"
    if run.status == RunStatus.RUNNING:  # verdicts on a run still training are provisional
        overall = f"**Overall: pending** — the run is still training (so far: {verdict.overall})"
    lines = [f"### {_inline(run.id)}", "", f"- {overall}"]
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


INTERVAL_RUNS = 25  # interval tables for the most recent runs only: at 10,000 runs they would be 68 MB


def interval_tables(runs: Sequence[Run] | ReportData) -> str:
    """Per run (the INTERVAL_RUNS most recent), a `### <run id>` heading and a table of every
    recorded interval; `orchestrator runs --json` has them all."""
    runs = runs.runs if isinstance(runs, ReportData) else runs
    if not runs:
        return "_No runs recorded yet._"
    headers = ["Step", "LR", "Train loss", "Eval loss", "Domain WER %", "Heldout WER %"]
    sections = []
    if len(runs) > INTERVAL_RUNS:
        sections.append(f"_The {INTERVAL_RUNS} most recent of {len(runs)} runs; "
                        "`orchestrator runs --json` lists every interval of every run._")
        runs = runs[-INTERVAL_RUNS:]
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
    "sweeps": ("## Sweeps", sweep_sections),
    "verdicts": ("## Verdicts", verdict_sections),
    "intervals": ("## Intervals", interval_tables),
    "tune": ("## Tune campaigns", tune_sections),
}


def write_report(
    store: Store,
    path: Path,
    *,
    experiments: Sequence[str] = (),
    criteria: CriteriaConf | None = None,
    root: Path | None = None,
) -> int:
    """Rewrite the generated blocks of `path` from every run in `store` (see
    `update_experiments_md`); returns how many runs it shows.

    Runs are read lean (`Store.list_runs(lean=True)`: the interval fields the verdicts use, no
    targets or data_stats, configs of sweep and running runs only), except the INTERVAL_RUNS
    most recent, read in full, whose interval tables show every field: at 10,000 runs x 50
    intervals that is less than half the read."""
    runs = store.list_runs(lean=True)
    full = {run.id: run for run in store.list_runs(run_ids=[run.id for run in runs[-INTERVAL_RUNS:]])}
    runs = [full.get(run.id, run) for run in runs]
    update_experiments_md(path, runs, experiments=experiments, utterances=store, criteria=criteria, root=root)
    return len(runs)


def run_sections(store: Store, run_ids: Sequence[str], *, criteria: CriteriaConf | None = None,
                 root: Path | None = None) -> str:
    """The verdict section of each run in `run_ids`, as EXPERIMENTS.md shows it, which it does
    for its VERDICT_RUNS most recent runs only (`orchestrator report --run RUN_ID`)."""
    data = collect([store.get_run(run_id) for run_id in run_ids], utterances=store, criteria=criteria, root=root)
    return "\n\n".join(_verdict_section(run, data.verdict(run)) for run in data.runs)


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
        text = "".join([text[:start], newline, body, newline, text[stop:]])  # not a + b + ...: a copy per +
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


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


def _table(headers: list[str], rows: list[list[str]], align: str) -> str:
    """A GitHub Markdown table of pre-formatted text, columns padded to one width; `align` has
    one l/r per column. (Written by hand: tabulate's type sniffing dominated large reports.)"""
    grid = [_cells(row) for row in [headers, *rows]]
    widths = [max(map(len, column)) for column in zip(*grid)]
    # one format string pads a whole row ("{:<w}" is str.ljust(w), "{:>w}" str.rjust(w))
    line = "| " + " | ".join(f"{{:{'>' if side == 'r' else '<'}{width}}}" for side, width in zip(align, widths)) + " |"
    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line.format(*grid[0]), rule, *(line.format(*row) for row in grid[1:])])


def _cells(row: Sequence[object]) -> Sequence[str]:
    """The row's cell texts (`_cell`). Most rows are plain text: one search over the joined row
    tells (a tab is not a character _NEEDS_ESCAPE matches), and their cells are kept as they are."""
    try:
        joined = "\t".join(row)  # type: ignore[arg-type]  # TypeError: a cell that is not text yet
    except TypeError:
        return list(map(_cell, row))
    return list(map(_cell, row)) if _NEEDS_ESCAPE.search(joined) else row


def _escape(text: object) -> str:
    """Text shown literally in Markdown: HTML special characters become entities (so no tag,
    comment or generated-block marker can be injected), and backslashes, pipes and backticks
    are backslash-escaped (no cell split, no code span)."""
    text = str(text).replace("\\", "\\\\")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("`", "\\`")


def _cell(text: object) -> str:
    """Cell text that cannot split a Markdown table row or cell: escaped, lines joined by <br>."""
    if isinstance(text, str) and not _NEEDS_ESCAPE.search(text):
        return text  # most cells are numbers and names: nothing to escape, one line
    return "<br>".join(_escape(text).splitlines())


def _inline(text: object) -> str:
    """Escaped text on one line (headings, prose)."""
    return " ".join(_escape(text).split())


def _note(run: Run) -> str:
    if run.annotation_note:
        return run.annotation_note
    if run.status in (RunStatus.FAILED, RunStatus.INTERRUPTED) and run.failure_reason:
        return run.failure_reason
    return ""


def _wer_triple(picks: Sequence[Interval | None], field: str) -> str:
    """`field` of each of (baseline, tuned, final), in percent, "baseline / tuned / final"."""
    return " / ".join([_pct(getattr(i, field)) if i else MISSING for i in picks])


def _lr(lr: float, fmt: str = "g") -> str:
    """A learning rate, flagged at or above LR_WARNING."""
    return f"{lr:{fmt}} {LR_FLAG}" if lr >= LR_WARNING else f"{lr:{fmt}}"


def _pct(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{fraction * 100:.2f}"


def _num(value: float | None, spec: str) -> str:
    return MISSING if value is None else format(value, spec)
