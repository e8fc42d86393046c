"""Zhang et al.'s steps-to-target protocol, which zhang_steps_to_target, zhang_data_size and zhang_model_size
run at different settings: reference runs that fix each target loss, runs that train towards it, S(B) per
seed, and the critical batch size B* with its bootstrap.

The protocol (Zhang et al. Sec. 3; spec 1.2-1.4), scaled down:
1. Reference: each model at the reference batch size B0 over the LR grid (seed 0), AdamW with linear
   warmup then a constant LR, evaluated on an exponential weight average (EWA) at log-spaced steps. The
   target at multiple m is the best of these runs' EWA losses after m x the model's reference tokens.
2. Every batch size over the LR grid (seed 0) runs until it reaches the deepest target, or for at most
   `budget_multiple` x the largest reference budget (then it is reported as not reaching it).
3. The LR with the fewest steps to each target (seed 0) is re-run with the other seeds.
S(B) for a seed is the interpolated step at which its EWA loss first reaches the target. The LR scales as
B^lr_scaling across batch sizes; the EWA decay and beta2 are held fixed in tokens (their half-lives), the
per-token pattern of Zhang et al.'s tuned table (the `zhang_ewa` topic tests that pattern).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from replication import plots
from replication.fit import critical_batch_size, power_law, steps_to_target
from replication.sizes import count_parameters
from replication.experiments import stored
from replication.spec import ConfigError, RunSpec
from replication.store import Store
from replication.verdicts import bootstrap, cell_losses

_KEYS = ("models", "batch_sizes", "reference_batch_size", "base_lr", "lr_scaling", "lr_multipliers", "target_multiples",
         "budget_multiple", "warmup_tokens", "ewa_half_life_tokens", "seeds", "noise_scale_batches")


def scaled_lr(base: float, batch_size: int, reference_batch_size: int, scaling: float, multiplier: float = 1.0) -> float:
    """The LR rule of every Zhang topic: base x (B / B0)^scaling x multiplier, to 6 digits (stable run names)."""
    return float(f"{base * (batch_size / reference_batch_size) ** scaling * multiplier:.6g}")


def ewa_decay(batch_size: int, seq_len: int, half_life_tokens: float) -> float:
    """The per-step EWA decay whose memory halves every `half_life_tokens`: 0.5^(tokens per step / half-life)."""
    return float(f"{0.5 ** (batch_size * seq_len / half_life_tokens):.6g}")


@dataclass(frozen=True)
class Design:
    models: dict[str, dict]  # label -> {dotted model keys..., "reference_tokens": D, optional "base_lr"}
    batch_sizes: tuple[int, ...]
    reference_batch_size: int
    base_lr: float  # the LR at the reference batch size
    lr_scaling: float  # LR x (B / B0)^lr_scaling
    lr_multipliers: tuple[float, ...]
    target_multiples: tuple[float, ...]
    budget_multiple: float
    warmup_tokens: int
    ewa_half_life_tokens: float
    seeds: tuple[int, ...]
    noise_scale_batches: int | None = None

    def reference_tokens(self, model: str) -> int:
        return int(self.models[model]["reference_tokens"])

    def model_keys(self, model: str) -> dict:
        return {k: v for k, v in self.models[model].items() if k not in ("reference_tokens", "base_lr")}

    def lr(self, model: str, batch_size: int, multiplier: float) -> float:
        base = float(self.models[model].get("base_lr", self.base_lr))
        return scaled_lr(base, batch_size, self.reference_batch_size, self.lr_scaling, multiplier)


def design(exp) -> Design:
    """The experiment's `settings` as a Design; a missing or unknown key is an error that names it."""
    s = exp.checked_settings(_KEYS[:-1], optional=("noise_scale_batches",))
    where = f"experiments.{exp.name}.settings"
    for label, model in s["models"].items():
        if "reference_tokens" not in (model or {}):
            raise ConfigError(f"{where}.models.{label}: needs reference_tokens (the budget that fixes its target)")
    d = Design(models=dict(s["models"]), batch_sizes=tuple(sorted(s["batch_sizes"])), reference_batch_size=int(s["reference_batch_size"]),
               base_lr=float(s["base_lr"]), lr_scaling=float(s["lr_scaling"]), lr_multipliers=tuple(map(float, s["lr_multipliers"])),
               target_multiples=tuple(sorted(map(float, s["target_multiples"]))), budget_multiple=float(s["budget_multiple"]),
               warmup_tokens=int(s["warmup_tokens"]), ewa_half_life_tokens=float(s["ewa_half_life_tokens"]),
               seeds=tuple(s["seeds"]), noise_scale_batches=s.get("noise_scale_batches"))
    if d.reference_batch_size not in d.batch_sizes:
        raise ConfigError(f"{where}.reference_batch_size: {d.reference_batch_size} is not one of batch_sizes {list(d.batch_sizes)}")
    if d.budget_multiple < 1:
        raise ConfigError(f"{where}.budget_multiple: {d.budget_multiple} must be >= 1")
    return d


