"""Marek et al.: beta2 held fixed vs its half-life held fixed in tokens, and the optimal half-life (notebook `marek_beta2`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication.claims import claim
from replication.fit import argmin_log_parabola, best_cell_runs, best_per_group, loglog_slope, trained_steps
from replication.optim import beta_from_half_life, half_life_from_beta
from replication.papers.marek.common import best_specs, decidable, refine_factor, staged
from replication.sweep import reseeded
from replication.verdicts import bootstrap, compare


def best_cells(runs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The best LR of each (regime, batch size), chosen on seed `seed` and measured over every seed of it."""
    return best_per_group(runs, ["regime", "batch_size"], ["optimizer.lr"], select_seed=seed)


def runs(exp, params: dict, results_root="results") -> list:
    """Every run the notebook reads, each step known once the previous one is stored: the LR grid in both
    regimes, one LR refined from each (regime, batch size)'s best (`settings.lr_refine_factor`, towards
    the better neighbour), the seeds of
    `settings.seeds_at_best` there, then the half-life sweep (`settings.half_life_multipliers`) at each
    batch size's best fixed-half-life LR with the same seeds. Only batch sizes with >= MIN_STEPS steps."""
    settings, seq_len, seed = exp.settings, exp.base.data.seq_len, exp.base.seed
    seeds = [seed, *[k for k in settings["seeds_at_best"] if k != seed]]

    def best(specs, table):
        table = with_beta2(table, seq_len)
        table = table[table["seed"] == seed]
        return best_specs(specs, table, best_cells(decidable(lr_search(table, exp)), seed), ["regime", "batch_size"], ["optimizer.lr"])

    def refined(specs, table):
        table = with_beta2(table, seq_len)
        out = []
        for s in best(specs, table):
            regime = "fixed half-life" if s.optimizer.beta2_half_life_tokens else "fixed beta2"
            cell = lr_search(table, exp)
            cell = cell[(cell["regime"] == regime) & (cell["batch_size"] == s.batch_size) & (cell["seed"] == seed)]
            out.append(s.replace(**{"optimizer.lr": s.optimizer.lr * refine_factor(cell, s.optimizer.lr, settings["lr_refine_factor"])}))
        return out

    def more_seeds(specs, table):
        chosen = best(specs, table)
        return reseeded(chosen, [s.hash for s in chosen], seeds)

    def half_lives(specs, table):
        return [s.replace(seed=k, **{"optimizer.beta2_half_life_tokens": s.optimizer.beta2_half_life_tokens * m})
                for s in best(specs, table) if s.optimizer.beta2_half_life_tokens for m in settings["half_life_multipliers"] for k in seeds]

    return staged(exp, results_root, [refined, more_seeds, half_lives])


def lr_search(runs: pd.DataFrame, exp) -> pd.DataFrame:
    """The runs of the LR search in both regimes (the half-life sweep's other half-lives left out)."""
    grid = {v for g in exp.grids for v in g.get("optimizer.beta2_half_life_tokens", ()) if v is not None}
    h = runs["optimizer.beta2_half_life_tokens"]
    return runs[h.isna() | h.isin(grid)]


