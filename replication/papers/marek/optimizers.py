"""Marek et al. Fig. 1a: best loss against batch size for SGD, AdamW, Adafactor and Muon (notebook `marek_optimizers`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication.claims import claim
from replication.fit import best_cell_runs, best_per_group
from replication.papers.marek.common import ADAPTIVE
from replication.plots import _marker_height
from replication.sweep import reseeded, stored_table
from replication.verdicts import bootstrap_difference, compare


def seeded_specs(exp, runs: pd.DataFrame) -> list:
    """The best LR of each (optimizer, batch size) with every seed in `settings.seeds_at_best`."""
    first = best_per_group(runs, ["optimizer.name", "batch_size"], ["optimizer.lr"])
    best_ids = runs.merge(first.dropna(subset=["loss"])[["optimizer.name", "batch_size", "optimizer.lr"]]).id
    return reseeded(exp.expand(), list(best_ids), exp.settings["seeds_at_best"])


def runs(exp, params: dict, results_root="results") -> list:
    """Every run the notebook reads: the grid, then the best cells re-seeded (known once the grid is stored)."""
    grid = exp.expand()
    table = stored_table(exp, grid, results_root)
    return grid if table is None else grid + seeded_specs(exp, table)


def optimizer_claims(best: pd.DataFrame, runs: pd.DataFrame) -> list[dict]:
    """The Fig. 1a claims, decided by the ledger's rules from every seed of each (optimizer, batch size)'s
    best cell (`runs`: the grid and the re-seeded best cells)."""
    cells = best_cell_runs(runs, best, ["optimizer.name", "batch_size"], ["optimizer.lr"])
    loss = lambda name, b: cells[(name, b)]["final_val_loss"] if (name, b) in cells else pd.Series(dtype=float)
    steps = lambda *keys: [s for k in keys if k in cells for s in cells[k]["steps"]]
    batch_sizes = sorted({b for _, b in cells})
    small, large = batch_sizes[0], batch_sizes[-1]
    adaptive = lambda b: {n: loss(n, b) for n in ADAPTIVE if (n, b) in cells}
    mean = lambda means, b: {n: means[(n, b)] for n in ADAPTIVE if (n, b) in means}
    claims = []

    adam = {b: loss("adamw", b).mean() for b in batch_sizes if ("adamw", b) in cells}
    if len(adam) < 2 or small not in adam:
        claims.append(claim("marek.optimizers.small_batch_per_token", "AdamW has a finite loss at fewer than two batch sizes",
                            {"untestable": "AdamW has no finite loss at the smallest and another batch size"}))
    else:
        other = min((b for b in adam if b != small), key=adam.get)
        m = compare(loss("adamw", small), loss("adamw", other), steps(("adamw", small), ("adamw", other)))
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
        close = compare(loss(worst, small), loss(top, small), steps((worst, small), (top, small)))
        claims.append(claim("marek.optimizers.adaptive_drift",
                            f"spread of the adaptive optimizers' best losses: {close['difference']:.3f} at B={small} "
                            f"({worst} behind {top}), {close['difference'] + grows['difference']:.3f} at B={large}",
                            {"parts": {"close_at_small_batch": close, "spread_grows": grows}}))

    sgd_batches = [b for b in batch_sizes if ("sgd", b) in cells and len(adaptive(b))]
    if not sgd_batches or sgd_batches[0] != small:
        claims.append(claim("marek.optimizers.sgd_competitive_at_b1", "no SGD or adaptive cell to compare at the smallest batch size",
                            {"untestable": "no finite SGD and adaptive loss at the smallest batch size"}))
    else:
        top = min(adaptive(small), key=lambda n: adaptive(small)[n].mean())
        m = compare(loss("sgd", small), loss(top, small), steps(("sgd", small), (top, small)))
        claims.append(claim("marek.optimizers.sgd_competitive_at_b1", f"SGD behind the best optimizer ({top}) by {m['difference']:.3f} at B={small}", m))
    if len(sgd_batches) < 2:
        claims.append(claim("marek.optimizers.sgd_gap_grows", "SGD has a finite loss at fewer than two batch sizes",
                            {"untestable": "SGD has a finite loss (beside an adaptive one) at fewer than two batch sizes"}))
    else:
        first, last = sgd_batches[0], sgd_batches[-1]
        keys = [("sgd", b) for b in (first, last)] + [(n, b) for b in (first, last) for n in ADAPTIVE if (n, b) in cells]
        gap = lambda means, b: means[("sgd", b)] - min(mean(means, b).values())
        m = bootstrap_difference({k: cells[k]["final_val_loss"] for k in keys}, lambda means: gap(means, last) - gap(means, first), steps(*keys))
        gaps = {b: loss("sgd", b).mean() - min(v.mean() for v in adaptive(b).values()) for b in sgd_batches}
        claims.append(claim("marek.optimizers.sgd_gap_grows",
                            "SGD's gap to the best adaptive optimizer: " + ", ".join(f"{g:.3f} at B={b}" for b, g in gaps.items())
                            + f" (B={first} to B={last}: {m['difference']:+.3f})", m))
    return claims


def best_loss_vs_batch_size(best: pd.DataFrame, labels: dict[str, str] | None = None, ax=None):
    """Best loss per (optimizer, batch size) with seed error bars; cells where every setting diverged
    are drawn as an x at the top of the axes, so they are never silently missing."""
    if ax is None:
        _, ax = plt.subplots()
    top = _marker_height(best["loss"])
    for i, (name, group) in enumerate(best.groupby("optimizer.name", sort=True)):
        group = group.sort_values("batch_size")
        colour = f"C{i}"
        ok = group[group["loss"].notna()]
        ax.errorbar(ok["batch_size"], ok["loss"], yerr=np.nan_to_num(ok["loss_se"].to_numpy()), marker="o", ms=4,
                    capsize=3, color=colour, label=(labels or {}).get(name, name))
        failed = group[group["loss"].isna()]
        if len(failed):
            ax.plot(failed["batch_size"], [top] * len(failed), "x", color=colour, ms=8, mew=2)
    if best["loss"].isna().any():
        ax.annotate("x: every setting diverged", (0.01, 0.99), xycoords="axes fraction", va="top", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (sequences)")
    ax.set_ylabel("best validation loss")
    ax.legend()
    return ax
