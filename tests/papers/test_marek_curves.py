"""Marek et al., the loss-curve arms: the analyses on synthetic run tables whose answers are known."""

import numpy as np

from replication.papers.marek import curves
from replication.papers.marek.beta2 import with_beta2
from tests.papers.marek_tables import SEQ, runs_table


def test_curve_arms_pick_each_series_best_lr_and_keep_missing_ones_visible():
    beta2_runs = with_beta2(runs_table([
        {"batch_size": 64, "optimizer.lr": 1e-3, "final_val_loss": 3.3},
        {"batch_size": 64, "optimizer.lr": 3e-3, "final_val_loss": 3.2},
        {"batch_size": 1, "optimizer.lr": 1e-3, "final_val_loss": 3.6},
        {"batch_size": 1, "optimizer.beta2_half_life_tokens": 5e4, "final_val_loss": 3.1},
    ]), SEQ)
    optimizers = runs_table([{"batch_size": 1, "optimizer.name": "adafactor", "final_val_loss": 3.11},
                        {"batch_size": 1, "optimizer.name": "sgd", "final_val_loss": np.nan, "status": "diverged"}])
    arms = curves.curve_arms(beta2_runs, optimizers)
    assert arms["loss"].tolist()[:4] == [3.2, 3.6, 3.1, 3.11] and np.isnan(arms["loss"].iloc[4])
    assert arms["outcome"].iloc[4] == "every LR diverged"
    verdicts = [c["verdict"] for c in curves.curve_claims(arms, tolerance=0.02)]
    assert verdicts == ["confirmed", "confirmed", "confirmed", "not confirmed"]  # SGD diverged at every LR
    assert curves.curve_claims(arms.assign(outcome=["ok"] * 4 + ["no runs"]), 0.02)[3]["verdict"] == "not tested at this scale"
