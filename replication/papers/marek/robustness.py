"""Marek et al. Fig. 1b: robustness to the learning rate and beta1 at small batch sizes (notebook `marek_robustness`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from replication.claims import verdict


def runs(exp, params: dict, results_root="results") -> list:
    """Every run the notebook reads: the LR x beta1 grid at each batch size."""
    return exp.expand()


def robustness_table(runs: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per batch size: best loss, the fraction of the LR x beta1 grid within `tolerance` of it (diverged
    cells count as outside), the spread of the finite cells, and the cost of dropping momentum (beta1 = 0)."""
    from replication.fit import fraction_within

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


def robustness_claims(table: pd.DataFrame, tolerance: float) -> list[dict]:
    t = table.set_index("batch_size")
    small, large = t.index.min(), t.index.max()
    f_small, f_large = t.loc[small, "fraction_within_tolerance"], t.loc[large, "fraction_within_tolerance"]
    c_small, c_large = t.loc[small, "cost_of_beta1_0"], t.loc[large, "cost_of_beta1_0"]
    return [
        {
            "id": "marek.robustness.small_batch_robust", "claim": "Small batches are robust to the learning rate and beta1: much more of the grid is near-optimal.",
            "paper": "GPT-2 124M: at B=1 almost every cell of a 64x LR range x beta1 in [0, 0.999] is near the best; at B=512 only a narrow band.",
            "measured": f"share of the grid within {tolerance} nats of the best: {f_small:.0%} at B={small}, {f_large:.0%} at B={large}",
            "verdict": verdict(bool(f_small >= f_large + 0.25), partly=bool(f_small > f_large)),
        },
        {
            "id": "marek.robustness.momentum_unneeded_at_b1", "claim": "Momentum is unnecessary at batch size 1 (beta1 = 0 costs little) but matters at large batch.",
            "paper": "B=1 with beta1 = 0 is near-optimal; at B=512 beta1 = 0 is far off the best band.",
            "measured": f"best loss with beta1 = 0 minus the best overall: {c_small:.3f} at B={small}, {c_large:.3f} at B={large}",
            "verdict": verdict(bool(c_small <= tolerance and c_large > tolerance), partly=bool(c_small < c_large)),
        },
    ]
