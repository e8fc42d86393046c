"""Marek et al. Fig. 1b: robustness to the learning rate and beta1 at small batch sizes (notebook `marek_robustness`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from replication.claims import claim, grid_edges
from replication.fit import best_per_group, fraction_within, trained_steps
from replication.verdicts import bootstrap_difference, compare


def runs(exp, params: dict, results_root="results") -> list:
    """Every run the notebook reads: the LR x beta1 grid at each batch size."""
    return exp.expand()


def robustness_table(runs: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per batch size: best loss, the fraction of the LR x beta1 grid within `tolerance` of it (diverged
    cells count as outside), the spread of the finite cells, and the cost of dropping momentum (beta1 = 0)."""
    rows = []
    for b, group in runs.groupby("batch_size"):
        cells = group.groupby(["optimizer.lr", "optimizer.beta1"])["final_val_loss"].mean()
        finite = cells.dropna()
        no_momentum = cells.xs(0.0, level="optimizer.beta1").min() if 0.0 in cells.index.get_level_values(1) else np.nan
        rows.append({
            "batch_size": b, "cells": len(cells), "diverged": int(cells.isna().sum()), "best_loss": finite.min(),
            "fraction_within_tolerance": fraction_within(cells.to_numpy(), tolerance),
            "spread": finite.max() - finite.min(), "cost_of_beta1_0": no_momentum - finite.min(),
        })
    return pd.DataFrame(rows)


def edges_at(runs: pd.DataFrame, batch_sizes, momentum_free: bool = False) -> list[dict]:
    """The `edges` of the cells a claim compares at `batch_sizes`: each one's best (LR, beta1) cell, and with
    `momentum_free` also its best LR at beta1 = 0, where that LR is on the edge of the LR grid. Only the LR
    counts (beta1 = 0 is a natural bound, and the beta1 grid spans the range the paper calls useful)."""
    runs = runs[runs["batch_size"].isin(list(batch_sizes))]
    by, names = ["batch_size", "optimizer.beta1"], {"optimizer.lr": "LR"}
    edges = grid_edges(best_per_group(runs, ["batch_size"], ["optimizer.lr", "optimizer.beta1"], edge_keys=["optimizer.lr"]), by, names)
    if momentum_free:
        edges += grid_edges(best_per_group(runs[runs["optimizer.beta1"] == 0.0], by, ["optimizer.lr"]), by, names)
    return edges


def robustness_claims(table: pd.DataFrame, runs: pd.DataFrame, tolerance: float) -> list[dict]:
    """Fig. 1b's claims between the smallest and the largest batch size, from every seed of every cell: the
    near-optimal share of the grid (its standard error by a bootstrap over seeds), and the cost of beta1 = 0."""
    t = table.set_index("batch_size")
    small, large = t.index.min(), t.index.max()
    keys = ["batch_size", "optimizer.lr", "optimizer.beta1"]
    cells = {k: g["final_val_loss"] for k, g in runs[runs["batch_size"].isin([small, large])].groupby(keys)}
    steps = trained_steps(runs[runs["batch_size"].isin([small, large])])

    def share(means: dict, b) -> float:
        return fraction_within(np.array([v for k, v in means.items() if k[0] == b]), tolerance)

    # a diverged seed is an outcome here (never near-optimal), not a missing seed
    robust = bootstrap_difference(cells, lambda means: share(means, small) - share(means, large), steps, diverged="inf")
    if edges := edges_at(runs, [small, large]):
        robust["edges"] = edges
    parts, words = {}, []
    for b, part in ((small, "beta1_0_fine_at_small_batch"), (large, "beta1_0_hurts_at_large_batch")):
        at_b = {k: v for k, v in cells.items() if k[0] == b}
        finite = {k: v.mean() for k, v in at_b.items() if v.notna().any()}
        no_momentum = {k: v for k, v in finite.items() if k[2] == 0.0}
        if not finite or not no_momentum:
            parts[part] = {"untestable": f"no finite cell{' with beta1 = 0' if finite else ''} at B={b}"}
            continue
        best, best_0 = min(finite, key=finite.get), min(no_momentum, key=no_momentum.get)
        parts[part] = compare(at_b[best_0], at_b[best], trained_steps(runs[runs["batch_size"] == b]))
        if edges := edges_at(runs, [b], momentum_free=True):
            parts[part]["edges"] = edges
        words.append(f"{parts[part]['difference']:.3f} at B={b}")
    return [
        claim("marek.robustness.small_batch_robust",
              f"share of the LR x beta1 grid within {tolerance} nats of the best cell: {t.loc[small, 'fraction_within_tolerance']:.0%} "
              f"at B={small}, {t.loc[large, 'fraction_within_tolerance']:.0%} at B={large}", robust),
        claim("marek.robustness.momentum_unneeded_at_b1",
              "best loss with beta1 = 0 minus the best overall: " + (", ".join(words) or "no comparison possible"), {"parts": parts}),
    ]
