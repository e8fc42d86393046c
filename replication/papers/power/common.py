"""What Shen et al.'s topics share: runs whose smaller token budgets are decays branched off one long run
(`RunSpec.decay_branches`), their losses per (batch size, LR, budget, seed), and the optimal LR per cell.

A WSD run of budget T warms up for a fixed number of tokens, holds its LR, and decays over the last 10 % of
T. Up to 0.9 T its LR does not depend on T, so one run of the largest budget carries every smaller one: at
0.9 T_k it forks, decays to T_k, is evaluated, and resumes (tested equal to the run of budget T_k itself).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication import fit
from replication.fit import resampled, slope  # noqa: F401 (topics call them as common.*)
from replication.spec import ConfigError, RunSpec
from replication.experiments import stored
from replication import plots
from replication.verdicts import DRAWS, MIN_STEPS, difference_dof, t_critical


def settings(exp, keys: tuple[str, ...]) -> dict:
    """The experiment's `settings` (every key of `keys`, no other), with `budgets`, where given, increasing."""
    s = exp.checked_settings(keys)
    if "budgets" in s and list(s["budgets"]) != sorted(set(s["budgets"])):
        raise ConfigError(f"experiments.{exp.name}.settings.budgets: {s['budgets']} must increase")
    return s


def lr_grid(center: float, steps) -> list[float]:
    """The factor-2 grid center x 2^k, rounded to 4 significant digits (stable run names)."""
    return [float(f"{center * 2.0 ** k:.4g}") for k in steps]


def branched(exp, dotted: dict, budgets, where: str = "settings") -> RunSpec:
    """The run of the largest budget, with every smaller budget as a decay branched off it."""
    budgets = sorted(budgets)
    return exp.derived({**dotted, "tokens": budgets[-1], "decay_branches": budgets[:-1]}, where)


