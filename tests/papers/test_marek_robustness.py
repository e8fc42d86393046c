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
                             "final_val_loss": 3.0 + 0.01 * (lr == 1e-2) + 0.002 * seed})
                sharp = 3.0 if (lr, b1) == (3e-3, 0.9) else (np.nan if lr == 1e-2 else 3.5 - 0.3 * b1)
                rows.append({"batch_size": 64, "optimizer.lr": lr, "optimizer.beta1": b1, "seed": seed, "steps": 300,
                             "final_val_loss": sharp + 0.002 * seed})
    runs = runs_table(rows)
    table = robustness.robustness_table(runs, tolerance=0.05).set_index("batch_size")
    assert table.loc[1, "fraction_within_tolerance"] == 1.0
    assert table.loc[64, "fraction_within_tolerance"] == pytest.approx(1 / 9)
    assert table.loc[64, "diverged"] == 3 and table.loc[1, "cost_of_beta1_0"] == 0.0
    assert table.loc[64, "cost_of_beta1_0"] == pytest.approx(0.5)
    verdicts = [c["verdict"] for c in robustness.robustness_claims(table.reset_index(), runs, tolerance=0.05)]
    assert verdicts == ["confirmed", "confirmed"]
    flat_everywhere = runs.assign(final_val_loss=3.0 + 0.002 * runs["seed"])
    verdicts = [c["verdict"] for c in robustness.robustness_claims(
        robustness.robustness_table(flat_everywhere, 0.05), flat_everywhere, tolerance=0.05)]
    assert verdicts == ["within noise", "partly"]  # equally robust; beta1 = 0 costs nothing at either batch size
