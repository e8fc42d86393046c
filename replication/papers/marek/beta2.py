"""Marek et al.: beta2 held fixed vs its half-life held fixed in tokens, and the optimal half-life (notebook `marek_beta2`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication.claims import claim, grid_edges
from replication.fit import argmin_log_parabola, best_cell_runs, best_per_group, loglog_slope, trained_steps
from replication.half_life import beta_from_half_life, half_life_from_beta
from replication.experiments import reseeded, staged
from replication import plots
from replication.papers.marek.common import best_specs, decidable, refine_factor
from replication.verdicts import DRAWS, bootstrap, compare, t_critical

HALF_LIFE = "beta2_half_life"
NAMES = {"optimizer.lr": "LR", HALF_LIFE: "beta2 half-life"}  # hyperparameters in words, as edges name them


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
        decided = best[(best["regime"] == regime) & best["batch_size"].isin([small, other])]
        if edges := grid_edges(decided, ["regime", "batch_size"], NAMES):
            parts[part]["edges"] = edges
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


def optimum_slope(means: dict) -> float:
    """The log-log slope of the optimal half-life against batch size from {(batch size, half-life): mean
    loss}, located as `optimal_half_life` does (NaN with fewer than 3 optima): one bootstrap draw's refit."""
    grids = {}
    for (b, h), v in means.items():
        grids.setdefault(b, []).append((h, v))
    optima = [(b, argmin_log_parabola(*zip(*cells))) for b, cells in grids.items() if np.isfinite([v for _, v in cells]).any()]
    b, h = np.asarray([o for o in optima if np.isfinite(o[1]) and o[1] > 0], dtype=float).reshape(-1, 2).T
    return float(np.polyfit(np.log(b), np.log(h), 1)[0]) if len(b) >= 3 else np.nan


def unresolved_optima(sweep: pd.DataFrame) -> list[dict]:
    """Per batch size, the grid neighbours of the best half-life whose loss is within the seed noise of
    the best's (difference within the Student-t critical value times its standard error): there the grid
    cannot say on which side of the neighbour the optimum lies, so a slope through the optima is not
    resolved. Needs at least two seeds per cell (otherwise the seed gate decides)."""
    out = []
    for b, group in sweep.groupby("batch_size"):
        cells = {h: g["final_val_loss"] for h, g in group.groupby(HALF_LIFE)}
        means = pd.Series({h: v.mean() for h, v in cells.items()}).sort_index()
        if means.isna().all():
            continue
        grid, best = list(means.index), means.idxmin()
        i = grid.index(best)
        for h in grid[max(i - 1, 0):i] + grid[i + 1:i + 2]:
            m = compare(cells[h], cells[best])
            if m["difference"] is None or m["se"] is None or m.get("diverged"):
                continue
            t = t_critical(m["dof"])
            if m["difference"] <= t * m["se"]:
                out.append({"batch_size": b, "best": best, "neighbour": h, "difference": m["difference"], "se": m["se"], "t": t})
    return out


def half_life_share(optima: pd.DataFrame, tokens: float) -> float:
    """The largest optimal half-life over batch sizes as a share of the run's tokens (the ledger requires
    at most 10 %: a half-life near the run's length averages over most of it, so its optimum says little)."""
    h = optima["optimal_half_life"].dropna()
    return float(h.max() / tokens) if len(h) else float("nan")


def half_life_claims(sweep: pd.DataFrame, seq_len: int, tokens: float) -> list[dict]:
    """One claim for the half-life question: the log-log slope of the optimal half-life against batch size
    (0: constant in tokens, so the optimal beta2 moves towards 1 as B shrinks; 1: constant beta2), with a
    bootstrap over the seeds of every (batch size, half-life) cell. The measurement also reports the
    largest optimal half-life as a share of the run's `tokens` (the ledger's regime condition), the batch
    sizes whose best half-life sits on the edge of its grid, and those whose optimum the seed noise does
    not resolve (a grid neighbour within noise of the best)."""
    optima, fit = optimal_half_life(sweep, seq_len)
    if fit is None:
        return [claim("marek.beta2.half_life_constant", "fewer than 3 batch sizes with an optimum",
                      {"untestable": "fewer than 3 batch sizes with an optimal half-life"})]
    cells = {k: g["final_val_loss"] for k, g in sweep.groupby(["batch_size", HALF_LIFE])}

    n_seeds = min(len(v) for v in cells.values())  # attempts: a half-life that diverged at every seed is a result, not a missing cell
    share = half_life_share(optima, tokens)
    measurement = {"estimate": float(fit["slope"]), "n_seeds": int(n_seeds), "min_steps": min(trained_steps(sweep), default=None),
                   "draws": [round(float(d), 4) for d in bootstrap(cells, optimum_slope, draws=DRAWS)] if n_seeds > 1 else [],
                   "regime": {"half_life_share": share}}
    if edges := grid_edges(best_per_group(sweep, ["batch_size"], [HALF_LIFE]), ["batch_size"], NAMES):
        measurement["edges"] = edges
    close = unresolved_optima(sweep)
    if close:
        measurement["unresolved"] = "the optimal half-life is not resolved at " + ", ".join(
            f"B={c['batch_size']} ({c['neighbour']:,.0f} vs the best {c['best']:,.0f} tokens: {c['difference']:+.3f} nats, "
            f"within t = {c['t']:.2f} x SE {c['se']:.3f})" for c in close)
    b2 = optima.set_index("batch_size")["optimal_beta2"]
    words = (f"slope of log(optimal half-life) on log(B): {fit['slope']:.2f} (least-squares 95% CI {fit['ci_low']:.2f} to "
             f"{fit['ci_high']:.2f}, {fit['n']} batch sizes); optimal beta2 " + ", ".join(f"{v:.4f} at B={b}" for b, v in b2.items())
             + f"; the longest optimal half-life is {share:.0%} of the run's {tokens:,.0f} tokens")
    if edges:
        words += f"; best half-life on the grid edge at {', '.join(e['cell'] for e in edges)}"
    if close:
        words += "; optimum within the seed noise of a grid neighbour at " + ", ".join(dict.fromkeys(f"B={c['batch_size']}" for c in close))
    return [claim("marek.beta2.half_life_constant", words, measurement)]


