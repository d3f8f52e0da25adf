"""Compute to the first PASS: `orchestrator tune` against the equivalent full grid, in one run.

Compute is counted, not timed (the machine's load does not move it): train steps plus evaluation
passes (one pass = both manifests at one interval, the parity re-check included), each pass
weighted as `EVAL_WEIGHT` train steps. The grid is the space's every point at full length, as a
Hydra sweep runs it (it does not stop at a PASS): its compute to the first PASS is the whole grid.
Also printed, the grid's best case: its points in declared order, stopped at the first PASS.

    .venv/bin/python -m bench.tune_vs_grid              # tiny_random, criteria it can meet (about 2 min)
    .venv/bin/python -m bench.tune_vs_grid --demo-base  # the demo's pretrained base, real criteria (slow)

tiny_random cannot gain on the domain, so its setting asks no domain gain
(criteria.min_domain_reduction=-1); PASS then needs the real guard, convergence, stability,
integrity and parity, which the high learning rates of the grid break. --demo-base judges with
the criteria as they are, but for the stability spread (criteria.max_stability_range=10: its
evaluation sets are the tests' 8 utterances, where one word is 2 points).

    .venv/bin/python -m bench.tune_vs_grid --demo       # the demo itself, from registry.db (issue #15)
    .venv/bin/python -m bench.tune_vs_grid --demo --count-only   # count only: no training at all

--demo is the embedded demo's tune campaign with its real manifests, criteria and registry
(`registry.db`): it runs `orchestrator tune +exp=demo_tune` (a study already met trains nothing)
and counts, from the registry, each trial's train steps and evaluation passes as recorded; the
first PASS is the campaign verdict's (family-wise over tune.budget_runs, report/tune.py). The grid
is demo_tune's space discretised: LR 1e-4, 3e-4, 5e-4, 1e-3 (the range's ends and two points
between) x targets self_attn_qkvo, self_attn_qv, each a full run of demo_tune's own setting. A Hydra
sweep runs every point, so the grid's compute to its first PASS is at least the whole grid's
(infinite if no point passes): the ratio needs no grid verdict. A grid point the registry lacks
is run with --run-grid (about 20 CPU-core minutes each), else its compute is extrapolated from
its config (steps + one pass per interval and step 0 + the parity pass: a full run's compute
does not depend on its outcome); the output says which points were measured.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys

from bench.common import CACHE, ROOT, Result

EVAL_WEIGHT = 1.0  # one evaluation pass ~ one train step here (both small); the ratio is printed for both parts
LRS = [3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4]  # the declared order of the grid: high to low, as the seeds swept
TARGETS = ["all_linear", "global_qkvo"]


def setting(demo_base: bool) -> tuple[list[str], dict]:
    from orchestrator.data.synth import make_test_set
    from orchestrator.training.modeling import build_tiny_random

    speech = make_test_set(CACHE / "tune_speech") if not (CACHE / "tune_speech" / "train.jsonl").exists() else {
        k: CACHE / "tune_speech" / f"{k}.jsonl" for k in ("train", "domain", "heldout")}
    common = [f"data.train_manifest={speech['train']}", f"eval.domain_manifest={speech['domain']}",
              f"eval.heldout_manifest={speech['heldout']}", "optim.steps=8", "eval.interval=2"]
    if demo_base:  # the test sets are 8 utterances: one word is 2 points, so the spread allowed is wider
        return ["+exp=smoke_tiny_random", "model=demo_base", f"model.id={ROOT / 'demo' / 'base'}",
                "criteria.max_stability_range=10", *common], {}
    model = CACHE / "tune_tiny_random"
    if not model.exists():
        build_tiny_random(model)
    return ["+exp=smoke_tiny_random", f"model.id={model}", "model.tokens_per_second=5",
            "criteria.min_domain_reduction=-1", *common], {}


def cost(runs) -> tuple[int, int]:
    from orchestrator.report.tune import compute

    parts = [compute(r) for r in runs]
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def run_grid(base: list[str], folder) -> tuple[list, list[str]]:
    from orchestrator.acceptance.verdicts import judge
    from orchestrator.registry import Store
    from orchestrator.training import loop
    from orchestrator.tuning.worker import compose_spec

    url = f"sqlite:///{folder / 'grid.db'}"
    store = Store(url)
    runs, verdicts = [], []
    for lr, targets in itertools.product(LRS, TARGETS):
        spec = compose_spec([*base, f"registry.url={url}", f"output_dir={folder / 'outputs'}", f"optim.lr={lr!r}",
                             f"targets={targets}"])
        run = store.get_run(loop.run(spec, store, progress=False, sweep_id="grid"))
        runs.append(run)
        verdicts.append(judge(run, store).overall)
        print(f"grid  lr={lr:g} targets={targets}: {verdicts[-1]}", flush=True)
    store.close()
    return runs, verdicts


def run_tune(base: list[str], folder, budget: int) -> list:
    from orchestrator.registry import Store
    from orchestrator.tuning import campaign

    url = f"sqlite:///{folder / 'tune.db'}"
    space = folder / "space.yaml"
    space.write_text(json.dumps({"space": {"optim.lr": {"low": min(LRS), "high": max(LRS), "log": True},
                                           "targets": {"choices": TARGETS}},
                                 "pruning": {"pruner": "median", "startup_trials": 1, "guard_slack": 0.5,
                                             "guard_patience": 1}}))
    campaign.main([*base, f"registry.url={url}", f"output_dir={folder / 'outputs'}", f"tune={space}",
                   f"tune.budget_runs={budget}", "tune.study=bench"])
    store = Store(url)
    runs = store.list_runs(sweep_id="tune-bench")
    store.close()
    return runs


def measure(demo_base: bool = False) -> list[Result]:
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    torch.set_num_threads(1)
    base, _ = setting(demo_base)
    folder = CACHE / ("tune_vs_grid_demo" if demo_base else "tune_vs_grid")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    grid_runs, verdicts = run_grid(base, folder)
    tune_runs = run_tune(base, folder, budget=len(grid_runs))
    steps_g, passes_g = cost(grid_runs)
    first = next((i for i, v in enumerate(verdicts) if v == "PASS"), None)
    steps_o, passes_o = cost(grid_runs[:first + 1]) if first is not None else (steps_g, passes_g)
    steps_t, passes_t = cost(tune_runs)
    grid = steps_g + EVAL_WEIGHT * passes_g
    ordered = steps_o + EVAL_WEIGHT * passes_o
    tuned = steps_t + EVAL_WEIGHT * passes_t
    name = "tune_vs_grid" + ("_demo_base" if demo_base else "_tiny_random")
    note = (f"tune: {len(tune_runs)} runs, {steps_t} steps + {passes_t} eval passes; grid: {len(grid_runs)} runs, "
            f"{steps_g} steps + {passes_g} passes, {verdicts.count('PASS')} PASS")
    return [Result(f"{name}: compute to first PASS, tune vs full grid", tuned, grid, tuned / grid, "<= 0.5",
                   unit="steps+passes", note=note),
            Result(f"{name}: tune vs the grid stopped at its first PASS (declared order)", tuned, ordered,
                   tuned / ordered, None, unit="steps+passes",
                   note="a Hydra sweep does not stop at a PASS; this is the grid's best case")]


DEMO_LRS = [1e-4, 3e-4, 5e-4, 1e-3]  # demo_tune's LR range: its ends and two points between (1e-4, 3e-4: the ATC sweep's)
DEMO_TARGETS = ["self_attn_qkvo", "self_attn_qv"]  # demo_tune's choices, in its declared order
DEMO_GRID_EXP = "demo_tune"  # the grid runs the campaign's own setting at each point
DEMO_STUDY = "tune-demo_tune"


def demo(run_missing: bool = False, continue_tune: bool = True) -> list[Result]:
    """Tune against the grid on the demo itself, counted from registry.db (see the module doc)."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.chdir(ROOT)  # the demo's paths are relative: manifests/demo, registry.db, outputs/
    from orchestrator.acceptance.verdicts import criteria_for, judge
    from orchestrator.registry import RunStatus, Store
    from orchestrator.registry.liveness import settle
    from orchestrator.report.tune import campaign_looks, campaign_verdict, family_judge, trial_order
    from orchestrator.tuning import campaign
    from orchestrator.tuning.worker import compose_spec

    if continue_tune:
        campaign.main(["+exp=demo_tune"])  # continues the study; one already met trains nothing
    spec = compose_spec(["+exp=demo_tune"])
    store = Store(spec.registry.url)
    # settled: a trial whose worker died reads `interrupted`, as in the report, not `running`
    tune_runs = settle(trial_order(store.list_runs(sweep_id=DEMO_STUDY)))
    looks = campaign_looks(tune_runs)
    met = campaign_verdict(tune_runs, family_judge(tune_runs, store))
    first = next((n for n, r in enumerate(tune_runs, 1) if met.met and r.id == met.run.id), None)
    steps_t, passes_t = cost(tune_runs)  # every trial the study started: those in flight at the PASS too
    for run in tune_runs:
        status = getattr(run.status, "value", run.status)
        print(f"tune  {run.id} lr={run.lr:.3g} targets={_targets(run)} {status}: {compute_line(run)}", flush=True)
    points, measured = [], 0
    for lr, targets in itertools.product(DEMO_LRS, DEMO_TARGETS):
        grid_spec = compose_spec([f"+exp={DEMO_GRID_EXP}", f"optim.lr={lr!r}", f"targets={targets}"])
        done = [r for r in store.runs_with_hash(grid_spec.config_hash) if r.status == RunStatus.COMPLETED]
        if not done and run_missing:
            from orchestrator.training import loop

            loop.run(grid_spec, store, progress=False, sweep_id="bench-demo-grid")
            done = [r for r in store.runs_with_hash(grid_spec.config_hash) if r.status == RunStatus.COMPLETED]
        if done:
            run = done[-1]
            steps, passes = cost([run])
            grid_conf = criteria_for(run).family_wise(len(DEMO_LRS) * len(DEMO_TARGETS))  # a grid's pick is a selection too
            verdict, how = judge(run, store, grid_conf).overall, f"measured ({run.id})"
            measured += 1
        else:  # a full-length run: its steps, one pass per interval and step 0, the parity pass
            steps = grid_spec.optim.steps
            passes = steps // grid_spec.eval.interval + 1 + 1
            verdict, how = "?", "extrapolated (not run)"
        points.append((steps, passes, verdict))
        print(f"grid  lr={lr:g} targets={targets}: {steps} steps + {passes} passes, verdict {verdict}, {how}",
              flush=True)
    store.close()
    steps_g, passes_g = sum(p[0] for p in points), sum(p[1] for p in points)
    tuned, grid = steps_t + EVAL_WEIGHT * passes_t, steps_g + EVAL_WEIGHT * passes_g
    status = f"PASS at run {first} of {len(tune_runs)}" if first else f"no PASS in {len(tune_runs)} runs"
    note = (f"tune: {status} (family-wise over {looks}), {steps_t} steps + {passes_t} passes; grid: {len(points)} "
            f"runs, {steps_g} steps + {passes_g} passes, {measured} measured, {len(points) - measured} extrapolated, "
            f"{sum(p[2] == 'PASS' for p in points)} known PASS (family-wise over {len(points)}); by part: steps "
            f"{steps_t / steps_g:.3f}, passes {passes_t / passes_g:.3f}")
    results = [Result("tune_vs_grid_demo: compute to first PASS, tune vs full grid", tuned, grid, tuned / grid,
                      "<= 0.5", unit="steps+passes", note=note)]
    known = next((i for i, p in enumerate(points) if p[2] == "PASS"), None)
    if known is not None:  # the grid's best case: declared order, stopped at its first PASS
        unknown_before = sum(p[2] == "?" for p in points[:known])
        ordered = sum(p[0] + EVAL_WEIGHT * p[1] for p in points[:known + 1])
        results.append(Result("tune_vs_grid_demo: tune vs the grid stopped at its first PASS (declared order)",
                              tuned, ordered, tuned / ordered, None, unit="steps+passes",
                              note="a Hydra sweep does not stop at a PASS; this is the grid's best case"
                                   + (f" if none of the {unknown_before} unrun point(s) before it passes"
                                      if unknown_before else "")))
    if first is None:
        results[0] = Result(results[0].benchmark, tuned, grid, None, "<= 0.5", unit="steps+passes",
                            note=note + " (tune has not reached PASS: no ratio)")
    return results


def _targets(run) -> str:
    targets = (run.config or {}).get("targets")
    return targets.get("name", "?") if isinstance(targets, dict) else "?"


def compute_line(run) -> str:
    steps, passes = cost([run])
    return f"{steps} steps + {passes} passes" + (f" ({run.stop_reason})" if run.stop_reason else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-base", action="store_true", help="the demo's pretrained base with real criteria")
    parser.add_argument("--demo", action="store_true", help="the demo itself, counted from registry.db")
    parser.add_argument("--run-grid", action="store_true", help="--demo: run the grid points the registry lacks")
    parser.add_argument("--count-only", action="store_true",
                        help="--demo: count what the registry holds; do not continue the tune study")
    args = parser.parse_args()
    results = demo(args.run_grid, not args.count_only) if args.demo else measure(args.demo_base)
    for result in results:
        print(result.line())
    sys.exit(0 if all(r.passed is not False for r in results) else 1)


if __name__ == "__main__":
    main()
