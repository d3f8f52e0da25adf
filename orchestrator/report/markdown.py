"""Markdown helpers of the report: tables, escaping of user text, number formats, flat configs.

Text that users wrote (names, notes, target summaries) is escaped so it cannot break a table or
inject HTML / generated-block markers.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence

from orchestrator.config.criteria import LR_WARNING

MISSING = "—"
LR_FLAG = "⚠"
# What escape changes or str.splitlines splits on; text without any is a cell as it is.
_NEEDS_ESCAPE = re.compile(r"[\\&<>|`\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")


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


def _lr(lr: float, fmt: str = "g") -> str:
    """A learning rate, flagged at or above LR_WARNING."""
    return f"{lr:{fmt}} {LR_FLAG}" if lr >= LR_WARNING else f"{lr:{fmt}}"


def _pct(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{fraction * 100:.2f}"


def _num(value: float | None, spec: str) -> str:
    return MISSING if value is None else format(value, spec)


def _flat(config: Mapping, prefix: str = "") -> dict[str, object]:
    """A nested config as {dotted.key: leaf value}."""
    return dict(_leaves(config, prefix))


def _leaves(config: Mapping, prefix: str) -> Iterator[tuple[str, object]]:
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _compute(run, *, long: bool = False) -> str:
    """What a run cost (training/telemetry.py): "cpu bf16 · 812 MB · 45.2 utt/s · 310x RT"; `long`
    names the device in full (the run's section). MISSING for runs recorded without it."""
    if not run.precision and run.peak_memory_mb is None:
        return MISSING
    device = run.device or "?"
    parts = [f"{device if long else device.split(' (')[0]} {run.precision or '?'}"]
    if run.peak_memory_mb is not None:
        peak = run.peak_memory_mb
        parts.append(f"{peak / 1024:.1f} GB" if peak >= 1024 else f"{peak:.0f} MB")
        if long:
            parts[-1] += " peak " + ("allocated" if device.startswith("cuda") else "RSS")
    if run.train_utts_per_s is not None:
        parts.append(f"{run.train_utts_per_s:.3g} utt/s" + (" training" if long else ""))
    if run.eval_realtime_x is not None:
        parts.append(f"{run.eval_realtime_x:,.0f}x RT" + (" evaluation" if long else ""))
    return " · ".join(parts)
