"""The run spec: typed, validated configuration of one training run, checked once, here, at the door.

Everything downstream (data, model, optimizers, training, the store) trusts a `RunSpec`; params.yaml's
experiment layer that builds them lives in `replication.params`.
Errors name the key, the bad value and what is accepted, e.g.
``optimizer.name: 'adamm' is unknown; choose one of: adafactor, adamw, muon, sgd``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from typing import Any

from replication.record import spec_hash
from replication.validation import ConfigError, check_keys, choice, coerce, from_dict, merge, positive, undot  # noqa: F401 (ConfigError: re-exported)

OPTIMIZERS = ("sgd", "adamw", "adafactor", "muon")
SCHEDULES = ("constant", "cosine", "wsd", "power")
DECAY_SHAPES = ("linear", "exponential", "1-sqrt")
DEVICES = ("auto", "cpu", "cuda", "mps")
COMPILE_MODES = ("auto", "true", "false")
PROFILES = ("smoke", "cpu", "gpu", "paper")  # paper: the papers' own configurations, priced by `replication.cost`

# Non-embedding sizes: 12 * depth * width**2 (see model.count_parameters).
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "nano": {"width": 96, "depth": 3, "head_dim": 32},  # 0.33 M
    "micro": {"width": 128, "depth": 4, "head_dim": 32},  # 0.79 M
    "mini": {"width": 192, "depth": 6, "head_dim": 64},  # 2.65 M
    "small": {"width": 256, "depth": 8, "head_dim": 64},  # 6.29 M
    "lm11m": {"width": 384, "depth": 6, "head_dim": 128},  # 10.6 M (Marek et al.'s "30M" body)
    "lm19m": {"width": 512, "depth": 6, "head_dim": 128},  # 18.9 M
    "lm30m": {"width": 640, "depth": 6, "head_dim": 128},  # 29.5 M
}


@dataclass(frozen=True)
class DataConfig:
    corpus: str = "shakespeare"  # 'shakespeare', a local file/folder path, or 'hf:<dataset name>'
    vocab_size: int = 2048
    seq_len: int = 128
    val_tokens: int = 65536  # fixed validation set, the same for every evaluation
    val_fraction: float = 0.1  # share of documents (plays) held out for validation
    hf_config: str | None = None
    hf_split: str = "train"
    text_column: str = "text"
    max_documents: int | None = None  # cap on documents read (hub datasets are streamed)
    domain: str | None = None  # train/val on the documents whose names match this glob ('!glob': all but those)

    def validate(self, key: str) -> None:
        positive(f"{key}.vocab_size", self.vocab_size)
        if self.vocab_size < 260:
            raise ConfigError(f"{key}.vocab_size: {self.vocab_size} is too small; a byte-level BPE needs >= 260")
        positive(f"{key}.seq_len", self.seq_len)
        positive(f"{key}.val_tokens", self.val_tokens)
        if self.val_tokens < self.seq_len + 1:
            raise ConfigError(f"{key}.val_tokens: {self.val_tokens} is shorter than one sequence ({self.seq_len + 1})")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"{key}.val_fraction: {self.val_fraction} must lie in (0, 1)")
        if self.max_documents is not None:
            positive(f"{key}.max_documents", self.max_documents)
        if self.domain is not None and not self.domain.lstrip("!"):
            raise ConfigError(f"{key}.domain: {self.domain!r} is an empty pattern; give a glob over document names, e.g. 'histories/*'")


@dataclass(frozen=True)
class ModelConfig:
    width: int = 128
    depth: int = 4
    head_dim: int = 32
    mup_base_width: int | None = None  # muP (Shen et al. Table 1, for Adam) relative to this width; None = standard

    def validate(self, key: str) -> None:
        for name in ("width", "depth", "head_dim"):
            positive(f"{key}.{name}", getattr(self, name))
        if self.mup_base_width is not None:
            positive(f"{key}.mup_base_width", self.mup_base_width)
        if self.width % self.head_dim:
            raise ConfigError(f"{key}.width: {self.width} is not a multiple of head_dim {self.head_dim}")
        if self.head_dim % 2:
            raise ConfigError(f"{key}.head_dim: {self.head_dim} must be even for rotary embeddings")


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 1e-3  # peak LR; for muon the LR of the hidden matrices
    beta1: float | None = 0.9  # momentum (sgd: None or 0 = vanilla); ignored when a half-life is given
    beta2: float | None = 0.95
    beta1_half_life_tokens: float | None = None  # Marek et al.: held fixed in tokens across batch sizes
    beta2_half_life_tokens: float | None = None
    eps: float = 1e-8
    weight_decay: float = 0.0
    adam_lr: float | None = None  # muon: LR of the AdamW part (embeddings); default = lr
    nesterov: bool = False  # muon momentum flavour
    beta2_decay: float = -0.8  # adafactor: torch's 1 - beta2_t = t**beta2_decay

    def validate(self, key: str) -> None:
        choice(f"{key}.name", self.name, OPTIMIZERS)
        positive(f"{key}.lr", self.lr)
        if self.adam_lr is not None:
            positive(f"{key}.adam_lr", self.adam_lr)
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ConfigError(f"{key}.{name}: {value} must lie in [0, 1)")
        for name in ("beta1_half_life_tokens", "beta2_half_life_tokens"):
            value = getattr(self, name)
            if value is not None:
                positive(f"{key}.{name}", value)
        positive(f"{key}.eps", self.eps)
        if self.weight_decay < 0:
            raise ConfigError(f"{key}.weight_decay: {self.weight_decay} must be >= 0")
        if self.beta2_decay >= 0:
            raise ConfigError(f"{key}.beta2_decay: {self.beta2_decay} must be negative")


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "cosine"
    warmup_fraction: float = 0.05  # of the token budget
    warmup_tokens: int | None = None  # a warmup fixed in tokens instead (budgets branched from one run share it)
    decay_fraction: float = 0.1  # wsd / power: final decay, share of the token budget
    decay_shape: str = "linear"  # wsd; power decays exponentially (Shen et al.)
    power_a: float = 4.6  # Shen et al. Eq. 7: lr = min(lr_max, batch_size * a * tokens**b)
    power_b: float = -0.51

    def validate(self, key: str) -> None:
        choice(f"{key}.name", self.name, SCHEDULES)
        choice(f"{key}.decay_shape", self.decay_shape, DECAY_SHAPES)
        for name in ("warmup_fraction", "decay_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"{key}.{name}: {value} must lie in [0, 1)")
        if self.warmup_fraction + self.decay_fraction >= 1 and self.name in ("wsd", "power"):
            raise ConfigError(f"{key}: warmup_fraction + decay_fraction must be < 1")
        positive(f"{key}.power_a", self.power_a)
        if self.warmup_tokens is not None and self.warmup_tokens < 0:
            raise ConfigError(f"{key}.warmup_tokens: {self.warmup_tokens} must be >= 0")


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run; its hash names the run's record."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    batch_size: int = 16  # sequences per optimizer step
    micro_batch_size: int | None = None  # gradient accumulation: None = the whole batch at once
    tokens: int = 1_000_000  # training budget in tokens
    seed: int = 0
    log_every_tokens: int = 16384  # train-loss logging interval
    eval_every_tokens: int = 131072  # validation interval (and always at the end)
    target_losses: tuple[float, ...] = ()  # record steps/tokens at which val loss first reaches each
    ewa_decay: float | None = None  # evaluate an exponential weight average of the parameters
    eval_spacing: float | None = None  # also evaluate at log-spaced steps, ceil(r^k) for r = eval_spacing (Zhang et al.)
    stop_below: float | None = None  # stop at the first evaluation whose validation loss is at or below this
    noise_scale_batches: int | None = None  # k: measure the gradient noise scale at each regular eval from k batches
    decay_branches: tuple[int, ...] = ()  # wsd / power: also record the run of each of these smaller budgets, its decay branched off this one
    divergence_factor: float = 1.5  # a logged train loss above factor x initial loss = diverged
    device: str = "auto"
    init_from: str | None = None  # fine-tuning: weights file of a pretrained run (see finetune.py), else random init
    lora_rank: int | None = None  # fine-tune LoRA adapters (peft) of this rank on the frozen model; None = full
    lora_alpha: float | None = None  # LoRA scale alpha / rank; None = the rank (scale 1)
    tasks: str | None = None  # supervised fine-tuning on a task set (replication/sft.py), named by its content hash
    compile: str = "auto"  # torch.compile the training step: auto (where it pays; see step.py) | true | false

    def validate(self, key: str = "run") -> "RunSpec":
        self.model.validate(f"{key}.model")
        self.data.validate(f"{key}.data")
        self.optimizer.validate(f"{key}.optimizer")
        self.schedule.validate(f"{key}.schedule")
        positive(f"{key}.batch_size", self.batch_size)
        if self.micro_batch_size is not None:
            positive(f"{key}.micro_batch_size", self.micro_batch_size)
            if self.batch_size % self.micro_batch_size:
                raise ConfigError(
                    f"{key}.micro_batch_size: {self.micro_batch_size} does not divide batch_size {self.batch_size}"
                )
        if self.tokens < self.tokens_per_step:
            raise ConfigError(
                f"{key}.tokens: {self.tokens} is smaller than one step "
                f"(batch_size x seq_len = {self.tokens_per_step} tokens)"
            )
        positive(f"{key}.log_every_tokens", self.log_every_tokens)
        positive(f"{key}.eval_every_tokens", self.eval_every_tokens)
        if self.ewa_decay is not None and not 0 < self.ewa_decay < 1:
            raise ConfigError(f"{key}.ewa_decay: {self.ewa_decay} must lie in (0, 1)")
        if self.eval_spacing is not None and not 1 < self.eval_spacing <= 2:
            raise ConfigError(f"{key}.eval_spacing: {self.eval_spacing} must lie in (1, 2] (the ratio of successive evaluation steps)")
        if self.stop_below is not None:
            positive(f"{key}.stop_below", self.stop_below)
        if self.noise_scale_batches is not None and self.noise_scale_batches < 2:
            raise ConfigError(f"{key}.noise_scale_batches: {self.noise_scale_batches} must be >= 2 (a small and a k x larger batch)")
        if self.decay_branches:
            self._validate_branches(f"{key}.decay_branches")
        if self.divergence_factor <= 1:
            raise ConfigError(f"{key}.divergence_factor: {self.divergence_factor} must be > 1")
        if self.seed < 0:
            raise ConfigError(f"{key}.seed: {self.seed} must be >= 0")
        choice(f"{key}.device", self.device, DEVICES)
        choice(f"{key}.compile", self.compile, COMPILE_MODES)
        if self.lora_rank is not None:
            positive(f"{key}.lora_rank", self.lora_rank)
            if self.optimizer.name == "muon":
                raise ConfigError(f"{key}.lora_rank: LoRA with optimizer.name 'muon' is not supported; use adamw, adafactor or sgd")
            if self.ewa_decay is not None:
                raise ConfigError(f"{key}.lora_rank: a weight average (ewa_decay) of LoRA runs is not supported")
            if self.noise_scale_batches is not None:
                raise ConfigError(f"{key}.lora_rank: the gradient noise scale (noise_scale_batches) of LoRA runs is not supported")
        if self.tasks is not None:
            if not re.fullmatch(r"[0-9a-f]{16}", self.tasks):
                raise ConfigError(f"{key}.tasks: {self.tasks!r} is not a task set's hash (16 hex digits; replication.sft.write_task_set returns it)")
            for name, unsupported in (("decay_branches", bool(self.decay_branches)), ("noise_scale_batches", self.noise_scale_batches is not None)):
                if unsupported:
                    raise ConfigError(f"{key}.tasks: {name} with supervised fine-tuning on a task set is not supported")
        if self.lora_alpha is not None:
            positive(f"{key}.lora_alpha", self.lora_alpha)
        if self.model.mup_base_width is not None and (self.optimizer.name != "adamw" or self.lora_rank):
            raise ConfigError(f"{key}.model.mup_base_width: muP's per-layer learning rates are defined for full adamw training only, "
                              f"not {self.optimizer.name}" + (" with LoRA" if self.lora_rank else ""))
        return self

    def _validate_branches(self, key: str) -> None:
        if self.schedule.name not in ("wsd", "power"):
            raise ConfigError(f"{key}: decay branches need a schedule with a final decay (wsd or power), not {self.schedule.name!r}")
        if self.schedule.warmup_tokens is None:
            raise ConfigError(f"{key}: set schedule.warmup_tokens, so that every branched budget warms up as its own run would")
        if list(self.decay_branches) != sorted(set(self.decay_branches)):
            raise ConfigError(f"{key}: {list(self.decay_branches)} must increase")
        for budget in self.decay_branches:
            if not self.tokens_per_step <= budget < self.tokens:
                raise ConfigError(f"{key}: {budget} must lie in [one step ({self.tokens_per_step} tokens), tokens ({self.tokens}))")
            if budget * (1 - self.schedule.decay_fraction) < self.schedule.warmup_tokens:
                raise ConfigError(f"{key}: the decay of budget {budget} would start inside the warmup ({self.schedule.warmup_tokens} tokens)")
        if self.ewa_decay is not None or self.stop_below is not None:
            raise ConfigError(f"{key}: decay branches with ewa_decay or stop_below are not supported")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.data.seq_len

    @property
    def steps(self) -> int:
        return self.tokens // self.tokens_per_step

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **dotted: Any) -> "RunSpec":
        """A copy with dotted keys changed, e.g. ``spec.replace(**{'optimizer.lr': 3e-3})``; validated."""
        return run_spec_from_dict(merge(self.to_dict(), undot(dotted)))

    @functools.cached_property
    def hash(self) -> str:
        """The run id (computed once: a frozen spec cannot change)."""
        return spec_hash(self)


# ---------------------------------------------------------------- dict -> dataclass, with type checks


def run_spec_from_dict(raw: dict[str, Any], key: str = "run") -> RunSpec:
    """Build and validate a RunSpec; ``model.preset`` expands to width/depth/head_dim."""
    return from_dict(RunSpec, _expanded(raw, key), key).validate(key)


def check_run_keys(raw: dict[str, Any], key: str) -> None:
    """Reject a key a RunSpec lacks in one layer of run settings (`raw`, written at `key`), before layers merge."""
    check_keys(RunSpec, _expanded(raw, key), key)


def _expanded(raw: dict[str, Any], key: str) -> dict[str, Any]:
    raw = dict(raw)
    if isinstance(raw.get("compile"), bool):  # YAML reads `compile: true` as a boolean
        raw["compile"] = str(raw["compile"]).lower()
    if isinstance(raw.get("model"), dict) and "preset" in raw["model"]:
        model = dict(raw["model"])
        preset = model.pop("preset")
        choice(f"{key}.model.preset", preset, MODEL_PRESETS)
        raw["model"] = {**MODEL_PRESETS[preset], **model}
    return raw


def get_dotted(d: dict[str, Any], dotted: str) -> Any:
    """d["optimizer"]["lr"] for "optimizer.lr": how grids and tables name a field of a spec dict."""
    for part in dotted.split("."):
        d = d[part]
    return d
