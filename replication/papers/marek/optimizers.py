"""Marek et al. Fig. 1a: best loss against batch size for SGD, AdamW, Adafactor and Muon (notebook `marek_optimizers`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication.claims import claim, grid_edges
from replication.fit import best_cell_runs, best_per_group, trained_steps
from replication.experiments import reseeded, staged
from replication.half_life import beta_from_half_life
from replication.spec import get_dotted
from replication.papers.marek.common import ADAPTIVE, best_specs, decidable, refine_factor
from replication import plots
from replication.verdicts import MIN_STEPS, bootstrap_difference, compare


GROUP = ["optimizer.name", "batch_size"]
CELL = ["optimizer.lr", "optimizer.beta1_half_life_tokens"]  # what is tuned per (optimizer, batch size)
NAMES = {"optimizer.lr": "LR", "optimizer.beta1_half_life_tokens": "beta1 half-life"}  # in words, as edges name them
MOMENTUM_OFF = 0.01  # a beta1 below this keeps under 1 % of the previous step's momentum: momentum is off


def best_cells(runs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The best (LR, beta1 half-life) of each (optimizer, batch size), chosen on seed `seed` (the one every
    setting ran with) and measured over every seed of that cell. A best beta1 half-life at the short end of
    its grid where beta1 is already below MOMENTUM_OFF is at the end of beta1's range (no momentum), not of
    the grid: nothing shorter exists to try, so it is not an edge."""
    best = best_per_group(runs, GROUP, CELL, edge_keys=CELL, select_seed=seed)
    key = "optimizer.beta1_half_life_tokens"
    if "tokens" not in runs:  # no tokens per step to turn a half-life into beta1
        return best
    for i, row in best[best["edge_on"].fillna("").str.contains(key, regex=False)].iterrows():
        group = runs[(runs["optimizer.name"] == row["optimizer.name"]) & (runs["batch_size"] == row["batch_size"])]
        tokens_per_step = (group["tokens"] / group["steps"]).median()
        if row[key] == group[key].min() and beta_from_half_life(row[key], tokens_per_step) < MOMENTUM_OFF:
            edge_on = [k for k in row["edge_on"].split(",") if k != key]
            best.loc[i, "edge_on"], best.loc[i, "best_on_edge"] = ",".join(edge_on), bool(edge_on)
    return best


def with_edges(measurement: dict, best: pd.DataFrame, keys) -> dict:
    """`measurement` with the `edges` of the best cells among `keys` ((optimizer, batch size) pairs, the
    cells it decides on) that sit on the edge of their LR or beta1 half-life grid."""
    keys = set(keys)
    decided = best[[k in keys for k in zip(best["optimizer.name"], best["batch_size"])]]
    edges = grid_edges(decided, GROUP, NAMES)
    return {**measurement, "edges": edges} if edges else measurement


def compared(runs: pd.DataFrame, every_batch_size: tuple = ()) -> pd.DataFrame:
    """The runs of the cells a verdict compares: every optimizer at the smallest and the largest batch size
    with >= MIN_STEPS steps, and the optimizers in `every_batch_size` at each such batch size."""
    runs = decidable(runs)
    sizes = sorted(runs["batch_size"].unique())
    ends = {sizes[0], sizes[-1]} if sizes else set()
    return runs[runs["batch_size"].isin(ends) | runs["optimizer.name"].isin(every_batch_size)]


