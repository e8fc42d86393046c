"""Analyses of Marek et al. 2025 (arXiv 2507.07101) over run tables; verdicts come from the numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from replication.fit import argmin_log_parabola, loglog_slope
from replication.optim import beta_from_half_life, half_life_from_beta

OPTIMIZER_LABELS = {"sgd": "SGD (no momentum)", "adamw": "AdamW", "adafactor": "Adafactor", "muon": "Muon"}


ADAPTIVE = ("adamw", "adafactor", "muon")


def optimizer_gap_by_batch_size(best: pd.DataFrame) -> pd.DataFrame:
    """Per batch size: the spread of the best losses across the adaptive optimizers (AdamW, Adafactor,
    Muon: max - min over those that reached a loss), the best loss overall, and each optimizer's gap to it."""
    wide = best.pivot(index="batch_size", columns="optimizer.name", values="loss")
    adaptive = wide[[c for c in wide.columns if c in ADAPTIVE]]
    out = pd.DataFrame({"adaptive_spread": adaptive.max(axis=1) - adaptive.min(axis=1), "best": wide.min(axis=1)})
    for name in wide.columns:
        out[f"gap_{name}"] = wide[name] - out["best"]
    return out.reset_index()


def verdict(confirmed: bool | None, partly: bool = False) -> str:
    if confirmed is None:
        return "not tested at this scale"
    return "confirmed" if confirmed else ("partly" if partly else "not confirmed")


def optimizer_claims(best: pd.DataFrame, tolerance: float) -> list[dict]:
    """The Fig. 1a claims, each with the paper's words, our numbers and a verdict computed from them."""
    gaps = optimizer_gap_by_batch_size(best).set_index("batch_size")
    small, large = gaps.index.min(), gaps.index.max()
    claims = []

    spread_small, spread_large = gaps.loc[small, "adaptive_spread"], gaps.loc[large, "adaptive_spread"]
    claims.append({
        "claim": "Adam, Adafactor and Muon are close at batch size 1 and drift apart as the batch grows.",
        "paper": "Within ~0.03 nats of each other at B=1; 3.72-4.00 at B=256 and 3.81-4.57 at B=1024.",
        "measured": f"spread of their best losses: {spread_small:.3f} at B={small}, {spread_large:.3f} at B={large}",
        "verdict": verdict(bool(spread_small <= 0.03 + tolerance and spread_large > spread_small + tolerance),
                           partly=bool(spread_large > spread_small + tolerance or spread_small <= 0.03 + tolerance)),
    })

    adam = best[best["optimizer.name"] == "adamw"].set_index("batch_size")["loss"]
    if len(adam.dropna()) >= 2:
        best_b = adam.idxmin()
        claims.append({
            "claim": "Per token, small batches are at least as good as large ones (AdamW, tuned LR, fixed beta2 half-life).",
            "paper": "Adam best loss 3.68 at B=1, 3.72 at B=16-64, 3.74 at B=256, 3.93 at B=1024 (600M tokens).",
            "measured": f"AdamW best loss {adam.loc[small]:.3f} at B={small}, {adam.loc[large]:.3f} at B={large}; lowest at B={best_b} ({adam.min():.3f})",
            "verdict": verdict(bool(adam.loc[small] <= adam.min() + tolerance), partly=bool(adam.loc[small] < adam.loc[large])),
        })
    if "gap_sgd" in gaps:
        sgd = gaps["gap_sgd"].dropna()
        sgd_small = gaps.loc[small, "gap_sgd"]
        claims.append({
            "claim": "Vanilla SGD (no momentum, no weight decay) is competitive at batch size 1.",
            "paper": "0.13-0.16 nats behind the best optimizer at B=1 (30M model).",
            "measured": f"SGD behind the best optimizer by {sgd_small:.3f} at B={small}",
            "verdict": verdict(bool(sgd_small <= 0.16 + tolerance), partly=bool(sgd_small <= 2 * 0.16 + tolerance)),
        })
        if len(sgd) >= 2:
            claims.append({
                "claim": "SGD falls further behind as the batch size grows.",
                "paper": "~0.13 behind at B=1, ~0.4 at B=4, ~0.8 at B=16, off the chart beyond.",
                "measured": "SGD's gap to the best: " + ", ".join(f"{g:.3f} at B={b}" for b, g in sgd.items()),
                "verdict": verdict(bool(sgd.iloc[-1] > sgd.iloc[0] + tolerance and sgd.is_monotonic_increasing),
                                   partly=bool(sgd.iloc[-1] > sgd.iloc[0] + tolerance)),
            })
    return claims


