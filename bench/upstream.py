"""Side by side with Moonshine's own trainer, `moonshine-voice[lora]` (`python -m moonshine_voice.lora`).

Same base model (demo/base/), same training utterances, same domain evaluation utterances, same
recipe as far as both expose it: LoRA r 8, scale 1 (alpha = r), no dropout, on the decoder's
self-attention q/k/v only (upstream's default `--sites decoder`; ours `+exp=upstream_lora_recipe`,
`targets=decoder_self_qkv`), the same LR, batch size, steps, seeds and schedule (linear warm-up over
10% of the steps, then a constant LR: upstream `--warmup`, ours
`optim.scheduler._target_=transformers.get_constant_schedule_with_warmup`, as conf/optim/upstream.yaml),
no early stopping (upstream's evaluation interval = the run, patience 1000; ours
`optim.early_stopping.enabled=false`), no replay (upstream `--no-replay`; ours
`data.replay_manifest=null data.replay_fraction=0`), fp32 on the CPU with one torch thread, one run at
a time.

  upstream  its own venv (default bench/.cache/upstream-venv; never our dependency), created on
            first use: `pip install -c constraints torch==2.13.0 'moonshine-voice[lora]==0.1.5'`
  ours      `python -m orchestrator +exp=upstream_lora_recipe model=demo_base data=demo eval=demo ...`
            (the CLI, in a subprocess)

Domain: `--domain atc` (default) adapts to the demo's air-traffic-control phrases (train on
domain_train, score domain_eval + domain_dev); `--domain accent` to the first command's accent
(train on accent_train, score the 2,400 of accent_eval + accent_eval_extra), where 300 steps take
WER from 18.5% to about 10% and a seed moves it by tenths of a point instead of +-1.5 points (its
section in RESULTS.md is its own).

Seeds: `--seeds N` trains both at seeds 0 .. N-1 (default 3); every WER difference is pooled over
them by the replication group's two-level bootstrap (acceptance.groups.pool_seeds over one
utterance resample shared by every run: acceptance.bootstrap.replicate_wers), 95% interval; the
target is its upper end <= +0.3 points for WER(ours) - WER(theirs), at equal steps.

Ablation: `--ablate share_a,sorted,warmup` also trains `before` (our trainer as it was when the
comparison began: one LoRA A per projection, duration buckets, the first step at LR 0) and `before`
with each option alone (adapter.share_a=true, data.batching=sorted, optim.schedule_shift=true),
and prints each one's pooled effect against `before` and against theirs (bench/upstream_report.py).
Runs are cached in bench/.cache/upstream/ (theirs by its command, the venv's versions and the
manifests; ours by its identity hash and our code on disk), so theirs trains once per seed for every
variant, and a variant that resolves to the same run as another (e.g. `warmup` and the recipe)
shares it.

Step time: each trainer runs under a small wrapper (stepclock.py in the run's folder) that
registers torch's global optimizer step hook, as StepClock does, and stamps every optimizer step
(wall and process CPU time); then it runs the trainer's module unchanged with runpy. A step is the
time between two consecutive optimizer steps, the first WARMUP excluded: model loading, audio
caching and both trainers' evaluations (before step 1 and after the last step: evaluation
intervals are set to the run's length) fall outside every measured interval. With one torch thread
the ratio uses process CPU time (what a step costs on a machine of its own), pooled over the seeds:
the mean of ours over the mean of theirs (target <= 1 / 1.3).

Domain WER at equal steps: both trained models are scored by the same code, `orchestrator eval`'s
(inference.load_adapter + evaluate_manifest, in this process), on the demo's ATC evaluation
utterances that neither trainer sees: domain_eval + domain_dev (800; `--eval-sets`), the domain set
made larger for power. Ours is the run's `lora_adapter_last` (step N); upstream's merged `adapted/`
checkpoint is loaded with `--model` under a zero adapter (a copy of ours with every lora_B zeroed:
exactly the model it wraps), so audio, text normalisation and decoding (greedy, the run's token
budget) are the same code for both. Upstream's own `--eval` WER cannot run offline (its Whisper
normaliser comes from the hub). Upstream keeps the state of lowest dev loss among steps 0 and N
(its early-stopping rule; dev = the last --dev-utts utterances of its train manifest, which ours
does not train on either): the table says which step it kept.

    .venv/bin/python -m bench.upstream [--seeds 3] [--domain atc|accent] [--ablate share_a,sorted,warmup] [--steps 150]
        [--batch-size 8] [--lr 1e-3] [--eval-sets domain_eval,domain_dev] [--venv PATH]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bench.common import CACHE, ROOT, Result, machine

UPSTREAM = "moonshine-voice[lora]==0.1.5"
TORCH_PIN = "torch==2.13.0"  # the local CPU wheel; any looser pin pulls CUDA wheels
BASE_MODEL = ROOT / "demo" / "base"
WARMUP = 2  # first step intervals left out of the statistics
TARGET = 1 / 1.3  # ours / theirs step time
SCHEDULER = "transformers.get_constant_schedule_with_warmup"  # upstream's: warm-up, then constant
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Against moonshine-voice[lora] (`python -m bench.upstream`)"
# --domain: which of the demo's domains both trainers adapt to, {name: (training set, scored sets, heading)}.
# atc: the air-traffic-control phrases (base WER 86%, where 150 steps move WER by 3 points and the seed
# noise is as large); accent: everyday English in a voice the base never heard (base WER 18.5%, the
# first command's domain), where training moves WER by more than ten points.
DOMAINS = {
    "atc": ("domain_train", "domain_eval,domain_dev", SECTION),
    "accent": ("accent_train", "accent_eval,accent_eval_extra",
               "## Against moonshine-voice[lora] on the accent domain (`python -m bench.upstream --domain accent`)"),
}
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

def demo_manifests(*sets: str) -> Path:
    """The demo's manifests: manifests/demo/ when rendered, else rendered once into the bench cache."""
    for folder in (ROOT / "manifests" / "demo", CACHE / "demo-manifests"):
        if all((folder / f"{n}.jsonl").exists() for n in (*sets, "heldout")):
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
    shutil.copy(adapter.parent / "config.yaml", dest.parent / "config.yaml")  # the run's decoding settings
    return dest