def runs(exp, params: dict, results_root="results") -> list:
    """Every run the notebook reads, each step known once the previous one is stored: the coarse grid; one
    refined LR per compared cell, a `settings.lr_refine_factor` step from its best coarse LR towards the
    better neighbour; beta1 tuned there by its half-life in tokens for the optimizers in
    `settings.tune_beta1` (as the paper tunes beta1 per batch size); then, up to `settings.max_extension`
    times, one step past the grid's edge for each best cell that sits on it (the LR by the refine factor,
    the beta1 half-life by the largest multiplier), so that the optimum a verdict reads is inside its grid;
    then the seeds of `settings.seeds_at_best` at the best cell. Follow-ups go only to the cells a verdict
    compares (`compared`): compute goes where it decides a verdict."""
    settings, seed = exp.settings, exp.base.seed
    every = tuple(settings.get("follow_up_every_batch_size", ()))

    def best(specs, table):
        table = table[table["seed"] == seed]
        return best_specs(specs, table, best_cells(compared(table, every), seed), GROUP, CELL)

    def past_edge(specs, table):
        steps = {"optimizer.lr": settings["lr_refine_factor"], "optimizer.beta1_half_life_tokens": max(settings["beta1_half_life_multipliers"])}
        table = table[table["seed"] == seed]
        cells = best_cells(compared(table, every), seed)
        return past_edges(best_specs(specs, table, cells, GROUP, CELL), table, cells, steps)

    def refined(specs, table):
        out = []
        for s in best(specs, table):
            cell = table[(table["optimizer.name"] == s.optimizer.name) & (table["batch_size"] == s.batch_size) & (table["seed"] == seed)]
            out.append(s.replace(**{"optimizer.lr": s.optimizer.lr * refine_factor(cell, s.optimizer.lr, settings["lr_refine_factor"])}))
        return out

    def beta1(specs, table):
        return [s.replace(**{"optimizer.beta1_half_life_tokens": s.optimizer.beta1_half_life_tokens * m})
                for s in best(specs, table) if s.optimizer.name in settings.get("tune_beta1", ()) and s.optimizer.beta1_half_life_tokens
                for m in settings["beta1_half_life_multipliers"]]

    def seeds(specs, table):
        chosen = best(specs, table)
        return reseeded(chosen, [s.hash for s in chosen], settings["seeds_at_best"])

    return staged(exp, results_root, [refined, beta1, *[past_edge] * settings.get("max_extension", 0), seeds])


def past_edges(best: list, runs: pd.DataFrame, cells: pd.DataFrame, steps: dict[str, float]) -> list:
    """For each best cell's spec in `best` whose row in `cells` (`best_cells`) has a hyperparameter on the edge
    of what its (optimizer, batch size) tried in `runs`, that spec one step (`steps[key]`, a factor) past the
    edge: below the smallest value tried or above the largest."""
    cells = cells.set_index(GROUP)
    out = []
    for s in best:
        group = runs[(runs["optimizer.name"] == s.optimizer.name) & (runs["batch_size"] == s.batch_size)]
        for key in filter(None, str(cells.loc[(s.optimizer.name, s.batch_size), "edge_on"]).split(",")):
            value = get_dotted(s.to_dict(), key)
            out.append(s.replace(**{key: value / steps[key] if value == group[key].min() else value * steps[key]}))
    return out