def claims_markdown(claims: list[dict], caveats: list[str] | None = None) -> str:
    lines = ["| claim | paper | this replication | verdict |", "|---|---|---|---|"]
    lines += [f"| {c['claim']} | {c['paper']} | {c['measured']} | **{c['verdict']}** |" for c in claims]
    lines += [""] + [f"*Caveat:* {c}" for c in caveats or [] if c]
    return "\n".join(lines)


def claims_markdown_display(claims: list[dict], caveats: list[str] | None = None):
    from IPython.display import Markdown

    return Markdown(claims_markdown(claims, caveats))


def grid_edge_caveat(best: pd.DataFrame, by: list[str]) -> str | None:
    """A sentence naming the best cells that sit on the edge of their grid (their optimum may lie outside)."""
    if "best_on_edge" not in best or not best["best_on_edge"].any():
        return None
    edge = best[best["best_on_edge"]]
    cells = ", ".join("(" + ", ".join(f"{k.split('.')[-1]} {r[k]}" for k in by) + ")" for _, r in edge.iterrows())
    return (f"{len(edge)} of {len(best)} best cells lie on the edge of their grid, so their true optimum may be "
            f"outside it and their loss is an upper bound: {cells}.")


def combine(*tables: pd.DataFrame) -> pd.DataFrame:
    """Run tables stacked, each run once (a re-run table repeats the original seed)."""
    return pd.concat(tables, ignore_index=True).drop_duplicates(subset="id").reset_index(drop=True)


def lr_table(runs: pd.DataFrame, lr_batch_exponent: float, index: str = "optimizer.name") -> pd.DataFrame:
    """Final loss per (`index`, grid LR) x batch size, where the grid LR is the LR at batch size 1
    (each run trained at grid LR * batch_size**exponent); NaN marks a diverged run (mean over seeds)."""
    base = (runs["optimizer.lr"] / runs["batch_size"] ** lr_batch_exponent).round(10)
    return (runs.assign(**{"lr at B=1": base})
            .groupby([index, "lr at B=1", "batch_size"])["final_val_loss"].mean().unstack("batch_size"))


def few_steps_caveat(runs: pd.DataFrame, threshold: int = 100) -> str | None:
    """At a fixed token budget the largest batches take few optimizer steps; say so when it is under
    `threshold`, since then "small beats large per token" partly measures step starvation."""
    steps = runs.groupby("batch_size")["steps"].max()
    starved = steps[steps < threshold]
    if starved.empty:
        return None
    return ("at this token budget " + ", ".join(f"B={b} trains for {int(n)} optimizer steps" for b, n in starved.items())
            + f" (under {threshold}); comparisons against those batch sizes are dominated by how few steps they get, "
            "more than in the paper, where the largest batches it calls competitive take hundreds to thousands of steps.")


# ---------------------------------------------------------------- beta2: fixed value vs fixed half-life


def with_beta2(runs: pd.DataFrame, seq_len: int) -> pd.DataFrame:
    """Adds each run's beta2 as trained and its half-life in tokens, whichever of the two was held fixed,
    and a `regime` column: 'fixed beta2' or 'fixed half-life'."""
    tokens_per_step = runs["batch_size"] * seq_len
    fixed_h = runs["optimizer.beta2_half_life_tokens"].notna()
    beta2 = np.where(fixed_h, beta_from_half_life(runs["optimizer.beta2_half_life_tokens"], tokens_per_step), runs["optimizer.beta2"])
    half_life = np.where(fixed_h, runs["optimizer.beta2_half_life_tokens"],
                         [half_life_from_beta(b, t) for b, t in zip(runs["optimizer.beta2"], tokens_per_step)])
    return runs.assign(beta2=beta2, beta2_half_life=half_life,
                       regime=np.where(fixed_h, "fixed half-life", "fixed beta2"))


def beta2_regime_claims(best: pd.DataFrame, tolerance: float) -> list[dict]:
    """Fig. 10's claim from the best loss per (regime, batch size): small batches look bad with beta2
    fixed and are competitive with the half-life fixed in tokens."""
    claims = []
    wide = best.pivot(index="batch_size", columns="regime", values="loss")
    small = wide.index.min()
    gaps = {regime: wide.loc[small, regime] - wide[regime].min() for regime in wide.columns}
    left, right = gaps.get("fixed beta2", np.nan), gaps.get("fixed half-life", np.nan)
    claims.append({
        "claim": "With beta2 fixed, the smallest batch looks worse than the best batch size; with the beta2 half-life fixed in tokens it is competitive.",
        "paper": "C4/T5, 19M model: fixed beta2=0.95 puts B=16 0.19 nats behind the best B; fixed half-life puts it within ~0.02.",
        "measured": f"B={small} behind the best batch size by {left:.3f} nats with beta2 fixed, by {right:.3f} with the half-life fixed",
        "verdict": verdict(bool(left > tolerance and right <= tolerance), partly=bool(left > right + tolerance)),
    })
    return claims


