"""Marek et al.: beta2 held fixed vs its half-life held fixed in tokens, and the optimal half-life (notebook `marek_beta2`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication.claims import claim
from replication.fit import argmin_log_parabola, best_cell_runs, best_per_group, loglog_slope
from replication.optim import beta_from_half_life, half_life_from_beta
from replication.verdicts import bootstrap, cell_losses, compare
from replication.sweep import stored_table


def best_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """The best LR of each (regime, batch size)."""
    return best_per_group(runs, ["regime", "batch_size"], ["optimizer.lr"])


def runs(exp, params: dict, results_root="results") -> list:
    """Every run the notebook reads: the LR grid in both regimes, then the half-life sweep at each batch
    size's best fixed-half-life LR (known once the grid is stored)."""
    grid = exp.expand()
    table = stored_table(exp, grid, results_root)
    if table is None:
        return grid
    table = with_beta2(table, exp.base.data.seq_len)
    return grid + half_life_followups(exp, table, best_cells(table), exp.settings["half_life_multipliers"])[1]


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
        parts[part] = compare(loss(small), loss(other), list(cells[(regime, small)]["steps"]) + list(cells[(regime, other)]["steps"]))
        words.append(f"{regime}: B={small} {parts[part]['difference']:+.3f} nats against the best larger batch (B={other})")
    return [claim("marek.beta2.fixed_half_life_rescues_small_batch", "; ".join(words) or "no comparison possible", {"parts": parts})]


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

    n_seeds = min(cell_losses(v).size for v in cells.values())
    measurement = {"estimate": float(fit["slope"]), "n_seeds": int(n_seeds), "min_steps": int(sweep["steps"].min()),
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