def optimizer_claims(best: pd.DataFrame, runs: pd.DataFrame) -> list[dict]:
    """The Fig. 1a claims, decided by the ledger's rules from every seed of each (optimizer, batch size)'s
    best cell (`runs`: every run `runs()` declares).
    Comparisons with a large batch use the largest batch size that trains for at least MIN_STEPS steps."""
    cells = best_cell_runs(runs, best, GROUP, CELL)
    loss = lambda name, b: cells[(name, b)]["final_val_loss"] if (name, b) in cells else pd.Series(dtype=float)
    steps = lambda *keys: [s for k in keys if k in cells for s in trained_steps(cells[k])]
    batch_sizes = sorted({b for _, b in cells})
    enough = sorted(set(decidable(runs)["batch_size"]))  # the largest batch a verdict compares trains >= MIN_STEPS
    small, large = batch_sizes[0], (enough if len(enough) >= 2 else batch_sizes)[-1]
    adaptive = lambda b: {n: loss(n, b) for n in ADAPTIVE if (n, b) in cells}
    mean = lambda means, b: {n: means[(n, b)] for n in ADAPTIVE if (n, b) in means}
    claims = []

    adam = {b: loss("adamw", b).mean() for b in batch_sizes if ("adamw", b) in cells}
    if len(adam) < 2 or small not in adam:
        claims.append(claim("marek.optimizers.small_batch_per_token", "AdamW has a finite loss at fewer than two batch sizes",
                            {"untestable": "AdamW has no finite loss at the smallest and another batch size"}))
    else:
        larger = [b for b in adam if b != small and (b in enough or len(enough) < 2)] or [b for b in adam if b != small]
        other = min(larger, key=adam.get)
        m = compare(loss("adamw", small), loss("adamw", other), steps(("adamw", small), ("adamw", other)))
        m = with_edges(m, best, [("adamw", small), ("adamw", other)])
        claims.append(claim("marek.optimizers.small_batch_per_token",
                            f"AdamW best loss {adam[small]:.3f} at B={small}; the best larger batch is B={other} ({adam[other]:.3f}); "
                            + ", ".join(f"{v:.3f} at B={b}" for b, v in adam.items()), m))

    if len(adaptive(small)) < 2 or len(adaptive(large)) < 2:
        claims.append(claim("marek.optimizers.adaptive_drift", "fewer than two adaptive optimizers at the smallest and largest batch size",
                            {"untestable": "fewer than two adaptive optimizers with a finite loss at the smallest and largest batch size"}))
    else:
        at_small = {n: v.mean() for n, v in adaptive(small).items()}
        worst, top = max(at_small, key=at_small.get), min(at_small, key=at_small.get)
        spread = lambda means, b: max(mean(means, b).values()) - min(mean(means, b).values())
        keys = [(n, b) for b in (small, large) for n in ADAPTIVE if (n, b) in cells]
        grows = bootstrap_difference({k: cells[k]["final_val_loss"] for k in keys},
                                     lambda means: spread(means, large) - spread(means, small), steps(*keys))
        close = with_edges(compare(loss(worst, small), loss(top, small), steps((worst, small), (top, small))), best,
                           [(worst, small), (top, small)])
        at_large = {n: v.mean() for n, v in adaptive(large).items()}  # the spread is decided by each end's best and worst
        grows = with_edges({**grows, "regime": {"large_batch_size": int(large)}}, best,
                           [(worst, small), (top, small), (max(at_large, key=at_large.get), large), (min(at_large, key=at_large.get), large)])
        claims.append(claim("marek.optimizers.adaptive_drift",
                            f"spread of the adaptive optimizers' best losses: {close['difference']:.3f} at B={small} "
                            f"({worst} behind {top}), {close['difference'] + grows['difference']:.3f} at B={large}",
                            {"parts": {"close_at_small_batch": close, "spread_grows": grows}}))

    sgd_batches = [b for b in batch_sizes if ("sgd", b) in cells and len(adaptive(b)) and (b in enough or len(enough) < 2)]
    if not sgd_batches or sgd_batches[0] != small:
        claims.append(claim("marek.optimizers.sgd_competitive_at_b1", "no SGD or adaptive cell to compare at the smallest batch size",
                            {"untestable": "no finite SGD and adaptive loss at the smallest batch size"}))
    else:
        top = min(adaptive(small), key=lambda n: adaptive(small)[n].mean())
        m = with_edges(compare(loss("sgd", small), loss(top, small), steps(("sgd", small), (top, small))), best, [("sgd", small), (top, small)])
        claims.append(claim("marek.optimizers.sgd_competitive_at_b1", f"SGD behind the best optimizer ({top}) by {m['difference']:.3f} at B={small}", m))
    if len(sgd_batches) < 2:
        claims.append(claim("marek.optimizers.sgd_gap_grows", "SGD has a finite loss at fewer than two batch sizes",
                            {"untestable": "SGD has a finite loss (beside an adaptive one) at fewer than two batch sizes"}))
    else:
        first, last = sgd_batches[0], sgd_batches[-1]
        keys = [("sgd", b) for b in (first, last)] + [(n, b) for b in (first, last) for n in ADAPTIVE if (n, b) in cells]
        gap = lambda means, b: means[("sgd", b)] - min(mean(means, b).values())
        m = bootstrap_difference({k: cells[k]["final_val_loss"] for k in keys}, lambda means: gap(means, last) - gap(means, first), steps(*keys))
        leaders = [(min(adaptive(b), key=lambda n: adaptive(b)[n].mean()), b) for b in (first, last)]  # the best adaptive decides each gap
        m = with_edges(m, best, [("sgd", first), ("sgd", last), *leaders])
        gaps = {b: loss("sgd", b).mean() - min(v.mean() for v in adaptive(b).values()) for b in sgd_batches}
        claims.append(claim("marek.optimizers.sgd_gap_grows",
                            "SGD's gap to the best adaptive optimizer: " + ", ".join(f"{g:.3f} at B={b}" for b, g in gaps.items())
                            + f" (B={first} to B={last}: {m['difference']:+.3f})", m))
    return claims


def lr_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the LR search: each optimizer's runs at its grid beta1 (the beta1 variants left out)."""
    beta1 = runs["optimizer.beta1_half_life_tokens"]
    grid = beta1.groupby(runs["optimizer.name"]).transform(lambda b: b.mode().iloc[0] if b.notna().any() else np.nan)
    return runs[(beta1 == grid) | (beta1.isna() & grid.isna())]