# --- the runs ------------------------------------------------------------------------------------

# Ours, from +exp=upstream_lora_recipe on the demo's model and data; each variant sets the three
# options bench.upstream ablates (`before`: our trainer as it was when this comparison began).
OPTIONS = ("adapter.share_a", "data.batching", "optim.schedule_shift")
VARIANTS = {
    "before": ("false", "buckets", "false"),  # one A per projection, duration buckets, step 1 at LR 0
    "share_a": ("true", "buckets", "false"),  # one A shared by q/k/v (upstream's design)
    "sorted": ("false", "sorted", "false"),  # fixed length-sorted batches, shuffled per epoch (upstream's)
    "warmup": ("false", "buckets", "true"),  # step 1 at the warm-up's 1/w, as upstream (our default now)
}
RECIPE = "recipe"  # +exp=upstream_lora_recipe as it stands, with our defaults


@dataclass
class Setup:
    steps: int
    batch_size: int
    lr: float
    dev_utts: int
    eval_sets: tuple[str, ...]
    venv: Path
    domain: str = "atc"
    eval_n: int | None = None
    python: Path = Path()
    versions: dict = field(default_factory=dict)
    source: Path = Path()
    work: Path = Path()
    train_rows: list = field(default_factory=list)
    eval_rows: list = field(default_factory=list)

    @property
    def warmup_steps(self) -> int:
        return max(1, round(0.1 * self.steps))

    def prepare(self) -> Setup:
        self.python, self.versions = ensure_venv(self.venv)
        train_set = DOMAINS[self.domain][0]
        self.source = demo_manifests(train_set, *self.eval_sets)
        self.train_rows = read_rows(self.source / f"{train_set}.jsonl")
        self.eval_rows = [row for name in self.eval_sets for row in read_rows(self.source / f"{name}.jsonl")][:self.eval_n]
        prefix = "" if self.domain == "atc" else f"{self.domain}-"
        self.work = CACHE / "upstream" / f"{prefix}s{self.steps}-b{self.batch_size}-lr{self.lr:g}-dev{self.dev_utts}"
        self.work.mkdir(parents=True, exist_ok=True)
        write_ours(self.train_rows[:-self.dev_utts], self.work / "ours_train.jsonl")
        write_theirs(self.train_rows, self.work / "theirs_train.jsonl")
        write_ours(self.eval_rows, self.work / "domain_eval.jsonl")
        write_ours(read_rows(self.source / "heldout.jsonl")[:2], self.work / "heldout-2.jsonl")  # in-run evals
        return self

    @property
    def domain_eval(self) -> Path:
        return self.work / "domain_eval.jsonl"

    def ours_args(self, variant: str, seed: int, out: Path) -> list[str]:
        w, tiny = self.work, self.work / "heldout-2.jsonl"
        options = [] if variant == RECIPE else [f"{k}={v}" for k, v in zip(OPTIONS, VARIANTS[variant])]
        return [
            "+exp=upstream_lora_recipe", "model=demo_base", "data=demo", "eval=demo", "experiment=bench_upstream",
            "adapter.r=8", "adapter.alpha=8", "adapter.dropout=0.0", *options,
            f"optim.lr={self.lr}", f"optim.steps={self.steps}", f"optim.batch_size={self.batch_size}",
            "optim.grad_accum=1", f"optim.warmup_ratio={self.warmup_steps / self.steps:g}",
            f"optim.scheduler._target_={SCHEDULER}", "optim.early_stopping.enabled=false",
            "optim.weight_decay=0.0", "optim.grad_clip=1.0", f"optim.seed={seed}",
            f"data.train_manifest={w / 'ours_train.jsonl'}", "data.replay_manifest=null", "data.replay_fraction=0.0",
            f"eval.interval={self.steps}", f"eval.domain_manifest={tiny}", f"eval.heldout_manifest={tiny}",
            "eval.select_manifest=null", f"output_dir={out}", f"registry.url=sqlite:///{out / 'registry.db'}",
            "device=cpu", "rerun=true"]

    def theirs_args(self, seed: int, out: Path) -> list[str]:
        return [
            "--train-manifest", str(self.work / "theirs_train.jsonl"), "--model", str(BASE_MODEL), "--no-replay",
            "--dev-hours", f"{dev_hours_for(self.train_rows, self.dev_utts):.8f}", "--rank", "8", "--alpha", "8",
            "--lr", f"{self.lr}", "--batch-size", str(self.batch_size), "--max-steps", str(self.steps),
            "--eval-every", str(self.steps), "--patience", "1000", "--warmup", str(self.warmup_steps),
            "--seed", str(seed), "--device", "cpu", "--output-dir", str(out / "out"), "--work-dir", str(out / "cache")]


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def code_digest() -> str:
    """Our trainer's code as it is on disk (every orchestrator/ module): a cached run of ours is
    reused only by the same code; its config is in the run's identity hash (run_ours)."""
    return _digest(*[(str(p.relative_to(ROOT)), hashlib.sha256(p.read_bytes()).hexdigest())
                     for p in sorted((ROOT / "orchestrator").rglob("*.py"))])


