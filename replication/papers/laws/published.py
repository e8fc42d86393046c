"""The published hyperparameter laws, read from `laws.yaml`: what batch size, peak LR and AdamW timescale each
law recommends for a model of N parameters trained on D tokens.

Every law here is a power law in a few of the same variables, so one small type evaluates them all once each
paper's units are turned into ours: N parameters (the count the law was fitted on: some use non-embedding
parameters), D training tokens, C = flops_per_token x D training FLOPs, B tokens per optimizer step. A paper
that counts its batch in sequences of 4096 tokens says so with `units: {B: 4096}`, and the law is evaluated
at B / 4096. A law that leaves a quantity out (Shen et al. give the LR for a batch size you choose; Power
Lines gives the batch size and the timescale but no LR) borrows it, and the recommendation says from where.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from replication.half_life import beta_from_half_life, half_life_from_beta
from replication.validation import ConfigError, did_you_mean

LAWS_FILE = Path(__file__).resolve().parent / "laws.yaml"
VARIABLES = ("N", "D", "C", "B")  # parameters, tokens, FLOPs, tokens per step
QUANTITIES = ("lr", "batch", "timescale")
EXAMPLE_KEYS = ("N", "D", "B", "flops_per_token", "lr", "batch_tokens", "tolerance", "says")
ROUNDINGS = ("power_of_two",)  # peak LR; tokens per step; the AdamW timescale B / (eta lambda D), in epochs
PROVENANCES = ("paper", "code", "second-hand")  # where the constants were read: the paper or its authors' code,
# a program that uses the law, or a citing summary (the paper's own table out of our reach)


@dataclass(frozen=True)
class PowerLaw:
    """coefficient x prod((x / units[x]) ** powers[x]) over the variables in `powers`."""

    coefficient: float
    powers: dict[str, float]
    units: dict[str, float] = field(default_factory=dict)

    def __call__(self, values: dict[str, float]) -> float:
        out = self.coefficient
        for name, power in self.powers.items():
            out *= (values[name] / self.units.get(name, 1.0)) ** power
        return out

    @property
    def needs(self) -> set[str]:
        return set(self.powers)


@dataclass(frozen=True)
class Law:
    id: str
    name: str
    source: str
    optimizer: str
    means: dict[str, str]  # what each of its variables and quantities counts, in the paper's words
    fitted: dict[str, tuple[float, float]]  # variable -> the range the constants were fitted on
    laws: dict[str, PowerLaw]  # quantity -> its law
    provenance: str = "paper"
    notes: str = ""
    examples: tuple[dict, ...] = ()  # worked settings the law should meet, checked by the tests (`check_example`)
    form_only: str = ""  # a law published without constants: its form, in words (advise shows it, fits nothing)
    reference: bool = False  # a rule of thumb: scales your tuned (batch size, LR) instead of giving an LR itself
    caveats: tuple[str, ...] = ()  # what a reader must know to use its numbers (shown with every recommendation)
    critical_batch: bool = False  # its batch size is a critical batch size (an upper bound), not the loss-optimal one
    batch_rounding: str | None = None  # "power_of_two": the law's user rounds its batch size (nanochat)

    def gives(self, quantity: str) -> bool:
        return quantity in self.laws


@dataclass(frozen=True)
class Request:
    """A model of `params` parameters trained on `tokens` tokens in sequences of `seq_len`; `batch_tokens` and
    `lr` are the user's own, used only by laws that do not give them."""

    params: float
    tokens: float
    seq_len: int = 1024
    optimizer: str = "adamw"
    flops_per_token: float | None = None  # default 6 N: the forward and backward matmuls, attention left out
    batch_tokens: float | None = None
    lr: float | None = None
    beta2_half_life: float | None = None  # default: the anchor of laws.yaml's beta2 block (7.1 M tokens)
    reference_batch_tokens: float | None = None  # your tuned setting, which the rules of thumb scale
    reference_lr: float | None = None

    def __post_init__(self):
        for key in ("params", "tokens", "seq_len", "flops_per_token", "batch_tokens", "lr", "beta2_half_life",
                    "reference_batch_tokens", "reference_lr"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{key.replace('_', '-')}: {value:g} must be a finite number > 0")
        for key in ("params", "tokens", "seq_len"):  # counts of things: at least one
            if getattr(self, key) < 1:
                raise ConfigError(f"--{key.replace('_', '-')}: {getattr(self, key):g} must be at least 1")
        for key, flag in (("batch_tokens", "--batch-size"), ("reference_batch_tokens", "--reference-batch-size")):
            if getattr(self, key) is not None and getattr(self, key) < self.seq_len:
                raise ConfigError(f"{flag}: {getattr(self, key) / self.seq_len:g} sequences: a batch holds at least one sequence")
        if (self.reference_batch_tokens is None) != (self.reference_lr is None):
            raise ConfigError("reference: give both your tuned batch size and your tuned LR, or neither")

    @property
    def compute(self) -> float:
        return (self.flops_per_token or 6 * self.params) * self.tokens

    def values(self, batch_tokens: float | None) -> dict[str, float]:
        return {"N": self.params, "D": self.tokens, "C": self.compute, "B": batch_tokens}


@dataclass(frozen=True)
class Advice:
    """One law's recommendation. `*_from` says where a quantity came from: 'law', 'yours' (the request), or
    'median' (of the laws that give it); None where nothing gave it. A weight decay is the law's own only when
    its LR is. `reason` says why a law gives nothing here."""

    law: Law
    batch_tokens: float | None
    batch_from: str | None
    lr: float | None
    lr_from: str | None
    beta2: float | None
    weight_decay: float | None
    warnings: tuple[str, ...]
    reason: str | None = None

    @property
    def weight_decay_from(self) -> str | None:
        return None if self.weight_decay is None else self.lr_from if self.batch_from == "law" else "median"

    def batch_sequences(self, seq_len: int) -> float | None:
        return None if self.batch_tokens is None else self.batch_tokens / seq_len

    def as_dict(self, seq_len: int) -> dict:
        return {"law": self.law.id, "name": self.law.name, "source": self.law.source, "provenance": self.law.provenance,
                "optimizer": self.law.optimizer, "batch_tokens": self.batch_tokens,
                "batch_sequences": self.batch_sequences(seq_len), "batch_from": self.batch_from,
                "critical_batch": self.law.critical_batch, "lr": self.lr, "lr_from": self.lr_from, "beta2": self.beta2,
                "weight_decay": self.weight_decay, "weight_decay_from": self.weight_decay_from,
                "fitted": {k: list(v) for k, v in self.law.fitted.items()}, "warnings": list(self.warnings),
                "not_evaluated": self.reason}


# ------------------------------------------------------------------------------------------------ reading


def _number(key: str, value) -> float:
    try:
        out = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return out


def _known(key: str, raw: dict, allowed) -> None:
    for name in raw:
        if name not in allowed:
            raise ConfigError(f"{key}.{name}: unknown key{did_you_mean(name, allowed)}; accepted keys: {', '.join(allowed)}")


def _power_law(key: str, raw) -> PowerLaw:
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a mapping with coefficient and powers, got {raw!r}")
    _known(key, raw, ("coefficient", "powers", "units"))
    powers = raw.get("powers") or {}
    units = raw.get("units") or {}
    for name in [*powers, *units]:
        if name not in VARIABLES:
            raise ConfigError(f"{key}: variable {name!r} is unknown{did_you_mean(name, VARIABLES)}; choose from {', '.join(VARIABLES)}")
    if "coefficient" not in raw:
        raise ConfigError(f"{key}.coefficient: missing")
    coefficient = _number(f"{key}.coefficient", raw["coefficient"])
    if coefficient <= 0:
        raise ConfigError(f"{key}.coefficient: {coefficient:g} must be > 0")
    return PowerLaw(coefficient, {k: _number(f"{key}.powers.{k}", v) for k, v in powers.items()},
                    {k: _number(f"{key}.units.{k}", v) for k, v in units.items()})


def _law(index: int, raw: dict) -> Law:
    key = f"laws[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a mapping, got {raw!r}")
    _known(key, raw, ("id", "name", "source", "provenance", "optimizer", "means", "fitted", "notes", "examples",
                      "form_only", "reference", "caveats", "critical_batch", "batch_rounding", *QUANTITIES))
    for name in ("id", "name", "source", "optimizer", "provenance"):
        if not isinstance(raw.get(name), str) or not raw[name]:
            raise ConfigError(f"{key}.{name}: missing (a non-empty string)")
    key = f"laws.{raw['id']}"
    if raw["provenance"] not in PROVENANCES:
        raise ConfigError(f"{key}.provenance: {raw['provenance']!r} is unknown; choose one of: {', '.join(PROVENANCES)}")
    laws = {q: _power_law(f"{key}.{q}", raw[q]) for q in QUANTITIES if raw.get(q) is not None}
    if bool(laws) == bool(raw.get("form_only")):
        raise ConfigError(f"{key}: give constants for at least one of {', '.join(QUANTITIES)}, or form_only (the form in "
                          "words) for a law published without them, not both")
    if raw.get("reference") and set(laws) != {"lr"}:
        raise ConfigError(f"{key}: a reference rule scales your tuned LR: it gives lr only")
    examples = []
    for i, example in enumerate(raw.get("examples") or ()):
        if not isinstance(example, dict) or not example.get("says"):
            raise ConfigError(f"{key}.examples[{i}]: expected a mapping with 'says' (where the setting is published)")
        _known(f"{key}.examples[{i}]", example, EXAMPLE_KEYS)
        examples.append({k: v if k == "says" else _number(f"{key}.examples[{i}].{k}", v) for k, v in example.items()})
    caveats = raw.get("caveats") or []
    if not isinstance(caveats, list) or not all(isinstance(c, str) and c for c in caveats):
        raise ConfigError(f"{key}.caveats: expected a list of sentences")
    rounding = raw.get("batch_rounding")
    if rounding is not None and (rounding not in ROUNDINGS or "batch" not in laws):
        raise ConfigError(f"{key}.batch_rounding: {rounding!r} needs a batch law and one of: {', '.join(ROUNDINGS)}")
    fitted = {}
    for name, span in (raw.get("fitted") or {}).items():
        if name not in VARIABLES or not isinstance(span, list) or len(span) != 2:
            raise ConfigError(f"{key}.fitted.{name}: expected a variable of {', '.join(VARIABLES)} with [low, high]")
        low, high = (_number(f"{key}.fitted.{name}", v) for v in span)
        if not 0 < low <= high:
            raise ConfigError(f"{key}.fitted.{name}: [{low:g}, {high:g}] must satisfy 0 < low <= high")
        fitted[name] = (low, high)
    return Law(raw["id"], raw["name"], raw["source"], raw["optimizer"], dict(raw.get("means") or {}), fitted, laws,
               raw["provenance"], raw.get("notes", ""), tuple(examples), raw.get("form_only", ""),
               bool(raw.get("reference", False)), tuple(caveats), bool(raw.get("critical_batch", False)), rounding)