def budget_rows(record: dict) -> list[dict]:
    """One row per budget a run carries (its decay branches, then its own end): tokens, steps and validation
    loss, None where the run diverged before that budget's decay ended."""
    spec = record["spec"]
    per_step = spec["batch_size"] * spec["data"]["seq_len"]
    b = record.get("decay_branches") or {"tokens": [], "val_loss": []}
    branch = dict(zip(b["tokens"], b["val_loss"]))
    rows = [{"tokens": t, "steps": t // per_step, "loss": branch.get(t)} for t in spec["decay_branches"]]
    return rows + [{"tokens": spec["tokens"], "steps": spec["tokens"] // per_step, "loss": record["final_val_loss"]}]


def loss_table(exp, specs: list[RunSpec], results_root="results", label=None) -> pd.DataFrame:
    """Per stored run and budget: batch size, LR, seed, tokens, steps, validation loss (NaN: diverged),
    and `label(spec)`'s columns. Runs not stored yet are left out."""
    store = stored(exp, results_root)
    rows = []
    for spec in specs:
        r = store.read(spec.hash)
        if r is None:
            continue
        extra = label(spec) if label else {}
        for row in budget_rows(r):
            rows.append({"batch_size": spec.batch_size, "lr": spec.optimizer.lr, "seed": spec.seed, **extra, **row})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["loss"] = frame["loss"].astype(float)
    return frame


def optima(table: pd.DataFrame, by: list[str], x: str = "lr") -> pd.DataFrame:
    """Per group of `by`: the optimum of the seed-mean loss over `x` (a parabola in log x through the best
    grid point and its neighbours), the best grid point, whether it is on the grid's edge, the fewest seeds
    among the three points around it, the fewest steps, the loss at the best point, and whether it is
    `resolved`: both neighbours worse beyond the t critical value times the standard error of the
    difference (`resolved`; a flat curve's optimum is where the noise put it)."""
    rows = []
    for key, g in table.groupby(by):
        points = g.groupby(x)["loss"].agg(["mean", "count", "var"]).sort_index()
        mean, count, var = (points[c].to_numpy(float)[None] for c in ("mean", "count", "var"))
        best = {k: v[0] for k, v in _optima(points.index.to_numpy(float), mean, count, resolved(mean, count, var), x).items()}
        if best.pop("_any"):  # a group where every point diverged has no optimum
            rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), **best, "steps": int(g["steps"].min())})
    return pd.DataFrame(rows)


def optima_draws(table: pd.DataFrame, by: list[str], x: str = "lr", draws: int = DRAWS, seed: int = 0) -> list[pd.DataFrame]:
    """`optima(t, by, x)` for each `t` of `fit.resampled(table, by + [x], draws, seed)` (the same resamples of
    seeds within every cell), computed on arrays, a group's optima over all draws at once: a thousand refits
    take a second, not minutes. A group's `steps` are those of its rows in `table` (resampling seeds does not
    change a cell's steps)."""
    cells = [g["loss"].to_numpy(float) for _, g in table.groupby(by + [x])]
    rng = np.random.default_rng(seed)
    picks = [np.empty((draws, len(v)), dtype=int) for v in cells]
    for d in range(draws):  # draw by draw, cell by cell: the order `fit.resampled` draws in
        for c, v in enumerate(cells):
            picks[c][d] = rng.integers(0, len(v), len(v))
    summaries = [_seed_stats(v[pick]) for v, pick in zip(cells, picks)]
    columns, start = {}, 0
    for key, g in table.groupby(by):
        grid = np.sort(g[x].unique()).astype(float)
        mean, count, var = (np.column_stack([st[k] for st in summaries[start:start + len(grid)]]) for k in range(3))
        start += len(grid)
        group = {**dict(zip(by, key if isinstance(key, tuple) else (key,))), **_optima(grid, mean, count, resolved(mean, count, var), x),
                 "steps": int(g["steps"].min())}
        for name, value in group.items():
            columns.setdefault(name, []).append(np.broadcast_to(value, (draws,)))
    if not columns:
        return [pd.DataFrame() for _ in range(draws)]
    stacked = {name: np.column_stack(values) for name, values in columns.items()}  # [draws, groups]
    kept = stacked.pop("_any")
    return [pd.DataFrame({name: values[d][kept[d]] for name, values in stacked.items()}) for d in range(draws)]


def _optima(grid: np.ndarray, mean: np.ndarray, count: np.ndarray, clear: np.ndarray, x: str) -> dict:
    """One group's optimum over its sorted `grid` for every row of its seed means and finite-seed counts (rows:
    resamples), as arrays: the parabola optimum, the best grid point and its loss, whether it is on the edge, the
    fewest seeds among it and its neighbours, whether it is resolved (`clear`), and `_any`: whether the row has
    a finite point (a row without one has no optimum)."""
    rows, k = np.arange(len(mean)), len(grid)
    i = np.argmin(np.where(np.isfinite(mean), mean, np.inf), axis=1)
    seeds = np.minimum.reduce([count[rows, np.clip(i + j, 0, k - 1)] for j in (-1, 0, 1)]).astype(int)
    return {f"optimal_{x}": fit.argmin_log_parabolas(grid, mean), f"best_{x}": grid[i], "best_loss": mean[rows, i],
            "on_edge": (i == 0) | (i == k - 1), "n_seeds": seeds, "resolved": clear.astype(bool), "_any": np.isfinite(mean).any(axis=1)}


def _seed_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of per-seed losses (NaN: diverged): the mean, the count and the variance (ddof 1, NaN under
    two seeds) of the finite ones, as pandas' mean / count / var give them."""
    finite = np.isfinite(values)
    count = finite.sum(axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, values, 0.0).sum(axis=1) / count
        var = np.where(finite, (values - mean[:, None]) ** 2, 0.0).sum(axis=1) / (count - 1)
    return mean, count, np.where(count > 1, var, np.nan)


def resolved(mean: np.ndarray, count: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Per row of a grid's seed means, finite-seed counts and seed variances (rows: resamples): whether the
    best point lies inside the grid and both its neighbours are worse beyond the t critical value (Welch
    degrees of freedom) times the standard error of the difference, the rule every difference obeys
    (`verdicts.difference_dof` and `verdicts.t_critical`, on arrays). A neighbour that diverged at every seed is worse; one seed leaves
    no standard error (unresolved); without seed noise any gap counts."""
    rows, k = np.arange(len(mean)), mean.shape[1]
    i = np.argmin(np.where(np.isfinite(mean), mean, np.inf), axis=1)
    out = (i > 0) & (i < k - 1)
    mb, nb, vb = mean[rows, i], count[rows, i], var[rows, i]
    for j in (np.clip(i - 1, 0, k - 1), np.clip(i + 1, 0, k - 1)):
        ma, na, va = mean[rows, j], count[rows, j], var[rows, j]
        with np.errstate(invalid="ignore", divide="ignore"):
            ua, ub = va / na, vb / nb
            total = ua + ub
            t = np.where(total > 0, t_critical(difference_dof(ua, na, ub, nb)), t_critical(None))
            worse = (na == 0) | ((na > 1) & (nb > 1) & (ma - mb > t * np.sqrt(total)))
        out &= worse
    return out


def extended_steps(steps, low: int, high: int) -> list[int]:
    """Grid exponents `steps` with `low` more below and `high` more above, one apart."""
    steps = list(steps)
    return list(range(steps[0] - low, steps[0])) + steps + list(range(steps[-1] + 1, steps[-1] + 1 + high))


def grid_past_edges(exp, values, make, max_extension: int, results_root="results", label=None, x: str = "lr"
                    ) -> tuple[list, list | None]:
    """The seed-0 grid `values(low, high)` (`low` / `high` grid steps added below / above the configured grid),
    grown one step a side while an edge value is some budget's best, up to `max_extension` steps a side; `make(v)`
    is the run at value v. Returns the grid and each budget's best value, or None for the bests while a run of
    the grid is not stored (the grid then names the runs to train next)."""
    store = stored(exp, results_root)
    low = high = 0
    while True:
        grid = values(low, high)
        specs = [make(v) for v in grid]
        if not store.has_all(specs):
            return grid, None
        best = sorted(set(optima(loss_table(exp, specs, results_root, label), ["tokens"], x)[f"best_{x}"]))
        grow_low, grow_high = grid[0] in best and low < max_extension, grid[-1] in best and high < max_extension
        if not (grow_low or grow_high):
            return grid, best
        low, high = low + grow_low, high + grow_high


def around(grid: list, best: list) -> list:
    """The grid values at or next to any of `best`: where the other seeds run."""
    near = {j for b in best for j in (grid.index(b) - 1, grid.index(b), grid.index(b) + 1) if 0 <= j < len(grid)}
    return [grid[j] for j in sorted(near)]


def interval_measurement(estimate: float, draws, cells: pd.DataFrame, enough: bool, why: str) -> dict:
    """What the `interval` rule reads: the estimate, its finite bootstrap draws, the fewest steps and seeds
    among the deciding optima; or why it is untestable (`enough` false, or no finite estimate)."""
    if not enough or not np.isfinite(estimate):
        return {"untestable": why}
    return {"estimate": float(estimate), "draws": [float(v) for v in draws if np.isfinite(v)],
            "min_steps": int(cells["steps"].min()), "n_seeds": int(cells["n_seeds"].min())}


def verdict_cells(best: pd.DataFrame) -> pd.DataFrame:
    """Optima that may decide a verdict: >= 250 optimizer steps and inside the grid."""
    return best[(best["steps"] >= MIN_STEPS) & ~best["on_edge"]]


def optimum_kind(row) -> str:
    """The marker of one optimum of a `best` table: short, on the edge of its grid, not resolved, or readable."""
    kind = plots.cell_kind(row["steps"], bool(row["on_edge"]))
    return "unresolved" if kind == "cell" and not row.get("resolved", True) else kind


def plot_loss_curves(ax, table: pd.DataFrame, series: str, fixed: dict, best: pd.DataFrame, x: str = "lr",
                     label=lambda v: str(v)) -> None:
    """Seed-mean loss against `x` with 95 % seed intervals, one line per value of `series` at the `fixed`
    values of the others (coloured by batch size when the series is batch size), the optimum of each marked
    dotted; a series under MIN_STEPS steps is hollow and does not set the loss axis."""
    rows = table.loc[np.logical_and.reduce([table[k] == v for k, v in fixed.items()])]
    values = sorted(rows[series].unique())
    shown = []
    for i, value in enumerate(values):
        cells = rows[rows[series] == value].groupby(x)["loss"]
        mean = cells.mean().sort_index()
        steps = int(rows.loc[rows[series] == value, "steps"].min())
        colour = plots.batch_colour(value) if series == "batch_size" else plots.ordinal_colour(i, len(values))
        kind = plots.cell_kind(steps)
        ax.errorbar(mean.index, mean.to_numpy(), yerr=[plots.seed_interval(cells.get_group(v)) for v in mean.index], capsize=2, lw=1.2,
                    color=colour, label=f"{label(value)}" + ("" if kind == "cell" else f" ({steps} steps)"))
        plots.mark(ax, mean.index, mean.to_numpy(), colour, kind, ms=4)
        shown += list(mean.to_numpy()) if kind == "cell" else []
        b = best.loc[np.logical_and.reduce([best[k] == v for k, v in {**fixed, series: value}.items() if k in best])]
        if len(b):
            ax.axvline(b[f"optimal_{x}"].iloc[0], color=colour, lw=0.7, ls=":")
    ax.plot([], [], ":", color="0.4", lw=0.7, label="dotted: located optimum")
    ax.set(xscale="log", xlabel={"lr": "learning rate", "wd": "AdamW weight decay"}.get(x, x), ylabel="validation loss (nats / token)")
    plots.visible_range(ax, shown or rows["loss"])
    ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())  # decades only: minor labels collide
    ax.legend(fontsize=7)


def edge_caveat(best: pd.DataFrame, by: list[str]) -> str | None:
    """Name the optima whose best grid point is the grid's end even after its extension: they decide nothing."""
    edge = best[best["on_edge"]]
    if not len(edge):
        return None
    cells = ", ".join("(" + ", ".join(f"{k} {r[k]:,}" if isinstance(r[k], (int, np.integer)) else f"{k} {r[k]}" for k in by) + ")"
                      for _, r in edge.iterrows())
    return f"{len(edge)} of {len(best)} optima sit on the edge of their grid even after extending it, so they decide nothing: {cells}."


def steps_caveat(best: pd.DataFrame) -> str | None:
    short = best[best["steps"] < MIN_STEPS]
    if not len(short):
        return None
    return (f"{len(short)} of {len(best)} cells train for fewer than {MIN_STEPS} optimizer steps: they are drawn hollow and "
            "left out of every fit and verdict.")