def _cached_run(folder: Path, key: str, train, evaluate) -> dict:
    """`train()` into `folder` unless a finished run of the same key is there; then its WER
    (`evaluate()`), cached beside it. The run's step stamps and log stay in the folder."""
    done = folder / "run.json"
    if done.exists() and json.loads(done.read_text()).get("key") == key:
        record = json.loads(done.read_text())
        log(f"   cached: {folder.name}")
    else:
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        record = {"key": key, **train()}
        done.write_text(json.dumps(record))
    if "eval" not in record:
        started = time.perf_counter()
        record["eval"] = evaluate()
        log(f"   WER {100 * record['eval']['wer']:.2f}% ({time.perf_counter() - started:.0f} s)")
        done.write_text(json.dumps(record))
    return record


def run_theirs(setup: Setup, seed: int) -> dict:
    out = setup.work / f"theirs-seed{seed}"
    args = setup.theirs_args(seed, out)
    key = _digest(args, setup.versions, sha256_of(setup.work / "theirs_train.jsonl"), sha256_of(setup.domain_eval))
    log(f"== theirs, seed {seed}: {setup.python} -m moonshine_voice.lora {' '.join(args)}")

    def train() -> dict:
        run = run_timed(setup.python, "moonshine_voice.lora", args, cwd=out, work=out, name="theirs")
        if len(run["stamps"]) != setup.steps:
            sys.exit(f"error: theirs took {len(run['stamps'])} optimizer steps, not {setup.steps} ({run['logfile']})")
        n_train = len(setup.train_rows) - setup.dev_utts
        m = re.search(r"train (\d+) utts .*\| dev (\d+) utts", run["log"])
        if not m or int(m.group(1)) != n_train:
            sys.exit(f"error: upstream did not train on the same {n_train} utterances: "
                     f"{m.group(0) if m else 'no split line'} (see {run['logfile']})")
        m = re.search(r"LoRA sites=decoder: ([\d,]+) trainable", run["log"])
        summary = json.loads((out / "out" / "summary.json").read_text())
        return {"stamps": run["stamps"], "threads": run["threads"], "wall": run["wall"],
                "trainable": m.group(1) if m else "?", "summary": summary, "args": args}

    def evaluate() -> dict:
        zero = zero_adapter(next(setup.work.glob("ours-*/*/lora_adapter_last")), out / "zero_adapter")
        return eval_wer(zero, setup.domain_eval, model=out / "out" / "adapted")

    return _cached_run(out, key, train, evaluate)


