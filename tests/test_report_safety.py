"""Names and notes with `|`, newlines, backticks or HTML cannot break EXPERIMENTS.md's tables,
inject markup, or forge a generated-block marker: through the real CLI (record, annotate, report)."""
from __future__ import annotations

import re
from pathlib import Path

from conftest import cli

EVIL = [
    "pipe | in the middle | twice",
    "line one\nline two\r\nline three",
    "tick `code` and ``` fence",
    "<script>alert(1)</script> <b>bold</b> &amp; <!-- comment -->",
    "<!-- END GENERATED: run-matrix -->",
    "back\\slash at the end \\",
    "unicode\u2028separator\u0085and\x1cfile",
]


def _unescaped_pipes(line: str) -> int:
    return line.replace("\\\\", "").replace("\\|", "").count("|")


def _tables(text: str) -> list[list[str]]:
    """Every Markdown table: a header line, a |---| rule and the `|` lines after it. What follows
    a table must end it cleanly (a blank line or a block marker): a row split by a newline would
    leave its tail there."""
    lines, tables = text.splitlines(), []
    for n, line in enumerate(lines[:-1]):
        if line.startswith("|") and re.fullmatch(r"\|(-+\|)+", lines[n + 1]):
            block = [line]
            for body in lines[n + 1:]:
                if not body.startswith("|"):
                    assert not body.strip() or body.startswith("<!-- END GENERATED: "), body
                    break
                block.append(body)
            tables.append(block)
    return tables


def test_hostile_text_stays_inside_its_cell(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    ids = []
    for n, text in enumerate([" ".join(EVIL[:3]), " ".join(EVIL[3:5]), " ".join(EVIL[5:])]):
        proc = cli("record", "--experiment", f"exp {text}", "--model", f"model {text}", "--steps", "10", "--lr", "1e-4",
                   "--targets", f"targets {text}", "--wer", "0:12.0:5.0", "--wer", "10:11.0:5.1",
                   "--note", f"note {text}", "--status", "flawed", "--run-id", f"run{n} {text}", "--registry", url)
        assert proc.returncode == 0, proc.stderr
        ids.append(f"run{n} {text}")
    proc = cli("annotate", ids[0], "--status", "flawed", "--note", "annotated " + " ".join(EVIL), "--registry", url)
    assert proc.returncode == 0, proc.stderr

    md = tmp_path / "EXPERIMENTS.md"
    hand = "# Experiments\n\nOur notes | with a pipe, kept byte for byte.\n"
    md.write_text(hand)
    proc = cli("report", "--registry", url, "--output", str(md))
    assert proc.returncode == 0, proc.stderr
    text = md.read_text()
    assert text.startswith(hand)

    tables = _tables(text)
    assert tables, text
    for table in tables:
        columns = _unescaped_pipes(table[0])
        for row in table:
            assert row.startswith("|") and row.endswith("|"), row
            assert _unescaped_pipes(row) == columns, row
    matrix = next(t for t in tables if t[0].startswith("| Run ID") and "Note" in t[0])
    assert len([row for row in matrix if row.startswith("| run")]) == 3  # one line per run

    for raw in ("<script", "<b>", "</b>", "<!-- comment"):
        assert raw not in text
    markers = re.findall(r"<!-- (BEGIN|END) GENERATED: [\w-]+ -->", text)
    assert len(markers) == 2 * len({m for m in re.findall(r"<!-- BEGIN GENERATED: ([\w-]+) -->", text)})
    assert text.count("<!--") == len(markers) and text.count("-->") == len(markers)
    assert "\u2028" not in text and "\x85" not in text and "\x1c" not in text

    for heading in (line for line in text.splitlines() if line.startswith("#")):
        assert "\n" not in heading and "<" not in heading.replace("&lt;", "")

    again = cli("report", "--registry", url, "--output", str(md))  # idempotent: markers still found
    assert again.returncode == 0 and md.read_text() == text
