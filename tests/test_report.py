"""The Markdown report: run matrix (derived status, planned experiments), verdicts, interval
tables, EXPERIMENTS.md block rewriting, escaping of user text, and the record/annotate CLI."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli
from factories import make_run
from factories import reported as interval
from orchestrator.errors import OrchestratorError
from orchestrator.registry import Store
from orchestrator.config.paths import declared_experiments
from orchestrator.report import (BLOCKS, collect, interval_tables, run_matrix, sweep_sections, update_experiments_md, verdict_sections)

ROOT = Path(__file__).resolve().parents[1]
HEADERS = ["Run ID", "Experiment", "Model", "Steps", "LR", "Adapter", "Target Modules", "Status", "Run state",
           "Domain WER (baseline / tuned / final)", "Heldout WER (baseline / tuned / final)", "Compute", "Note"]
NASTY = "a|b\\|c `code` <script>alert(1)</script> & <!-- END GENERATED: run-matrix -->\nline two"


def table_lines(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def cells(line: str) -> list[str]:
    """The cells of a Markdown table row as GitHub splits them: on pipes not escaped by a
    backslash, where a backslash escapes the character after it (so `\\\\|` splits)."""
    assert line.startswith("|") and line.rstrip().endswith("|"), line
    found, current, i = [], "", 1
    while i < len(line):
        if line[i] == "\\":
            current, i = current + line[i:i + 2], i + 2
        elif line[i] == "|":
            found.append(current.strip())
            current, i = "", i + 1
        else:
            current, i = current + line[i], i + 1
    return found


def matrix_rows(markdown: str) -> list[dict[str, str]]:
    """The run matrix's rows as {header: cell}."""
    header, _rule, *rows = [line for line in markdown.split("<!-- END GENERATED: run-matrix")[0].splitlines()
                            if line.startswith("| Run ID") or (line.startswith("|") and "Run ID" not in line)]
    assert cells(header) == HEADERS
    return [dict(zip(HEADERS, cells(row))) for row in rows]


def test_matrix_row_shows_percent_wers_baseline_tuned_final() -> None:
    (row,) = matrix_rows(run_matrix([make_run()]))
    assert list(row.values())[:9] == [
        "exp_a-1", "exp_a", "moonshine-tiny", "100", "0.0001", "LoRA", "decoder q (4)", "failed", "finished"
    ]
    # No interval keeps heldout within 0.2 pts, so tuned is the lowest domain WER (step 50) ...
    assert row["Domain WER (baseline / tuned / final)"] == "30.00 / 12.34 / 15.00"
    assert row["Heldout WER (baseline / tuned / final)"] == "10.00 / 11.00 / 12.00"  # ... heldout there
    guarded = make_run(intervals=(interval(0, 0.30, 0.10), interval(50, 0.12, 0.105), interval(100, 0.13, 0.1015)))
    (row,) = matrix_rows(run_matrix([guarded]))
    assert row["Domain WER (baseline / tuned / final)"] == "30.00 / 13.00 / 13.00"  # step 50 regresses 0.5


def test_missing_values_show_a_dash() -> None:
    (row,) = matrix_rows(run_matrix([make_run(intervals=(interval(10, None),))]))
    assert row["Domain WER (baseline / tuned / final)"] == row["Heldout WER (baseline / tuned / final)"] == "— / — / —"
    assert "_No intervals recorded._" in interval_tables([make_run(intervals=())])


def test_pipe_and_newline_in_cells_do_not_break_the_table() -> None:
    runs = [make_run(experiment="a|b|c", target_summary="q\nv"), make_run("plain-2")]
    lines = table_lines(run_matrix(runs))
    assert len(lines) == 4
    assert {len(cells(line)) for line in lines} == {len(HEADERS)}
    assert cells(lines[2])[1] == "a\\|b\\|c" and cells(lines[2])[6] == "q<br>v"