def half_life_followups(exp, runs: pd.DataFrame, best: pd.DataFrame, multipliers: list[float]) -> tuple[pd.DataFrame, list]:
    """The half-life sweep around each batch size's best fixed-half-life run: that run's table row(s),
    and its spec with the half-life scaled by each multiplier (same LR, batch size and seed)."""
    by_id = {s.hash: s for s in exp.expand()}
    keys = ["batch_size", "optimizer.lr", "regime"]
    chosen = runs.merge(best.loc[best["regime"] == "fixed half-life", keys].dropna(), on=keys)
    specs = [by_id[i].replace(**{"optimizer.beta2_half_life_tokens": by_id[i].optimizer.beta2_half_life_tokens * m})
             for i in chosen["id"] for m in multipliers]
    return chosen, specs


def optimal_half_life(runs: pd.DataFrame, seq_len: int) -> tuple[pd.DataFrame, dict]:
    """Per batch size, the loss-minimising beta2 half-life (a parabola in log half-life through the best
    grid point and its neighbours) and the beta2 it means at that batch size; plus the log-log slope of
    optimal half-life against batch size with its 95% interval (0: constant in tokens, 1: constant beta2)."""
    rows = []
    for b, group in runs.groupby("batch_size"):
        cells = group.groupby("beta2_half_life")["final_val_loss"].mean()
        h = argmin_log_parabola(cells.index.to_numpy(), cells.to_numpy()) if cells.notna().any() else np.nan
        rows.append({"batch_size": b, "optimal_half_life": h, "optimal_beta2": beta_from_half_life(h, b * seq_len),
                     "best_loss": cells.min(), "on_grid_edge": bool(cells.notna().any() and cells.idxmin() in (cells.index.min(), cells.index.max()))})
    optima = pd.DataFrame(rows)
    fit = loglog_slope(optima["batch_size"], optima["optimal_half_life"]) if optima["optimal_half_life"].notna().sum() >= 3 else None
    return optima, fit


def half_life_claims(optima: pd.DataFrame, fit: dict | None) -> list[dict]:
    b2 = optima.set_index("batch_size")["optimal_beta2"]
    claims = [{
        "claim": "The optimal beta2 moves with batch size (towards 1 as the batch shrinks).",
        "paper": "Hyperparameter-scaling sweeps: optimal beta2 rises towards 1 at small B (0.95 at B=512 maps to 0.9999 at B=1).",
        "measured": "optimal beta2 " + ", ".join(f"{v:.4f} at B={b}" for b, v in b2.items()),
        "verdict": verdict(bool(b2.is_monotonic_decreasing and b2.iloc[0] > b2.iloc[-1]), partly=bool(b2.iloc[0] > b2.iloc[-1])),
    }]
    if fit is None:
        claims.append({"claim": "The optimal half-life in tokens is about constant across batch sizes.", "paper": "~10M tokens at every B (30M model).",
                       "measured": "fewer than 3 batch sizes with an optimum", "verdict": verdict(None)})
    else:
        contains_zero = fit["ci_low"] <= 0 <= fit["ci_high"]
        excludes_one = fit["ci_high"] < 1
        claims.append({
            "claim": "The optimal half-life in tokens is about constant across batch sizes (slope 0 in log-log; a constant beta2 would be slope 1).",
            "paper": "~10M tokens at every B (30M model); the authors fix it at 10M tokens in every sweep.",
            "measured": f"slope of log(optimal half-life) on log(B): {fit['slope']:.2f} (95% CI {fit['ci_low']:.2f} to {fit['ci_high']:.2f}, {fit['n']} batch sizes)"
                        + (f"; {int(optima['on_grid_edge'].sum())} optimum(s) on the edge of the grid" if optima["on_grid_edge"].any() else ""),
            "verdict": verdict(bool(contains_zero and excludes_one), partly=bool(abs(fit["slope"]) < 0.5)),
        })
    return claims


# ---------------------------------------------------------------- memory and gradient accumulation

MEMORY_PARTS = ("parameters", "gradients", "optimizer_state", "activations")


