"""Marek et al., the loss-curve arms: the analyses on synthetic run tables whose answers are known."""

import numpy as np
import pytest

from replication.papers.marek import curves
from replication.papers.marek.beta2 import with_beta2
from tests.papers.marek_tables import SEQ, runs_table

STEPS = {1: 19200, 64: 300, 256: 75}  # B=256 trains for fewer than 250 steps


def _seeded(rows):
    return runs_table([{**r, "seed": s, "steps": STEPS[r["batch_size"]], "final_val_loss": r["final_val_loss"] + 0.004 * s}
                       for r in rows for s in range(3)])


BETA2 = [{"batch_size": 64, "optimizer.lr": 1e-3, "final_val_loss": 3.3},
         {"batch_size": 64, "optimizer.lr": 3e-3, "final_val_loss": 3.2},  # beta1 untuned, beta2 0.95: not the baseline
         {"batch_size": 1, "optimizer.lr": 1e-3, "final_val_loss": 3.6},
         {"batch_size": 1, "optimizer.beta2_half_life_tokens": 5e4, "final_val_loss": 3.1}]
TUNED = [{"batch_size": 64, "optimizer.lr": lr, "optimizer.beta1_half_life_tokens": h, "final_val_loss": loss}
         for lr, h, loss in ((1e-3, 800.0, 3.15), (3e-3, 800.0, 3.10), (3e-3, 100.0, 3.14), (3e-3, 6400.0, 3.12))]
OTHERS = [{"batch_size": 256, "optimizer.beta1_half_life_tokens": 800.0, "final_val_loss": 2.9},  # too few steps to be the baseline
          {"batch_size": 1, "optimizer.name": "adafactor", "final_val_loss": 3.10},
          {"batch_size": 1, "optimizer.name": "sgd", "final_val_loss": np.nan, "status": "diverged"}]


def test_curve_arms_take_the_tuned_large_batch_baseline_and_keep_missing_ones_visible():
    beta2_runs = with_beta2(_seeded(BETA2), SEQ)
    arms = curves.curve_arms(beta2_runs, _seeded(TUNED + OTHERS))
    assert arms["label"].iloc[0] == "AdamW B=64, tuned LR and beta1 half-life" and arms["source"].iloc[0] == "optimizers"
    assert arms["loss"].tolist()[:4] == pytest.approx([3.104, 3.604, 3.104, 3.104]) and np.isnan(arms["loss"].iloc[4])
    assert arms["outcome"].iloc[4] == "every setting diverged" and set(arms["edge_on"]) == {""}
    verdicts = [c["verdict"] for c in curves.curve_claims(arms)]
    assert verdicts == ["confirmed", "confirmed", "confirmed", "not confirmed"]  # SGD diverged at every LR
    untuned = curves.curve_arms(beta2_runs, _seeded(TUNED + OTHERS), tuned_baseline=False)  # when the setups differ
    assert untuned["source"].iloc[0] == "beta2" and untuned["loss"].iloc[0] == pytest.approx(3.204)
    no_sgd = arms.assign(outcome=["ok"] * 4 + ["no runs"], losses=list(arms["losses"].iloc[:4]) + [[]])
    assert curves.curve_claims(no_sgd)[3]["verdict"] == "not testable at this scale"
    starved = arms.assign(steps=[24, 19200, 19200, 19200, 19200])  # the large-batch baseline takes 24 steps
    assert curves.curve_claims(starved)[0]["verdict"] == "not testable at this scale"


def test_a_baseline_best_on_the_edge_of_its_grid_decides_nothing():
    edge = [{**r, "final_val_loss": 3.05} if r["optimizer.beta1_half_life_tokens"] == 6400.0 else r for r in TUNED]
    arms = curves.curve_arms(with_beta2(_seeded(BETA2), SEQ), _seeded(edge + OTHERS))
    assert arms["edge_on"].iloc[0] == "optimizer.beta1_half_life_tokens"
    claims = curves.curve_claims(arms)
    assert claims[0]["verdict"] == "not testable at this scale"
    assert claims[0]["reason"] == "best beta1 half-life on the grid edge at AdamW B=64, tuned LR and beta1 half-life (would need: the grid extended past that edge until the best cell is interior)"
    assert claims[1]["verdict"] == "confirmed"  # the two batch-size-1 Adam arms do not involve the baseline