def test_user_text_cannot_break_tables_or_inject_html(tmp_path: Path) -> None:
    run = make_run(NASTY, experiment=NASTY, model_id=NASTY, target_summary=NASTY, annotation_status="flawed",
                   annotation_note=NASTY, sweep_id=NASTY, config={"optim": {"lr": 1e-4}})
    other = make_run("plain-2", sweep_id=NASTY, lr=3e-4, config={"optim": {"lr": 3e-4}})
    path = tmp_path / "EXPERIMENTS.md"
    update_experiments_md(path, [run, other], experiments=[NASTY, "exp_planned"])
    text = path.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert text.count("<!--") == 2 * len(BLOCKS)  # BEGIN/END of each block, nothing injected
    assert "xychart-beta" in text  # the sweep's chart, its title stripped to safe characters
    for table in re.split(r"\n(?!\|)", text):  # each table: consecutive lines starting with "|"
        widths = {len(cells(line)) for line in table.splitlines() if line.startswith("|")}
        assert len(widths) <= 1, table
    rows = matrix_rows(text)
    assert [r["Status"] for r in rows] == ["flawed", "failed", "planned"]  # NASTY ran, so not planned
    assert rows[0]["Experiment"] == rows[0]["Note"] == (
        "a\\|b\\\\\\|c \\`code\\` &lt;script&gt;alert(1)&lt;/script&gt; &amp; "
        "&lt;!-- END GENERATED: run-matrix --&gt;<br>line two")
    assert "### a\\|b" in text and "line two" in text.split("### a\\|b")[1].splitlines()[0]  # heading on one line


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
    "<!-- BEGIN GENERATED: verdicts --><!-- END GENERATED: verdicts -->"
    "<!-- BEGIN GENERATED: sweeps --><!-- END GENERATED: sweeps -->"
    "<!-- BEGIN GENERATED: tune --><!-- END GENERATED: tune -->"
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
    assert text.index("END GENERATED: run-matrix") < text.index("## Verdicts") < text.index("## Intervals")
    update_experiments_md(path, [make_run()])
    assert path.read_text() == text


def test_blocks_in_any_order_and_one_inside_another_are_spliced_in_place(tmp_path: Path) -> None:
    """Each block's content goes between its own markers wherever they are; a block whose
    markers lie inside another's is replaced with that one's content and appended anew."""
    def markers(name: str) -> str:
        return f"<!-- BEGIN GENERATED: {name} -->\nstale-xyz\n<!-- END GENERATED: {name} -->\n"

    runs = [make_run()]
    path = tmp_path / "EXPERIMENTS.md"
    path.write_text("# Mine\n\n" + "".join(markers(n) for n in reversed(list(BLOCKS))) + "tail\n")
    update_experiments_md(path, runs)
    text = path.read_text()
    assert "stale-xyz" not in text and text.startswith("# Mine\n\n") and text.endswith("tail\n")
    assert text.index("END GENERATED: tune") < text.index("BEGIN GENERATED: intervals")  # the order kept
    assert run_matrix(runs) in text and interval_tables(runs) in text

    nested = markers("sweeps").replace("stale-xyz\n", "stale-xyz\n" + markers("verdicts"))
    path.write_text("# Mine\n\n" + nested)
    update_experiments_md(path, runs)
    text = path.read_text()
    for name in BLOCKS:  # each block once; verdicts appended after the sweeps that swallowed it
        assert text.count(f"<!-- BEGIN GENERATED: {name} -->") == 1 == text.count(f"<!-- END GENERATED: {name} -->")
    assert text.index("END GENERATED: sweeps") < text.index("## Verdicts") < text.index("BEGIN GENERATED: verdicts")
    assert "stale-xyz" not in text and verdict_sections(runs) in text and sweep_sections(runs) in text


def test_missing_file_is_created_with_title_and_every_block(tmp_path: Path) -> None:
    path = tmp_path / "EXPERIMENTS.md"
    update_experiments_md(path, [])
    text = path.read_text()
    assert text.startswith("# Experiments\n\n")
    for name in ("run-matrix", "sweeps", "verdicts", "intervals"):
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

    (row,) = matrix_rows(path.read_text())
    assert (row["Run ID"], row["Model"], row["Steps"], row["LR"]) == (
        "exp_2_5-run", "UsefulSensors/moonshine-tiny", "40", "0.0002 ⚠")  # flagged: at or above 2e-4
    assert (row["Adapter"], row["Run state"], row["Status"]) == ("DoRA", "finished", "failed")
    assert row["Domain WER (baseline / tuned / final)"] == "25.00 / 12.50 / 13.00"
    assert row["Heldout WER (baseline / tuned / final)"] == "8.00 / 8.25 / 9.00"