def half_life_sweep(runs: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Every half-life and seed at each batch size's best fixed-half-life LR."""
    keys = ["batch_size", "optimizer.lr"]
    chosen = best.loc[best["regime"] == "fixed half-life", keys].dropna()
    return runs[runs["regime"] == "fixed half-life"].merge(chosen, on=keys)


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


def beta2_regime_claims(best: pd.DataFrame, runs: pd.DataFrame) -> list[dict]:
    """Fig. 10's claim from every seed of the best cell per (regime, batch size): small batches look bad
    with beta2 fixed and are competitive with the half-life fixed in tokens."""
    cells = best_cell_runs(runs, best, ["regime", "batch_size"], ["optimizer.lr"])
    parts, words = {}, []
    for regime, part in (("fixed beta2", "fixed_beta2_hurts"), ("fixed half-life", "fixed_half_life_competitive")):
        sizes = sorted(b for r, b in cells if r == regime)
        if len(sizes) < 2:
            parts[part] = {"untestable": f"fewer than two batch sizes with a finite loss ({regime})"}
            continue
        loss = lambda b: cells[(regime, b)]["final_val_loss"]
        small, other = sizes[0], min(sizes[1:], key=lambda b: loss(b).mean())
        parts[part] = compare(loss(small), loss(other), trained_steps(cells[(regime, small)]) + trained_steps(cells[(regime, other)]))
        words.append(f"{regime}: B={small} {parts[part]['difference']:+.3f} nats against the best larger batch (B={other})")
    return [claim("marek.beta2.fixed_half_life_rescues_small_batch", "; ".join(words) or "no comparison possible", {"parts": parts})]


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


def half_life_claims(sweep: pd.DataFrame, seq_len: int) -> list[dict]:
    """One claim for the half-life question: the log-log slope of the optimal half-life against batch size
    (0: constant in tokens, so the optimal beta2 moves towards 1 as B shrinks; 1: constant beta2), with a
    bootstrap over the seeds of every (batch size, half-life) cell."""
    optima, fit = optimal_half_life(sweep, seq_len)
    if fit is None:
        return [claim("marek.beta2.half_life_constant", "fewer than 3 batch sizes with an optimum",
                      {"untestable": "fewer than 3 batch sizes with an optimal half-life"})]
    cells = {k: g["final_val_loss"] for k, g in sweep.groupby(["batch_size", "beta2_half_life"])}

    def slope(means: dict) -> float:
        frame = pd.DataFrame([{"batch_size": b, "beta2_half_life": h, "final_val_loss": v} for (b, h), v in means.items()])
        refit = optimal_half_life(frame, seq_len)[1]
        return refit["slope"] if refit else np.nan

    n_seeds = min(len(v) for v in cells.values())  # attempts: a half-life that diverged at every seed is a result, not a missing cell
    measurement = {"estimate": float(fit["slope"]), "n_seeds": int(n_seeds), "min_steps": min(trained_steps(sweep), default=None),
                   "draws": [round(float(d), 4) for d in bootstrap(cells, slope)] if n_seeds > 1 else []}
    edge = int(optima["on_grid_edge"].sum())
    b2 = optima.set_index("batch_size")["optimal_beta2"]
    return [claim("marek.beta2.half_life_constant",
                  f"slope of log(optimal half-life) on log(B): {fit['slope']:.2f} (least-squares 95% CI {fit['ci_low']:.2f} to "
                  f"{fit['ci_high']:.2f}, {fit['n']} batch sizes); optimal beta2 " + ", ".join(f"{v:.4f} at B={b}" for b, v in b2.items())
                  + (f"; {edge} optimum(s) on the edge of the half-life grid" if edge else ""), measurement)]


def optimum_vs_batch_size(optima: pd.DataFrame, fit: dict | None):
    """Left: the optimal beta2 per batch size; right: the optimal half-life in tokens with its log-log fit."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.4, 4.0))
    left.plot(optima["batch_size"], 1 - optima["optimal_beta2"], "o-")
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xlabel("batch size (sequences)")
    left.set_ylabel("1 - optimal beta2")
    right.plot(optima["batch_size"], optima["optimal_half_life"], "o", label="optimum")
    if fit is not None:
        b = np.geomspace(optima["batch_size"].min(), optima["batch_size"].max(), 50)
        right.plot(b, np.exp(fit["intercept"]) * b ** fit["slope"], "-",
                   label=f"fit: slope {fit['slope']:.2f} [{fit['ci_low']:.2f}, {fit['ci_high']:.2f}]")
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel("batch size (sequences)")
    right.set_ylabel("optimal beta2 half-life (tokens)")
    right.legend()
    return fig
