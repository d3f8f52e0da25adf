"""Side by side with Moonshine's own trainer, `moonshine-voice[lora]` (`python -m moonshine_voice.lora`).

Same base model (demo/base/), same training utterances, same domain evaluation manifest, same
recipe as far as both expose it: LoRA r 8, scale 1 (alpha = r), no dropout, on the decoder's
self-attention q/k/v only (upstream's default `--sites decoder`; ours `targets.components=[decoder]
targets.kinds=[self_attn] targets.exclude=[.*o_proj]`, i.e. `targets=decoder_self_qkv`), the same LR,
batch size, steps, seed and schedule (linear warm-up over 10% of the steps, then a constant LR: upstream
`--warmup`, ours `optim.scheduler._target_=transformers.get_constant_schedule_with_warmup`, as
conf/optim/upstream.yaml), no early stopping (upstream's evaluation interval = the run, patience
1000; ours `optim.early_stopping.enabled=false`), no replay (upstream `--no-replay`; ours
`data.replay_manifest=null data.replay_fraction=0`), fp32 on the CPU with one torch thread, one
after the other.

  upstream  its own venv (default bench/.cache/upstream-venv; never our dependency), created on
            first use: `pip install -c constraints torch==2.13.0 'moonshine-voice[lora]==0.1.5'`
  ours      `python -m orchestrator +exp=demo_decoder_only ...` (the CLI, in a subprocess)

Step time: each trainer runs under a small wrapper (bench/.cache/upstream/.../stepclock.py) that
registers torch's global optimizer step hook, as StepClock does, and stamps every optimizer step
(wall and process CPU time); then it runs the trainer's module unchanged with runpy. A step is the
time between two consecutive optimizer steps, the first WARMUP excluded: model loading, audio
caching and both trainers' evaluations (before step 1 and after the last step: evaluation
intervals are set to the run's length) fall outside every measured interval. With one torch thread
the ratio uses process CPU time (what a step costs on a machine of its own); wall time is beside it.

Domain WER at equal steps: both trained models are scored by the same command, `orchestrator eval
--json` on the full domain evaluation manifest: ours is the run's `lora_adapter_last` (step N);
upstream's merged `adapted/` checkpoint is loaded with `--model` under a zero adapter (a copy of
our adapter with every lora_B zeroed: exactly the model it wraps), so audio, text normalisation and
decoding are the same code for both (run in this process, with per-utterance errors); "within
noise" is a paired bootstrap of WER(ours) - WER(theirs) over those utterances
(acceptance.bootstrap.paired_bootstrap, 10,000 replicates, 95% percentile interval): within noise
when the interval holds 0. Upstream's own `--eval` WER cannot run offline (its Whisper
normaliser comes from the hub). Upstream keeps the state of lowest dev loss among steps 0 and N
(its early-stopping rule; dev = the last --dev-utts utterances of its train manifest, which ours
does not train on either): the table says which step it kept.

    .venv/bin/python -m bench.upstream [--steps 150] [--batch-size 8] [--lr 1e-3] [--venv PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common import CACHE, ROOT, Result, machine, median

UPSTREAM = "moonshine-voice[lora]==0.1.5"
TORCH_PIN = "torch==2.13.0"  # the local CPU wheel; any looser pin pulls CUDA wheels
BASE_MODEL = ROOT / "demo" / "base"
WARMUP = 2  # first step intervals left out of the statistics
TARGET = 1 / 1.3  # ours / theirs step time
SCHEDULER = "transformers.get_constant_schedule_with_warmup"  # upstream's: warm-up, then constant
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Against moonshine-voice[lora] (`python -m bench.upstream`)"
THREADS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # no hub: everything is local

# Run in the trainer's own interpreter: stamps every optimizer step, then runs the module as `-m` would.
STEPCLOCK = '''\
import atexit, json, runpy, sys, time
import torch
torch.set_num_threads(1)
from torch.optim.optimizer import register_optimizer_step_post_hook
out, module = sys.argv[1], sys.argv[2]
stamps = []
register_optimizer_step_post_hook(lambda *_: stamps.append((time.perf_counter(), time.process_time())))
atexit.register(lambda: open(out, "w").write(json.dumps(
    {"stamps": stamps, "threads": torch.get_num_threads(), "torch": torch.__version__})))
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
'''


def log(message: str) -> None:
    print(message, flush=True)


# --- the upstream venv -------------------------------------------------------------------------

def upstream_versions(python: Path) -> dict[str, str] | None:
    """Versions in the upstream venv, or None when it is not usable (missing, or not the pin)."""
    code = ("import json; from importlib.metadata import version as v; import moonshine_voice.lora; "
            "print(json.dumps({p: v(p) for p in ('moonshine-voice', 'torch', 'transformers')}))")
    if not python.exists():
        return None
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    versions = json.loads(done.stdout.strip().splitlines()[-1])
    ok = versions["moonshine-voice"] == UPSTREAM.split("==")[1] and versions["torch"].startswith(
        TORCH_PIN.split("==")[1])
    return versions if ok else None


def ensure_venv(venv: Path) -> tuple[Path, dict[str, str]]:
    """The upstream venv's python, created and installed when missing (pinned: torch stays 2.13.0)."""
    python = venv / "bin" / "python"
    versions = upstream_versions(python)
    if versions is not None:
        return python, versions
    log(f"== creating {venv} and installing {UPSTREAM} (torch pinned to {TORCH_PIN.split('==')[1]})")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    constraints = venv / "constraints.txt"
    constraints.write_text(TORCH_PIN + "\n")
    pip_log = venv / "install.log"
    with open(pip_log, "w") as out:
        done = subprocess.run([str(python), "-m", "pip", "install", "-c", str(constraints), TORCH_PIN, UPSTREAM],
                              stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"error: pip install into {venv} failed (exit {done.returncode}); the last lines of {pip_log}:\n"
                 + "\n".join(pip_log.read_text().splitlines()[-15:]))
    versions = upstream_versions(python)
    if versions is None:
        sys.exit(f"error: {venv}: {UPSTREAM} is not importable after the install (fix: delete the folder and retry)")
    return python, versions


