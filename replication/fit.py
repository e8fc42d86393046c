"""Fits and summaries over run tables: best cells, robustness fractions, log-log slopes with intervals.

Inputs are the tidy tables of `replication.experiments.table` (one row per run). Diverged or failed runs
carry no loss; every function says how it treats them instead of dropping them silently.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats

from replication.verdicts import DRAWS


def best_per_group(df: pd.DataFrame, by: list[str], over: list[str], loss: str = "final_val_loss",
                   edge_keys: list[str] | None = None, select_seed: int | None = None) -> pd.DataFrame:
    """For each group `by`, the hyperparameters in `over` whose loss (mean over seeds) is lowest.

    Returns one row per group with the best setting, its mean and standard error over seeds, the number
    of seeds, its optimizer steps (the fewest of its runs, when the table has them), how many settings of
    the group diverged (counted, not hidden), and `best_on_edge` (with `edge_on`, the keys that are): whether
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
            on_edge = [k for k, v in zip(over, best) if k in (edge_keys or over) and len(tried[k]) >= 3 and v in (tried[k][0], tried[k][-1])]
            row.update(best_on_edge=bool(on_edge), edge_on=",".join(on_edge))
            row.update(loss=values.mean(), loss_se=values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan,
                       n_seeds=len(values), steps=min(trained_steps(cell), default=None))
        else:
            row.update(loss=np.nan, loss_se=np.nan, n_seeds=0, best_on_edge=False, edge_on="")
        rows.append(row)
    if not rows:  # no group (e.g. no batch size trains long enough to decide): the columns still, for what reads them
        return pd.DataFrame(columns=[*by, "n_settings", "n_diverged_settings", *over, "best_on_edge", "edge_on", "loss", "loss_se",
                                     "n_seeds", "steps"])
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


def argmin_log_parabolas(x, ys) -> np.ndarray:
    """`argmin_log_parabola(x, row)` for every row of `ys` (NaN where a row has no finite point), with one
    parabola fit for all the rows that share their finite points and their best point: a bootstrap's thousand
    optima in a few fits instead of a thousand (the same numbers, row for row)."""
    x, ys = np.asarray(x, dtype=float), np.atleast_2d(np.asarray(ys, dtype=float))
    order = np.argsort(x)
    x, ys = x[order], ys[:, order]
    out = np.full(len(ys), np.nan)
    patterns, which = np.unique(np.isfinite(ys), axis=0, return_inverse=True)
    for pattern, rows in ((p, np.flatnonzero(which.ravel() == k)) for k, p in enumerate(patterns) if p.any()):
        xs, y = x[pattern], ys[np.ix_(rows, np.flatnonzero(pattern))]
        best = np.argmin(y, axis=1)
        for i in np.unique(best):
            picked = best == i
            if i == 0 or i == len(xs) - 1:
                out[rows[picked]] = xs[i]
                continue
            lx = np.log(xs[i - 1:i + 2])
            a, b, _ = np.polyfit(lx, y[picked][:, i - 1:i + 2].T, 2)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[rows[picked]] = np.where(a <= 0, xs[i], np.exp(np.clip(-b / (2 * a), lx[0], lx[-1])))
    return out


# ------------------------------------------------------------------ critical batch size (Zhang et al.)
def steps_to_target(steps, losses, target: float) -> dict | None:
    """The step at which a loss curve first reaches `target`, interpolated linearly in log(step) between
    the last evaluation above it and the first at or below it; None if it never does. Also returns that
    first evaluation step (`grid_step`) and the one before (`previous_step`), to bound the interpolation."""
    steps, losses = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
    hit = np.flatnonzero(np.isfinite(losses) & (losses <= target))
    if not len(hit):
        return None
    i = int(hit[0])
    if i == 0 or steps[i - 1] <= 0:
        return {"step": float(steps[i]), "grid_step": float(steps[i]), "previous_step": float(steps[i - 1]) if i else None}
    s0, s1, l0, l1 = steps[i - 1], steps[i], losses[i - 1], losses[i]
    share = (l0 - target) / (l0 - l1) if l0 > l1 else 1.0
    step = float(np.exp(np.log(s0) + share * (np.log(s1) - np.log(s0))))
    return {"step": step, "grid_step": float(s1), "previous_step": float(s0)}


def _fit_hyperbola(batch_sizes: np.ndarray, steps: np.ndarray) -> tuple[float, float]:
    """(a, b) of S = a + b / B, least squares in log S (Zhang et al.'s fit), a and b kept >= 0."""
    def residuals(p):
        return np.log(np.exp(p[0]) + np.exp(p[1]) / batch_sizes) - np.log(steps)

    start = [np.log(max(steps.min() / 2, 1e-12)), np.log(steps[0] * batch_sizes[0])]
    fit = optimize.least_squares(residuals, start, method="lm" if len(steps) > 2 else "trf")
    return float(np.exp(fit.x[0])), float(np.exp(fit.x[1]))