def memory_frame(records: list[dict]) -> pd.DataFrame:
    """Measured memory per run in MiB, by part (live tensors: parameters, gradients, optimizer state, and
    the activations autograd saved for one micro-batch), plus two totals: `total` as trained here
    (every gradient materialised) and `total_fused`, the accounting of the paper's memory figure, where a
    run without accumulation applies each tensor's update in the backward pass and keeps no gradients."""
    rows = []
    for r in records:
        s, mem = r["spec"], r["memory"]
        accumulates = s["micro_batch_size"] not in (None, s["batch_size"])
        row = {"optimizer": s["optimizer"]["name"], "batch_size": s["batch_size"], "micro_batch_size": s["micro_batch_size"] or s["batch_size"]}
        row.update({part: mem[part] / 2**20 for part in MEMORY_PARTS})
        row["total"] = sum(row[p] for p in MEMORY_PARTS)
        row["total_fused"] = row["total"] - (0 if accumulates else row["gradients"])
        rows.append(row)
    return pd.DataFrame(rows)


def memory_specs(exp, optimizers: list[str], batch_sizes: list[int]) -> list:
    """Two-step runs of each optimizer at each batch size, on the experiment's model: only their measured
    memory is used. SGD is the paper's vanilla SGD (no momentum buffer)."""
    T = exp.base.data.seq_len
    return [
        exp.base.replace(**{"optimizer.name": o, "optimizer.beta1": 0.0 if o == "sgd" else exp.base.optimizer.beta1,
                            "batch_size": b, "micro_batch_size": None, "tokens": 2 * b * T,
                            "log_every_tokens": b * T, "eval_every_tokens": 2 * b * T})
        for o in optimizers for b in batch_sizes
    ]


def memory_claims(memory: pd.DataFrame) -> list[dict]:
    """Savings of SGD and Adafactor over AdamW at each batch size, in both accountings."""
    m = memory[memory["micro_batch_size"] == memory["batch_size"]].set_index(["optimizer", "batch_size"])
    small = m.index.get_level_values("batch_size").min()
    large = m.index.get_level_values("batch_size").max()

    def saving(opt, b, col):
        return 1 - m.loc[(opt, b), col] / m.loc[("adamw", b), col]

    measured = "; ".join(
        f"{OPTIMIZER_LABELS.get(o, o)} saves {saving(o, small, 'total'):.0%} at B={small} ({saving(o, small, 'total_fused'):.0%} fused), "
        f"{saving(o, large, 'total'):.0%} at B={large}"
        for o in ("sgd", "adafactor") if (o, small) in m.index and (o, large) in m.index
    )
    small_savings = [saving(o, small, "total") for o in ("sgd", "adafactor") if (o, small) in m.index]
    return [{
        "claim": "At batch size 1, SGD and Adafactor need far less memory than Adam (no or factored optimizer state); the saving shrinks as activations grow with the batch.",
        "paper": "GPT-3 13B in bf16 at B=1: Adam ~82 GB, Adafactor ~29 GB, SGD ~28.7 GB (fused updates, no gradient buffer); the issue's target: savings of up to about 50%.",
        "measured": measured + " (savings relative to AdamW; 'fused' drops the gradients as the paper's accounting does)",
        "verdict": verdict(bool(small_savings and min(small_savings) >= 0.4),
                           partly=bool(small_savings and max(small_savings) >= 0.25)),
    }]


def accumulation_claims(best: pd.DataFrame, memory: pd.DataFrame, tolerance: float) -> list[dict]:
    """Gradient accumulation: same loss as the large batch it emulates, no better per FLOP than the small
    batch it is made of, and a gradient buffer the small batch does not need."""
    label = best.set_index("setup")["loss"]
    large, acc, small = label.get("large batch"), label.get("large batch by accumulation"), label.get("small batch")
    mem = memory.set_index("setup")
    buffer = mem.loc["large batch by accumulation", "gradients"]
    return [
        {
            "claim": "Gradient accumulation reproduces the large-batch result (same maths, same tokens).",
            "paper": "The repo implements accumulation as the exact mean over micro-batches: identical updates to the large batch.",
            "measured": f"best loss {acc:.4f} with accumulation vs {large:.4f} at the same batch size without",
            "verdict": verdict(bool(abs(acc - large) <= tolerance)),
        },
        {
            "claim": "Per FLOP, training at the micro-batch size without accumulation matches or beats accumulating to a large batch.",
            "paper": "Accumulation cuts optimizer steps by the accumulation factor with no per-FLOP benefit.",
            "measured": f"best loss {small:.4f} at the small batch vs {acc:.4f} accumulated, at equal tokens and FLOPs",
            "verdict": verdict(bool(small <= acc + tolerance)),
        },
        {
            "claim": "Accumulation needs a gradient buffer (one copy of the parameters) that small-batch training can do without.",
            "paper": "Adam with accumulation ~108 GB vs ~82 GB without, for GPT-3 13B: the extra 26 GB is the accumulated gradients.",
            "measured": f"gradient buffer {buffer:.2f} MiB per run (equal to the parameters); peak as trained here "
                        f"{mem.loc['large batch by accumulation', 'total']:.2f} MiB accumulated vs {mem.loc['small batch', 'total']:.2f} MiB small batch. "
                        "This workbook keeps gradients in both cases (no fused backward update), so the saving is an accounting, not measured",
            "verdict": verdict(None),
        },
    ]


