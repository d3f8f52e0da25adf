"""Per-run learning curves as small SVG files beside EXPERIMENTS.md (`experiments/curves/<run>.svg`).

Two panels over the training step: WER in percent (domain, heldout, and the selection set when
the run has one) and loss (eval loss on the domain set, mean train loss since the previous
evaluation). Hand-written SVG polylines, no plotting library: the report writes one per detailed
run (the 25 most recent) in about a millisecond each, imports nothing new, and a file is only
rewritten when its content changes.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from orchestrator.artifacts.atomic import write_text_atomic
from orchestrator.registry import Run

CURVES_DIR = Path("experiments") / "curves"  # relative to the folder of EXPERIMENTS.md
WIDTH, PANEL, TOP, LEFT, RIGHT, GAP = 640, 150, 28, 56, 150, 36
WER_LINES = (("domain_wer", "domain WER", "#1f77b4"), ("heldout_wer", "heldout WER", "#d62728"),
             ("select_wer", "selection WER", "#2ca02c"))
LOSS_LINES = (("eval_loss", "eval loss (domain)", "#9467bd"), ("train_loss", "train loss", "#7f7f7f"))


def file_name(run_id: str) -> str:
    """A file name for the run's SVG (run ids of `orchestrator record --run-id` can be anything)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id) + ".svg"


def link(run_id: str) -> str:
    """The SVG's path relative to EXPERIMENTS.md, for a Markdown image."""
    return (CURVES_DIR / file_name(run_id)).as_posix()


def render(run: Run) -> str | None:
    """The run's curves as an SVG document; None when it has fewer than one interval."""
    if not run.intervals:
        return None
    steps = [i.step for i in run.intervals]
    x_max = max(steps) or 1
    height = TOP + 2 * PANEL + GAP + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
             f'<text x="{LEFT}" y="16" font-size="13">{escape(run.id)} — {escape(run.status)}</text>']
    for n, (lines, scale, unit) in enumerate(((WER_LINES, 100.0, "%"), (LOSS_LINES, 1.0, ""))):
        top = TOP + n * (PANEL + GAP)
        series = [(label, color, [(i.step, getattr(i, field) * scale) for i in run.intervals
                                  if getattr(i, field) is not None and math.isfinite(getattr(i, field))])
                  for field, label, color in lines]
        series = [s for s in series if s[2]]
        parts += _panel(series, top, x_max, unit)
    parts.append(f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2:.0f}" y="{height - 6}" text-anchor="middle">step</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _panel(series: list, top: float, x_max: float, unit: str) -> list[str]:
    plot_w = WIDTH - LEFT - RIGHT
    out = [f'<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL}" fill="none" stroke="#999"/>']
    values = [v for _, _, points in series for _, v in points]
    if not values:
        return out + [f'<text x="{LEFT + 8}" y="{top + 18}" fill="#999">nothing recorded</text>']
    low, high = min(0.0, min(values)), max(values)
    high = high if high > low else low + 1.0

    def xy(step: float, value: float) -> str:
        return f"{LEFT + plot_w * step / x_max:.1f},{top + PANEL * (1 - (value - low) / (high - low)):.1f}"

    for frac in (0.0, 0.5, 1.0):  # y ticks: low, middle, high
        value = low + frac * (high - low)
        y = top + PANEL * (1 - frac)
        out.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{value:.3g}{unit}</text>')
    for frac in (0.0, 0.5, 1.0):
        x = LEFT + plot_w * frac
        out.append(f'<text x="{x:.1f}" y="{top + PANEL + 13}" text-anchor="middle">{x_max * frac:g}</text>')
    for k, (label, color, points) in enumerate(series):
        coords = " ".join(xy(s, v) for s, v in points)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{coords}"/>')
        out += [f'<circle cx="{c.split(",")[0]}" cy="{c.split(",")[1]}" r="2.2" fill="{color}"/>' for c in coords.split()]
        ly = top + 14 + 16 * k
        out.append(f'<line x1="{WIDTH - RIGHT + 10}" y1="{ly - 4}" x2="{WIDTH - RIGHT + 26}" y2="{ly - 4}" '
                   f'stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{WIDTH - RIGHT + 30}" y="{ly}">{escape(label)}</text>')
    return out


def write_curves(runs: Sequence[Run], folder: Path) -> list[Path]:
    """Write `<folder>/<run>.svg` for each run with intervals, skipping files already up to date;
    returns every run's SVG path."""
    written = []
    for run in runs:
        text = render(run)
        if text is None:
            continue
        path = Path(folder) / file_name(run.id)
        if not (path.exists() and path.read_text(encoding="utf-8") == text):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, text, durable=False)  # rebuilt by every report: no fsync
        written.append(path)
    return written
