"""Verdicts from a real SQLite registry: best-checkpoint guard, bootstrap criteria, integrity,
parity, external runs and the derived matrix status."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from factories import interval
from orchestrator.artifacts.atomic import sha256_file
from orchestrator.artifacts.run_folder import ADAPTER_WEIGHTS
from orchestrator.errors import ConfigError
from orchestrator.registry import Interval, Run, Store
from orchestrator.acceptance.bootstrap import contrasts, paired_bootstrap, replicate_wers
from orchestrator.acceptance.verdicts import FAIL, INCONCLUSIVE, NA, PASS, judge, matrix_status, overall_verdict
from orchestrator.config.criteria import CriteriaConf, load_criteria
from orchestrator.selection import select_best
from orchestrator.training.targets import target_report

ROOT = Path(__file__).resolve().parents[1]
N, WORDS = 400, 10  # utterances per manifest, reference words per utterance


def at(step: int, domain: float | None, heldout: float | None = 0.10, loss: float | None = None) -> Interval:
    return interval(step, domain, heldout, eval_loss=loss)


# --- select_best -------------------------------------------------------------------------------

def test_select_best_honours_the_heldout_guard() -> None:
    intervals = [at(0, 0.30, 0.100), at(2, 0.20, 0.1030), at(4, 0.25, 0.1010), at(6, 0.25, 0.0990)]
    pick = select_best(intervals, 0.2)
    assert pick.interval.step == 4 and pick.within_guard  # step 2 is lower but regresses 0.3 pts
    assert pick.regression == pytest.approx(0.1)
    assert select_best(intervals, 0.5).interval.step == 2  # a looser guard admits step 2


def test_select_best_without_an_interval_inside_the_guard_keeps_the_lowest_domain_and_says_so() -> None:
    pick = select_best([at(0, 0.30, 0.10), at(2, 0.22, 0.12), at(4, 0.21, 0.13), at(6, 0.21, 0.11)], 0.2)
    assert pick.interval.step == 4 and not pick.within_guard  # ties go to the earliest step


def test_select_best_edge_cases() -> None:
    assert select_best([], 0.2) is None
    assert select_best([at(0, 0.3)], 0.2) is None  # the baseline is not a tuned checkpoint
    assert select_best([at(0, 0.3), at(2, None)], 0.2) is None
    no_baseline = select_best([at(2, 0.2), at(4, 0.1)], 0.2)
    assert no_baseline.interval.step == 4 and not no_baseline.within_guard  # regression unknown


def test_select_best_on_prefixes_picks_the_previous_or_the_newest() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        intervals = [at(0, 0.3, 0.1)] + [at(s, float(rng.uniform(0.1, 0.35)), float(rng.uniform(0.095, 0.105)))
                                         for s in range(10, 110, 10)]
        previous = None
        for k in range(2, len(intervals) + 1):
            pick = select_best(intervals[:k], 0.2).interval.step
            assert pick in (previous, intervals[k - 1].step)
            previous = pick
        assert previous == select_best(intervals, 0.2).interval.step


# --- runs in a real registry -------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    yield store
    store.close()


def errors_with_total(total: int, rng: np.random.Generator) -> np.ndarray:
    """N per-utterance error counts (each <= WORDS) summing to `total`."""
    errors = np.zeros(N, dtype=int)
    for i in rng.choice(N * WORDS, size=total, replace=False) // WORDS:
        errors[i] += 1
    return errors


def churn(base: np.ndarray, more: int, rng: np.random.Generator, swaps: int = 60) -> np.ndarray:
    """`base` with `more` errors overall: `swaps` (+ what `more` removes) errors fixed and `swaps`
    (+ what `more` adds) new ones, at random utterances, so the paired differences are noisy."""
    out = base.copy()
    np.add.at(out, rng.choice(np.repeat(np.arange(N), out), size=swaps + max(-more, 0), replace=False), -1)
    np.add.at(out, rng.choice(np.repeat(np.arange(N), WORDS - out), size=swaps + max(more, 0), replace=False), 1)
    return out


def utts(errors: np.ndarray) -> list[dict]:
    return [dict(audio_filepath=f"u{i}.wav", reference=" ".join(["w"] * WORDS), hypothesis="h",
                 errors=int(e), ref_words=WORDS) for i, e in enumerate(errors)]


def make_run(store: Store, tmp_path: Path, *, domain: dict[int, np.ndarray], heldout: dict[int, np.ndarray],
             losses: dict[int, float] | None = None, identity_errors: int | None = 0, parity: bool | None = True,
             best_step: int | None = None, run_id: str = "r") -> Run:
    """A run whose intervals are computed from the per-utterance errors it stores; the best
    adapter is a real file at `best_step` (default: what select_best picks)."""
    report = None if identity_errors is None else {"by_component": {"decoder": 4}, "skipped": [],
                                                   "empty_components": [], "identity_errors": identity_errors}
    store.create_run(experiment="exp", config={}, config_hash="h", model_id="m", targets=["q"],
                     target_summary="q", lr=1e-4, steps=max(domain), dora=False, git_commit=None,
                     run_id=run_id, criteria=CriteriaConf().as_dict(), target_report=report)
    losses = losses or {step: 2.0 - 0.1 * k for k, step in enumerate(sorted(domain))}
    for step in sorted(domain):
        store.add_interval(run_id, step=step, eval_loss=losses[step],
                           domain_wer=domain[step].sum() / (N * WORDS), heldout_wer=heldout[step].sum() / (N * WORDS),
                           utterances={"domain": utts(domain[step]), "heldout": utts(heldout[step])})
    best_step = best_step if best_step is not None else select_best(store.get_run(run_id).intervals, 0.2).interval.step
    folder = tmp_path / "outputs" / run_id / "lora_adapter_best"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ADAPTER_WEIGHTS).write_bytes(b"adapter weights of step %d" % best_step)
    store.add_artifact(run_id, kind="lora_adapter_best", path=str(folder),
                       sha256=sha256_file(folder / ADAPTER_WEIGHTS), step=best_step)
    if parity is not None:
        store.add_check(run_id, "parity", parity, {"step": best_step, "domain_wer": 0.2, "heldout_wer": 0.1})
    store.finish_run(run_id, "completed")
    return store.get_run(run_id)


def good_run(store: Store, tmp_path: Path, **kw) -> Run:
    rng = np.random.default_rng(7)
    base_d, base_h = errors_with_total(1200, rng), errors_with_total(400, rng)  # 30.00 %, 10.00 %
    d2 = churn(base_d, -400, rng)  # late intervals are nearly the same model: they differ on a few utterances
    d4 = churn(d2, -8, rng, swaps=4)
    domain = {0: base_d, 2: d2, 4: d4, 6: churn(d4, 4, rng, swaps=4)}
    heldout = {step: base_h.copy() for step in domain}
    return make_run(store, tmp_path, domain=domain, heldout=heldout, **kw)


def test_a_good_run_passes_every_criterion_with_its_number(store: Store, tmp_path: Path) -> None:
    run = good_run(store, tmp_path)
    verdict = judge(run, store)
    assert [v.status for v in verdict.criteria] == [PASS] * 7, verdict.criteria
    assert verdict.overall == PASS and matrix_status(run, verdict) == "passed"
    assert verdict.selection.interval.step == 4
    domain = verdict.comparisons["domain"]
    assert domain.paired and domain.delta == pytest.approx(-10.20)
    assert verdict["domain_reduction"].value.startswith("+10.20 pts (95% CI [")
    assert verdict["stability"].value.startswith("0.20 pts (95% CI [0.00, ")  # the range's bootstrap interval
    assert domain.method == "max-type" and domain.candidates == 3  # picked on the domain set itself
    assert all(v.value for v in verdict.criteria)


def test_bootstrap_of_the_report_is_reproducible_from_the_stored_errors(store: Store, tmp_path: Path) -> None:
    run = good_run(store, tmp_path)
    verdict = judge(run, store)
    arrays = [store.utterance_errors(run.id, step, "domain") for step in (0, 2, 4, 6)]
    reps = replicate_wers([err for err, _ in arrays], arrays[0][1], replicates=10_000, seed=0)
    band = contrasts(reps, [(1, 0), (2, 0), (3, 0)], simultaneous=True)[1]  # step 4, picked among three
    c = verdict.comparisons["domain"]
    assert (c.delta, c.ci_low, c.ci_high, c.p_improvement) == (band.delta, band.low, band.high, band.p_improvement)
    plain = paired_bootstrap(arrays[0][0], arrays[0][1], arrays[2][0], arrays[2][1], replicates=10_000, seed=0)
    assert c.ci_low < plain.ci_low and c.ci_high > plain.ci_high  # wider: it pays for the pick


def test_a_run_whose_heldout_got_worse_never_passes(store: Store, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base_d, base_h = errors_with_total(1200, rng), errors_with_total(400, rng)
    domain = {0: base_d, 2: churn(base_d, -400, rng), 4: churn(base_d, -420, rng), 6: churn(base_d, -410, rng)}
    worse = {0: base_h, **{s: churn(base_h, 120, rng) for s in (2, 4, 6)}}  # +3 pts everywhere
    run = make_run(store, tmp_path, domain=domain, heldout=worse, run_id="worse")
    verdict = judge(run, store)
    assert not verdict.selection.within_guard
    assert verdict["heldout_regression"].status == FAIL
    assert "no trained interval kept heldout within 0.2" in verdict["heldout_regression"].detail
    assert verdict.overall == FAIL and matrix_status(run, verdict) == "failed"

    slightly = {0: base_h, **{s: churn(base_h, 6, rng) for s in (2, 4, 6)}}  # +0.15 pts, noisy
    run = make_run(store, tmp_path, domain=domain, heldout=slightly, run_id="slightly")
    verdict = judge(run, store)
    assert verdict.selection.within_guard
    assert verdict["heldout_regression"].status == INCONCLUSIVE
    assert verdict.overall == INCONCLUSIVE


def test_domain_reduction_straddling_the_threshold_is_inconclusive(store: Store, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    base_d, base_h = errors_with_total(1200, rng), errors_with_total(400, rng)
    domain = {0: base_d, **{s: churn(base_d, -40, rng, swaps=150) for s in (2, 4, 6)}}  # -1.0 pts, noisy
    run = make_run(store, tmp_path, domain=domain, heldout={s: base_h for s in domain})
    verdict = judge(run, store)
    assert verdict["domain_reduction"].status == INCONCLUSIVE
    assert verdict.overall == INCONCLUSIVE


def test_integrity_fails_when_the_adapter_file_changed_or_vanished(store: Store, tmp_path: Path) -> None:
    run = good_run(store, tmp_path)
    weights = Path(run.artifact("lora_adapter_best").path) / ADAPTER_WEIGHTS
    weights.write_bytes(b"retrained over it")
    verdict = judge(run, store)
    assert verdict["artifact_integrity"].status == FAIL
    assert "differs from the registry" in verdict["artifact_integrity"].detail
    assert verdict.overall == FAIL
    weights.unlink()
    assert "adapter file missing" in judge(run, store)["artifact_integrity"].detail


def test_integrity_fails_when_the_best_adapter_is_not_the_selected_step(store: Store, tmp_path: Path) -> None:
    run = good_run(store, tmp_path, best_step=2, parity=None)
    integrity = judge(run, store)["artifact_integrity"]
    assert integrity.status == FAIL and "step 2, the selected best is step 4" in integrity.detail


def test_parity_absent_fails(store: Store, tmp_path: Path) -> None:
    run = good_run(store, tmp_path, parity=None)
    verdict = judge(run, store)
    assert (verdict["parity"].status, verdict["parity"].detail.split(" (")[0]) == (FAIL, "parity not run")
    assert verdict.overall == FAIL
    store.add_check(run.id, "parity", False, {"step": 4, "domain_wer": 0.25})
    assert judge(store.get_run(run.id), store)["parity"].status == FAIL
    store.add_check(run.id, "parity", True, {"step": 2})  # checked another checkpoint
    assert "step 2" in judge(store.get_run(run.id), store)["parity"].detail


def test_convergence_identity_and_stability(store: Store, tmp_path: Path) -> None:
    run = good_run(store, tmp_path, identity_errors=1)
    assert judge(run, store)["identity_errors"].status == FAIL
    run = dataclasses.replace(run, target_report=None)
    assert judge(run, store)["identity_errors"].status == NA

    rising = dataclasses.replace(run, intervals=tuple(i._replace(eval_loss=1.0 + i.step)
                                                      for i in run.intervals))
    convergence = judge(rising, store)["convergence"]
    assert convergence.status == FAIL and "slope is not negative" in convergence.detail

    jumpy = dataclasses.replace(run, intervals=(at(0, 0.30), at(2, 0.20), at(4, 0.19), at(6, 0.25)))
    stability = judge(jumpy, None)["stability"]
    assert (stability.status, stability.value) == (FAIL, "6.00 pts")


def test_without_per_utterance_data_the_point_estimate_is_used_and_said(store: Store, tmp_path: Path) -> None:
    run = good_run(store, tmp_path)
    verdict = judge(run, None)
    assert not verdict.comparisons["domain"].paired
    assert verdict["domain_reduction"].status == INCONCLUSIVE  # no interval: at best INCONCLUSIVE
    assert verdict["domain_reduction"].detail == "point estimate, no per-utterance data (no interval, so at best INCONCLUSIVE)"


def test_external_run_is_judged_on_what_it_reported(store: Store) -> None:
    run = store.record_external(experiment="exp_2_4_v2_true_bridge", model_id="m", steps=1000, lr=1e-5,
                                target_summary="dec attn+mlp", dora=True,
                                intervals=[{"step": 0, "domain_wer": 0.1240, "heldout_wer": 0.0479},
                                           {"step": 600, "domain_wer": 0.1264, "heldout_wer": 0.0492}])
    verdict = judge(run, store)
    assert verdict.selection.interval.step == 600
    assert (verdict["domain_reduction"].status, verdict["domain_reduction"].value) == (FAIL, "-0.24 pts")
    assert (verdict["heldout_regression"].status, verdict["heldout_regression"].value) == (PASS, "+0.13 pts")
    assert verdict["domain_reduction"].detail == "point estimate, no per-utterance data"
    assert "external run" in verdict["heldout_regression"].detail  # a point estimate PASSes only when recorded
    assert [v.status for v in verdict.criteria[2:]] == [NA] * 5
    assert verdict.overall == FAIL and matrix_status(run, verdict) == "failed"

    good = store.record_external(experiment="x", model_id="m", steps=10, lr=1e-5, target_summary="t", dora=False,
                                 intervals=[{"step": 0, "domain_wer": 0.20, "heldout_wer": 0.05},
                                            {"step": 10, "domain_wer": 0.15, "heldout_wer": 0.05}])
    verdict = judge(good, store)
    assert verdict.overall == INCONCLUSIVE and "not assessable" in verdict.reason  # never PASS on N/A


def test_overall_verdict_rules() -> None:
    from orchestrator.acceptance.verdicts import Verdict

    def v(*statuses: str) -> list[Verdict]:
        return [Verdict(f"c{i}", s, "", "") for i, s in enumerate(statuses)]

    assert overall_verdict(v(PASS, PASS))[0] == PASS
    assert overall_verdict(v(PASS, FAIL, INCONCLUSIVE, NA))[0] == FAIL
    assert overall_verdict(v(PASS, INCONCLUSIVE))[0] == INCONCLUSIVE
    assert overall_verdict(v(PASS, NA)) == (INCONCLUSIVE, "not assessable: c1")


def test_matrix_status_lifecycle_and_annotation(store: Store, tmp_path: Path) -> None:
    run = good_run(store, tmp_path)
    verdict = judge(run, store)
    for status in ("running", "interrupted", "failed"):
        assert matrix_status(dataclasses.replace(run, status=status), verdict) == status
    assert matrix_status(dataclasses.replace(run, annotation_status="flawed"), verdict) == "flawed"


def test_criteria_file_and_run_recorded_criteria(store: Store, tmp_path: Path) -> None:
    assert load_criteria(ROOT / "conf" / "criteria" / "default.yaml") == CriteriaConf()
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_domain_reducton: 2\n")
    with pytest.raises(ConfigError, match="min_domain_reducton"):
        load_criteria(bad)
    run = good_run(store, tmp_path)
    strict = dataclasses.replace(run, criteria={**run.criteria, "min_domain_reduction": 50.0})
    assert judge(strict, store)["domain_reduction"].status == FAIL  # judged by its own thresholds
    assert judge(strict, store, CriteriaConf())["domain_reduction"].status == PASS  # unless told


def test_target_report_of_a_real_bridge_resolution() -> None:
    """bridge on streaming-tiny: decoder.proj is Identity, skipped and recorded, never adapted."""
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoModelForSpeechSeq2Seq, MoonshineStreamingConfig

    from orchestrator.config.spec import compose
    from orchestrator.training.targets import resolve

    with torch.device("meta"):
        model = AutoModelForSpeechSeq2Seq.from_config(MoonshineStreamingConfig(num_key_value_heads=8,
                                                                               decoder_start_token_id=1))
    report = target_report(resolve(model, OmegaConf.to_object(compose(["targets=bridge"]).targets)))
    assert report == {"by_component": {"adapter": 1, "decoder": 60}, "empty_components": [], "identity_errors": 0,
                      "skipped": [{"name": "model.decoder.proj", "component": "adapter", "type": "Identity"}]}
    json.dumps(report)


def test_importing_verdicts_leaves_torch_and_hydra_unimported() -> None:
    code = ("import json, sys, orchestrator.acceptance.verdicts, orchestrator.acceptance.bootstrap\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'hydra', 'transformers'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
