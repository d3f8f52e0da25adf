"""The report's per-run curves (orchestrator/report/curves.py): a PNG and an SVG per detailed run,
drawn by matplotlib, read back as an image and as XML; redrawn only when the plotted data
changed; matplotlib never loaded by `orchestrator report --help` nor by a report whose curves are
unchanged."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import ROOT
from factories import interval, make_run
from orchestrator.acceptance.verdicts import judge
from orchestrator.report import curves, update_experiments_md

SVG = "{http://www.w3.org/2000/svg}"


def learning_run(run_id: str = "exp_a-1", k: int = 8, *, dev: bool = False):
    """A run whose domain WER falls and heldout WER creeps up past the guard late: the selected
    step is not the last one."""
    points = []
    for s in range(k):
        heldout = 0.080 + (0.0 if s < k - 2 else 0.01)  # the last two break the 0.2-point guard
        fields = dict(eval_loss=2.0 - 0.1 * s, train_loss=None if s == 0 else 2.1 - 0.1 * s)
        if dev:
            fields["select_wer"] = 0.31 - 0.01 * s
        points.append(interval(10 * s, 0.30 - 0.01 * s, heldout, **fields))
    return make_run(run_id, intervals=tuple(points))


def svg_texts(path: Path) -> set[str]:
    root = ET.parse(path).getroot()  # well-formed XML
    assert root.tag == f"{SVG}svg"
    return {(t.text or "").strip() for t in root.iter(f"{SVG}text")}


def test_the_report_draws_a_png_and_an_svg_per_run(tmp_path: Path) -> None:
    from matplotlib.image import imread

    runs = [learning_run("exp_a-1"), learning_run("exp_a/2", dev=True)]
    md = tmp_path / "EXPERIMENTS.md"
    update_experiments_md(md, runs)
    text = md.read_text()
    for run in runs:
        stem = curves.stem(run.id)
        png, svg = (tmp_path / "experiments" / "curves" / f"{stem}{ext}" for ext in (".png", ".svg"))
        assert f"![WER and loss by step](experiments/curves/{stem}.png) ([SVG](experiments/curves/{stem}.svg))" in text
        assert imread(png).shape == (480, 640, 4)  # a 640 x 480 RGBA PNG
        selected = judge(run, None).selection.interval.step
        assert selected == 50  # the lowest domain WER within the heldout guard, not the last step
        labels = svg_texts(svg)
        assert {"domain WER", "heldout WER", "eval loss (domain)", "train loss", "heldout guard (+0.2 pts)",
                f"selected (step {selected})", "WER %", "loss", "step"} <= labels
        assert ("selection WER" in labels) == (run.id == "exp_a/2")  # the dev set's series only where recorded
        plot = curves.plot_of(run, judge(run, None))  # what is drawn: a point per interval that recorded it
        assert {label: len(points) for label, _, points in plot.wer + plot.loss} == {
            "domain WER": 8, "heldout WER": 8, "eval loss (domain)": 8, "train loss": 7,
            **({"selection WER": 8} if run.id == "exp_a/2" else {})}
        assert plot.wer[0][2][1] == (10, pytest.approx(29.0)) and plot.guard == pytest.approx(8.2)  # in percent
    assert curves.stem("exp_a/2") == "exp_a_2"


def test_unchanged_curves_are_not_rewritten_and_changed_ones_are_redrawn(tmp_path: Path) -> None:
    md, folder = tmp_path / "EXPERIMENTS.md", tmp_path / "experiments" / "curves"
    run = learning_run(k=6)
    update_experiments_md(md, [run])
    files = sorted(folder.iterdir())
    assert [p.name for p in files] == ["exp_a-1.png", "exp_a-1.svg"]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    update_experiments_md(md, [run])
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before  # nothing rewritten

    for p in files:  # drawn again from the same data: the same bytes (no date, version or random id)
        p.unlink()
    update_experiments_md(md, [run])
    assert {p: p.read_bytes() for p in files} == {p: data for p, (_, data) in before.items()}

    grown = learning_run(k=8)  # two more intervals: the data changed
    update_experiments_md(md, [grown])
    after = {p: p.read_bytes() for p in files}
    assert all(after[p] != data for p, (_, data) in before.items())
    assert curves.plot_of(grown, judge(grown, None)).digest().encode() in after[folder / "exp_a-1.png"]
    assert "70" in svg_texts(folder / "exp_a-1.svg")  # the step axis reaches the new last step


def test_a_run_without_intervals_has_no_curves(tmp_path: Path) -> None:
    assert curves.write_curves([make_run(intervals=())], tmp_path) == []
    assert not any(tmp_path.iterdir())


def test_neither_report_help_nor_a_report_of_unchanged_curves_loads_matplotlib(tmp_path: Path) -> None:
    run = learning_run()
    md = tmp_path / "EXPERIMENTS.md"
    update_experiments_md(md, [run])  # draws: the next report finds the curves unchanged
    code = ("import json, pickle, sys\n"
            "import orchestrator.report\n"
            "from orchestrator.cli import main\n"
            "try:\n    main(['report', '--help'])\nexcept SystemExit:\n    pass\n"
            "loaded = 'matplotlib' in sys.modules\n"
            "from orchestrator.report import update_experiments_md\n"
            f"update_experiments_md({str(md)!r}, pickle.loads({pickle.dumps([run])!r}))\n"
            "print(json.dumps([loaded, 'matplotlib' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [False, False]