# --- data ----------------------------------------------------------------------------------------

def demo_manifests() -> Path:
    """The demo's manifests: manifests/demo/ when rendered, else rendered once into the bench cache."""
    for folder in (ROOT / "manifests" / "demo", CACHE / "demo-manifests"):
        if all((folder / f"{n}.jsonl").exists() for n in ("domain_train", "domain_eval", "heldout")):
            return folder
    folder = CACHE / "demo-manifests"
    # the synth module's place depends on the package layout (orchestrator/synth.py or data/synth.py)
    module = "orchestrator.data.synth" if (ROOT / "orchestrator" / "data" / "synth.py").exists() else "orchestrator.synth"
    log(f"== rendering the demo manifests into {folder} (python -m {module} --set demo, about a minute)")
    subprocess.run([sys.executable, "-m", module, "--set", "demo", "--out", str(folder)], cwd=ROOT, check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return folder


def read_rows(manifest: Path) -> list[dict]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    for row in rows:  # absolute paths, so the rewritten manifests can live anywhere
        row["audio_filepath"] = str((manifest.parent / row["audio_filepath"]).resolve())
    return rows


def write_ours(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_theirs(rows: list[dict], path: Path) -> Path:
    """Upstream's row format: `audio` (not our `audio_filepath`), `text`, `duration`."""
    path.write_text("".join(json.dumps({"audio": r["audio_filepath"], "text": r["text"],
                                        "duration": r["duration"]}) + "\n" for r in rows))
    return path


def dev_hours_for(rows: list[dict], k: int) -> float:
    """Upstream's --dev-hours that makes its dev slice exactly the last `k` rows: it takes rows off
    the tail until their length reaches the budget, so put the budget halfway into the k-th."""
    tail = [r["duration"] for r in reversed(rows)][:k]
    return (sum(tail[:-1]) + tail[-1] / 2) / 3600


# --- running and timing --------------------------------------------------------------------------

def run_timed(python: Path, module: str, args: list[str], *, cwd: Path, work: Path, name: str,
              extra_env: dict | None = None) -> dict:
    """`python -m module ARGS` under the step clock; its output goes to work/<name>.log."""
    clock = work / "stepclock.py"
    clock.write_text(STEPCLOCK)
    stamps, logfile = work / f"{name}.stamps.json", work / f"{name}.log"
    env = {**os.environ, **THREADS_ENV, **(extra_env or {})}
    started = time.perf_counter()
    with open(logfile, "w") as out:
        done = subprocess.run([str(python), str(clock), str(stamps), module, *args], cwd=cwd, env=env,
                              stdout=out, stderr=subprocess.STDOUT, timeout=3600)
    wall = time.perf_counter() - started
    text = logfile.read_text()
    if done.returncode != 0 or not stamps.exists():
        sys.exit(f"error: {name} failed (exit {done.returncode}); the last lines of {logfile}:\n"
                 + "\n".join(text.splitlines()[-15:]))
    data = json.loads(stamps.read_text())
    data.update(wall=wall, log=text, logfile=str(logfile))
    return data


def intervals(stamps: list[list[float]], cpu: bool) -> list[float]:
    k = 1 if cpu else 0
    return [b[k] - a[k] for a, b in zip(stamps, stamps[1:])][WARMUP:]


def eval_wer(adapter: Path, manifest: Path, model: Path | None = None) -> dict:
    """WER (a fraction), eval loss and per-utterance errors by `orchestrator eval`'s own code path
    (inference.load_adapter + evaluate_manifest, in this process, one torch thread): the per-utterance
    errors are what the paired bootstrap resamples; `orchestrator eval --json` prints only totals."""
    from orchestrator.training.inference import evaluate_manifest, load_adapter

    result = evaluate_manifest(load_adapter(adapter, model_id=None if model is None else str(model), device="cpu"),
                               manifest, progress=False)
    utts = sorted(result.utterances, key=lambda u: (u.audio_filepath, u.reference))
    return {"wer": result.wer, "eval_loss": result.loss, "files": [u.audio_filepath for u in utts],
            "errors": [u.errors for u in utts], "words": [u.ref_words for u in utts]}


def base_wer(zero: Path, manifest: Path) -> dict:
    """The base model's WER on `manifest` (through the zero adapter), cached by manifest text and weights."""
    import hashlib

    digest = hashlib.sha256(manifest.read_bytes())
    for name in sorted(p.name for p in BASE_MODEL.iterdir() if p.is_file()):
        digest.update(name.encode() + (BASE_MODEL / name).read_bytes())
    cached = CACHE / "upstream" / f"base-wer-v2-{digest.hexdigest()[:16]}.json"  # v2: per-utterance errors
    if cached.exists():
        return json.loads(cached.read_text())
    result = eval_wer(zero, manifest, model=BASE_MODEL)
    cached.write_text(json.dumps(result))
    return result


def compare(a: dict, b: dict, *, seed: int = 0):
    """Paired bootstrap of WER(a) - WER(b) in points over the same utterances (acceptance.bootstrap)."""
    from orchestrator.acceptance.bootstrap import paired_bootstrap

    if a["files"] != b["files"]:
        sys.exit("error: the two evaluations did not score the same utterances")
    return paired_bootstrap(b["errors"], b["words"], a["errors"], a["words"], seed=seed)


def noise_verdict(boot) -> str:
    """'within noise' when the 95% interval of ours - theirs holds 0, else which side is better."""
    if boot.ci_low <= 0 <= boot.ci_high:
        return "within noise"
    return "ours better" if boot.ci_high < 0 else "ours worse"


def zero_adapter(adapter: Path, dest: Path) -> Path:
    """A copy of `adapter` with every lora_B zeroed: PEFT then computes exactly the model it wraps, so
    `orchestrator eval --model OTHER` scores OTHER with our run's decoding settings (config.yaml)."""
    import torch
    from safetensors.torch import load_file, save_file

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(adapter, dest)
    weights = dest / "adapter_model.safetensors"
    state = load_file(weights)
    zeroed = {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in state.items()}
    if not any("lora_B" in k for k in state):
        sys.exit(f"error: {weights}: no lora_B tensors to zero")
    save_file(zeroed, weights, metadata={"format": "pt"})
    return dest


# --- the benchmark -------------------------------------------------------------------------------

def measure(*, steps: int, batch_size: int, lr: float, seed: int, dev_utts: int, eval_n: int | None,
            venv: Path) -> tuple[list[Result], dict[str, str], dict]:
    python, versions = ensure_venv(venv)
    source = demo_manifests()
    train_rows = read_rows(source / "domain_train.jsonl")
    eval_rows = read_rows(source / "domain_eval.jsonl")[:eval_n]
    work = CACHE / "upstream" / f"s{steps}-b{batch_size}-lr{lr:g}-seed{seed}"
    if work.exists():  # both trainers cache and resume: start clean so each run is a full one
        shutil.rmtree(work)
    (work / "theirs").mkdir(parents=True)
    (work / "ours").mkdir(parents=True)
    shared = train_rows[:-dev_utts]  # what both train on; upstream's dev slice is the rest
    ours_train = write_ours(shared, work / "ours_train.jsonl")
    theirs_train = write_theirs(train_rows, work / "theirs" / "train.jsonl")
    domain_eval = write_ours(eval_rows, work / "domain_eval.jsonl")
    tiny = write_ours(read_rows(source / "heldout.jsonl")[:2], work / "heldout-2.jsonl")  # in-run evals: not used
    warmup_steps = max(1, round(0.1 * steps))
    log(f"== data: {source}; both train on {len(shared)} domain_train utterances "
        f"(upstream's dev slice: the last {dev_utts}); WER on {len(eval_rows)} domain_eval utterances")

    ours_args = [
        "+exp=demo_decoder_only", "experiment=bench_upstream", "targets=decoder_self_qkv",
        "adapter=lora", "adapter.r=8", "adapter.alpha=8", "adapter.dropout=0.0",
        f"optim.lr={lr}", f"optim.steps={steps}", f"optim.batch_size={batch_size}", "optim.grad_accum=1",
        # upstream's schedule: linear warm-up over --warmup steps, then constant (no decay)
        f"optim.warmup_ratio={warmup_steps / steps:g}", f"optim.scheduler._target_={SCHEDULER}",
        "optim.early_stopping.enabled=false",
        "optim.weight_decay=0.0", "optim.grad_clip=1.0", f"optim.seed={seed}",
        f"data.train_manifest={ours_train}", "data.replay_manifest=null", "data.replay_fraction=0.0",
        f"eval.interval={steps}", f"eval.domain_manifest={tiny}", f"eval.heldout_manifest={tiny}",
        f"output_dir={work / 'ours'}", f"registry.url=sqlite:///{work / 'ours' / 'registry.db'}",
        "device=cpu", "rerun=true"]
    theirs_args = [
        "--train-manifest", str(theirs_train), "--model", str(BASE_MODEL), "--no-replay",
        "--dev-hours", f"{dev_hours_for(train_rows, dev_utts):.8f}", "--rank", "8", "--alpha", "8",
        "--lr", f"{lr}", "--batch-size", str(batch_size), "--max-steps", str(steps), "--eval-every", str(steps),
        "--patience", "1000", "--warmup", str(warmup_steps), "--seed", str(seed), "--device", "cpu",
        "--output-dir", str(work / "theirs" / "out"), "--work-dir", str(work / "theirs" / "cache")]

    log(f"== ours: python -m orchestrator {' '.join(ours_args)}")
    ours = run_timed(Path(sys.executable), "orchestrator", ours_args, cwd=ROOT, work=work, name="ours",
                     extra_env={"PYTHONPATH": str(ROOT)})
    log(f"   {len(ours['stamps'])} optimizer steps, {ours['wall']:.0f} s in all")
    log(f"== theirs: {python} -m moonshine_voice.lora {' '.join(theirs_args)}")
    theirs = run_timed(python, "moonshine_voice.lora", theirs_args, cwd=work / "theirs", work=work, name="theirs")
    log(f"   {len(theirs['stamps'])} optimizer steps, {theirs['wall']:.0f} s in all")
    for name, run in (("ours", ours), ("theirs", theirs)):
        if len(run["stamps"]) != steps:
            sys.exit(f"error: {name} took {len(run['stamps'])} optimizer steps, not {steps} (see {run['logfile']})")
    m = re.search(r"train (\d+) utts .*\| dev (\d+) utts", theirs["log"])
    if not m or int(m.group(1)) != len(shared):
        sys.exit(f"error: upstream did not train on the same {len(shared)} utterances: "
                 f"{m.group(0) if m else 'no split line'} (see {theirs['logfile']})")
    m = re.search(r"LoRA sites=decoder: ([\d,]+) trainable", theirs["log"])
    theirs_trainable = m.group(1) if m else "?"
    summary = json.loads((work / "theirs" / "out" / "summary.json").read_text())

    # WER at step N, both through `orchestrator eval` on the same manifest
    run_dir = next(p.parent for p in (work / "ours").glob("*/lora_adapter_last"))
    log(f"== domain WER: orchestrator eval on {domain_eval.name} ({len(eval_rows)} utterances): ours, theirs, "
        "base (cached)")
    started = time.perf_counter()
    wer_ours = eval_wer(run_dir / "lora_adapter_last", domain_eval)
    zero = zero_adapter(run_dir / "lora_adapter_last", run_dir / "zero_adapter")
    wer_theirs = eval_wer(zero, domain_eval, model=work / "theirs" / "out" / "adapted")
    wer_base = base_wer(zero, domain_eval)
    log(f"   ({time.perf_counter() - started:.0f} s)")
    boot = compare(wer_ours, wer_theirs)  # ours - theirs, points
    boot_ours_base, boot_theirs_base = compare(wer_ours, wer_base), compare(wer_theirs, wer_base)
    verdict = noise_verdict(boot)

    cpu = all(r["threads"] == 1 for r in (ours, theirs))
    kind = "CPU" if cpu else "wall"
    o, t = intervals(ours["stamps"], cpu), intervals(theirs["stamps"], cpu)
    o_wall, t_wall = intervals(ours["stamps"], False), intervals(theirs["stamps"], False)
    ratio = statistics.mean(o) / statistics.mean(t)
    wall_ratio = statistics.mean(o_wall) / statistics.mean(t_wall)
    tag = f"demo_base, dec self-attn q/k/v r 8, batch {batch_size}, lr {lr:g}, {steps} steps, no replay, cpu"
    kept = summary.get("best_step")
    kept_note = (f"upstream kept step {kept} (lowest dev loss: {summary['baseline_dev_loss']:.4f} -> "
                 f"{summary['best_dev_loss']:.4f})")
    results = [
        Result(f"train step ({tag}): ours / moonshine-voice lora", statistics.mean(o), statistics.mean(t), ratio,
               f"<= {TARGET:.3f}",
               note=f"mean {kind} s per step, {len(o)} steps each (first {WARMUP} left out; load, caching and "
                    f"evaluation outside every interval); medians {median(o):.4g} / {median(t):.4g} s; "
                    f"wall-time ratio {wall_ratio:.3f}; trainable: ours PEFT (separate A for q/k/v), theirs "
                    f"{theirs_trainable} (one A shared by q/k/v)"),
        Result(f"domain WER at step {steps} ({tag}): ours vs moonshine-voice lora", 100 * wer_ours["wer"],
               100 * wer_theirs["wer"], None, None, unit="%",
               note=f"`orchestrator eval` on {len(eval_rows)} domain_eval utterances for both (theirs: its merged "
                    f"adapted/ under a zero adapter); base model {100 * wer_base['wer']:.2f}%; {kept_note}; "
                    f"eval loss {wer_ours['eval_loss']:.4f} / {wer_theirs['eval_loss']:.4f}"),
        Result(f"domain WER at step {steps}, ours - theirs, paired bootstrap ({tag})", boot.delta, None,
               boot.ci_low, "<= 0", unit="points",
               note=f"{verdict}: 95% CI [{boot.ci_low:+.2f}, {boot.ci_high:+.2f}] points over the same "
                    f"{len(eval_rows)} utterances ({boot.replicates:,} replicates, P(ours lower) "
                    f"{boot.p_improvement:.2f}); Ratio column = the CI's lower end, target: not clearly worse; "
                    f"vs base: ours {boot_ours_base.delta:+.2f} [{boot_ours_base.ci_low:+.2f}, "
                    f"{boot_ours_base.ci_high:+.2f}], theirs {boot_theirs_base.delta:+.2f} "
                    f"[{boot_theirs_base.ci_low:+.2f}, {boot_theirs_base.ci_high:+.2f}]"),
        Result(f"whole run, {steps} steps ({tag}): ours vs moonshine-voice lora", ours["wall"], theirs["wall"],
               ours["wall"] / theirs["wall"], None,
               note="wall s of the subprocess: start, model load, audio caching, both trainers' own evaluations "
                    "(ours: step 0 and N on 2 utterances + parity; theirs: dev loss at 0 and N), saving"),
    ]
    table = {"steps": steps, "kind": kind, "ours_step": statistics.mean(o), "theirs_step": statistics.mean(t),
             "ours_step_wall": statistics.mean(o_wall), "theirs_step_wall": statistics.mean(t_wall),
             "ratio": ratio, "wall_ratio": wall_ratio, "wer_ours": wer_ours["wer"], "wer_theirs": wer_theirs["wer"],
             "wer_base": wer_base["wer"], "kept": kept, "boot": boot, "verdict": verdict,
             "boot_ours_base": boot_ours_base, "boot_theirs_base": boot_theirs_base, "ours_wall": ours["wall"], "theirs_wall": theirs["wall"],
             "n_eval": len(eval_rows), "work": str(work), "cmd_ours": ours_args, "cmd_theirs": theirs_args}
    info = {f"upstream {k}": v for k, v in versions.items()}
    return results, info, table


def print_table(t: dict) -> None:
    rows = [
        ("", "ours (orchestrator)", "theirs (moonshine-voice)", "ours / theirs"),
        (f"s/step, mean {t['kind']}", f"{t['ours_step']:.4f}", f"{t['theirs_step']:.4f}",
         f"{t['ratio']:.3f} (target <= {TARGET:.3f}: {'PASS' if t['ratio'] <= TARGET else 'MISS'})"),
        ("s/step, mean wall", f"{t['ours_step_wall']:.4f}", f"{t['theirs_step_wall']:.4f}", f"{t['wall_ratio']:.3f}"),
        (f"domain WER @ {t['steps']} ({t['n_eval']} utts)", f"{100 * t['wer_ours']:.2f}%",
         f"{100 * t['wer_theirs']:.2f}%" + ("" if t["kept"] == t["steps"] else f" (kept step {t['kept']})"),
         f"base {100 * t['wer_base']:.2f}%"),
        ("WER ours - theirs, 95% CI", f"{t['boot'].delta:+.2f} points",
         f"[{t['boot'].ci_low:+.2f}, {t['boot'].ci_high:+.2f}]", t["verdict"].upper()),
        ("whole run, wall s", f"{t['ours_wall']:.1f}", f"{t['theirs_wall']:.1f}", f"{t['ours_wall'] / t['theirs_wall']:.3f}"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def append_results(results: list[Result], info: dict[str, str], started: datetime, minutes: float,
                   note: str | None, table: dict) -> None:
    """bench/RESULTS.md, in its style: this benchmark's own section, replacing an earlier one."""
    rows = ["| Benchmark | Ours | Alternative | Ratio | Target | Result | How |", "|---|---|---|---|---|---|---|"]
    for r in results:
        verdict = {True: "pass", False: "**miss**", None: "—"}[r.passed]
        ratio = "—" if r.ratio is None else f"{r.ratio:.3f}"
        cell = lambda x: "—" if x is None else f"{x:.4g} {r.unit}"  # noqa: E731
        rows.append(f"| {r.benchmark} | {cell(r.ours)} | {cell(r.alternative)} | {ratio} | {r.target or '—'} | "
                    f"{verdict} | {r.note} |")
    section = [
        SECTION,
        "",
        "Written by `.venv/bin/python -m bench.upstream` (see its docstring): Moonshine's own trainer in its own "
        "venv and ours through the CLI, one after the other, on the same base model, training utterances, "
        "targets, rank and scale, LR and schedule (warm-up, then constant), batch size, steps and seed, no replay, no "
        "early stopping; both models scored by `orchestrator eval`'s code path, and WER(ours) - WER(theirs) by a "
        "paired bootstrap over the same utterances.",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} min in all",
        *[f"- {k[0].upper() + k[1:]}: {v}" for k, v in info.items()],
        f"- Ours: `python -m orchestrator {' '.join(table['cmd_ours'])}`",
        f"- Theirs: `python -m moonshine_voice.lora {' '.join(table['cmd_theirs'])}`",
        *([f"- Note: {note}"] if note else []),
        "",
        *rows,
        "",
    ]
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if SECTION in text:  # replace our earlier section (up to the next heading of the same level)
        head, rest = text.split(SECTION, 1)
        nxt = rest.find("\n## ")
        text = head.rstrip("\n") + ("" if nxt < 0 else "\n\n" + rest[nxt + 1:].rstrip("\n"))
    RESULTS.write_text(text.rstrip("\n") + "\n\n" + "\n".join(section))


def main(argv=None) -> list[Result]:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps of each trainer (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="(default: %(default)s, upstream's default)")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="(default: %(default)s, upstream's default for decoder LoRA and demo_decoder_only's)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dev-utts", type=int, default=16,
                        help="upstream's dev slice (early stopping): the last N training utterances, which "
                             "neither trainer trains on (default: %(default)s)")
    parser.add_argument("--eval-n", type=int, default=None,
                        help="score only the first N domain_eval utterances (default: all 500)")
    parser.add_argument("--venv", type=Path, default=CACHE / "upstream-venv",
                        help="the upstream venv, created when missing (default: bench/.cache/upstream-venv)")
    parser.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--note", help="a line for RESULTS.md, e.g. what else the machine was running")
    args = parser.parse_args(argv)
    if args.steps < 2 * WARMUP + 2:
        parser.error(f"--steps must be at least {2 * WARMUP + 2}")

    os.environ.update(THREADS_ENV)  # the in-process evaluations too: one thread, no hub
    import torch

    torch.set_num_threads(1)
    CACHE.mkdir(parents=True, exist_ok=True)
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    info = machine()
    info["torch intra-op threads"] = "1 (each trainer, in its own process)"
    results, upstream_info, table = measure(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                            seed=args.seed, dev_utts=args.dev_utts, eval_n=args.eval_n,
                                            venv=args.venv.resolve())
    info |= upstream_info
    minutes = (time.perf_counter() - clock) / 60
    info["load average (1, 5, 15 min) at end"] = machine()["load average (1, 5, 15 min) at start"]
    print("\n== summary")
    print_table(table)
    print()
    for r in results:
        print(r.line())
    print(f"({minutes:.1f} min; runs, logs and models in {table['work']})")
    if not args.no_results:
        append_results(results, info, started, minutes, args.note, table)
        print(f"wrote {RESULTS}")
    return results


if __name__ == "__main__":
    main()