def optimum_vs_batch_size(optima: pd.DataFrame, fit: dict | None, sweep: pd.DataFrame | None = None, tokens: float | None = None,
                          slope_draws: list[float] | None = None):
    """Left (with `sweep`): the loss at every grid half-life per batch size, mean over seeds with 95 % seed
    intervals, so one sees whether the optimum is resolved (a neighbour within the bars is not) and where
    it sits against 10 % of the run's `tokens` (the ledger's regime limit). Middle: the optimal beta2 per
    batch size; right: the optimal half-life in tokens with its log-log fit, the interval the verdict reads
    (the bootstrap over seeds, `slope_draws`) and the two slopes the question is between: 0 (the half-life
    is constant in tokens, Marek et al.) and 1 (beta2 is constant)."""
    fig, axes = plt.subplots(1, 3 if sweep is not None else 2, figsize=(15.6 if sweep is not None else 10.4, 4.0))
    if sweep is not None:
        grid, *axes = axes
        for b, group in sweep.groupby("batch_size"):
            colour = plots.batch_colour(b)
            cells = group.groupby(HALF_LIFE)["final_val_loss"]
            grid.errorbar(cells.mean().index, cells.mean().to_numpy(), yerr=[plots.seed_interval(v) for _, v in cells], marker="o", ms=4,
                          capsize=3, color=colour, label=f"B={b}")
            h = optima.loc[optima["batch_size"] == b, "optimal_half_life"]
            if len(h) and np.isfinite(h.iloc[0]):
                grid.axvline(h.iloc[0], color=colour, ls=":", lw=1)
        if tokens:
            grid.axvline(0.1 * tokens, color="k", lw=1)
            grid.annotate("10 % of the run", (0.1 * tokens, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                          textcoords="offset points", fontsize=7)
        grid.set_xscale("log")
        grid.set_xlabel("beta2 half-life (tokens)")
        grid.set_ylabel("validation loss (nats / token)")
        grid.set_title(plots.ERROR_BARS, fontsize=8)
        grid.legend(title="dotted: located optimum", fontsize=7, title_fontsize=7)
    left, right = axes
    unresolved = {c["batch_size"] for c in unresolved_optima(sweep)} if sweep is not None else set()
    kinds = set()
    for _, row in optima.iterrows():
        kind = "edge" if row["on_grid_edge"] else "unresolved" if row["batch_size"] in unresolved else "cell"
        kinds.add(kind)
        plots.mark(left, row["batch_size"], 1 - row["optimal_beta2"], plots.batch_colour(row["batch_size"]), kind)
        plots.mark(right, row["batch_size"], row["optimal_half_life"], plots.batch_colour(row["batch_size"]), kind)
    left.plot(optima["batch_size"], 1 - optima["optimal_beta2"], ":", color="0.5", lw=1)
    plots.batch_axis(left, optima["batch_size"])
    left.set_yscale("log")
    left.set_ylabel("1 - optimal beta2")
    sizes = optima["batch_size"].to_numpy(dtype=float)
    b = np.geomspace(sizes.min(), sizes.max(), 50)
    if fit is not None:
        centre = np.exp(fit["intercept"]) * b ** fit["slope"]
        if slope_draws:
            low, high = np.percentile(slope_draws, [2.5, 97.5])
            interval = f"[{low:.2f}, {high:.2f}], bootstrap over seeds, as the verdict reads it"
            pivot = np.exp(np.log(b).mean())  # the fan turns about the middle of the batch sizes
            fan = [centre * (b / pivot) ** (k - fit["slope"]) for k in (low, high)]
            right.fill_between(b, np.minimum(*fan), np.maximum(*fan), color=plots.FIT_COLOUR, alpha=0.2, lw=0)
        else:
            interval = "no interval: one seed"
        right.plot(b, centre, "-", color=plots.FIT_COLOUR, label=f"fit: slope {fit['slope']:.2f} {interval}")
        anchor = np.exp(np.log(optima["optimal_half_life"].dropna()).mean())
        for slope, words in ((0, "slope 0: constant in tokens (paper)"), (1, "slope 1: constant beta2")):
            right.plot(b, anchor * (b / np.exp(np.log(sizes).mean())) ** slope, "--" if slope == 0 else ":", color=plots.PAPER_COLOUR,
                       lw=1, label=words)
    plots.batch_axis(right, optima["batch_size"])
    right.set_yscale("log")
    right.set_ylabel("optimal beta2 half-life (tokens)")
    plots.marker_legend(right, sorted(kinds - {"cell"}), fontsize=7)
    fig.tight_layout()
    return fig


def beta1_sweep(optimizer_runs: pd.DataFrame | None) -> pd.DataFrame | None:
    """AdamW's beta1 half-life sweep of marek_optimizers: at each batch size, every run at the LR its beta1
    variants were trained at (that batch size's best LR), the grid's beta1 among them; None where that
    experiment's runs are not all stored or tuned no beta1."""
    if optimizer_runs is None:
        return None
    adamw = optimizer_runs[optimizer_runs["optimizer.name"] == "adamw"]
    if adamw["optimizer.beta1_half_life_tokens"].nunique() < 2:
        return None
    grid = adamw["optimizer.beta1_half_life_tokens"].mode().iloc[0]
    variants = adamw[adamw["optimizer.beta1_half_life_tokens"] != grid][["batch_size", "optimizer.lr"]].drop_duplicates()
    return adamw.merge(variants, on=["batch_size", "optimizer.lr"])


def hyperparameter_curves(lr_runs: pd.DataFrame, half_lives: pd.DataFrame, beta1_runs: pd.DataFrame | None):
    """The paper's hyperparameter-scaling figure at our scale: per batch size, the loss against (a) the LR
    (beta2's half-life fixed in tokens), (b) beta1's half-life in tokens (at each batch size's best LR in
    marek_optimizers, whose runs have their own LR grid and beta2 half-life), (c) 1 - beta2 and (d) beta2's
    half-life in tokens: (c) and (d) are the same runs, so the optimum that moves with B on one axis and stays
    put on the other is read off directly. Returns the figure and the runs each panel draws (`panel`, `x`)."""
    fig, grid = plt.subplots(2, 2, figsize=(11, 8.2), sharey=True)
    a, b1, b2, t2 = grid.ravel()
    fixed = lr_runs[lr_runs["regime"] == "fixed half-life"]
    sweep = half_lives.assign(one_minus_beta2=1 - half_lives["beta2"])
    panels = [(a, fixed, "optimizer.lr", "learning rate (as trained)", "(a) learning rate, beta2 half-life fixed"),
              (b1, beta1_runs, "optimizer.beta1_half_life_tokens", "beta1 half-life (tokens)",
               "(b) beta1 at each B's best LR (marek_optimizers' runs: own LRs, beta2 half-life)"),
              (b2, sweep, "one_minus_beta2", "1 - beta2", "(c) beta2, at each B's best LR"),
              (t2, sweep, HALF_LIFE, "beta2 half-life (tokens)", "(d) beta2 half-life: the same runs as (c)")]
    drawn = [frame.assign(panel=title.split(" ")[0], x=frame[x]) for _, frame, x, _, title in panels if frame is not None and len(frame)]
    bounds = []  # what sets the loss axis: each readable cell's mean and the ends of its seed interval
    for _, frame, x, *_ in panels:
        if frame is not None and len(frame):
            for _, g in plots.readable_runs(frame).groupby(["batch_size", x])["final_val_loss"]:
                mean, half = g.mean(), plots.seed_interval(g)
                bounds += [mean - half, mean + half] if np.isfinite(mean) else []
    top = plots.marker_height(bounds)
    kinds = set()
    for ax, frame, x, label, title in panels:
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(label)
        if frame is None or not len(frame):
            ax.text(0.5, 0.5, "no runs stored for this panel", ha="center", transform=ax.transAxes, fontsize=9)
            continue
        kinds |= plots.loss_by_batch_size(ax, frame, x, top=top)
        ax.set_xscale("log")
    plots.visible_range(a, [*bounds, *([top] if "diverged" in kinds else [])])
    for ax in (a, b2):
        ax.set_ylabel("final validation loss (nats / token)")
    a.legend(fontsize=7)
    plots.marker_legend(t2, sorted(kinds - {"cell"}), fontsize=7)
    fig.text(0.5, -0.01, plots.ERROR_BARS, ha="center", fontsize=8)
    fig.tight_layout()
    return fig, pd.concat(drawn, ignore_index=True) if drawn else pd.DataFrame()