def run_ours(setup: Setup, variant: str, seed: int, code: str) -> dict:
    """One run of ours, in a folder named by its identity hash (config, manifests, version; not
    where it writes): variants that resolve to the same run (e.g. `recipe` and one option) share it."""
    from orchestrator.config.spec import spec_from_overrides

    identity = spec_from_overrides(setup.ours_args(variant, seed, setup.work / "_")).config_hash
    out = setup.work / f"ours-{identity[:12]}"
    args = setup.ours_args(variant, seed, out)
    key = _digest(identity, code, sha256_of(setup.domain_eval))
    log(f"== ours ({variant}), seed {seed}: python -m orchestrator {' '.join(args)}")

    def train() -> dict:
        run = run_timed(Path(sys.executable), "orchestrator", args, cwd=ROOT, work=out, name="ours",
                        extra_env={"PYTHONPATH": str(ROOT)})
        if len(run["stamps"]) != setup.steps:
            sys.exit(f"error: ours took {len(run['stamps'])} optimizer steps, not {setup.steps} ({run['logfile']})")
        m = re.search(r"adapter: .* ([\d,]+) trainable parameters", run["log"])
        return {"stamps": run["stamps"], "threads": run["threads"], "wall": run["wall"],
                "trainable": m.group(1) if m else "?", "args": args}

    return _cached_run(out, key, train, lambda: eval_wer(_last_adapter(out), setup.domain_eval))


def _last_adapter(out: Path) -> Path:
    return next(p for p in out.glob("*/lora_adapter_last"))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def measure(setup: Setup, seeds: list[int], variants: list[str], ablation_seeds: list[int]) -> dict:
    """Every run the comparison needs, seed by seed (ours first: theirs is scored through a zero
    copy of one of our adapters), each cached; and the base model's WER. The recipe at every
    seed, the other variants at `ablation_seeds` only."""
    code = code_digest()
    runs: dict = {"theirs": {}, **{v: {} for v in variants}}
    for seed in seeds:
        for variant in variants:
            if variant == RECIPE or seed in ablation_seeds:
                runs[variant][seed] = run_ours(setup, variant, seed, code)
        runs["theirs"][seed] = run_theirs(setup, seed)
    zero = next(setup.work.glob("theirs-seed*/zero_adapter"))
    runs["base"] = base_wer(zero, setup.domain_eval)
    return runs