def test_verdict_section_shows_each_manifest_and_criterion() -> None:
    text = verdict_sections([make_run(annotation_status="flawed", annotation_note="see notes")])
    assert text.startswith("### exp_a-1\n\n- **Overall: FAIL** — failed: heldout_regression")
    assert "Annotated **flawed**: see notes" in text and "**outside the heldout guard**" in text
    tables = [[cells(line) for line in block.splitlines()] for block in text.split("\n\n") if block.startswith("|")]
    manifests, criteria = tables
    assert manifests[0][:6] == ["Manifest", "Baseline WER %", "Tuned WER %", "Delta (pts)", "95% CI (pts)",
                                "P(improvement)"]
    assert manifests[2][:6] == ["domain", "30.00", "12.34", "-17.66", "—", "—"]
    assert manifests[3][:4] == ["heldout", "10.00", "11.00", "+1.00"]
    assert [row[1] for row in criteria[2:]] == [
        "Domain WER reduction", "Heldout WER regression", "Convergence (eval loss)", "Stability (domain WER)",
        "Identity() target errors", "Artifact integrity", "CLI parity"]
    assert [row[3] for row in criteria[2:]] == ["INCONCLUSIVE", "FAIL", "FAIL", "N/A", "N/A", "FAIL", "FAIL"]  # a point estimate never PASSes
    assert criteria[3][4] == "+1.00 pts" and criteria[5][4] == "—"  # stability: 2 trained intervals, needs 3
    assert "2 trained interval(s) with a domain WER, needs 3" in criteria[5][5]


def test_planned_experiments_come_from_conf_exp_without_hydra() -> None:
    names = declared_experiments(ROOT / "conf" / "exp")
    assert "exp_2_5_v2_universal_lora" in names and names == sorted(names)
    data = collect([make_run(experiment="exp_2_5_v2_universal_lora")], experiments=names)
    assert "exp_2_5_v2_universal_lora" not in data.planned and "exp_2_2_qv_only" in data.planned
    rows = matrix_rows(run_matrix(data))
    assert [r["Experiment"] for r in rows if r["Status"] == "planned"] == data.planned
    assert all(r["Run ID"] == "—" for r in rows[1:])


def test_record_annotate_and_report_through_the_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    common = ["--registry", url, "--model", "UsefulSensors/moonshine-streaming-tiny", "--steps", "1000",
              "--lr", "1e-5"]
    ex24 = cli("record", "--experiment", "exp_2_4_v2_true_bridge", *common, "--targets", "dec attn+mlp", "--dora",
               "--wer", "0:12.40:4.79", "--wer", "600:12.64:4.92", check=True).stdout.strip()
    ex23 = cli("record", "--experiment", "exp_2_3_v2_bridge_focus", *common, "--targets", "all linear",
               "--wer", "0:12.40:4.79", "--wer", "1000:12.10:-", check=True).stdout.strip()
    note = "missed the adapter | decoder <naming>"
    assert cli("annotate", ex23, "--status", "flawed", "--note", note, "--registry", url, check=True).returncode == 0
    path = tmp_path / "EXPERIMENTS.md"
    path.write_text("# Mine\n")
    cli("report", "--registry", url, "--output", str(path), check=True)

    rows = {row["Experiment"]: row for row in matrix_rows(path.read_text())}
    assert rows["exp_2_4_v2_true_bridge"]["Run ID"] == ex24
    assert (rows["exp_2_4_v2_true_bridge"]["Status"], rows["exp_2_4_v2_true_bridge"]["Run state"]) == (
        "failed", "external")
    assert rows["exp_2_4_v2_true_bridge"]["Domain WER (baseline / tuned / final)"] == "12.40 / 12.64 / 12.64"
    assert rows["exp_2_4_v2_true_bridge"]["Heldout WER (baseline / tuned / final)"] == "4.79 / 4.92 / 4.92"
    assert rows["exp_2_4_v2_true_bridge"]["Adapter"] == "DoRA"
    assert rows["exp_2_3_v2_bridge_focus"]["Status"] == "flawed"
    assert rows["exp_2_3_v2_bridge_focus"]["Note"] == "missed the adapter \\| decoder &lt;naming&gt;"
    planned = {name for name, row in rows.items() if row["Status"] == "planned"}
    assert planned == set(declared_experiments(ROOT / "conf" / "exp")) - {"exp_2_3_v2_bridge_focus",
                                                                          "exp_2_4_v2_true_bridge"}
    section = path.read_text().split(f"### {ex24}")[1]
    assert "- **Overall: FAIL** — failed: domain_reduction" in section
    assert "| -0.24 pts" in section and "point estimate, no per-utterance data" in section

    runs = json.loads(cli("runs", "--registry", url, "--json", check=True).stdout)
    ext = next(r for r in runs if r["id"] == ex24)
    assert ext["external"] and ext["criteria"]["min_domain_reduction"] == 1.0
    assert [(i["step"], i["domain_wer"], i["heldout_wer"]) for i in ext["intervals"]] == [
        (0, 0.124, 0.0479), (600, 0.1264, 0.0492)]