def critical_batch_size(batch_sizes, steps, reference_batch_size: float | None = None, overhead: float = 0.2,
                        draws: int = DRAWS, seed: int = 0) -> dict:
    """Fit S(B) = a + b / B to steps-to-target and apply Zhang et al.'s rule: the critical batch size B* is
    where S is (1 + overhead) x the linear-scaling ideal from the reference B0,
    B* = (1 + overhead) B0 + overhead b / a (B0: the smallest batch size unless given).

    `steps` holds one value per batch size, or one row of per-seed values per batch size (NaN: the target
    was not reached; a batch size no seed brought there is left out of the fit and listed). The interval
    of B* (2.5-97.5 %) comes from a bootstrap over seeds, or over log residuals with one value per B.
    Returns s_min (a), b, b_noise (b / a, McCandlish's noise scale), b_star, its interval and draws,
    r2 (log space), slope_small (log-log slope between the two smallest batch sizes) and unreached.
    """
    batch_sizes = np.asarray(batch_sizes, dtype=float)
    per_seed = np.asarray(steps, dtype=float)
    per_seed = per_seed[:, None] if per_seed.ndim == 1 else per_seed
    if per_seed.shape[0] != len(batch_sizes):
        raise ValueError(f"steps has {per_seed.shape[0]} rows for {len(batch_sizes)} batch sizes")
    reached = np.isfinite(per_seed).any(axis=1)
    order = np.argsort(batch_sizes)
    keep = order[reached[order]]
    if len(keep) < 3:
        raise ValueError(f"a critical batch size needs >= 3 batch sizes that reach the target, got {len(keep)}")
    bs, cells = batch_sizes[keep], [c[np.isfinite(c)] for c in per_seed[keep]]
    b0 = float(reference_batch_size if reference_batch_size is not None else bs[0])

    def star(means: np.ndarray) -> float:
        a, b = _fit_hyperbola(bs, means)
        return (1 + overhead) * b0 + overhead * b / a if a > 0 else np.inf

    mean = np.array([c.mean() for c in cells])
    a, b = _fit_hyperbola(bs, mean)
    log_resid = np.log(mean) - np.log(a + b / bs)
    rng = np.random.default_rng(seed)
    if max(len(c) for c in cells) > 1:
        samples = [np.array([rng.choice(c, len(c)).mean() for c in cells]) for _ in range(draws)]
    else:
        fitted = a + b / bs
        samples = [fitted * np.exp(rng.choice(log_resid, len(log_resid))) for _ in range(draws)]
    star_draws = np.array([star(s) for s in samples])
    ss = ((np.log(mean) - np.log(mean).mean()) ** 2).sum()
    return {
        "s_min": a, "b": b, "b_noise": b / a if a > 0 else np.inf, "b_star": star(mean), "reference_batch_size": b0,
        "b_star_low": float(np.percentile(star_draws, 2.5)), "b_star_high": float(np.percentile(star_draws, 97.5)),
        "b_star_draws": star_draws.tolist(), "r2": float(1 - (log_resid**2).sum() / ss) if ss > 0 else np.nan,
        "slope_small": float(np.log(mean[1] / mean[0]) / np.log(bs[1] / bs[0])), "overhead": overhead,
        "batch_sizes": bs.tolist(), "steps": mean.tolist(), "unreached": batch_sizes[~reached].tolist(),
    }


