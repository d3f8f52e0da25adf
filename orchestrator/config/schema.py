"""Typed schemas of every config group, registered with Hydra's ConfigStore.

Values live in `conf/`; these dataclasses only fix the keys and their types, so a typo in an
override (`optim.lrr=1e-4`) fails while composing with "Key 'lrr' not in 'OptimConf'".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from orchestrator.config.criteria import CriteriaConf  # defined hydra-free there, so the report can use it


class Choice(str, Enum):
    """A closed set of lowercase words. OmegaConf refuses any other value while composing
    ("Invalid value 'ia3', expected one of [lora, dora]"); members compare equal to their word
    (`spec.adapter.kind == "dora"`) and print as it. Member names ARE the YAML values."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class AdapterKind(Choice):
    lora = "lora"
    dora = "dora"


class OnUnsupported(Choice):
    refuse = "refuse"  # a module type PEFT cannot adapt (nn.Identity, ...) is an error
    skip = "skip"  # ... is recorded and left out


class SpeakerOverlap(Choice):
    warn = "warn"  # evaluation speakers who also speak in the training manifest: counted and logged
    refuse = "refuse"  # ... an error before training


class OnSilent(Choice):
    skip = "skip"  # all-silent training audio (RMS 0) is dropped and counted
    refuse = "refuse"  # ... is an error


class Batching(Choice):
    """How the training utterances are cut into batches each epoch (data/batching.py)."""

    buckets = "buckets"  # shuffled into duration buckets, batches re-drawn every epoch: less padding
    sorted = "sorted"  # fixed batches of the length-sorted utterances, their order shuffled each epoch
    shuffled = "shuffled"  # plain shuffled batches


class Device(Choice):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(Choice):
    """How a run computes (training, every evaluation, `eval`, `transcribe`); training/precision.py."""

    fp32 = "fp32"  # float32 (TF32 matmuls on Ampere+ GPUs)
    bf16 = "bf16"  # bfloat16 autocast, float32 weights and optimizer state
    fp16 = "fp16"  # float16 autocast with a gradient scaler


@dataclass
class ModelConf:
    name: str = MISSING
    id: str = MISSING  # hub id (`UsefulSensors/moonshine-streaming-tiny`) or a local folder
    revision: Optional[str] = None
    build: Optional[str] = None  # recipe that builds `id` locally when the folder is missing
    architecture: Optional[str] = None  # config shipped in orchestrator/training/architectures/, for `plan` offline
    tokens_per_second: float = 6.5  # decoding budget: max new tokens per second of audio


@dataclass
class TargetsConf:
    """Which modules get an adapter, in the model's anatomy (see orchestrator/targets.py)."""

    name: str = "custom"
    components: List[str] = field(default_factory=list)  # frontend, encoder, adapter, decoder, head
    kinds: List[str] = field(default_factory=list)  # q_proj, self_attn, cross_attn, mlp, linear, ...
    patterns: List[str] = field(default_factory=list)  # escape hatch: full-match regexes on names
    exclude: List[str] = field(default_factory=list)  # full-match regexes removed from the result
    on_unsupported: OnUnsupported = OnUnsupported.refuse  # nn.Identity and other types PEFT cannot adapt


@dataclass
class AdapterConf:
    kind: AdapterKind = AdapterKind.lora
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    share_a: bool = False  # q/k/v of one attention block train one LoRA A (moonshine-voice's design), a B each


@dataclass
class EarlyStoppingConf:
    """End a run once its dev metric stops improving (orchestrator/training/early_stopping.py)."""

    enabled: bool = False
    metric: str = "dev_loss"  # dev_loss (domain + heldout eval loss) | select_wer (eval.select_manifest)
    patience: int = 4  # evaluations in a row without an improvement of more than min_delta
    min_delta: float = 0.0


