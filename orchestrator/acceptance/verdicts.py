"""The acceptance verdicts' public names, in one place (tests, report and CLI import them here).

outcome.py: statuses and records; compare.py: per-utterance intervals (selection-honest);
criteria.py: the seven criteria; judge.py: a run's verdict; groups.py: replication over seeds.
"""
from orchestrator.acceptance.judge import criteria_for, judge, matrix_status, overall_verdict
from orchestrator.acceptance.outcome import (BEST_ADAPTER, DERIVED, DEV_SET, FAIL, INCONCLUSIVE, MAX_TYPE, NA,
                                             NO_UTTERANCES, PARITY, PASS, PLAIN, PLANNED, POINT, SPLITS, TITLES,
                                             Comparison, Loader, RangeBound, RunVerdict, UtteranceSource, Verdict)

__all__ = ["BEST_ADAPTER", "DERIVED", "DEV_SET", "FAIL", "INCONCLUSIVE", "MAX_TYPE", "NA", "NO_UTTERANCES", "PARITY",
           "PASS", "PLAIN", "PLANNED", "POINT", "SPLITS", "TITLES", "Comparison", "Loader", "RangeBound",
           "RunVerdict", "UtteranceSource", "Verdict", "criteria_for", "judge", "matrix_status", "overall_verdict"]
