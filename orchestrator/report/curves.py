"""Per-run learning curves beside EXPERIMENTS.md: `experiments/curves/<run>.png` and `.svg`,
drawn with matplotlib (Agg, no pyplot).

Two panels over the training step: WER in percent (domain, heldout, and the selection set when
the run has one) with the heldout guard (baseline heldout WER + the criteria's allowed
regression, dashed) and loss (eval loss on the domain set, mean train loss since the previous
evaluation); a dotted vertical line on both marks the step the verdict selected (the
checkpoint the report quotes).

matplotlib is imported only by `draw`, when a run's plotted data changed: each file carries a
digest of what it plots (PNG text chunk, SVG metadata), and a report whose runs' curves are
unchanged neither imports matplotlib nor rewrites a file. Output is deterministic (matplotlib's
defaults whatever the user's matplotlibrc, a fixed SVG hash salt, no date or version stamp), so
equal data draws equal bytes.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.artifacts.atomic import atomic_write
from orchestrator.errors import WriteError, os_reason
from orchestrator.registry import Run

if TYPE_CHECKING:
    from orchestrator.acceptance.verdicts import RunVerdict

CURVES_DIR = Path("experiments") / "curves"  # relative to the folder of EXPERIMENTS.md
STYLE = 2  # bump when the drawing changes: every run's curves are then redrawn
SIZE, DPI = (6.4, 4.8), 100  # inches at DPI: a 640 x 480 PNG
DIGEST_KEY = "orchestrator-curves"  # the PNG text chunk that holds the digest
WER_LINES = (("domain_wer", "domain WER", "#1f77b4"), ("heldout_wer", "heldout WER", "#d62728"),
             ("select_wer", "selection WER", "#2ca02c"))
LOSS_LINES = (("eval_loss", "eval loss (domain)", "#9467bd"), ("train_loss", "train loss", "#7f7f7f"))
Series = tuple[str, str, tuple[tuple[int, float], ...]]  # label, colour, (step, value) points


@dataclass(frozen=True)
class Plot:
    """What a run's curves show: the series of each panel (WERs in percent), the selected step
    (None while none is selected) and the heldout guard in WER percent (None without a baseline
    heldout WER)."""

    title: str
    wer: tuple[Series, ...]
    loss: tuple[Series, ...]
    selected: int | None
    guard: float | None
    guard_label: str

    def digest(self) -> str:
        """sha256 of what is plotted (and how: STYLE), the key that decides a redraw."""
        text = json.dumps([STYLE, SIZE, DPI, asdict(self)], separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stem(run_id: str) -> str:
    """A file name stem for the run (run ids of `orchestrator record --run-id` can be anything)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


def link(run_id: str) -> str:
    """The PNG's path relative to EXPERIMENTS.md, for a Markdown image."""
    return (CURVES_DIR / f"{stem(run_id)}.png").as_posix()


def svg_link(run_id: str) -> str:
    """The SVG's path relative to EXPERIMENTS.md."""
    return (CURVES_DIR / f"{stem(run_id)}.svg").as_posix()


def plot_of(run: Run, verdict: RunVerdict | None) -> Plot | None:
    """What `run`'s curves show, `verdict` giving the selected step and the guard; None for a run
    without intervals."""
    if not run.intervals:
        return None

    def series(lines: tuple, scale: float) -> tuple[Series, ...]:
        found = []
        for field, label, color in lines:
            points = tuple((i.step, getattr(i, field) * scale) for i in run.intervals
                           if getattr(i, field) is not None and math.isfinite(getattr(i, field)))
            if points:
                found.append((label, color, points))
        return tuple(found)

    selection = verdict.selection if verdict is not None else None
    baseline = run.baseline
    guard, guard_label = None, ""
    if verdict is not None and baseline is not None and baseline.heldout_wer is not None \
            and math.isfinite(baseline.heldout_wer):
        allowed = verdict.thresholds.max_heldout_regression
        guard = baseline.heldout_wer * 100 + allowed
        guard_label = f"heldout guard (+{allowed:g} pts)"
    return Plot(f"{run.id} — {run.status}", series(WER_LINES, 100.0), series(LOSS_LINES, 1.0),
                selection.interval.step if selection is not None else None, guard, guard_label)


def write_curves(runs: Sequence[Run], folder: Path,
                 verdict: Callable[[Run], RunVerdict | None] = lambda run: None) -> list[Path]:
    """Write `<folder>/<run>.png` and `.svg` for each run with intervals (`verdict(run)` gives
    its selected step and guard), redrawing only those whose plotted data changed; returns
    every such run's PNG path."""
    written = []
    for run in runs:
        plot = plot_of(run, verdict(run))
        if plot is None:
            continue
        png, svg = (Path(folder) / f"{stem(run.id)}{suffix}" for suffix in (".png", ".svg"))
        digest = plot.digest()
        if not (_holds(png, digest) and _holds(svg, digest)):
            png_bytes, svg_bytes = draw(plot, digest)
            png.parent.mkdir(parents=True, exist_ok=True)
            for path, data in ((png, png_bytes), (svg, svg_bytes)):
                try:  # rebuilt by any report: no fsync
                    atomic_write(path, lambda fh, data=data: fh.write(data), durable=False)
                except Exception as exc:
                    raise WriteError(f"cannot write {path.name} ({os_reason(exc)})", where=str(path),
                                     fix="free disk space or make the folder writable, then run the report again") \
                        from exc
        written.append(png)
    return written


def _holds(path: Path, digest: str) -> bool:
    """Whether the file at `path` was drawn from data with this digest (it carries it verbatim:
    an uncompressed PNG text chunk, the SVG's metadata)."""
    try:
        return digest.encode("ascii") in path.read_bytes()
    except OSError:
        return False


def draw(plot: Plot, digest: str) -> tuple[bytes, bytes]:
    """The PNG and SVG of `plot`, each carrying `digest`. The one place that imports matplotlib."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context():
        matplotlib.rcdefaults()  # the same drawing whatever the user's matplotlibrc says
        matplotlib.rcParams.update({"svg.hashsalt": DIGEST_KEY, "svg.fonttype": "none", "font.size": 8,
                                    "axes.titlesize": 9})
        fig = Figure(figsize=SIZE, dpi=DPI)
        fig.subplots_adjust(left=0.1, right=0.7, top=0.9, bottom=0.1, hspace=0.15)
        wer_ax, loss_ax = fig.subplots(2, 1, sharex=True)
        fig.suptitle(plot.title, fontsize=9)
        for ax, lines, ylabel in ((wer_ax, plot.wer, "WER %"), (loss_ax, plot.loss, "loss")):
            for label, color, points in lines:
                ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=2.5,
                        linewidth=1.4, color=color, label=label)
            if plot.selected is not None:
                ax.axvline(plot.selected, color="black", linestyle=":", linewidth=1, label=f"selected (step {plot.selected})")
            if not lines:
                ax.text(0.5, 0.5, "nothing recorded", transform=ax.transAxes, ha="center", color="#999999")
            ax.set_ylabel(ylabel)
            ax.grid(True, color="#e5e5e5", linewidth=0.6)
        if plot.guard is not None:
            wer_ax.axhline(plot.guard, color="#d62728", linestyle="--", linewidth=1, label=plot.guard_label)
        for ax in (wer_ax, loss_ax):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
        loss_ax.set_xlabel("step")
        png, svg = io.BytesIO(), io.BytesIO()
        fig.savefig(png, format="png", dpi=DPI, metadata={"Software": None, DIGEST_KEY: digest})
        fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None, "Description": digest})
    return png.getvalue(), svg.getvalue()