@pytest.mark.parametrize("args,expect", [
    (["annotate", "nope", "--status", "flawed"], "no run 'nope'"),
    (["annotate", "RUN"], "give --status"),
    (["annotate", "RUN", "--status", "Not OK"], "short lower-case word"),
    (["record", "--experiment", "e", "--model", "m", "--steps", "1", "--lr", "1", "--targets", "t",
      "--wer", "0:12"], "--wer: cannot read '0:12'"),
])
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], expect: str) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    run_id = cli("record", "--registry", url, "--experiment", "e", "--model", "m", "--steps", "1", "--lr", "1",
                 "--targets", "t", "--wer", "0:1:1", check=True).stdout.strip()
    proc = cli(*[run_id if a == "RUN" else a for a in args], "--registry", url)
    assert proc.returncode == 2 and expect in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_report_imports_no_torch_and_no_training_code() -> None:
    code = (
        "import json, sys, orchestrator.report\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'peft', 'hydra', 'optuna', 'orchestrator'))))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert not [m for m in loaded if m.split(".")[0] in ("torch", "transformers", "peft", "hydra", "optuna")]
    ours = {m.split(".")[1] for m in loaded if m.startswith("orchestrator.")}
    assert ours <= {"errors", "registry", "report", "acceptance", "artifacts", "config", "selection"}
    assert not ours & {"training", "data", "commands", "tuning"}


def test_a_lone_sweep_point_is_no_sweep_and_a_running_run_is_pending() -> None:
    """`-m +exp=a,b` gives each experiment a one-run sweep id: no sweep table for those; and a
    run still training gets a provisional verdict, not a FAIL for the adapter it has not saved."""
    lone = make_run("exp_a-1", sweep_id="exp_a-sweep", config={"optim": {"lr": 1e-4}})
    pair = [make_run(f"exp_b-{i}", "exp_b", sweep_id="exp_b-sweep", lr=lr, config={"optim": {"lr": lr}})
            for i, lr in enumerate((1e-4, 3e-4))]
    text = sweep_sections([lone, *pair])
    assert "### exp_b-sweep" in text and "exp_a-sweep" not in text
    assert "No sweeps" in sweep_sections([lone])
    running = verdict_sections([make_run(status="running")])
    assert "**Overall: pending** — the run is still training" in running
    assert "**Overall: pending**" not in verdict_sections([make_run()])


def test_interval_tables_cover_the_most_recent_runs_only() -> None:
    from orchestrator.report import INTERVAL_RUNS

    runs = [make_run(f"exp_a-{i:03d}") for i in range(INTERVAL_RUNS + 5)]
    text = interval_tables(runs)
    assert f"The {INTERVAL_RUNS} most recent of {INTERVAL_RUNS + 5} runs" in text
    assert "### exp_a-004" not in text and "### exp_a-005" in text and f"### exp_a-{INTERVAL_RUNS + 4:03d}" in text
