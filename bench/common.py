"""What the benchmarks share: the bench cache, speech, models, results and how they are timed.

Everything generated lives under bench/.cache/ (git-ignored) and is reused by later runs:
espeak-ng speech, the two random-weight models, the synthetic registry, audio cache entries.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("BENCH_CACHE", ROOT / "bench" / ".cache"))
CACHE.mkdir(parents=True, exist_ok=True)  # the benchmarks make their temporary folders in it
SPEECH_SEED = 7


@dataclass(frozen=True)
class Result:
    """One ratio, measured side by side: `ours` and `alternative` in `unit`, ratio = what the
    target bounds (its direction is in `target`, e.g. "<= 1.05" or ">= 5")."""

    benchmark: str
    ours: float
    alternative: float | None
    ratio: float | None
    target: str | None
    unit: str = "s"
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        op, bound = self.target.split()
        return self.ratio <= float(bound) if op == "<=" else self.ratio >= float(bound)

    def line(self) -> str:
        alt = "" if self.alternative is None else f"  vs  {self.alternative:.4g} {self.unit}"
        ratio = "" if self.ratio is None else f"  ratio {self.ratio:.3f}"
        verdict = {True: "PASS", False: "MISS", None: "(no target)"}[self.passed]
        if self.target and self.ratio is None:
            verdict = "(not measured)"
        target = f"  target {self.target}" if self.target else ""
        return f"{self.benchmark}: {self.ours:.4g} {self.unit}{alt}{ratio}{target}  {verdict}" + \
            (f"  [{self.note}]" if self.note else "")


def speech_manifest(n: int = 500) -> Path:
    """`n` utterances of espeak-ng speech, half everyday English, half ATC phraseology, four
    voices and varied speed: durations from about 1 to 6 s. Rendered once into the cache."""
    from orchestrator.data.synth import atc_sentences, general_sentences, synthesize, write_manifest

    out = CACHE / "speech"
    path = out / f"speech-{n}.jsonl"
    if path.exists():
        return path
    general, atc = general_sentences(n - n // 2, SPEECH_SEED), atc_sentences(n // 2, SPEECH_SEED)
    sentences = [s for pair in zip(general, atc) for s in pair] + general[len(atc):]
    rows = synthesize(sentences, out, prefix="bench", voice=["en-us", "en-gb", "en-gb+m3", "en-us+f2"],
                      speed=(135, 190), seed=SPEECH_SEED, jobs=os.cpu_count() or 2)
    return write_manifest(rows, path)


def sub_manifest(source: Path, n: int, name: str) -> Path:
    """The first `n` lines of `source` as another manifest beside it (relative paths still resolve)."""
    path = source.parent / f"{name}.jsonl"
    lines = source.read_text().splitlines(keepends=True)[:n]
    if not path.exists() or path.read_text() != "".join(lines):
        path.write_text("".join(lines))
    return path


def tiny_random() -> Path:
    """The project's tiny_random Moonshine v2 (orchestrator.modeling.build_tiny_random)."""
    from orchestrator.training.modeling import build_tiny_random

    path = CACHE / "models" / "tiny_random"
    return path if (path / "config.json").exists() else build_tiny_random(path)


def streaming_tiny_random() -> Path:
    """The full Moonshine streaming-tiny architecture (orchestrator/training/architectures/), random weights,
    with the project's character tokenizer (the real one needs the hub; ids stay in its vocab)."""
    import torch
    from transformers import AutoConfig, MoonshineStreamingForConditionalGeneration

    from orchestrator.training.modeling import ARCHITECTURES, char_tokenizer, streaming_processor

    path = CACHE / "models" / "streaming_tiny_random"
    if (path / "config.json").exists():
        return path
    config = AutoConfig.from_pretrained(ARCHITECTURES / "moonshine-streaming-tiny.json")
    torch.manual_seed(0)
    model = MoonshineStreamingForConditionalGeneration(config)
    model.generation_config.decoder_start_token_id = config.decoder_start_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    streaming_processor(char_tokenizer()).save_pretrained(path)
    return path


class StepClock:
    """Timestamps of every optimizer step, from torch's global optimizer step hook: the same
    instrument for every training loop compared, inside or outside our code, changing none.

    Records wall time and this process's CPU time. With one torch thread, CPU time is what a
    step costs on a machine of its own; wall time adds whatever other processes take from the
    shared cores, which on this 2-core machine is most of the noise."""

    def __init__(self, cuda: bool = False):
        self.stamps: list[tuple[float, float]] = []
        self.cuda = cuda  # synchronise first, so a step's time includes its GPU work

    def __enter__(self):
        import time

        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def stamp(*_) -> None:
            if self.cuda:
                torch.cuda.synchronize()
            self.stamps.append((time.perf_counter(), time.process_time()))

        self._handle = register_optimizer_step_post_hook(stamp)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def step_times(self, skip: int, cpu: bool = False) -> list[float]:
        """Seconds between consecutive steps (wall, or CPU), after the first `skip` steps (warm-up)."""
        k = 1 if cpu else 0
        return [b[k] - a[k] for a, b in zip(self.stamps, self.stamps[1:])][skip:]


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def machine() -> dict[str, str]:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"CPU": cpu, "cores": str(os.cpu_count()), "torch intra-op threads": str(torch.get_num_threads()),
            "GPU": gpu, "torch": torch.__version__, "transformers": _version("transformers"),
            "peft": _version("peft"), "python": platform.python_version(),
            "load average (1, 5, 15 min) at start": load}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m orchestrator ARGS` in a fresh interpreter (cold start), from the repo root."""
    import sys

    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
