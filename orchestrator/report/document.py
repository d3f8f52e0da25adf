"""EXPERIMENTS.md: the generated blocks spliced between their markers, every other byte kept;
`write_report` and `run_sections` read the runs from the Store."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.acceptance.verdicts import UtteranceSource
from orchestrator.config.criteria import CriteriaConf
from orchestrator.artifacts.atomic import atomic_write
from orchestrator.errors import OrchestratorError
from orchestrator.registry import Run
from orchestrator.report.blocks import INTERVAL_RUNS, interval_tables, run_matrix
from orchestrator.report import curves
from orchestrator.report.collect import ReportData, collect
from orchestrator.report.sweeps import sweep_sections
from orchestrator.report.tune import tune_sections
from orchestrator.report.verdicts_md import _verdict_section, verdict_sections

if TYPE_CHECKING:
    from orchestrator.registry import Store
    from orchestrator.report.cache import ReportCache

PLACEHOLDER = (
    "_Hand-written notes go here: what each experiment asks, what we expected and what we "
    "concluded. Only the generated blocks below are rewritten by the report; everything "
    "else in this file is yours._"
)

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
    cache: ReportCache | None = None,
) -> int:
    """Rewrite the generated blocks of `path` from every run in `store` (see
    `update_experiments_md`); returns how many runs it shows.

    With `cache` (`ReportCache.beside(path)`: what `orchestrator report` does), the pieces of runs
    that did not change since the last report are kept from it and only the others' intervals are
    read and judged (report/cache.py); the file is the same, byte for byte.

    Runs are read lean (`Store.list_runs(lean=True)`: the interval fields the verdicts use, no
    targets or data_stats, configs of sweep and running runs only), except the INTERVAL_RUNS
    most recent, read in full, whose interval tables show every field: at 10,000 runs x 50
    intervals that is less than half the read."""
    if cache is not None:
        data = cache.collect(store, experiments=experiments, criteria=criteria, root=root)
        update_experiments_md(path, data)
        cache.save()
        return len(data.runs)
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
    # the runs interval_tables shows, each marked at the interval its verdict selected
    curves.write_curves(data.runs[-INTERVAL_RUNS:], path.parent / curves.CURVES_DIR, data.verdict)
    if path.exists():
        text = path.read_bytes().decode("utf-8")
    else:
        text = f"# Experiments\n\n{PLACEHOLDER}\n"
    newline = "\r\n" if "\r\n" in text else "\n"
    document = _splice_all(text, data, newline, path)
    atomic_write(path, lambda fh: fh.write(document.encode("utf-8")))


def _splice_all(text: str, data: ReportData, newline: str, path: Path) -> str:
    """`text` with every block's content rendered between its markers, in one join (a copy of
    the whole document per block would be five of a 5 MB one at 10,000 runs). Where a block's
    markers lie inside another's, block by block in BLOCKS order instead, each splice on the
    text the previous one left (a block whose markers a splice removed is appended at its turn)."""
    every = text
    for name in BLOCKS:  # the missing ones appended, in BLOCKS order
        every = _with_block(every, name, newline)
    spans = sorted((*_block_span(every, name, path), name) for name in BLOCKS)
    if any(start < stop_before for (start, _, _), (_, stop_before, _) in zip(spans[1:], spans)):
        for name, (_, render) in BLOCKS.items():
            text = _with_block(text, name, newline)
            start, stop = _block_span(text, name, path)
            text = "".join([text[:start], newline, render(data).replace("\n", newline), newline, text[stop:]])
        return text
    parts, at = [], 0
    for start, stop, name in spans:
        body = BLOCKS[name][1](data)
        parts += [every[at:start], newline, body if newline == "\n" else body.replace("\n", newline), newline]
        at = stop
    parts.append(every[at:])
    return "".join(parts)


def _with_block(text: str, name: str, newline: str) -> str:
    """`text`, with block `name` (heading and empty markers) appended if it has neither marker."""
    begin, end = _markers(name)
    if begin in text or end in text:
        return text
    if text and not text.endswith("\n"):
        text += newline
    return text + newline.join(["", BLOCKS[name][0], "", begin, end, ""])


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