def best_loss_vs_batch_size(best: pd.DataFrame, ax=None):
    """Best loss per (optimizer, batch size) with 95 % seed intervals, in the workbook's visual language
    (`replication.plots`): one colour per optimizer, ticks only at the batch sizes run, faint connectors
    between them; a hollow cell trains for fewer than MIN_STEPS optimizer steps (in no verdict), a diamond is a
    best cell on the edge of its LR grid, an x a batch size where every setting diverged. Every batch size's
    step count is written under the axis; a best cell some of whose settings diverged says how many."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.8, 4.4))
    readable = best.loc[best["steps"] >= MIN_STEPS, "loss"] if (best["steps"] >= MIN_STEPS).any() else best["loss"]
    top = plots.marker_height(readable)
    kinds, extent = set(), []
    for j, (name, group) in enumerate(best.groupby("optimizer.name", sort=True)):
        colour, shift = plots.optimizer_colour(name), plots.dodge(j, best["optimizer.name"].nunique())
        group = group.sort_values("batch_size")
        ok = group[group["loss"].notna()]
        plots.connect_neighbours(ax, best["batch_size"], ok["batch_size"], ok["loss"], shift, ls=":", lw=1, color=colour, alpha=0.6)
        group = group.assign(batch_size=group["batch_size"] * shift)  # drawn shifted sideways from here on
        ok = group[group["loss"].notna()]
        bars = plots.t_interval(ok["loss_se"], ok["n_seeds"])
        ax.errorbar(ok["batch_size"], ok["loss"], yerr=bars, fmt="none", capsize=3, color=colour)
        extent += [*(ok["loss"] + bars)[ok["steps"] >= MIN_STEPS], *(ok["loss"] - bars)[ok["steps"] >= MIN_STEPS]]
        for _, row in ok[ok["n_diverged_settings"] > 0].iterrows():  # the best cell stands, but some of its LRs diverged
            ax.annotate(f"{int(row['n_diverged_settings'])} of {int(row['n_settings'])} settings diverged", (row["batch_size"], row["loss"]),
                        xytext=(-6, 0), textcoords="offset points", ha="right", va="center", fontsize=7, color=colour)
        for _, row in group.iterrows():
            kind = plots.cell_kind(row.get("steps"), bool(row.get("best_on_edge")), np.isfinite(row["loss"]))
            kinds.add(kind)
            plots.mark(ax, row["batch_size"], row["loss"] if kind != "diverged" else top, colour, kind)
        ax.plot([], [], "o:", color=colour, label=plots.optimizer_label(name))
    steps = best.groupby("batch_size")["steps"].max()
    for b, n in steps.items():
        ax.annotate(f"{int(n)} steps", (b, 0), xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points",
                    ha="center", fontsize=7, color="0.3" if n >= MIN_STEPS else plots.WARNING_COLOUR)
    plots.visible_range(ax, [*readable, *extent, *([top] if "diverged" in kinds else [])])
    plots.batch_axis(ax, best["batch_size"])
    ax.set_ylabel("best validation loss (nats / token)")
    plots.marker_legend(ax, sorted(kinds - {"cell"}), loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(plots.ERROR_BARS, fontsize=8)
    return ax


# ------------------------------------------------------------------------------ the toy quadratic (no training)
# Marek et al.'s utils/toy.ipynb (../shared/papers/marek.md): f(x, y) = x^2 + 10 y^2 under noisy gradients; a large
# batch takes few large steps with little noise, a small batch many small steps with much noise (the notebook's
# settings, not an equal budget of samples). SGD against SGD with momentum 0.4, the median over many runs with its
# interquartile range.
TOY_CURVATURE = (2.0, 20.0)  # the gradient of x^2 + 10 y^2 is (2x, 20y)
TOY_SETTINGS = {  # regime: steps, gradient-noise std, LR without / with momentum (the notebook's values)
    "large batch": {"steps": 10, "noise": 1 / 5, "lr": {0.0: 0.09, 0.4: 0.12}},
    "small batch": {"steps": 100, "noise": 1 / 0.3, "lr": {0.0: 0.012, 0.4: 0.012}},
}


def momentum_toy(steps: int, lr: float, momentum: float, noise: float, runs: int = 1000, start=(1.0, 1.0), seed: int = 0):
    """`runs` independent noisy descents of x^2 + 10 y^2 by torch.optim.SGD (one parameter row per run:
    SGD acts elementwise, so the rows never interact). Returns positions, shape (steps + 1, runs, 2)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    point = torch.tensor(start, dtype=torch.float64).repeat(runs, 1).requires_grad_(True)
    optimizer = torch.optim.SGD([point], lr=lr, momentum=momentum)
    curvature = torch.tensor(TOY_CURVATURE, dtype=torch.float64)
    path = [point.detach().clone()]
    for _ in range(steps):
        point.grad = curvature * point.detach() + noise * torch.randn(point.shape, generator=generator, dtype=torch.float64)
        optimizer.step()
        path.append(point.detach().clone())
    return torch.stack(path).numpy()


