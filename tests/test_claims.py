"""Shared claim helpers: a claim is decided by its ledger rule, and the step-starvation caveat."""

import pandas as pd
import pytest

from replication.claims import claim, few_steps_caveat
from replication.ledger import LedgerError


def test_few_steps_caveat_names_the_starved_batch_sizes():
    runs = pd.DataFrame({"batch_size": [1, 64, 256], "steps": [1562, 24, 6]})
    text = few_steps_caveat(runs)
    assert "B=64 trains for 24" in text and "B=256 trains for 6" in text and "B=1 " not in text
    assert few_steps_caveat(runs.assign(steps=[5000, 500, 250])) is None  # 250 steps is enough (MIN_STEPS)
    assert "B=256 trains for 249" in few_steps_caveat(runs.assign(steps=[5000, 500, 249]))


def test_a_claim_takes_its_words_and_rule_from_the_ledger():
    c = claim("marek.memory.lean_optimizers_save_memory", "SGD saves 45 %", {"value": 0.45})
    assert c["verdict"] == "confirmed" and c["claim"].startswith("At batch size 1, SGD and Adafactor")
    assert claim("marek.memory.lean_optimizers_save_memory", "SGD saves 10 %", {"value": 0.10})["verdict"] == "not confirmed"
    with pytest.raises(LedgerError, match="'marek.memory.typo' is not in any ledger"):
        claim("marek.memory.typo", "", {})


def test_grid_edges_name_each_hyperparameter_on_its_edge_and_the_cell():
    from replication.claims import grid_edges
    from replication.fit import best_per_group

    runs = pd.DataFrame({"batch_size": [1] * 3 + [16] * 3, "optimizer.lr": [0.01, 0.02, 0.04] * 2,
                         "final_val_loss": [3.0, 2.9, 3.1, 3.3, 3.2, 3.1], "status": "ok", "seed": 0})
    best = best_per_group(runs, ["batch_size"], ["optimizer.lr"])
    assert list(best["edge_on"]) == ["", "optimizer.lr"]
    assert grid_edges(best, ["batch_size"], {"optimizer.lr": "LR"}) == [{"hyperparameter": "LR", "cell": "B=16"}]
    assert grid_edges(best[best["batch_size"] == 1], ["batch_size"]) == []