def accumulation_setup(runs: pd.DataFrame) -> pd.Series:
    """Names the three arms of the accumulation experiment from batch size and micro-batch size."""
    largest = runs["batch_size"].max()
    micro = runs["micro_batch_size"].fillna(runs["batch_size"])
    return pd.Series(np.select([micro < runs["batch_size"], runs["batch_size"] == largest], ["large batch by accumulation", "large batch"], "small batch"),
                     index=runs.index)


# ---------------------------------------------------------------- loss curves (the GPT-2 / GPT-3 panels)


def curve_arms(beta2_runs: pd.DataFrame, optimizer_runs: pd.DataFrame) -> pd.DataFrame:
    """The five series of the paper's loss-curve panels, each at its best LR: AdamW at the largest batch
    with beta2 0.95, Adam at batch size 1 with beta2 0.95 and with the half-life fixed in tokens (from the
    beta2 experiment), Adafactor and SGD at batch size 1 (from the optimizer experiment)."""
    large, small = beta2_runs["batch_size"].max(), beta2_runs["batch_size"].min()
    wanted = [
        (f"AdamW B={large}, beta2 0.95", "beta2", beta2_runs, lambda r: (r.regime == "fixed beta2") & (r.batch_size == large)),
        (f"Adam B={small}, beta2 0.95 (not scaled)", "beta2", beta2_runs, lambda r: (r.regime == "fixed beta2") & (r.batch_size == small)),
        (f"Adam B={small}, beta2 half-life fixed in tokens", "beta2", beta2_runs, lambda r: (r.regime == "fixed half-life") & (r.batch_size == small)),
        (f"Adafactor B={small}", "optimizers", optimizer_runs, lambda r: (r["optimizer.name"] == "adafactor") & (r.batch_size == small)),
        (f"SGD B={small} (no momentum)", "optimizers", optimizer_runs, lambda r: (r["optimizer.name"] == "sgd") & (r.batch_size == small)),
    ]
    rows = []
    for label, source, runs, select in wanted:
        runs_of_arm = runs[select(runs)]
        cell = runs_of_arm[runs_of_arm["final_val_loss"].notna()]
        if len(cell):
            best = cell.loc[cell["final_val_loss"].idxmin()]
            rows.append({"label": label, "source": source, "id": best["id"], "optimizer.lr": best["optimizer.lr"], "loss": best["final_val_loss"], "outcome": "ok"})
        else:
            rows.append({"label": label, "source": source, "id": None, "optimizer.lr": np.nan, "loss": np.nan,
                         "outcome": "every LR diverged" if len(runs_of_arm) else "no runs"})
    return pd.DataFrame(rows)


def curve_claims(arms: pd.DataFrame, tolerance: float) -> list[dict]:
    large, fixed, scaled, adafactor, sgd = arms["loss"]
    names = list(arms["label"])
    outcomes = list(arms["outcome"])

    def judge(arm_indices, confirmed, partly=False):
        """A diverged arm fails the claim it is part of; an arm with no runs leaves it untested."""
        if any(outcomes[i] == "no runs" for i in arm_indices):
            return verdict(None)
        if any(outcomes[i] != "ok" for i in arm_indices):
            return verdict(False)
        return verdict(bool(confirmed()), partly=bool(partly()) if callable(partly) else partly)

    claims = [
        {
            "claim": "Adam at batch size 1 with beta2 scaled to keep its half-life in tokens matches or beats AdamW at a large batch, per token.",
            "paper": "GPT-2 124M: 3.38 vs 3.40; GPT-3 1.3B: 2.81 vs 2.97 (final loss, B=1 vs B=512).",
            "measured": f"{names[2]}: {scaled:.3f}; {names[0]}: {large:.3f}",
            "verdict": judge([2, 0], lambda: scaled <= large + tolerance),
        },
        {
            "claim": "Without scaling beta2 (0.95 at batch size 1), small-batch Adam is clearly worse.",
            "paper": "GPT-2: 4.40 vs 3.38 with beta2 scaled; GPT-3: 3.47 vs 2.81.",
            "measured": f"{names[1]}: {fixed:.3f} vs {scaled:.3f} scaled",
            "verdict": judge([1, 2], lambda: fixed > scaled + tolerance),
        },
        {
            "claim": "Adafactor at batch size 1 is about as good as Adam at batch size 1 (or better).",
            "paper": "GPT-2: 3.37 vs 3.38; GPT-3: 2.82 vs 2.81.",
            "measured": f"{names[3]}: {adafactor:.3f} vs Adam {scaled:.3f}",
            "verdict": judge([3, 2, 0], lambda: adafactor <= scaled + tolerance, lambda: adafactor < large + tolerance),
        },
        {
            "claim": "Vanilla SGD at batch size 1 comes close to AdamW at a large batch.",
            "paper": "GPT-3 1.3B: ~0.02-0.05 nats behind AdamW B=512; GPT-2 124M: ~0.13 behind.",
            "measured": f"{names[4]}: {sgd:.3f}, {sgd - large:+.3f} vs {names[0]}" if outcomes[4] == "ok" else f"{names[4]}: {outcomes[4]}",
            "verdict": judge([4, 0], lambda: sgd <= large + tolerance, lambda: sgd <= large + 0.13 + tolerance),
        },
    ]
    return claims


