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

from replication.fit import argmin_log_parabola, resampled, slope  # noqa: F401 (topics call them as common.*)
from replication.spec import ConfigError, RunSpec
from replication.store import Store
from replication.sweep import needs_run
from replication.verdicts import MIN_STEPS, Z


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
    store = Store(results_root, exp.profile, exp.name)
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
    `resolved`: both neighbours worse by more than Z standard errors of the difference (a flat curve's
    optimum is where the noise put it)."""
    rows = []
    for key, g in table.groupby(by):
        stats = g.groupby(x)["loss"].agg(["mean", "count", "std"]).sort_index()
        means = stats["mean"]
        if not np.isfinite(means).any():
            continue
        i = int(np.nanargmin(means.to_numpy()))
        near = stats.iloc[max(i - 1, 0):i + 2]
        se = near["std"] / np.sqrt(near["count"])
        with np.errstate(divide="ignore", invalid="ignore"):  # one seed: no SE (unresolved); no noise: infinitely resolved
            gaps = [(near["mean"].iloc[j] - means.iloc[i]) / np.hypot(se.iloc[j], se.loc[means.index[i]])
                    for j in range(len(near)) if near.index[j] != means.index[i]]
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))),
                     f"optimal_{x}": argmin_log_parabola(means.index, means.to_numpy()), f"best_{x}": float(means.index[i]),
                     "best_loss": float(means.iloc[i]), "on_edge": i in (0, len(means) - 1), "n_seeds": int(near["count"].min()),
                     "resolved": bool(len(gaps) == 2 and min(gaps) > Z),
                     "steps": int(g["steps"].min())})
    return pd.DataFrame(rows)


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
    store = Store(results_root, exp.profile, exp.name)
    low = high = 0
    while True:
        grid = values(low, high)
        specs = [make(v) for v in grid]
        if any(needs_run(store, spec) for spec in specs):
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


def plot_loss_curves(ax, table: pd.DataFrame, series: str, fixed: dict, best: pd.DataFrame, x: str = "lr",
                     label=lambda v: str(v)) -> None:
    """Seed-mean loss against `x`, one line per value of `series` at the `fixed` values of the others,
    the optimum of each marked (hollow markers: cells under 250 steps)."""
    rows = table.loc[np.logical_and.reduce([table[k] == v for k, v in fixed.items()])]
    values = sorted(rows[series].unique())
    for i, value in enumerate(values):
        g = rows[rows[series] == value].groupby(x)["loss"].agg(["mean", "std", "count"]).sort_index()
        steps = int(rows.loc[rows[series] == value, "steps"].min())
        colour = plt.cm.viridis(i / max(len(values) - 1, 1))
        se = (g["std"] / np.sqrt(g["count"])).fillna(0)
        ax.errorbar(g.index, g["mean"], yerr=2 * se, fmt="o-", ms=3, capsize=2, color=colour,
                    mfc=colour if steps >= MIN_STEPS else "white", label=f"{label(value)}" + ("" if steps >= MIN_STEPS else f" ({steps} steps)"))
        b = best.loc[np.logical_and.reduce([best[k] == v for k, v in {**fixed, series: value}.items() if k in best])]
        if len(b):
            ax.axvline(b[f"optimal_{x}"].iloc[0], color=colour, lw=0.7, ls=":")
    ax.set(xscale="log", xlabel={"lr": "learning rate", "wd": "AdamW weight decay"}.get(x, x), ylabel="validation loss (mean over seeds, +- 2 SE)")
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
