"""Sweeps in EXPERIMENTS.md: per sweep a table of its runs, a chart, and a sweep-wide band.

Picking the best point of a sweep is itself a selection: the table gives each run's domain
reduction with a max-type band simultaneous over every trained interval of every run of the
sweep (acceptance/groups.py), which stays valid for the best point.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from orchestrator.acceptance.groups import sweep_bands
from orchestrator.acceptance.verdicts import matrix_status
from orchestrator.registry import Run
from orchestrator.report.collect import ReportData
from orchestrator.report.markdown import MISSING, _escape, _flat, _inline, _lr, _pct, _table
from orchestrator.report.tune import TUNE_PREFIX

SWEEP_NOTE = (
    "_One section per sweep (`python -m orchestrator -m +exp=... optim.lr=a,b,c`), its runs by "
    "learning rate. WERs are at the tuned step, the interval `verdicts.select_best` picks (as in the "
    "run matrix); Verdict is the run matrix's Status. Picking the best point of a sweep is itself a "
    "selection: `Sweep-wide band` is each run's domain reduction with a max-type band simultaneous "
    "over every trained interval of every run of the sweep, valid for whichever point looks best. "
    "Chart: the first line is domain WER, the second heldout WER._"
)

def sweep_sections(runs: Sequence[Run] | ReportData) -> str:
    """Per sweep (runs sharing a sweep_id): what was swept, a table of its runs by learning rate
    with the tuned step's domain and heldout WER and the verdict, and a Mermaid xychart of those
    two WERs against the learning rate (GitHub renders it)."""
    data = runs if isinstance(runs, ReportData) else ReportData(runs)
    sweeps = sweeps_of(data.runs)
    if not sweeps:
        return "_No sweeps recorded yet (`python -m orchestrator -m ...` records one)._"
    sections = [data.piece("sweep", members, lambda key=key, members=members: _sweep_section(key, members, data))
                for key, members in sweeps.items()]
    return "\n\n".join(sections) + "\n\n" + SWEEP_NOTE


def sweeps_of(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """The sweeps the block shows: runs by sweep_id (tune studies have their own block), those of
    two or more runs (one run sweeps nothing), in the order of `runs`."""
    sweeps: dict[str, list[Run]] = {}
    for run in runs:
        if run.sweep_id and not run.sweep_id.startswith(TUNE_PREFIX):
            sweeps.setdefault(run.sweep_id, []).append(run)
    return {key: members for key, members in sweeps.items() if len(members) > 1}


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
               "Heldout WER %", "Sweep-wide band (pts)", "Verdict"]
    first = data.verdict(runs[0]).thresholds
    load = None if data.utterances is None else data.utterances.utterance_errors
    bands = sweep_bands(runs, {r.id: data.verdict(r) for r in runs}, load, first)
    if isinstance(bands, str):
        bands = {}
    rows, points = [], []
    for run in runs:
        verdict = data.verdict(run)
        selection = verdict.selection
        tuned = selection.interval if selection else None
        step = MISSING if selection is None else (
            str(tuned.step) + ("" if selection.within_guard else " (outside guard)"))
        also = ([", ".join(f"{key}={_flat(run.config).get(key, MISSING)}" for key in others)]
                if others else [])
        band = bands.get(run.id)
        rows.append([run.id, _lr(run.lr), *also, step, _pct(tuned.domain_wer if tuned else None),
                     _pct(tuned.heldout_wer if tuned else None),
                     MISSING if band is None else f"{-band.delta:+.2f} [{-band.high:+.2f}, {-band.low:+.2f}]",
                     matrix_status(run, verdict)])
        if tuned is not None and tuned.domain_wer is not None and tuned.heldout_wer is not None:
            points.append((run.lr, 100 * tuned.domain_wer, 100 * tuned.heldout_wer))
    lines += ["", _table(headers, rows, align="lr" + "l" * len(others[:1]) + "rrrrl"), ""]
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


def _varied_keys(configs: Sequence[Mapping]) -> list[str]:
    """The dotted config keys whose values differ between `configs` (sorted; optim.lr first)."""
    flats = [_flat(c) for c in configs]
    keys = sorted({key for flat in flats for key in flat}, key=lambda k: (k != "optim.lr", k))
    return [key for key in keys if len({repr(flat.get(key)) for flat in flats}) > 1]