def _spec(exp, d: Design, model: str, batch_size: int, lr: float, tokens: int, seed: int, **extra) -> RunSpec:
    seq_len = exp.base.data.seq_len
    tokens = max(-(-tokens // (batch_size * seq_len)), 1) * batch_size * seq_len  # whole steps, never short of the budget
    keys = {**d.model_keys(model), "batch_size": batch_size, "optimizer.lr": lr, "tokens": tokens, "seed": seed,
            "schedule.warmup_fraction": min(d.warmup_tokens / tokens, 0.5),
            "ewa_decay": ewa_decay(batch_size, seq_len, d.ewa_half_life_tokens), **extra}
    return exp.derived(keys, f"settings.models.{model}")


def reference_specs(exp, d: Design) -> list[RunSpec]:
    """Step 1: each model at B0 over the LR grid, for the largest target multiple of its reference budget."""
    b0 = d.reference_batch_size
    noise = {"noise_scale_batches": d.noise_scale_batches} if d.noise_scale_batches else {}
    return [_spec(exp, d, m, b0, d.lr(m, b0, k), int(max(d.target_multiples) * d.reference_tokens(m)), d.seeds[0], **noise)
            for m in d.models for k in d.lr_multipliers]


def loss_at_tokens(record: dict, tokens: float) -> float:
    """A run's EWA validation loss after `tokens` tokens, interpolated in log(tokens) between evaluations."""
    t, loss = np.asarray(record["val"]["tokens"], dtype=float), np.asarray(record["val"]["loss"], dtype=float)
    keep = (t > 0) & np.isfinite(loss)
    if not keep.any() or tokens > t[keep].max() * (1 + 1e-9):
        return np.nan
    return float(np.interp(np.log(tokens), np.log(t[keep]), loss[keep]))


def targets(exp, d: Design, store: Store) -> dict[str, dict[float, float]] | None:
    """Per model, the target loss at each multiple: the best reference run's loss there (None while a
    reference run is missing). Rounded to 4 decimals, as the target names the runs that train towards it."""
    refs = reference_specs(exp, d)
    if not store.has_all(refs):
        return None
    out: dict[str, dict[float, float]] = {m: {} for m in d.models}
    for m in d.models:
        records = [store.read(s.hash) for s in refs if s.model == exp.derived(d.model_keys(m), f"settings.models.{m}").model]
        for k in d.target_multiples:
            losses = [loss_at_tokens(r, k * d.reference_tokens(m)) for r in records if r["status"] == "ok"]
            if not np.isfinite(losses).any():
                if any(r["status"] == "ok" for r in records):
                    raise RuntimeError(f"{exp.name}: the reference runs of {m} end before {k:g} x its reference_tokens")
                raise RuntimeError(f"{exp.name}: every reference run of {m} diverged; lower settings.base_lr")
            out[m][k] = round(float(np.nanmin(losses)), 4)
    return out


def cap_tokens(d: Design, model: str) -> int:
    return int(d.budget_multiple * max(d.target_multiples) * d.reference_tokens(model))


def target_specs(exp, d: Design, goal: dict[str, dict[float, float]], seed: int, lr_multipliers=None, only=None) -> list[RunSpec]:
    """Step 2 (and 3): runs towards each model's deepest target, stopping there; `only` restricts to
    (model, batch size, multiplier) cells."""
    out = []
    for m in d.models:
        for b in d.batch_sizes:
            for k in lr_multipliers or d.lr_multipliers:
                if only is None or (m, b, k) in only:
                    out.append(_spec(exp, d, m, b, d.lr(m, b, k), cap_tokens(d, m), seed, stop_below=min(goal[m].values())))
    return out


def _model_key(model: dict) -> str:
    return json.dumps(model, sort_keys=True)


def steps_frame(exp, d: Design, goal: dict[str, dict[float, float]], records: list[dict]) -> pd.DataFrame:
    """One row per (run, target): model, batch size, LR multiplier, seed, target multiple, steps to the
    target (NaN: not reached, or diverged), the evaluation steps around it, tokens, epochs, status."""
    by_model = {_model_key(exp.derived(d.model_keys(m), f"settings.models.{m}").to_dict()["model"]): m for m in d.models}
    rows = []
    for r in records:
        s = r["spec"]
        m = by_model[_model_key(s["model"])]
        k = round(s["optimizer"]["lr"] / d.lr(m, s["batch_size"], 1.0), 4)
        for mult, target in goal[m].items():
            hit = steps_to_target(r["val"]["step"], r["val"]["loss"], target) if r["status"] == "ok" else None
            rows.append({"model": m, "batch_size": s["batch_size"], "lr_multiplier": k, "lr": s["optimizer"]["lr"], "seed": s["seed"],
                         "target_multiple": mult, "target": target, "steps": hit["step"] if hit else np.nan,
                         "grid_step": hit["grid_step"] if hit else np.nan, "previous_step": (hit or {}).get("previous_step") or np.nan,
                         "trained_steps": r["steps"], "epochs": r.get("epochs"), "status": r["status"], "id": r["id"]})
    return pd.DataFrame(rows)


def best_multipliers(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Per (model, target, batch size): the LR multiplier with the fewest steps to the target at `seed`
    (ties: the smaller LR); a cell no LR brought to the target keeps NaN."""
    at = frame[frame["seed"] == seed].sort_values(["steps", "lr_multiplier"])
    best = at.groupby(["model", "target_multiple", "batch_size"], as_index=False).first()
    return best[["model", "target_multiple", "batch_size", "lr_multiplier", "steps"]]


def runs(exp, d: Design, results_root="results") -> list[RunSpec]:
    """Every run of a steps-to-target topic given what the store holds: references, then every batch size
    over the LR grid, then the other seeds at each cell's best LR (for every target)."""
    store = stored(exp, results_root)
    specs = reference_specs(exp, d)
    goal = targets(exp, d, store)
    if goal is None:
        return specs
    first = target_specs(exp, d, goal, d.seeds[0])
    specs += first
    if not store.has_all(first):
        return specs
    frame = steps_frame(exp, d, goal, [store.read(s.hash) for s in first])
    best = best_multipliers(frame, d.seeds[0]).dropna(subset=["steps"])
    cells = {(r.model, r.batch_size, r.lr_multiplier) for r in best.itertuples()}
    for seed in d.seeds[1:]:
        specs += target_specs(exp, d, goal, seed, only=cells)
    return list(dict.fromkeys(specs))


@dataclass
class Measured:
    """Everything a steps-to-target notebook reads: the targets, every (run, target) row, S(B) per seed at
    each cell's best LR, and the fitted critical batch size per (model, target multiple)."""

    goal: dict[str, dict[float, float]]
    frame: pd.DataFrame
    steps: pd.DataFrame  # model, target_multiple, batch_size, seed, steps (at the seed-0 best LR)
    fits: dict[tuple[str, float], dict]


def measure(exp, d: Design, results_root="results") -> Measured:
    store = stored(exp, results_root)
    goal = targets(exp, d, store)
    if goal is None:
        raise FileNotFoundError(f"{exp.name}: reference runs are missing from {store.root}; run the stage first")
    specs = [s for s in runs(exp, d, results_root) if s.stop_below is not None]
    records = [r for r in (store.read(s.hash) for s in specs) if r is not None]
    frame = steps_frame(exp, d, goal, records)
    best = best_multipliers(frame, d.seeds[0])
    chosen = frame.merge(best[["model", "target_multiple", "batch_size", "lr_multiplier"]],
                         on=["model", "target_multiple", "batch_size", "lr_multiplier"])
    steps = chosen[["model", "target_multiple", "batch_size", "seed", "steps", "grid_step", "previous_step", "epochs"]]
    fits = {}
    for (m, mult), group in steps.groupby(["model", "target_multiple"]):
        per_b = group.pivot_table(index="batch_size", columns="seed", values="steps", dropna=False)
        per_b = per_b.reindex(list(d.batch_sizes))
        try:
            # B0 of the 20 % rule: the batch size the targets are set at (Zhang et al.'s 256, B* = 1.2 x 256 + 0.2 b / a)
            fits[(m, mult)] = critical_batch_size(per_b.index.to_numpy(), per_b.to_numpy(), reference_batch_size=d.reference_batch_size)
        except ValueError as err:
            fits[(m, mult)] = {"error": str(err)}
    return Measured(goal, frame, steps, fits)


def non_embedding_parameters(exp, d: Design, model: str) -> int:
    spec = exp.derived(d.model_keys(model), f"settings.models.{model}")
    return count_parameters(spec.model, spec.data.vocab_size)["non_embedding"]


def fit_table(m: Measured, exp, d: Design) -> pd.DataFrame:
    """One row per (model, target multiple): parameters, tokens of the target, the fit, the rule's B0
    (`reference_batch_size`) and B* with its interval."""
    rows = []
    for model, mult in ((model, mult) for model in d.models for mult in d.target_multiples):
        f = m.fits[(model, mult)]
        row = {"model": model, "non_embedding_params": non_embedding_parameters(exp, d, model), "target_multiple": mult,
               "target_tokens": int(mult * d.reference_tokens(model)), "target_loss": m.goal[model][mult]}
        if "error" in f:
            row["note"] = f["error"]
        else:
            row.update({k: f[k] for k in ("s_min", "b_noise", "reference_batch_size", "b_star", "b_star_low", "b_star_high", "r2",
                                          "slope_small")},
                       constant_share=constant_share(f), unreached=", ".join(str(int(b)) for b in f["unreached"]) or "")
        rows.append(row)
    return pd.DataFrame(rows)


def fewest_steps(m: Measured, batch_sizes) -> int | None:
    """The fewest steps to a target among the given batch sizes' seeds (the MIN_STEPS gate reads it)."""
    s = m.steps[m.steps["batch_size"].isin(batch_sizes)]["steps"].dropna()
    return int(s.min()) if len(s) else None


def seeds_at(m: Measured, batch_sizes) -> int:
    """The fewest seeds that reached a target at any of the given batch sizes."""
    s = m.steps[m.steps["batch_size"].isin(batch_sizes)].dropna(subset=["steps"])
    counts = s.groupby(["model", "target_multiple", "batch_size"])["seed"].nunique()
    return int(counts.min()) if len(counts) else 0


def caveats(m: Measured, d: Design) -> list[str | None]:
    """What the code detects that limits the verdicts: few steps at the smallest batch sizes, targets
    reached by only some batch sizes, data repeated."""
    out = []
    small = list(d.batch_sizes[:2])
    fewest = fewest_steps(m, small)
    if fewest is not None and fewest < 250:
        out.append(f"The smallest batch sizes ({small}) reach a target in as few as {fewest} steps (< 250): the fits lean on short runs.")
    for model, mult in ((model, mult) for model in d.models for mult in d.target_multiples):
        f = m.fits[(model, mult)]
        if f.get("unreached"):
            out.append(f"{model} at {mult:g}x: batch size(s) {', '.join(str(int(b)) for b in f['unreached'])} never reached the "
                       "target within the budget (left out of the fit; drawn as triangles at their budget).")
    epochs = m.steps["epochs"].dropna()
    if len(epochs) and epochs.max() > 1:
        out.append(f"Data repeats: the longest run saw {epochs.max():.2f} epochs of the training split.")
    short = m.steps[(m.steps["batch_size"] > d.batch_sizes[1]) & (m.steps["steps"] < 250)]["batch_size"].unique()
    if len(short):
        out.append(f"Batch sizes {', '.join(str(int(b)) for b in sorted(short))} reach a target in fewer than 250 steps; "
                   "they shape the plateau of the fit but decide no verdict on their own.")
    return out


# ------------------------------------------------------------------------------ claims and figures
def small_batch_slope(m: Measured, model: str, mult: float, d: Design) -> dict:
    """The log-log slope of S(B) between the two smallest batch sizes (-1: perfect linear scaling), with
    bootstrap draws over seeds: the `interval` rule's measurement."""
    b1, b2 = d.batch_sizes[:2]
    rows = m.steps[(m.steps["model"] == model) & (m.steps["target_multiple"] == mult)]
    cells = {b: rows[rows["batch_size"] == b]["steps"].tolist() for b in (b1, b2)}
    slope = lambda means: float(np.log(means[b2] / means[b1]) / np.log(b2 / b1))
    values = {b: cell_losses(v) for b, v in cells.items()}
    if any(len(v) == 0 for v in values.values()):
        return {"untestable": f"batch size {b1} or {b2} never reached the target"}
    return {"estimate": slope({b: v.mean() for b, v in values.items()}), "draws": bootstrap(values, slope).tolist(),
            "n_seeds": min(len(v) for v in values.values()), "min_steps": int(min(v.min() for v in values.values()))}


def constant_share(fit: dict) -> float:
    """The share of B* that the rule's constant term (1 + overhead) B0 makes up: where it is large, B* says
    more about the reference batch size than about the noise scale b/a (Zhang et al.'s: 41 % at 85M, 12 % at 1.2B)."""
    return float((1 + fit["overhead"]) * fit["reference_batch_size"] / fit["b_star"])


def b_noise_draws(fit: dict) -> np.ndarray:
    """The bootstrap draws of B_noise = b/a, recovered from those of B* = (1 + o) B0 + o b/a (the same
    resampled fits; a draw with a <= 0 stays infinite)."""
    o = fit["overhead"]
    return (np.asarray(fit["b_star_draws"], dtype=float) - (1 + o) * fit["reference_batch_size"]) / o


def censored(fits: list[dict], labels: list[str]) -> dict[str, list[int]]:
    """Per fit (by label), the batch sizes no seed brought to the target: left out of the fit, so its
    plateau, and so B*, rests on the batch sizes that did."""
    return {label: [int(b) for b in f.get("unreached", [])] for label, f in zip(labels, fits)}


def exponent_measurement(x: list[float], fits: list[dict], m: Measured, d: Design, labels: list[str]) -> dict:
    """The power-law exponent of B* against `x` with draws from the per-fit bootstrap of B* (over seeds),
    and beside it the exponent of B_noise = b/a (McCandlish's noise scale, without the constant 1.2 B0
    term that flattens B* when B* is near B0) with its interval, the batch sizes each fit censors and the
    share of each B* that the constant term makes up (`labels` name the fits)."""
    bad = [f.get("error") for f in fits if "error" in f]
    if bad:
        return {"untestable": bad[0]}
    if len(x) < 3:
        return {"untestable": f"{len(x)} points (< 3) for a power law"}
    n = min(len(f["b_star_draws"]) for f in fits)
    law = power_law(x, [f["b_star"] for f in fits], y_draws=np.array([f["b_star_draws"][:n] for f in fits]).T)
    noise = power_law(x, [f["b_noise"] for f in fits], y_draws=np.array([b_noise_draws(f)[:n] for f in fits]).T)
    cut = censored(fits, labels)
    return {"estimate": law["exponent"], "draws": law["exponent_draws"], "coefficient": law["coefficient"],
            "b_noise_exponent": {"estimate": noise["exponent"], "low": noise["exponent_low"], "high": noise["exponent_high"]},
            "censored": cut, "constant_share": {label: constant_share(f) for label, f in zip(labels, fits)},
            "n_seeds": seeds_at(m, d.batch_sizes[:2]), "min_steps": fewest_steps(m, d.batch_sizes[:2]),
            "regime": plateau_regime(m, fits, cut)}


def plateau_regime(m: Measured, fits: list[dict], cut: dict[str, list[int]]) -> dict:
    """What the B* fits' regime gates read: B* = 1.2 B0 + 0.2 b/a is placed by the plateau of S(B), so
    every batch size in a fit must train for enough steps (`plateau_min_steps`, the fewest steps to the
    target of any batch size any fit uses) and reach the target (`censored_batch_sizes`, the number of
    (fit, batch size) pairs left out because no seed reached it)."""
    used = sorted({b for f in fits for b in f.get("batch_sizes", [])})
    return {"plateau_min_steps": fewest_steps(m, used), "censored_batch_sizes": sum(len(bs) for bs in cut.values())}


def exponent_words(measurement: dict, variable: str) -> str:
    """An exponent measurement in words: the B* and B_noise exponents with their intervals, the share of B*
    the constant term makes up, and which batch sizes each fit censors."""
    if "estimate" not in measurement:
        return measurement["untestable"]
    noise, shares = measurement["b_noise_exponent"], [round(100 * v) for v in measurement["constant_share"].values()]
    cut = [f"{label} B={', '.join(map(str, bs))}" for label, bs in measurement["censored"].items() if bs]
    share = f"{min(shares)}-{max(shares)} %" if min(shares) != max(shares) else f"{shares[0]} %"
    low, high = np.percentile(measurement["draws"], [2.5, 97.5])
    return (f"B* ~ {variable}^{measurement['estimate']:.2f} (95 % {low:.2f} to {high:.2f}); "
            f"B_noise = b/a ~ {variable}^{noise['estimate']:.2f} "
            f"(95 % {noise['low']:.2f} to {noise['high']:.2f}); the constant 1.2 B0 is {share} of B*; "
            f"censored (target not reached, left out of the fit): {'; '.join(cut) or 'none'}")


def plot_steps(ax, m: Measured, d: Design, series: list[tuple[str, float]], labels: list[str]) -> None:
    """log2(S / S at the smallest B) against log2 B per series (shifted a little sideways each, so none hides
    another), mean over seeds with 95 % seed intervals, in
    the workbook's markers: hollow where a batch size trains for fewer than MIN_STEPS steps, a triangle at its
    budget where a batch size never reached the target (S is at least that); the fit S = a + b/B dotted,
    B* ticked, slope -1 dashed. The step axis is set by the cells a fit reads."""
    b_min = min(d.batch_sizes)
    kinds, shown = set(), []
    for i, ((model, mult), label) in enumerate(zip(series, labels)):
        colour = plots.ordinal_colour(i, len(series))
        rows = m.steps[(m.steps["model"] == model) & (m.steps["target_multiple"] == mult)]
        reached = rows.dropna(subset=["steps"]).groupby("batch_size")["steps"]
        if b_min not in reached.groups:
            continue
        ref = reached.mean().loc[b_min]
        mean = reached.mean() / ref
        shift = plots.dodge(i, len(series))  # series side by side at each batch size, none hiding another
        ax.errorbar(mean.index * shift, mean.to_numpy(), yerr=[plots.seed_interval(v) / ref for _, v in reached], color=colour, fmt="none",
                    lw=1)
        for b, value in mean.items():
            kind = plots.cell_kind(value * ref)
            kinds.add(kind)
            plots.mark(ax, b * shift, value, colour, kind)
            shown += [value] if kind == "cell" else []
        budget = m.frame[m.frame["model"] == model].groupby("batch_size")["trained_steps"].max()
        for b in sorted(set(rows["batch_size"]) - set(mean.index)):
            kinds.add("unreached")
            plots.mark(ax, b * shift, budget.get(b, np.nan) / ref, colour, "unreached")
        ax.plot([], [], "o-", color=colour, label=label)
        f = m.fits.get((model, mult), {})
        if "b_star" in f:
            grid = np.geomspace(b_min, max(d.batch_sizes), 50)
            ax.plot(grid, (f["s_min"] + f["b"] / grid) / ref, ":", color=colour, lw=1)
            ax.axvline(f["b_star"], color=colour, lw=0.8, alpha=0.5)
    grid = np.array([b_min, max(d.batch_sizes)], dtype=float)
    ax.plot(grid, b_min / grid, "--", color=plots.PAPER_COLOUR, lw=0.8, label=f"slope -1 through B={b_min} (a reference slope; the 20 % rule's ideal runs from B0={d.reference_batch_size})")
    ax.plot([], [], "-", color="0.5", lw=0.8, alpha=0.5, label="vertical: B*; dotted: the fit S = a + b/B")
    ax.set(xscale="log", yscale="log", ylabel=f"steps / steps at B={b_min}")
    plots.batch_axis(ax, d.batch_sizes)
    plots.visible_range(ax, [*shown, *(b_min / grid)])
    plots.marker_legend(ax, sorted(kinds - {"cell"}), fontsize=7)


def plot_cbs(ax, x: list[float], fits: list[dict], measurement: dict, xlabel: str, reference=None) -> None:
    """B* with its bootstrap interval against `x`, and the fitted power law (with its exponent interval);
    `reference` = (function of x giving the paper's B* in our units, words) draws the paper's law as a line."""
    ok = [(xi, f) for xi, f in zip(x, fits) if "b_star" in f]
    if not ok:
        ax.text(0.5, 0.5, "no critical batch size could be fitted", ha="center", transform=ax.transAxes)
        return
    xs = np.array([xi for xi, _ in ok], dtype=float)
    ys = np.array([f["b_star"] for _, f in ok])
    err = np.array([[f["b_star"] - f["b_star_low"] for _, f in ok], [f["b_star_high"] - f["b_star"] for _, f in ok]])
    ax.errorbar(xs, ys, yerr=np.clip(err, 0, None), fmt="o", color="k", ms=5, capsize=3, label="B* (95 % bootstrap)")
    if "estimate" in measurement:
        grid = np.geomspace(xs.min(), xs.max(), 20)
        low, high = np.percentile(measurement["draws"], [2.5, 97.5]) if measurement.get("draws") else (np.nan, np.nan)
        ax.plot(grid, measurement["coefficient"] * grid ** measurement["estimate"], "--", color=plots.FIT_COLOUR,
                label=f"fit: exponent {measurement['estimate']:.2f} (95 % {low:.2f} to {high:.2f})")
    if reference is not None:
        law, words = reference
        grid = np.geomspace(xs.min(), xs.max(), 20)
        ax.plot(grid, law(grid), "-", color=plots.PAPER_COLOUR, lw=1, label=words)
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="critical batch size B* (sequences)")
    plots.log_ticks(ax, xs)
    ax.legend(fontsize=7, loc="best")


def caption(exp, d: Design) -> str:
    """The scale every Zhang figure states: profile, sequence length, budgets, batch sizes and seeds."""
    budgets = sorted({d.reference_tokens(m) for m in d.models})
    return (f"{exp.profile} profile: sequences of {exp.base.data.seq_len} tokens, reference budgets "
            f"{', '.join(f'{b:,}' for b in budgets)} tokens (targets at {', '.join(f'{k:g}x' for k in d.target_multiples)}), "
            f"batch sizes {min(d.batch_sizes)}-{max(d.batch_sizes)}, {len(d.seeds)} seeds at each best LR")


def mean_steps(m: Measured) -> pd.DataFrame:
    """S(B) per (model, target multiple, batch size): the mean over seeds of those that reached the target and
    how many did, with its standard error; a batch size no seed brought to the target keeps its budget (the
    most steps it trained: S is at least that) with `reached` False. `b_over_b_star` places each batch size
    against its fit's critical batch size, `b_over_b_noise` against its noise scale b/a, and `s_min` is the
    fit's minimum steps (the report's side-by-side figure reads S / S_min against B / B_noise, where the
    fitted law is 1 + 1/x for every model, the paper's and ours)."""
    rows = []
    budget = m.frame.groupby(["model", "target_multiple", "batch_size"])["trained_steps"].max()
    for (model, mult, b), g in m.steps.groupby(["model", "target_multiple", "batch_size"]):
        hit = g["steps"].dropna()
        fit = m.fits.get((model, mult), {})
        rows.append({"model": model, "target_multiple": mult, "batch_size": b,
                     "steps": float(hit.mean()) if len(hit) else float(budget.get((model, mult, b), np.nan)),
                     "steps_se": float(hit.std(ddof=1) / np.sqrt(len(hit))) if len(hit) > 1 else np.nan,
                     "seeds": int(len(hit)), "reached": bool(len(hit)), "b_over_b_star": b / fit.get("b_star", np.nan),
                     "b_over_b_noise": b / fit.get("b_noise", np.nan), "s_min": fit.get("s_min", np.nan)})
    return pd.DataFrame(rows)


def describe(exp, d: Design):
    """The design in one paragraph (what `notebook.show_spec` says for grid experiments)."""
    from IPython.display import Markdown

    models = ", ".join(f"`{m}` ({non_embedding_parameters(exp, d, m) / 1e3:.0f} k non-embedding parameters, target budget "
                       f"{d.reference_tokens(m):,} tokens)" for m in d.models)
    return Markdown(
        f"**{exp.name}** on profile `{exp.profile}`: {models}; corpus `{exp.base.data.corpus}`, sequences of {exp.base.data.seq_len} "
        f"tokens; targets at {', '.join(f'{k:g}x' for k in d.target_multiples)} the budget, set at batch size {d.reference_batch_size}; "
        f"batch sizes {list(d.batch_sizes)}; LR {d.base_lr:g} x (B / {d.reference_batch_size})^{d.lr_scaling:g} x {list(d.lr_multipliers)} "
        f"(per-model base where set); EWA half-life {d.ewa_half_life_tokens:,.0f} tokens, beta2 half-life "
        f"{exp.base.optimizer.beta2_half_life_tokens:,.0f} tokens; runs stop at the target or after {d.budget_multiple:g} x the deepest "
        f"target's budget; seeds {list(d.seeds)} at each cell's best LR.")