def momentum_toy_table(runs: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per regime, momentum and step: the median loss over `runs` and its interquartile range, and the median
    position (what the figure draws)."""
    rows = []
    for regime, s in TOY_SETTINGS.items():
        for momentum, lr in s["lr"].items():
            path = momentum_toy(s["steps"], lr, momentum, s["noise"], runs, seed=seed)
            loss = path[..., 0] ** 2 + 10 * path[..., 1] ** 2
            q25, q50, q75 = np.percentile(loss, [25, 50, 75], axis=1)
            x, y = (np.percentile(path[..., i], [25, 50, 75], axis=1) for i in (0, 1))
            rows += [{"regime": regime, "momentum": momentum, "lr": lr, "noise": s["noise"], "step": k, "loss_median": q50[k],
                      "loss_q25": q25[k], "loss_q75": q75[k], "x_median": x[1][k], "x_q25": x[0][k], "x_q75": x[2][k],
                      "y_median": y[1][k], "y_q25": y[0][k], "y_q75": y[2][k]} for k in range(len(q50))]
    table = pd.DataFrame(rows)
    table.attrs["runs"] = runs
    return table


def momentum_toy_figure(table: pd.DataFrame):
    """Top: the median path on the loss's contours with interquartile bars; bottom: the median loss with its
    interquartile band, per regime. SGD in its colour, plain without momentum and dashed with it. Momentum pays
    where steps are few and large (large batch) and not where they are many and small."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.6))
    gx, gy = np.meshgrid(np.linspace(-0.3, 1.1, 120), np.linspace(-1.6, 1.1, 120))
    for col, (regime, g) in enumerate(table.groupby("regime", sort=False)):
        plane, loss = axes[0, col], axes[1, col]
        plane.contour(gx, gy, gx ** 2 + 10 * gy ** 2, levels=np.geomspace(0.05, 12, 8), colors="0.8", linewidths=0.7)
        colour = plots.optimizer_colour("sgd")
        for momentum, h in g.groupby("momentum"):
            ls = "--" if momentum else "-"
            words = f"SGD, momentum {momentum:g}, LR {h['lr'].iloc[0]:g}" if momentum else f"SGD, no momentum, LR {h['lr'].iloc[0]:g}"
            plane.errorbar(h["x_median"], h["y_median"], xerr=[h["x_median"] - h["x_q25"], h["x_q75"] - h["x_median"]],
                           yerr=[h["y_median"] - h["y_q25"], h["y_q75"] - h["y_median"]], fmt=".", ls=ls, color=colour, ms=4, lw=1,
                           elinewidth=0.5, alpha=1.0 if momentum else 0.6, label=words)
            loss.plot(h["step"], h["loss_median"], ls, color=colour, label=words)
            loss.fill_between(h["step"], h["loss_q25"], h["loss_q75"], color=colour, alpha=0.25 if momentum else 0.12, lw=0)
        settings = TOY_SETTINGS[regime]
        plane.set_title(f"{regime}: {settings['steps']} steps, gradient noise std {settings['noise']:.2g}", fontsize=9)
        plane.set(xlabel="x", ylabel="y")
        loss.set(yscale="log", xlabel="step", ylabel="loss x^2 + 10 y^2")
        loss.set_title("median over the runs; band: interquartile range", fontsize=8)
        loss.legend(fontsize=7)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    runs = int(table.attrs.get("runs", 0)) or "many"
    fig.suptitle(f"Toy quadratic x^2 + 10 y^2: {runs} noisy runs per optimizer, the median of each coordinate (no training); "
                 "the paper's settings, not an equal budget of samples", fontsize=10)
    fig.tight_layout()
    return fig
