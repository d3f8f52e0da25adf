"""bench.upstream's numbers: WER differences pooled over seeds, step ratios, the ablation table,
and its section of bench/RESULTS.md.

Every WER difference is the tool's own statistics: one utterance resample shared by every run of
every seed (acceptance.bootstrap.replicate_wers, the criteria's replicates and seed), then the
two-level bootstrap of a replication group (acceptance.groups.pool_seeds: seeds resampled, each
replicate the mean of its drawn seeds' differences), 95% percentile interval. A difference is
WER(a) - WER(b) in points over the same utterances, seed by seed (a and b trained with the same
seed), so negative favours a.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.common import Result

TARGET_RATIO = 1 / 1.3  # ours / theirs CPU time per step
TARGET_WER = 0.3  # points: the pooled 95% CI's upper end of WER(ours) - WER(theirs)
WHAT = {
    "before": "our trainer as it was: one A per projection, duration buckets, step 1 at LR 0",
    "share_a": "`adapter.share_a=true`: q/k/v share one LoRA A per block (upstream's design)",
    "sorted": "`data.batching=sorted`: fixed length-sorted batches, order shuffled per epoch (upstream's)",
    "warmup": "`optim.schedule_shift=true` (now the default): step 1 at LR/w, not 0 (upstream's warm-up)",
    "recipe": "`+exp=upstream_lora_recipe` as committed, with our defaults",
}


@dataclass(frozen=True)
class Pooled:
    mean: float  # points, mean over seeds
    low: float
    high: float
    per_seed: tuple[tuple[float, float, float], ...]  # (delta, low, high) of each seed, percentile

    def text(self) -> str:
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def _step_times(run: dict, cpu: bool) -> list[float]:
    from bench.upstream import intervals

    return intervals(run["stamps"], cpu)


def summarise(runs: dict, seeds: list[int], ablate: list[str], *, steps: int) -> dict:
    """The pooled comparisons (recipe vs theirs; each ablated option vs `before` and vs theirs)."""
    import numpy as np

    from orchestrator.acceptance.bootstrap import POINTS, replicate_wers
    from orchestrator.acceptance.groups import pool_seeds
    from orchestrator.config.criteria import CriteriaConf

    conf = CriteriaConf()
    systems = [k for k in runs if k != "base"]
    rows, index = [], {}
    files = runs["base"]["files"]
    for name in systems:
        for seed in runs[name]:
            ev = runs[name][seed]["eval"]
            if ev["files"] != files or ev["words"] != runs["base"]["words"]:
                raise SystemExit(f"error: {name} seed {seed} did not score the same utterances")
            index[name, seed] = len(rows)
            rows.append(ev["errors"])
    index["base"] = len(rows)
    rows.append(runs["base"]["errors"])
    reps = replicate_wers(np.asarray(rows), np.asarray(runs["base"]["words"]), replicates=conf.bootstrap_replicates,
                          seed=conf.bootstrap_seed)
    tail = (1 - conf.confidence) / 2

    def pooled(a: str, b: str, seeds: list[int]) -> Pooled:
        hats, devs, per_seed = [], [], []
        for seed in seeds:
            ia, ib = index[a, seed], index[b, seed]
            hat = POINTS * float(reps.observed[ia] - reps.observed[ib])
            boot = POINTS * (reps.boot[:, ia] - reps.boot[:, ib])
            lo, hi = np.quantile(boot, [tail, 1 - tail])
            hats.append(hat), devs.append(boot - hat), per_seed.append((hat, float(lo), float(hi)))
        mean, low, high = pool_seeds(hats, devs, devs, confidence=conf.confidence, seed=conf.bootstrap_seed)
        return Pooled(mean, low, high, tuple(per_seed))

    def wer_theirs(seeds: list[int]) -> list[float]:
        return [100 * runs["theirs"][seed]["eval"]["wer"] for seed in seeds]

    cpu = all(run["threads"] == 1 for name in systems for run in runs[name].values())

    def ratio(name: str, seeds: list[int]) -> tuple[float, list[float]]:
        ours = [t for seed in seeds for t in _step_times(runs[name][seed], cpu)]
        theirs = [t for seed in seeds for t in _step_times(runs["theirs"][seed], cpu)]
        per_seed = [statistics.mean(_step_times(runs[name][s], cpu)) / statistics.mean(_step_times(runs["theirs"][s], cpu))
                    for s in seeds]
        return statistics.mean(ours) / statistics.mean(theirs), per_seed

    def wer(name: str, seeds: list[int]) -> list[float]:
        return [100 * runs[name][seed]["eval"]["wer"] for seed in seeds]

    def row(v: str, seeds: list[int]) -> dict:
        return {"wer": wer(v, seeds), "vs_theirs": pooled(v, "theirs", seeds), "ratio": ratio(v, seeds),
                "vs_before": pooled(v, "before", seeds) if v != "before" and all(s in runs.get("before", {})
                                                                                  for s in seeds) else None,
                "eval_loss": [runs[v][s]["eval"]["eval_loss"] for s in seeds],
                "step_s": statistics.mean(t for s in seeds for t in _step_times(runs[v][s], cpu)),
                "trainable": runs[v][seeds[0]].get("trainable", "?"), "seeds": seeds}

    table = {"recipe": row("recipe", seeds)}
    ablation_seeds = [s for s in seeds if all(s in runs[v] for v in systems)]
    ablation = {v: row(v, ablation_seeds) for v in ["before", *ablate, "recipe"]} if ablate else {}
    theirs = runs["theirs"]
    return {"seeds": seeds, "steps": steps, "cpu": cpu, "ablate": ablate, "table": table, "ablation": ablation,
            "ablation_seeds": ablation_seeds,
            "theirs": {"wer": wer("theirs", seeds), "eval_loss": [theirs[s]["eval"]["eval_loss"] for s in seeds],
                       "step_s": statistics.mean(t for s in seeds for t in _step_times(theirs[s], cpu)),
                       "kept": [theirs[s]["summary"].get("best_step") for s in seeds],
                       "trainable": theirs[seeds[0]]["trainable"]},
            "base_wer": 100 * runs["base"]["wer"], "n_eval": len(files),
            "per_seed_s": {name: [statistics.mean(_step_times(runs[name][seed], cpu)) for seed in seeds]
                           for name in ("recipe", "theirs")},
            "theirs_ablation_wer": statistics.mean(wer("theirs", ablation_seeds)) if ablate else None}


def render(s: dict, setup, seeds: list[int]) -> str:
    """The per-seed lines, the pooled line and (with --ablate) the ablation table, in Markdown."""
    kind = "CPU" if s["cpu"] else "wall"
    main, theirs = s["table"]["recipe"], s["theirs"]
    lines = [f"Ours: `+exp=upstream_lora_recipe` ({main['trainable']} trainable); theirs: moonshine-voice[lora] "
             f"({theirs['trainable']} trainable); {s['steps']} steps, seeds {', '.join(map(str, seeds))}; domain WER "
             f"on {s['n_eval']} utterances ({' + '.join(setup.eval_sets)}); base model {s['base_wer']:.2f}%.", "",
             f"| seed | WER ours | WER theirs | ours - theirs, 95% CI | eval loss ours / theirs | {kind} s/step ours / "
             "theirs | step ratio | theirs kept step |", "|---|---|---|---|---|---|---|---|"]
    for i, seed in enumerate(seeds):
        d, lo, hi = main["vs_theirs"].per_seed[i]
        lines.append(f"| {seed} | {main['wer'][i]:.2f}% | {theirs['wer'][i]:.2f}% | {d:+.2f} [{lo:+.2f}, {hi:+.2f}] | "
                     f"{main['eval_loss'][i]:.4f} / {theirs['eval_loss'][i]:.4f} | {s['per_seed_s']['recipe'][i]:.4f} / "
                     f"{s['per_seed_s']['theirs'][i]:.4f} | {main['ratio'][1][i]:.3f} | "
                     f"{theirs['kept'][i]} |")
    p, (ratio, _) = main["vs_theirs"], main["ratio"]
    wer_ok, ratio_ok = p.high <= TARGET_WER, ratio <= TARGET_RATIO
    lines.append(f"| pooled | {statistics.mean(main['wer']):.2f}% | {statistics.mean(theirs['wer']):.2f}% | "
                 f"**{p.text()}** | | {main['step_s']:.4f} / {theirs['step_s']:.4f} | **{ratio:.3f}** | |")
    lines += ["", f"Pooled over {len(seeds)} seeds: WER(ours) - WER(theirs) = {p.mean:+.2f} points, 95% CI "
              f"[{p.low:+.2f}, {p.high:+.2f}] (two-level bootstrap: seeds, then the shared utterance resample); "
              f"target: upper end <= +{TARGET_WER}: {'PASS' if wer_ok else 'MISS'}. Step ratio (ours / theirs, mean "
              f"{kind} s per step) {ratio:.3f}, target <= {TARGET_RATIO:.3f}: {'PASS' if ratio_ok else 'MISS'}."]
    if s["ablate"]:
        seeds_a = ", ".join(map(str, s["ablation_seeds"]))
        lines += ["", f"Ablation: each option alone on `before`, pooled over seeds {seeds_a} (same bootstrap):", "",
                  "| variant | what | WER, mean over seeds | effect vs `before`, 95% CI | vs theirs, 95% CI | "
                  "step ratio |", "|---|---|---|---|---|---|"]
        for name in ["before", *s["ablate"], "recipe"]:
            row = s["ablation"][name]
            effect = "—" if row["vs_before"] is None else row["vs_before"].text()
            lines.append(f"| {name} | {WHAT[name]} | {statistics.mean(row['wer']):.2f}% | {effect} | "
                         f"{row['vs_theirs'].text()} | {row['ratio'][0]:.3f} |")
        lines.append(f"| theirs | moonshine-voice[lora] | {s['theirs_ablation_wer']:.2f}% | | | 1 |")
    return "\n".join(lines)


def results(s: dict) -> list[Result]:
    main, (ratio, _) = s["table"]["recipe"], s["table"]["recipe"]["ratio"]
    p = main["vs_theirs"]
    n = len(s["seeds"])
    return [Result(f"train step, {s['steps']} steps: ours / moonshine-voice lora ({n} seeds)", main["step_s"],
                   s["theirs"]["step_s"], ratio, f"<= {TARGET_RATIO:.3f}"),
            Result(f"domain WER, ours - theirs, pooled over {n} seeds (upper end of the 95% CI)", p.mean, None, p.high,
                   f"<= {TARGET_WER}", unit="points", note=f"95% CI [{p.low:+.2f}, {p.high:+.2f}]")]


def write_section(path: Path, heading: str, s: dict, setup, seeds: list[int], info: dict, started: datetime,
                  minutes: float, note: str | None, text: str) -> None:
    """bench/RESULTS.md: this benchmark's own section, replacing an earlier one."""
    main = s["table"]["recipe"]
    ours_cmd = " ".join(setup.ours_args("recipe", seeds[0], Path("OUT")))
    theirs_cmd = " ".join(setup.theirs_args(seeds[0], Path("OUT")))
    ablate = (f" --ablate {','.join(s['ablate'])} --ablate-seeds {len(s['ablation_seeds'])}"
              if s["ablate"] else "")
    flags = (f" --domain {setup.domain}" if setup.domain != "atc" else "") + (
        f" --steps {setup.steps}" if setup.steps != 150 else "")
    section = [
        heading, "",
        f"Written by `.venv/bin/python -m bench.upstream --seeds {len(seeds)}{flags}{ablate}` (see its docstring): Moonshine's "
        "own trainer in its own venv and ours through the CLI, one after the other, on the same base model, training "
        "utterances, targets, rank and scale, LR and schedule (warm-up, then constant), batch size, steps and seeds, "
        "no replay, no early stopping; both models scored by `orchestrator eval`'s code path on the same utterances.",
        "", f"- Date: {started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} min in all (cached runs reused)",
        *[f"- {k[0].upper() + k[1:]}: {v}" for k, v in info.items()],
        f"- Ours (seed {seeds[0]}): `python -m orchestrator {ours_cmd}`",
        f"- Theirs (seed {seeds[0]}): `python -m moonshine_voice.lora {theirs_cmd}`",
        f"- Trainable parameters: ours {main['trainable']}, theirs {s['theirs']['trainable']}",
        *([f"- Note: {note}"] if note else []), "", text, ""]
    body = path.read_text() if path.exists() else "# Benchmark results\n"
    if heading in body:  # replace our earlier section (up to the next heading of the same level)
        head, rest = body.split(heading, 1)
        nxt = rest.find("\n## ")
        body = head.rstrip("\n") + ("" if nxt < 0 else "\n\n" + rest[nxt + 1:].rstrip("\n"))
    path.write_text(body.rstrip("\n") + "\n\n" + "\n".join(section))