def power_law(x, y, y_draws=None, draws: int = DRAWS, seed: int = 0, robust: bool = True) -> dict:
    """Fit y = c x^k in log space (a Cauchy loss on log residuals beyond 0.1, so one outlier cannot carry the fit). The interval of k
    and c (2.5-97.5 %) comes from `y_draws` (rows of bootstrap draws of y, e.g. over seeds) when given,
    else from resampling the points. Returns exponent, coefficient, their intervals and the draws of k."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    def fit(xs, ys) -> tuple[float, float]:
        keep = np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0)
        lx, ly = np.log(xs[keep]), np.log(ys[keep])
        if len(np.unique(lx)) < 2:
            return np.nan, np.nan
        start = np.polyfit(lx, ly, 1)
        if not robust or len(lx) < 4:
            return float(start[0]), float(np.exp(start[1]))
        res = optimize.least_squares(lambda p: p[1] + p[0] * lx - ly, start, loss="cauchy", f_scale=0.1)
        return float(res.x[0]), float(np.exp(res.x[1]))

    k, c = fit(x, y)
    rng = np.random.default_rng(seed)
    if y_draws is not None:
        pairs = [fit(x, np.asarray(row, dtype=float)) for row in y_draws]
    else:
        pairs = []
        for _ in range(draws):
            idx = rng.choice(len(x), len(x))
            pairs.append(fit(x[idx], y[idx]))
    ks = np.array([p[0] for p in pairs])
    cs = np.array([p[1] for p in pairs])
    finite = np.isfinite(ks)
    return {"exponent": k, "coefficient": c, "exponent_draws": ks[finite].tolist(),
            "exponent_low": float(np.percentile(ks[finite], 2.5)), "exponent_high": float(np.percentile(ks[finite], 97.5)),
            "coefficient_low": float(np.percentile(cs[finite], 2.5)), "coefficient_high": float(np.percentile(cs[finite], 97.5))}


def noise_scale(small_sq, big_sq, small_batch: int, big_batch: int) -> dict:
    """McCandlish et al.'s simple noise scale B_simple = tr(Sigma) / |G|^2 from squared gradient norms
    measured at two batch sizes (unbiased estimates of both; averaged before the ratio, as they advise)."""
    small, big = np.mean(small_sq), np.mean(big_sq)
    g2 = (big_batch * big - small_batch * small) / (big_batch - small_batch)
    trace = (small - big) / (1 / small_batch - 1 / big_batch)
    return {"gradient_sq": float(g2), "trace_sigma": float(trace), "b_simple": float(trace / g2) if g2 > 0 else np.inf}


# ------------------------------------------------------------------ optimal LR as a power law (Shen et al.)
def lr_power_law(batch_sizes, tokens, optimal_lrs, draws: int = DRAWS, seed: int = 0) -> dict:
    """Fit Shen et al.'s eta_opt / B = a T^b (B in sequences, T in tokens) in log space, and the free form
    eta_opt = c B^alpha T^beta (they assume alpha = 1; Adam at small batch may give about 0.5, or saturate
    near the critical batch size). Intervals (2.5-97.5 %) from resampling the (B, T) cells (NaN with
    `draws=0`: the point fit alone, what a bootstrap over seeds refits a thousand times). Returns a, b,
    batch_exponent (alpha), token_exponent (beta), their intervals and the log residual RMS of each form."""
    b_, t_, lr_ = (np.asarray(v, dtype=float) for v in (batch_sizes, tokens, optimal_lrs))
    keep = np.isfinite(lr_) & (lr_ > 0) & (b_ > 0) & (t_ > 0)
    lb, lt, ll = np.log(b_[keep]), np.log(t_[keep]), np.log(lr_[keep])
    if len(ll) < 3 or len(np.unique(lt)) < 2:
        raise ValueError(f"an LR power law needs >= 3 optima over >= 2 token budgets, got {len(ll)}")

    def fit(idx) -> tuple[float, float, float, float, float, float]:
        x, y = lt[idx], ll[idx] - lb[idx]
        b, log_a = np.polyfit(x, y, 1) if len(np.unique(x)) > 1 else (np.nan, np.nan)
        design = np.column_stack([np.ones(len(idx)), lb[idx], lt[idx]])
        free = np.linalg.lstsq(design, ll[idx], rcond=None)[0] if len(np.unique(lb[idx])) > 1 else np.full(3, np.nan)
        rms_fixed = float(np.sqrt(np.mean((y - log_a - b * x) ** 2)))
        rms_free = float(np.sqrt(np.mean((ll[idx] - design @ free) ** 2)))
        return float(np.exp(log_a)), float(b), float(free[1]), float(free[2]), rms_fixed, rms_free

    a, b, alpha, beta, rms_fixed, rms_free = fit(np.arange(len(ll)))
    rng = np.random.default_rng(seed)
    samples = np.array([fit(rng.choice(len(ll), len(ll))) for _ in range(draws)]).reshape(draws, 6)
    def interval(col: int) -> tuple[float, float]:  # NaN when a form cannot be fitted (one batch size: no free exponent)
        values = samples[:, col][np.isfinite(samples[:, col])]
        return tuple(float(v) for v in np.percentile(values, [2.5, 97.5])) if len(values) else (np.nan, np.nan)

    (a_low, a_high), (b_low, b_high), (alpha_low, alpha_high), (beta_low, beta_high) = (interval(i) for i in range(4))
    return {"a": a, "b": b, "a_low": a_low, "a_high": a_high, "b_low": b_low, "b_high": b_high,
            "batch_exponent": alpha, "batch_exponent_low": alpha_low, "batch_exponent_high": alpha_high,
            "token_exponent": beta, "token_exponent_low": beta_low, "token_exponent_high": beta_high,
            "rms_fixed": rms_fixed, "rms_free": rms_free, "n": int(len(ll)), "b_draws": samples[:, 1].tolist()}


def resampled(table: pd.DataFrame, cells: list[str], draws: int = DRAWS, seed: int = 0):
    """`draws` copies of `table` whose seeds are resampled with replacement within every cell of `cells`:
    refitting each gives the spread over seeds of anything fitted to the optima (bootstrap intervals)."""
    rng = np.random.default_rng(seed)
    groups = [g for _, g in table.groupby(cells)]
    for _ in range(draws):
        yield pd.concat([g.iloc[rng.integers(0, len(g), len(g))] for g in groups], ignore_index=True)


def slope(x, y) -> float:
    """Least-squares slope of log y on log x (NaN with fewer than two distinct x)."""
    x, y = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    keep = np.isfinite(x) & np.isfinite(y)
    if len(np.unique(x[keep])) < 2:
        return float("nan")
    return float(np.polyfit(x[keep], y[keep], 1)[0])
