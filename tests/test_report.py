"""The Markdown report: run matrix, interval tables, and EXPERIMENTS.md block rewriting."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.registry import Interval, Run, Store
from orchestrator.report import interval_tables, run_matrix, update_experiments_md

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)


def interval(step: int, domain: float | None, heldout: float | None = None) -> Interval:
    return Interval(step, 1e-4, 1.25, 1.5, domain, heldout, 10, 10, NOW)


def make_run(run_id: str = "exp_a-1", experiment: str = "exp_a", **fields) -> Run:
    values = dict(
        id=run_id,
        experiment=experiment,
        status="finished",
        config={},
        config_hash="h",
        model_id="moonshine-tiny",
        targets=["q_proj"],
        target_summary="decoder q (4)",
        lr=1e-4,
        steps=100,
        dora=False,
        git_commit=None,
        data_stats={},
        started_at=NOW,
        ended_at=NOW,
        failure_reason=None,
        intervals=(interval(0, 0.30, 0.10), interval(50, 0.1234, 0.11), interval(100, 0.15, 0.12)),
    )
    return Run(**{**values, **fields})


def table_lines(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def cells(line: str) -> list[str]:
    """The cells of a Markdown table row, split on unescaped pipes."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_matrix_row_shows_percent_wers_baseline_best_final() -> None:
    matrix = run_matrix([make_run()])
    header, rule, row = table_lines(matrix)
    assert "Domain WER (baseline / best / final)" in header
    assert cells(row)[:7] == [
        "exp_a-1", "exp_a", "moonshine-tiny", "100", "0.0001", "decoder q (4)", "finished"
    ]
    assert cells(row)[7] == "30.00 / 12.34 / 15.00"
    assert cells(row)[8] == "10.00 / 11.00 / 12.00"  # held-out at the best-domain interval


def test_missing_values_show_a_dash() -> None:
    row = table_lines(run_matrix([make_run(intervals=(interval(10, None),))]))[-1]
    assert cells(row)[-2:] == ["— / — / —", "— / — / —"]
    assert "_No intervals recorded._" in interval_tables([make_run(intervals=())])


def test_pipe_and_newline_in_cells_do_not_break_the_table() -> None:
    runs = [make_run(experiment="a|b|c", target_summary="q\nv"), make_run("plain-2")]
    lines = table_lines(run_matrix(runs))
    assert len(lines) == 4
    assert {len(cells(line)) for line in lines} == {9}
    assert cells(lines[2])[1] == "a\\|b\\|c" and cells(lines[2])[5] == "q<br>v"


def test_interval_tables_one_section_per_run() -> None:
    text = interval_tables([make_run("r1"), make_run("r2", intervals=(interval(0, 0.5),))])
    assert text.index("### r1") < text.index("### r2")
    rows = table_lines(text.split("### r2")[0])
    assert len(rows) == 2 + 3
    assert cells(rows[3]) == ["50", "0.0001", "1.2500", "1.5000", "12.34", "11.00"]


EXPERIMENTS = (
    "# Experiments\r\n\r\nHand-written intro | with a pipe.\n\n"
    "<!-- BEGIN GENERATED: run-matrix -->\nstale\n<!-- END GENERATED: run-matrix -->\n"
    "\nNotes between the blocks, café ✓.\n\n"
    "<!-- BEGIN GENERATED: intervals -->\n<!-- END GENERATED: intervals -->\n"
    "Trailing notes without a final newline"
)


BLOCK = re.compile(r"<!-- BEGIN GENERATED: ([\w-]+) -->.*?<!-- END GENERATED: \1 -->", re.S)


def outside_blocks(text: str) -> list[str]:
    return BLOCK.sub("<block>", text).split("<block>")


def test_update_keeps_hand_written_text_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "EXPERIMENTS.md"
    path.write_bytes(EXPERIMENTS.encode("utf-8"))
    original = outside_blocks(EXPERIMENTS)

    update_experiments_md(path, [make_run("first-run")])
    update_experiments_md(path, [make_run("first-run"), make_run("second-run")])

    text = path.read_bytes().decode("utf-8")
    assert outside_blocks(text) == original
    assert "stale" not in text
    assert [cells(line)[0] for line in table_lines(text)].count("second-run") == 1
    assert "### second-run" in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_blocks_are_appended_to_a_file_without_them(tmp_path: Path) -> None:
    path = tmp_path / "EXPERIMENTS.md"
    path.write_text("# Notes\n\nMine.")
    update_experiments_md(path, [make_run()])
    text = path.read_text()
    assert text.startswith("# Notes\n\nMine.\n")
    assert text.index("## Run matrix") < text.index("BEGIN GENERATED: run-matrix")
    assert text.index("END GENERATED: run-matrix") < text.index("## Intervals")
    update_experiments_md(path, [make_run()])
    assert path.read_text() == text


def test_missing_file_is_created_with_title_and_both_blocks(tmp_path: Path) -> None:
    path = tmp_path / "EXPERIMENTS.md"
    update_experiments_md(path, [])
    text = path.read_text()
    assert text.startswith("# Experiments\n\n")
    for name in ("run-matrix", "intervals"):
        assert f"<!-- BEGIN GENERATED: {name} -->" in text
        assert f"<!-- END GENERATED: {name} -->" in text


def test_a_lone_marker_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "EXPERIMENTS.md"
    path.write_text("# E\n\n<!-- BEGIN GENERATED: run-matrix -->\nno end\n")
    with pytest.raises(OrchestratorError, match=r"EXPERIMENTS\.md:3: .*run-matrix"):
        update_experiments_md(path, [])
    assert path.read_text() == "# E\n\n<!-- BEGIN GENERATED: run-matrix -->\nno end\n"


def test_a_registry_run_reaches_the_matrix(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    run = store.create_run(
        experiment="exp_2_5",
        config={},
        config_hash="h",
        model_id="UsefulSensors/moonshine-tiny",
        targets=["q_proj", "v_proj"],
        target_summary="decoder q,v (8)",
        lr=2e-4,
        steps=40,
        dora=True,
        git_commit=None,
        run_id="exp_2_5-run",
    )
    store.add_interval(run.id, step=0, domain_wer=0.25, heldout_wer=0.08)
    store.add_interval(run.id, step=20, domain_wer=0.125, heldout_wer=0.0825)
    store.add_interval(run.id, step=40, domain_wer=0.13, heldout_wer=0.09)
    store.finish_run(run.id, "finished")
    path = tmp_path / "EXPERIMENTS.md"
    update_experiments_md(path, store.list_runs())
    store.close()

    rows = [cells(line) for line in table_lines(path.read_text())]
    row = next(row for row in rows if row[0] == "exp_2_5-run")
    assert row[2:5] == ["UsefulSensors/moonshine-tiny", "40", "0.0002"] and row[6] == "finished"
    assert row[7:] == ["25.00 / 12.50 / 13.00", "8.00 / 8.25 / 9.00"]


def test_report_imports_no_torch_and_no_training_code() -> None:
    code = (
        "import json, sys, orchestrator.report\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'peft', 'orchestrator'))))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert not [m for m in loaded if m.split(".")[0] in ("torch", "transformers", "peft")]
    ours = {m.split(".")[1] for m in loaded if m.startswith("orchestrator.")}
    assert ours <= {"errors", "registry", "report"}