@dataclass
class OptimConf:
    lr: float = 1e-5
    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    # What to build, as Hydra `_target_` nodes (extra keys are the callable's own arguments; Any
    # because they are free-form). Built by training/optim.py: optimizer(params, lr=, weight_decay=),
    # scheduler(optimizer, num_warmup_steps=, num_training_steps=).
    optimizer: Dict[str, Any] = field(default_factory=lambda: {"_target_": "torch.optim.AdamW"})
    scheduler: Dict[str, Any] = field(
        default_factory=lambda: {"_target_": "transformers.get_linear_schedule_with_warmup"})
    # true: optimizer step k (from 1) trains at the schedule's factor for k, so the first step is not
    # at LR 0 (warm-up reaches the full LR at step num_warmup_steps, as moonshine-voice's does) and the
    # schedule is given steps + 1 in all, so no step ends at LR 0 either; false: transformers' own
    # convention (step k at factor k - 1: step 1 at LR 0 whenever there is a warm-up)
    schedule_shift: bool = True
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 42
    cache_encoder: str = "auto"  # auto | off: a frozen encoder's states computed once per utterance (encoder_cache.py)
    cache_encoder_max_mb: float = 4096.0  # above this the cache is not built (every step runs the encoder)
    log_every: int = 10  # steps between host reads of loss and grad norm (progress, non-finite check): no per-step sync
    early_stopping: EarlyStoppingConf = field(default_factory=EarlyStoppingConf)


@dataclass
class DataConf:
    train_manifest: str = "data/train_manifest_expanded.jsonl"
    max_seconds: float = 20.0
    rms_target: float = 0.075
    sample_rate: int = 16000
    batching: Batching = Batching.buckets  # buckets | sorted (moonshine-voice's) | shuffled: see Batching
    on_silent: OnSilent = OnSilent.skip  # all-silent training audio (RMS 0): dropped and counted, or an error
    speaker_overlap: SpeakerOverlap = SpeakerOverlap.warn  # evaluation speakers who also speak in training
    replay_manifest: Optional[str] = None  # general speech mixed into every training batch
    replay_fraction: float = 0.0  # share of each training batch drawn from replay_manifest
    prefetch: int = 2  # training batches prepared ahead on a background thread (0: on the main thread)


@dataclass
class EvalConf:
    interval: int = 100
    # first trained step evaluated (then every interval, and the end); null: eval.interval. Steps
    # before it train without evaluating (checkpointed every interval all the same)
    start: Optional[int] = None
    domain_manifest: str = "data/domain_manifest.jsonl"
    heldout_manifest: str = "data/heldout_manifest.jsonl"
    batch_size: int = 16
    select_manifest: Optional[str] = None  # dev set that picks the checkpoint (WER only); verdicts stay honest
    # padded seconds of audio per evaluation batch (longest first); null: batch_size utterances on the
    # CPU, evaluate.CUDA_BATCH_SECONDS on a GPU
    batch_seconds: Optional[float] = None
    cache_encoder: str = "auto"  # auto | off: a frozen encoder's states of each evaluation batch kept for the run
    cache_encoder_max_mb: float = 2048.0  # past this, evaluation batches are encoded at every interval
    share_baseline: str = "auto"  # auto | off: a plain LoRA's step 0 is its base model's: computed once per output folder


@dataclass
class RegistryConf:
    url: str = "sqlite:///registry.db"


@dataclass
class RunConf:
    model: ModelConf = MISSING
    adapter: AdapterConf = MISSING
    targets: TargetsConf = MISSING
    optim: OptimConf = MISSING
    data: DataConf = MISSING
    eval: EvalConf = MISSING
    registry: RegistryConf = field(default_factory=RegistryConf)
    criteria: CriteriaConf = field(default_factory=CriteriaConf)  # acceptance thresholds (conf/criteria/)
    experiment: Optional[str] = None  # defaults to the chosen `exp` file's name
    output_dir: str = "outputs"
    device: Device = Device.auto
    precision: Precision = Precision.fp32  # in the run's identity: it changes what a run computes
    rerun: bool = False  # run again even if an identical configuration already finished


def register() -> None:
    """Register the schemas; group YAML files extend them through config.yaml's defaults."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConf)
