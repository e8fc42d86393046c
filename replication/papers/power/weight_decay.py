"""Beyond the paper, Bergsma et al. 2025 ("Power Lines"): at one model and budget, the optimal AdamW weight
decay against batch size, and whether the AdamW timescale tau = B / (eta lambda D) stays constant at the
optimum (notebook `power_weight_decay`).

eta at each batch size is WSD's best grid LR for this budget in `power_lr_surface` (read from its store; its
runs are swept first). D is the budget in sequences, so tau is the share of the data over which AdamW's
decay averages the updates (Wang and Aitchison; Bergsma et al. find tau_opt about constant in B and N).
Runs: a factor-~3 weight-decay grid per batch size (seed 0), then 3 seeds at the best decay and its neighbours.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication import plots
from replication.claims import claim
from replication.params import experiment
from replication.papers.power import common, lr_surface
from replication.verdicts import DRAWS, MIN_STEPS

REQUIRES = ("power_lr_surface",)
KEYS = ("batch_sizes", "tokens", "weight_decays", "max_extension", "seeds")


def learning_rates(exp, params: dict, results_root="results") -> dict[int, float]:
    """Batch size -> WSD's best grid LR at this budget in power_lr_surface (raises while it is incomplete)."""
    s = common.settings(exp, KEYS)
    best = lr_surface.optima(lr_surface.complete_table(experiment(params, "power_lr_surface", exp.profile), params, results_root))
    best = best[best["tokens"] == s["tokens"]].set_index("batch_size")["best_lr"]
    missing = [b for b in s["batch_sizes"] if b not in best.index]
    if missing:
        raise RuntimeError(f"power_lr_surface has no optimum at {s['tokens']:,} tokens for batch size(s) {missing}")
    return {b: float(best.loc[b]) for b in s["batch_sizes"]}


def spec(exp, batch_size: int, lr: float, wd: float, seed: int):
    s = common.settings(exp, KEYS)
    return exp.derived({"batch_size": batch_size, "optimizer.lr": lr, "optimizer.weight_decay": wd, "seed": seed, "tokens": s["tokens"]},
                       "settings")


def _label(spec) -> dict:
    return {"wd": spec.optimizer.weight_decay}


def _decays(s: dict, low: int, high: int) -> list[float]:
    """The weight-decay grid with `low` / `high` more values below / above, at the ratio of its first two."""
    wds = sorted(s["weight_decays"])
    ratio = wds[1] / wds[0]
    for _ in range(low):
        wds.insert(0, float(f"{wds[0] / ratio:.4g}"))
    for _ in range(high):
        wds.append(float(f"{wds[-1] * ratio:.4g}"))
    return wds


def runs(exp, params: dict, results_root="results") -> list:
    """Per batch size at its tuned LR: the decay grid (seed 0, extended past an edge optimum), then the
    other seeds at the best decay and its neighbours."""
    s = common.settings(exp, KEYS)
    out = []
    for b, lr in learning_rates(exp, params, results_root).items():
        make = lambda wd, seed=s["seeds"][0], b=b, lr=lr: spec(exp, b, lr, wd, seed)
        wds, best = common.grid_past_edges(exp, lambda low, high: _decays(s, low, high), make, s["max_extension"], results_root, _label, "wd")
        out += [make(wd) for wd in wds] + [make(wd, seed) for wd in common.around(wds, best or []) for seed in s["seeds"][1:]]
    return list(dict.fromkeys(out))


def table(exp, params: dict, results_root="results") -> pd.DataFrame:
    return common.loss_table(exp, runs(exp, params, results_root), results_root, _label)


def timescale(batch_size, lr, wd, tokens: int, seq_len: int):
    """tau = B / (eta lambda D), D the budget in sequences: AdamW's averaging window as a share of the data."""
    return np.asarray(batch_size, dtype=float) / (np.asarray(lr) * np.asarray(wd) * (tokens / seq_len))


def measure(table: pd.DataFrame, s: dict, seq_len: int, draws: int = DRAWS) -> dict:
    positive = table[table["wd"] > 0]
    lrs = table.groupby("batch_size")["lr"].first()

    def fits(best: pd.DataFrame) -> tuple[pd.DataFrame, float]:
        best["lr"] = best["batch_size"].map(lrs)
        best["tau"] = timescale(best["batch_size"], best["lr"], best["optimal_wd"], s["tokens"], seq_len)
        ok = decisive(best)
        return best, common.slope(ok["batch_size"], ok["tau"])

    best, point = fits(common.optima(positive, ["batch_size"], x="wd"))
    resampled = [fits(b)[1] for b in common.optima_draws(positive, ["batch_size"], x="wd", draws=draws)]
    return {"best": best, "tau_slope": point, "draws": resampled}


def decisive(best: pd.DataFrame) -> pd.DataFrame:
    """Optima that may decide: >= 250 steps, inside the grid, and resolved (the loss is not flat around them)."""
    return common.verdict_cells(best)[lambda f: f["resolved"]]


def claims(m: dict, s: dict) -> list[dict]:
    ok = decisive(m["best"])
    flat = common.verdict_cells(m["best"])[lambda f: ~f["resolved"]]
    measurement = common.interval_measurement(
        m["tau_slope"], m["draws"], ok, ok["batch_size"].nunique() >= 2,
        f"{len(ok)} batch size(s) with a resolved optimal weight decay (inside the grid, >= {MIN_STEPS} steps, both neighbours "
        f"worse beyond the t critical value x SE); need 2"
        + (f": the loss is flat around the best decay at B = {', '.join(map(str, flat['batch_size']))}" if len(flat) else ""))
    lam = ", ".join(f"B={int(r.batch_size)}: {r.optimal_wd:.3g}" for r in m["best"].itertuples())
    return [claim("power.weight_decay.timescale_constant",
                  f"optimal weight decay {lam}; " + (f"tau_opt ~ B^{m['tau_slope']:.2f}" if np.isfinite(m["tau_slope"])
                                                     else "too few resolved optima for a tau_opt trend"), measurement)]


def figure(table: pd.DataFrame, m: dict, s: dict):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    positive = table[table["wd"] > 0]
    common.plot_loss_curves(ax, positive, "batch_size", {"tokens": s["tokens"]}, m["best"], x="wd", label=lambda b: f"B={b}")
    ax.set_title(f"Loss against AdamW weight decay, T = {s['tokens']:,} (each B at its tuned LR)", fontsize=9)
    ax = axes[1]
    best = m["best"]
    kinds = set()
    for _, row in best.iterrows():  # single points, not a line: an unresolved optimum joined to its neighbours would read as a trend
        kind = common.optimum_kind(row)
        kinds.add(kind)
        plots.mark(ax, row["batch_size"], row["tau"], plots.batch_colour(row["batch_size"]), kind, ms=7)
    ax.plot([], [], "o", color="0.3", label="tau at the optimal decay")
    ax.set(yscale="log", ylabel="tau = B / (eta lambda D)")
    plots.batch_axis(ax, best["batch_size"])
    trend = f"tau ~ B^{m['tau_slope']:.2f}" if np.isfinite(m["tau_slope"]) else "no trend: too few resolved optima"
    ax.set_title(f"AdamW timescale at the optimum: {trend}\n(Power Lines: constant)", fontsize=9)
    plots.marker_legend(ax, sorted(kinds - {"cell"}), fontsize=7)
    fig.tight_layout()
    return fig
