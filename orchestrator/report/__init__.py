"""Registry entities -> Markdown: the run matrix, sweeps (table + chart + sweep-wide band),
verdicts (per run and per replication group) and interval tables in EXPERIMENTS.md.

Reads plain `Run` entities (and, for the bootstrap, per-utterance errors through a
`verdicts.UtteranceSource` such as the Store); it must never import torch, hydra or the
training code. Past VERDICT_RUNS and INTERVAL_RUNS runs, the verdict and interval sections cover
the most recent runs, and a verdict matrix has every run's verdict on each criterion.

  collect.py     ReportData, collect (judges runs and replication groups)
  blocks.py      run matrix, interval tables
  sweeps.py      sweep sections
  verdicts_md.py verdict matrix, per-run verdicts, replication groups
  markdown.py    tables, escaping, number formats
  document.py    splice the blocks into EXPERIMENTS.md; write_report, run_sections
  pieces.py      rendered pieces kept by the digests of the runs they show
  cache.py       experiments/.report_cache.json: what `orchestrator report` keeps between reports
"""
from orchestrator.report.blocks import INTERVAL_RUNS, STATUS_NOTE, interval_tables, run_matrix
from orchestrator.report.collect import ReportData, collect
from orchestrator.report.document import BLOCKS, PLACEHOLDER, run_sections, update_experiments_md, write_report
from orchestrator.report.markdown import MISSING
from orchestrator.report.sweeps import SWEEP_NOTE, sweep_sections
from orchestrator.report.verdicts_md import VERDICT_MATRIX_NOTE, VERDICT_RUNS, group_sections, verdict_matrix, verdict_sections

__all__ = ["BLOCKS", "INTERVAL_RUNS", "MISSING", "PLACEHOLDER", "STATUS_NOTE", "SWEEP_NOTE", "VERDICT_MATRIX_NOTE",
           "VERDICT_RUNS", "ReportData", "collect", "group_sections", "interval_tables", "run_matrix", "run_sections",
           "sweep_sections", "update_experiments_md", "verdict_matrix", "verdict_sections", "write_report"]
