"""Marek et al., the loss-curve arms: the analyses on synthetic run tables whose answers are known."""

import numpy as np
import pytest

from replication.papers.marek import curves
from replication.papers.marek.beta2 import with_beta2
from tests.papers.marek_tables import SEQ, runs_table


def test_curve_arms_pick_each_series_best_lr_and_keep_missing_ones_visible():
    rows = [{"batch_size": 64, "optimizer.lr": 1e-3, "final_val_loss": 3.3},
            {"batch_size": 64, "optimizer.lr": 3e-3, "final_val_loss": 3.2},
            {"batch_size": 1, "optimizer.lr": 1e-3, "final_val_loss": 3.6},
            {"batch_size": 1, "optimizer.beta2_half_life_tokens": 5e4, "final_val_loss": 3.1}]
    seeded = lambda rows: runs_table([{**r, "seed": s, "steps": 300 if r["batch_size"] == 64 else 19200,
                                       "final_val_loss": r["final_val_loss"] + 0.004 * s} for r in rows for s in range(3)])
    beta2_runs = with_beta2(seeded(rows), SEQ)
    optimizers = seeded([{"batch_size": 1, "optimizer.name": "adafactor", "final_val_loss": 3.10},
                         {"batch_size": 1, "optimizer.name": "sgd", "final_val_loss": np.nan, "status": "diverged"}])
    arms = curves.curve_arms(beta2_runs, optimizers)
    assert arms["loss"].tolist()[:4] == pytest.approx([3.204, 3.604, 3.104, 3.104]) and np.isnan(arms["loss"].iloc[4])
    assert arms["outcome"].iloc[4] == "every LR diverged"
    verdicts = [c["verdict"] for c in curves.curve_claims(arms)]
    assert verdicts == ["confirmed", "confirmed", "confirmed", "not confirmed"]  # SGD diverged at every LR
    no_sgd = arms.assign(outcome=["ok"] * 4 + ["no runs"], losses=list(arms["losses"].iloc[:4]) + [[]])
    assert curves.curve_claims(no_sgd)[3]["verdict"] == "not testable at this scale"
    starved = arms.assign(steps=[24, 19200, 19200, 19200, 19200])  # the large-batch baseline takes 24 steps
    assert curves.curve_claims(starved)[0]["verdict"] == "not testable at this scale"