def main(argv=None) -> list[Result]:
    from bench import upstream_report as report

    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps of each trainer (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="(default: %(default)s, upstream's default)")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="(default: %(default)s, upstream's default for decoder LoRA and demo_decoder_only's)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1, or --seed (default: %(default)s)")
    parser.add_argument("--seed", type=int, action="append", help="this seed (repeatable) instead of --seeds")
    parser.add_argument("--ablate", default="",
                        help="comma-separated options, each run alone on `before` (our trainer as it was) "
                             f"for an ablation table: {', '.join(v for v in VARIANTS if v != 'before')}")
    parser.add_argument("--ablate-seeds", type=int, default=None,
                        help="run the ablation's variants at the first N seeds only (default: every seed)")
    parser.add_argument("--dev-utts", type=int, default=16,
                        help="upstream's dev slice (early stopping): the last N training utterances, which "
                             "neither trainer trains on (default: %(default)s)")
    parser.add_argument("--domain", choices=sorted(DOMAINS), default="atc",
                        help="atc: train on domain_train, score domain_eval + domain_dev (800); accent: train on "
                             "accent_train, score accent_eval + accent_eval_extra (2,400) (default: %(default)s)")
    parser.add_argument("--eval-sets", default=None,
                        help="the demo manifests scored for WER, concatenated (default: the domain's; neither "
                             "trainer sees them)")
    parser.add_argument("--eval-n", type=int, default=None, help="score only the first N of them (a smoke test)")
    parser.add_argument("--venv", type=Path, default=CACHE / "upstream-venv",
                        help="the upstream venv, created when missing (default: bench/.cache/upstream-venv)")
    parser.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--note", help="a line for RESULTS.md, e.g. what else the machine was running")
    args = parser.parse_args(argv)
    if args.steps < 2 * WARMUP + 2:
        parser.error(f"--steps must be at least {2 * WARMUP + 2}")
    ablate = [a for a in args.ablate.split(",") if a]
    if any(a not in VARIANTS or a == "before" for a in ablate):
        parser.error(f"--ablate takes {', '.join(v for v in VARIANTS if v != 'before')}")
    seeds = args.seed or list(range(args.seeds))

    os.environ.update(THREADS_ENV)  # the in-process evaluations too: one thread, no hub
    import torch

    torch.set_num_threads(1)
    CACHE.mkdir(parents=True, exist_ok=True)
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    info = machine()
    info["torch intra-op threads"] = "1 (each trainer, in its own process)"
    train_set, eval_sets, heading = DOMAINS[args.domain]
    setup = Setup(args.steps, args.batch_size, args.lr, args.dev_utts, tuple((args.eval_sets or eval_sets).split(",")),
                  args.venv.resolve(), args.domain, args.eval_n).prepare()
    log(f"== data: {setup.source}; both train on {len(setup.train_rows) - args.dev_utts} {train_set} utterances "
        f"(upstream's dev slice: the last {args.dev_utts}); WER on {len(setup.eval_rows)} utterances of "
        f"{' + '.join(setup.eval_sets)}; seeds {seeds}")
    variants = [RECIPE, *(["before"] if ablate else []), *ablate]
    runs = measure(setup, seeds, variants, seeds[:args.ablate_seeds])
    info |= {f"upstream {k}": v for k, v in setup.versions.items()}
    info["load average (1, 5, 15 min) at end"] = machine()["load average (1, 5, 15 min) at start"]
    summary = report.summarise(runs, seeds, ablate, steps=args.steps)
    minutes = (time.perf_counter() - clock) / 60
    text = report.render(summary, setup, seeds)
    print("\n" + text)
    print(f"({minutes:.1f} min; runs, logs and models in {setup.work})")
    if not args.no_results:
        report.write_section(RESULTS, heading, summary, setup, seeds, info, started, minutes, args.note, text)
        print(f"wrote {RESULTS}")
    return report.results(summary)


if __name__ == "__main__":
    main()
