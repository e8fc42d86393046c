"""Marek et al., robustness over LR x beta1: the analyses on synthetic run tables whose answers are known."""

import numpy as np
import pytest

from replication.papers.marek import robustness
from tests.papers.marek_tables import runs_table


def test_robustness_table_and_claims_on_a_flat_and_a_sharp_surface():
    rows = []
    for lr in (1e-3, 3e-3, 1e-2):
        for b1 in (0.0, 0.5, 0.9):
            for seed in range(3):
                rows.append({"batch_size": 1, "optimizer.lr": lr, "optimizer.beta1": b1, "seed": seed, "steps": 19200,
                             "final_val_loss": 3.0 + 0.01 * (lr == 1e-2) + 0.001 * (lr == 1e-3) + 0.002 * seed})
                sharp = 3.0 if (lr, b1) == (3e-3, 0.9) else (np.nan if lr == 1e-2 else 3.5 - 0.3 * b1 + 0.01 * (lr == 1e-3))
                rows.append({"batch_size": 64, "optimizer.lr": lr, "optimizer.beta1": b1, "seed": seed, "steps": 300,
                             "final_val_loss": sharp + 0.002 * seed})
    runs = runs_table(rows)
    table = robustness.robustness_table(runs, tolerance=0.05).set_index("batch_size")
    assert table.loc[1, "fraction_within_tolerance"] == 1.0  # every best cell at the middle LR: none on the grid edge
    assert table.loc[64, "fraction_within_tolerance"] == pytest.approx(1 / 9)
    assert table.loc[64, "diverged"] == 3 and table.loc[1, "cost_of_beta1_0"] == 0.0
    assert table.loc[64, "cost_of_beta1_0"] == pytest.approx(0.5)
    claims = robustness.robustness_claims(table.reset_index(), runs, tolerance=0.05)
    # beta1 = 0 costs exactly nothing at B=1: with 3 seeds an equivalence without an allowance stays within noise
    # (the t interval of a zero difference is 2.27 seed sd wide, over the 2 sd tolerance); at B=64 it costs 0.5
    assert [c["verdict"] for c in claims] == ["confirmed", "partly"]
    assert "beta1_0_fine_at_small_batch: within noise" in claims[1]["reason"] and "beta1_0_hurts_at_large_batch: confirmed" in claims[1]["reason"]
    flat_everywhere = runs.assign(final_val_loss=3.0 + 0.0001 * (runs["optimizer.lr"] != 3e-3) + 0.002 * runs["seed"])  # best at the middle LR
    verdicts = [c["verdict"] for c in robustness.robustness_claims(
        robustness.robustness_table(flat_everywhere, 0.05), flat_everywhere, tolerance=0.05)]
    assert verdicts == ["within noise", "within noise"]  # equally robust; beta1 = 0 costs nothing at either batch size
    tied = runs.assign(final_val_loss=3.0 + 0.002 * runs["seed"])  # an exact tie picks the smallest LR: the grid edge
    assert {c["verdict"] for c in robustness.robustness_claims(robustness.robustness_table(tied, 0.05), tied, 0.05)} == {"not testable at this scale"}


def test_a_best_lr_on_the_edge_of_the_grid_decides_nothing():
    rows = [{"batch_size": b, "optimizer.lr": lr, "optimizer.beta1": b1, "seed": seed, "steps": 300,
             "final_val_loss": 3.0 + (0.2 if b == 16 else 0.01) * np.log10(lr / (1e-3 if b == 16 else 3e-3)) ** 2 + 0.1 * (b1 == 0.0) * (b == 16) + 0.002 * seed}
            for b in (1, 16) for lr in (1e-3, 3e-3, 1e-2) for b1 in (0.0, 0.9) for seed in range(3)]
    runs = runs_table(rows)
    claims = robustness.robustness_claims(robustness.robustness_table(runs, 0.05), runs, tolerance=0.05)
    assert claims[0]["verdict"] == "not testable at this scale"  # B=16 is best at the smallest LR tried
    assert claims[0]["reason"].startswith("best LR on the grid edge at B=16")
    parts = claims[1]["measurement"]["parts"]
    assert "edges" not in parts["beta1_0_fine_at_small_batch"] and "edges" in parts["beta1_0_hurts_at_large_batch"]