# ---------------------------------------------------------------- robustness (Fig. 1b)


def robustness_table(runs: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per batch size: best loss, the fraction of the LR x beta1 grid within `tolerance` of it (diverged
    cells count as outside), the spread of the finite cells, and the cost of dropping momentum (beta1 = 0)."""
    from replication.fit import fraction_within

    rows = []
    for b, group in runs.groupby("batch_size"):
        cells = group.groupby(["optimizer.lr", "optimizer.beta1"])["final_val_loss"].mean()
        finite = cells.dropna()
        no_momentum = cells.xs(0.0, level="optimizer.beta1").min() if 0.0 in cells.index.get_level_values(1) else np.nan
        rows.append({
            "batch_size": b, "cells": len(cells), "diverged": int(cells.isna().sum()), "best_loss": finite.min(),
            "fraction_within_tolerance": fraction_within(cells.to_numpy(), tolerance),
            "spread": finite.max() - finite.min(), "cost_of_beta1_0": no_momentum - finite.min(),
        })
    return pd.DataFrame(rows)


def robustness_claims(table: pd.DataFrame, tolerance: float) -> list[dict]:
    t = table.set_index("batch_size")
    small, large = t.index.min(), t.index.max()
    f_small, f_large = t.loc[small, "fraction_within_tolerance"], t.loc[large, "fraction_within_tolerance"]
    c_small, c_large = t.loc[small, "cost_of_beta1_0"], t.loc[large, "cost_of_beta1_0"]
    return [
        {
            "claim": "Small batches are robust to the learning rate and beta1: much more of the grid is near-optimal.",
            "paper": "GPT-2 124M: at B=1 almost every cell of a 64x LR range x beta1 in [0, 0.999] is near the best; at B=512 only a narrow band.",
            "measured": f"share of the grid within {tolerance} nats of the best: {f_small:.0%} at B={small}, {f_large:.0%} at B={large}",
            "verdict": verdict(bool(f_small >= f_large + 0.25), partly=bool(f_small > f_large)),
        },
        {
            "claim": "Momentum is unnecessary at batch size 1 (beta1 = 0 costs little) but matters at large batch.",
            "paper": "B=1 with beta1 = 0 is near-optimal; at B=512 beta1 = 0 is far off the best band.",
            "measured": f"best loss with beta1 = 0 minus the best overall: {c_small:.3f} at B={small}, {c_large:.3f} at B={large}",
            "verdict": verdict(bool(c_small <= tolerance and c_large > tolerance), partly=bool(c_small < c_large)),
        },
    ]


# ---------------------------------------------------------------- 1-D sensitivity


SENSITIVITY_KEYS = {
    "optimizer.lr": "learning rate",
    "optimizer.beta1_half_life_tokens": "beta1 half-life",
    "optimizer.beta2_half_life_tokens": "beta2 half-life",
}


def sensitivity_centres(exp, centre_lrs: dict[int, float]) -> dict[int, dict]:
    """The centre of each batch size's 1-D sweeps: its best LR (from another experiment), beta1's
    half-life at `settings.centre_beta1`, and the experiment's beta2 half-life."""
    T = exp.base.data.seq_len
    return {
        b: {"batch_size": b, "optimizer.lr": centre_lrs[b],
            "optimizer.beta1_half_life_tokens": half_life_from_beta(exp.settings["centre_beta1"], b * T),
            "optimizer.beta2_half_life_tokens": exp.base.optimizer.beta2_half_life_tokens}
        for b in exp.settings["batch_sizes"]
    }


def check_same_setup(exp, source, fields: tuple[str, ...] = ("model", "data", "tokens", "schedule")) -> None:
    """An experiment that takes its centres from another must train the same model on the same data."""
    from replication.config import ConfigError

    mine, theirs = exp.base.to_dict(), source.base.to_dict()
    for f in fields:
        if mine[f] != theirs[f]:
            raise ConfigError(f"experiments.{exp.name}: its run.{f} differs from experiments.{source.name}'s, "
                              f"whose best LRs it uses as centres: {mine[f]!r} != {theirs[f]!r}")


def sensitivity_specs(exp, centres: dict[int, dict]) -> list:
    """Per batch size and seed: the centre run, and each hyperparameter scaled by each multiplier alone."""
    specs = []
    for centre in centres.values():
        for seed in exp.settings["seeds"]:
            specs.append(exp.base.replace(**centre, seed=seed))
            for key in SENSITIVITY_KEYS:
                for m in exp.settings["multipliers"]:
                    specs.append(exp.base.replace(**{**centre, key: centre[key] * m}, seed=seed))
    return specs


def sensitivity_table(runs: pd.DataFrame, centres: dict[int, dict]) -> pd.DataFrame:
    """Loss change against the centre (mean over seeds, with its standard error) for each batch size,
    hyperparameter and multiplier; a diverged run makes its cell infinite (worse than any loss)."""
    rows = []
    for b, centre in centres.items():
        at_b = runs[runs["batch_size"] == b]
        ratios = {k: at_b[k] / centre[k] for k in SENSITIVITY_KEYS}
        is_centre = np.logical_and.reduce([np.isclose(r, 1.0) for r in ratios.values()])
        centre_loss = at_b.loc[is_centre, "final_val_loss"].mean()
        for key, label in SENSITIVITY_KEYS.items():
            others = [np.isclose(ratios[k], 1.0) for k in SENSITIVITY_KEYS if k != key]
            along = at_b[np.logical_and.reduce(others)].assign(multiplier=ratios[key].round(6))
            for m, cell in along.groupby("multiplier"):
                losses = cell["final_val_loss"].astype(float).fillna(np.inf)
                finite = losses[np.isfinite(losses)]
                rows.append({"batch_size": b, "hyperparameter": label, "multiplier": m, "n_seeds": len(losses),
                             "delta_loss": (losses.mean() if np.isfinite(losses).all() else np.inf) - centre_loss,
                             "delta_se": finite.std(ddof=1) / np.sqrt(len(finite)) if len(finite) > 1 else np.nan})
    return pd.DataFrame(rows)


def sensitivity_claims(table: pd.DataFrame, tolerance: float) -> list[dict]:
    worst = table.groupby(["hyperparameter", "batch_size"])["delta_loss"].max().unstack("batch_size")
    small, large = worst.columns.min(), worst.columns.max()
    flatter = worst[small] < worst[large]
    measured = "; ".join(f"{h}: worst change {worst.loc[h, small]:.3f} at B={small} vs {worst.loc[h, large]:.3f} at B={large}" for h in worst.index)
    return [{
        "claim": "Small batches are less sensitive to the learning rate and the beta1 and beta2 half-lives (flatter 1-D curves over 1/8x-8x).",
        "paper": "30M model, 7 seeds: at B<=16 the loss moves by <~0.05 over the whole 64x range of each; at B=4096 by up to 0.4 or more.",
        "measured": measured + " (inf: some multiplier diverged)",
        "verdict": verdict(bool(flatter.all() and (worst[large] - worst[small] > tolerance).all()), partly=bool(flatter.any())),
    }]


# ---------------------------------------------------------------- fine-tuning (the Gemma 3 result)


def finetune_arm(runs: pd.DataFrame) -> pd.Series:
    """Names each fine-tuning run's arm from its method, optimizer and batch size, e.g. 'LoRA r=8, AdamW B=16'."""
    rank = runs["lora_rank"] if "lora_rank" in runs else pd.Series(np.nan, index=runs.index)
    method = rank.map(lambda r: f"LoRA r={int(r)}, " if pd.notna(r) else "full, ")
    return method + runs["optimizer.name"].map(lambda n: OPTIMIZER_LABELS.get(n, n)) + " B=" + runs["batch_size"].astype(str)


def finetune_table(best: pd.DataFrame, runs: pd.DataFrame, records: list[dict]) -> pd.DataFrame:
    """Per arm: the best loss (mean over seeds at the best LR), the loss of the pretrained model it started
    from (the step-0 evaluation of a fine-tuning record), and the measured memory of a run of the best
    cell in MiB (neither depends on the seed)."""
    best = best.dropna(subset=["loss"]).reset_index(drop=True)
    ids = runs.merge(best[["arm", "optimizer.lr"]]).drop_duplicates("arm").set_index("arm").loc[best["arm"], "id"]
    by_id = {r["id"]: r for r in records}
    memory = memory_frame([by_id[i] for i in ids]).drop(columns=["micro_batch_size"])
    memory.insert(2, "lora_rank", [by_id[i]["spec"]["lora_rank"] for i in ids])
    out = best[["arm", "optimizer.lr", "loss", "loss_se", "n_seeds"]].copy()
    out.insert(2, "before", [by_id[i]["val"]["loss"][0] for i in ids])
    return pd.concat([out, memory], axis=1)


def _matches_claim(claim: str, paper: str, ours: pd.DataFrame, theirs: pd.DataFrame, tolerance: float) -> dict:
    """'Our arms match theirs': confirmed when our best loss is within `tolerance` of (or below) theirs."""
    a, b = ours["loss"].min(), theirs["loss"].min()
    return {
        "claim": claim,
        "paper": paper,
        "measured": f"best loss {a:.3f} ({ours['loss'].idxmin()}) vs {b:.3f} ({theirs['loss'].idxmin()})",
        "verdict": verdict(bool(a <= b + tolerance), partly=bool(a <= b + 3 * tolerance)),
    }


def finetune_claims(table: pd.DataFrame, tolerance: float) -> list[dict]:
    """The paper's fine-tuning claims from the per-arm table of `finetune_table`."""
    t = table.set_index("arm")
    full, lora = t[t["lora_rank"].isna()], t[t["lora_rank"].notna()]

    def arm(optimizer: str, batch: int | None = None) -> pd.DataFrame:
        rows = full[full["optimizer"] == optimizer]
        return rows if batch is None else rows[rows["batch_size"] == batch]

    claims = []
    adafactor, adam = arm("adafactor"), arm("adamw")
    small = full["batch_size"].min() if len(full) else None
    if len(adafactor) and len(adam):
        claims.append(_matches_claim(
            "Full fine-tuning with Adafactor at batch size 1 matches Adam.",
            "Gemma 3 4B on MATH: Adafactor B=1 18.45 % vs Adam B=1 18.65 % and Adam B=16 18.2 % (within ~0.4 points).",
            adafactor, adam, tolerance))
    if len(adafactor) and len(lora):
        a, best_lora = adafactor["loss"].min(), lora["loss"].min()
        claims.append({
            "claim": "Small-batch full fine-tuning (Adafactor) beats LoRA.",
            "paper": "Adafactor B=1 18.45 % vs LoRA B=1 16.95 % on MATH.",
            "measured": f"best loss {a:.3f} vs {best_lora:.3f} ({lora['loss'].idxmin()}): {best_lora - a:+.3f} nats in Adafactor's favour",
            "verdict": verdict(bool(a < best_lora - tolerance), partly=bool(a <= best_lora)),
        })
        small_lora = lora[lora["batch_size"] == small]
        if len(small_lora):
            ratio = adafactor["total_fused"].min() / small_lora["total_fused"].min()
            ratio_trained = adafactor["total"].min() / small_lora["total"].min()
            claims.append({
                "claim": "...at LoRA-like memory: Adafactor's factored state is as small as LoRA's, far below Adam's.",
                "paper": "Bar widths (relative memory): LoRA 1, Adafactor 1, Adam B=1 3, Adam B=16 4 (bf16 weights, fused updates).",
                "measured": f"Adafactor B={small} needs {ratio:.2f}x the memory of LoRA at B={small} without a gradient buffer "
                            f"(the paper's accounting), {ratio_trained:.2f}x as trained here"
                            + (f"; Adam B={small} {arm('adamw', small)['total_fused'].min() / small_lora['total_fused'].min():.2f}x" if len(arm('adamw', small)) else ""),
                "verdict": verdict(bool(ratio <= 1.5), partly=bool(ratio_trained <= 2.5)),
            })
    adam_small = arm("adamw", small)
    adam_large = adam.drop(adam_small.index)
    if len(adam_small) and len(adam_large):
        claims.append(_matches_claim(
            "Adam at batch size 1 with beta2 scaled to keep its half-life matches Adam at the usual batch size.",
            "Adam B=1 (beta2 0.997) 18.65 % vs Adam B=16 (beta2 0.95) 18.2 %.",
            adam_small, adam_large, tolerance))
    sgd = arm("sgd")
    if len(sgd):
        gap = sgd["loss"].min() - full["loss"].min()
        claims.append({
            "claim": "Vanilla SGD at batch size 1 fine-tunes nearly as well as the adaptive optimizers (the issue's extension).",
            "paper": "No SGD fine-tuning arm; in pretraining SGD at B=1 is 0.13-0.16 nats behind the best optimizer.",
            "measured": f"SGD's best loss {sgd['loss'].min():.3f}, {gap:.3f} behind the best full fine-tuning",
            "verdict": verdict(bool(gap <= 0.16 + tolerance), partly=bool(gap <= 2 * 0.16 + tolerance)),
        })
    return claims
