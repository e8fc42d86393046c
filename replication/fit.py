"""Fits and summaries over run tables: best cells, robustness fractions, log-log slopes with intervals.

Inputs are the tidy tables of `replication.sweep.table` (one row per run). Diverged or failed runs
carry no loss; every function says how it treats them instead of dropping them silently.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def best_per_group(df: pd.DataFrame, by: list[str], over: list[str], loss: str = "final_val_loss",
                   edge_keys: list[str] | None = None, select_seed: int | None = None) -> pd.DataFrame:
    """For each group `by`, the hyperparameters in `over` whose loss (mean over seeds) is lowest.

    Returns one row per group with the best setting, its mean and standard error over seeds, the number
    of seeds, its optimizer steps (the fewest of its runs, when the table has them), how many settings of
    the group diverged (counted, not hidden), and `best_on_edge`: whether
    the best value of some key in `edge_keys` (default: all of `over`; leave out keys with a natural
    bound, like beta1 = 0) is the smallest or largest the group tried (with at least three tried), i.e.
    the true optimum may lie outside the grid. A key left unset in some runs (NaN: beta1's half-life for an
    optimizer without momentum) is a setting of its own, not a dropped row.

    With `select_seed`, the best setting is chosen on that seed's runs alone and its statistics use every
    seed of that setting: the cell that follow-ups re-seeded stays the best cell, and a setting run once
    cannot win on one lucky seed against a setting whose mean is over three.
    """
    rows = []
    for key, group in df.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        cells = group.groupby(over, sort=True, dropna=False)
        chooser = group if select_seed is None else group[group["seed"] == select_seed]
        means = chooser.groupby(over, sort=True, dropna=False)[loss].mean()  # NaN for cells where every seed diverged
        n_diverged = int(cells["status"].apply(lambda s: (s != "ok").all()).sum())
        row = dict(zip(by, key))
        row.update(n_settings=len(means), n_diverged_settings=n_diverged)
        if means.notna().any():
            best = means.idxmin()
            best = best if isinstance(best, tuple) else (best,)
            cell = group
            for k, v in zip(over, best):
                cell = cell[cell[k].isna()] if pd.isna(v) else cell[cell[k] == v]
            values = cell[loss].dropna()
            row.update(dict(zip(over, best)))
            tried = {k: sorted(group[k].dropna().unique()) for k in over}
            row["best_on_edge"] = any(len(tried[k]) >= 3 and v in (tried[k][0], tried[k][-1])
                                      for k, v in zip(over, best) if k in (edge_keys or over))
            row.update(loss=values.mean(), loss_se=values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan,
                       n_seeds=len(values), steps=min(trained_steps(cell), default=None))
        else:
            row.update(loss=np.nan, loss_se=np.nan, n_seeds=0, best_on_edge=False)
        rows.append(row)
    return pd.DataFrame(rows)


def trained_steps(runs: pd.DataFrame) -> list[int]:
    """The optimizer steps of the runs that did not diverge: a diverged run stops early, so its step count
    says nothing about the scale a claim is tested at (the MIN_STEPS gate reads these)."""
    ok = runs[runs["status"] == "ok"] if "status" in runs else runs
    return [int(s) for s in ok["steps"].dropna()] if "steps" in ok else []


def best_cell_runs(runs: pd.DataFrame, best: pd.DataFrame, by: list[str], over: list[str]) -> dict[tuple, pd.DataFrame]:
    """The runs (every seed) of each group's best cell from `best_per_group`, by group key (a tuple)."""
    rows = runs.merge(best.dropna(subset=["loss"])[by + over], on=by + over)
    return {key if isinstance(key, tuple) else (key,): group for key, group in rows.groupby(by)}


def fraction_within(losses: np.ndarray, tolerance: float) -> float:
    """Share of a hyperparameter grid whose loss is within `tolerance` of the grid's best.

    Diverged cells (NaN or inf) count as outside the tolerance: a robust batch size must not diverge.
    """
    losses = np.asarray(losses, dtype=float).ravel()
    finite = np.isfinite(losses)
    if not finite.any():
        return 0.0
    return float(np.sum(losses[finite] <= losses[finite].min() + tolerance) / losses.size)


def loglog_slope(x, y, confidence: float = 0.95) -> dict:
    """Least-squares slope of log(y) against log(x) with a t-based confidence interval.

    Returns slope, intercept (natural log), the interval, the residuals and the number of points.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    lx, ly = np.log(x[keep]), np.log(y[keep])
    n = len(lx)
    if n < 3:
        raise ValueError(f"a slope with an interval needs at least 3 points, got {n}")
    fit = stats.linregress(lx, ly)
    half = stats.t.ppf(0.5 + confidence / 2, df=n - 2) * fit.stderr
    residuals = ly - (fit.intercept + fit.slope * lx)
    return {"slope": fit.slope, "intercept": fit.intercept, "ci_low": fit.slope - half, "ci_high": fit.slope + half,
            "confidence": confidence, "n": n, "residuals": residuals.tolist()}


def argmin_log_parabola(x, y) -> float:
    """The optimum of y over a log-spaced grid x: the vertex of a parabola in log x through the best
    point and its neighbours (the best grid point itself when it lies on the edge of the grid)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    order = np.argsort(x)
    x, y = x[order], y[order]
    i = int(np.argmin(y))
    if i == 0 or i == len(x) - 1:
        return float(x[i])
    lx = np.log(x[i - 1:i + 2])
    a, b, _ = np.polyfit(lx, y[i - 1:i + 2], 2)
    if a <= 0:
        return float(x[i])
    return float(np.exp(np.clip(-b / (2 * a), lx[0], lx[-1])))