@lru_cache(maxsize=4)
def _read(path: str) -> dict:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'beta2' and 'laws'")
    return raw


def load_laws(path: str | Path = LAWS_FILE) -> tuple[Law, ...]:
    """Every law of `path`, validated: unknown keys and variables, missing constants and empty ranges are
    ConfigErrors that name the law and the key."""
    items = _read(str(path)).get("laws")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: expected a non-empty list under 'laws'")
    laws = tuple(_law(i, item) for i, item in enumerate(items))
    ids = [law.id for law in laws]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise ConfigError(f"{path}: law id {duplicate!r} appears twice")
    return laws


def beta2_measured_up_to(path: str | Path = LAWS_FILE) -> float | None:
    """The largest batch (tokens per step) at which Marek et al. measured their beta2 rule."""
    value = (_read(str(path)).get("beta2") or {}).get("measured_up_to")
    return None if value is None else _number("beta2.measured_up_to", value)


def beta2_half_life(path: str | Path = LAWS_FILE) -> float:
    """Marek et al.'s anchor in tokens: the half-life of beta2 at its tokens per step (beta2 = 0.95 at 512 x 1024
    tokens, GPT-2 and GPT-3's AdamW, keeps its memory for 7.1 M tokens); their rule holds it at every batch size."""
    anchor = (_read(str(path)).get("beta2") or {}).get("anchor") or {}
    try:
        beta2, tokens = float(anchor["beta2"]), float(anchor["tokens_per_step"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{path}: beta2.anchor needs beta2 and tokens_per_step") from None
    if not (0 < beta2 < 1 and tokens > 0):
        raise ConfigError(f"{path}: beta2.anchor: beta2 must lie in (0, 1) and tokens_per_step be > 0")
    return half_life_from_beta(beta2, tokens)


def select(laws: tuple[Law, ...], ids: list[str] | None) -> tuple[Law, ...]:
    """The laws named by `ids` (all when None); an unknown id is a ConfigError naming the known ones."""
    if not ids:
        return laws
    known = {law.id: law for law in laws}
    for law_id in ids:
        if law_id not in known:
            raise ConfigError(f"--law: {law_id!r} is unknown{did_you_mean(law_id, known)}; choose from {', '.join(known)}")
    return tuple(known[i] for i in dict.fromkeys(ids))  # each law once, however often it is named


# --------------------------------------------------------------------------------------------- recommending


def _outside(law: Law, values: dict[str, float]) -> list[str]:
    """A warning for every variable of the law's fitted range that `values` leaves."""
    words = {"N": "parameters", "D": "tokens", "C": "FLOPs", "B": "tokens per step"}
    out = []
    for name, (low, high) in law.fitted.items():
        value = values.get(name)
        if value is not None and not low <= value <= high:
            side = "below" if value < low else "above"
            out.append(f"{words[name]} {value:.3g} {side} the fitted {low:.3g}-{high:.3g}: an extrapolation")
    return out


def extrapolates(law: Law, values: dict[str, float]) -> bool:
    """Whether `values` leave the range the law was fitted on."""
    return bool(_outside(law, values))


def _own(law: Law, quantity: str, values: dict[str, float], request: Request) -> float | None:
    """The law's own value of `quantity`, or None when it gives none or needs a value not known yet (a batch size;
    for a rule of thumb, your tuned setting)."""
    if not law.gives(quantity) or any(values.get(v) is None for v in law.laws[quantity].needs):
        return None
    if law.reference:  # your tuned LR, scaled by (B / your tuned B)^p
        if request.reference_lr is None:
            return None
        return request.reference_lr * law.laws[quantity]({**values, "B": values["B"] / request.reference_batch_tokens})
    value = law.laws[quantity](values)
    if quantity != "batch":
        return value
    value *= law.laws[quantity].units.get("B", 1.0)  # a batch law counts in its B unit
    return 2.0 ** round(math.log2(value)) if law.batch_rounding == "power_of_two" else value


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _reason(law: Law, request: Request, batch: float | None) -> str | None:
    """Why `law` gives nothing for this request, or None when it gives something."""
    if law.form_only:
        return f"published without constants: {law.form_only}"
    if law.reference and request.reference_lr is None:
        return "scales your tuned setting: give --reference-batch-size and --reference-lr"
    if batch is None:
        return "gives the LR for a batch size you choose: give --batch-size (no law here gives one to borrow)"
    return None


def advise(request: Request, laws: tuple[Law, ...] | None = None) -> list[Advice]:
    """Each law's batch size, peak LR, beta2 (the request's half-life in tokens at that batch size) and AdamW
    weight decay (from the law's timescale, where it gives one). A quantity a law does not give comes from the
    request, else from the median of the laws that give it for the requested optimizer (critical batch sizes,
    and LRs that rest on a borrowed batch size, left out); a law that gives nothing says why."""
    laws = load_laws() if laws is None else laws
    half_life = request.beta2_half_life or beta2_half_life()
    beta2_limit = beta2_measured_up_to() or math.inf
    no_batch = request.values(None)
    own_batch = {law.id: _own(law, "batch", no_batch, request) for law in laws}
    median_batch = _median([own_batch[law.id] for law in laws if own_batch[law.id] is not None and not law.critical_batch
                            and law.optimizer == request.optimizer])
    rows = []
    for law in laws:
        batch, batch_from = own_batch[law.id], "law"
        if batch is None and not law.form_only:
            batch, batch_from = (request.batch_tokens, "yours") if request.batch_tokens else (median_batch, "median")
        reason = _reason(law, request, batch)
        if reason:
            rows.append((law, None, None, None, reason))
            continue
        values = request.values(batch)
        rows.append((law, batch, batch_from, _own(law, "lr", values, request), None))
    median_lr = _median([lr for law, _, batch_from, lr, _ in rows if lr is not None and batch_from == "law"
                         and not law.reference and law.optimizer == request.optimizer])
    advice = []
    for law, batch, batch_from, lr, reason in rows:
        if reason:
            advice.append(Advice(law, None, None, None, None, None, None, (), reason))
            continue
        lr_from = "law" if lr is not None else None
        if lr is None and not law.reference:
            lr, lr_from = (request.lr, "yours") if request.lr else (median_lr, "median" if median_lr else None)
        values = request.values(batch)
        timescale = _own(law, "timescale", values, request)
        decay = batch / (lr * timescale * request.tokens) if timescale and lr else None  # tau = B / (eta lambda D)
        warnings = _outside(law, values) + list(law.caveats)
        if law.critical_batch:
            warnings.append("a critical batch size (an upper bound for an efficient batch), not the loss-optimal one: "
                            "left out of the median")
        if law.provenance == "second-hand":
            warnings.append("constants read second-hand (a citing source), not from the paper's own table")
        if request.optimizer != law.optimizer:
            warnings.append(f"fitted for {law.optimizer}, asked for {request.optimizer}: left out of the medians")
        if batch < request.seq_len:
            warnings.append(f"a batch of {batch:.3g} tokens is less than one sequence of {request.seq_len}")
        beta2 = None
        if request.optimizer != "sgd":
            if batch > beta2_limit:
                warnings.append(f"beta2 not shown: the batch is above the {beta2_limit:,.0f} tokens per step at which "
                                "Marek et al. measured the half-life rule")
            else:
                beta2 = beta_from_half_life(half_life, batch)
        advice.append(Advice(law, batch, batch_from, lr, lr_from, beta2, decay, tuple(warnings)))
    return advice


def check_example(law: Law, example: dict) -> list[str]:
    """Where `law` misses one of its `examples` by more than the tolerance written beside it (empty when it
    meets it). An example gives what it needs of N, D, B and flops_per_token (N and D default to 1e9 and 20 N,
    which a law that does not read them ignores) and the batch_tokens and / or lr it expects."""
    params = example.get("N", 1e9)
    request = Request(params=params, tokens=example.get("D", 20 * params), seq_len=1,
                      flops_per_token=example.get("flops_per_token"), batch_tokens=example.get("B"))
    got = advise(request, (law,))[0]
    misses = []
    for key, value in (("batch_tokens", got.batch_tokens), ("lr", got.lr)):
        if key in example and not (value is not None and abs(value - example[key]) <= example.get("tolerance", 0) * example[key]):
            misses.append(f"{law.id}: {key} {value} against {example[key]} ({example['says']})")
    return misses
