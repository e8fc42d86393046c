"""Marek et al., 1-D sensitivity around each centre: the analyses on synthetic run tables whose answers are known."""

import numpy as np
import pandas as pd
import pytest

from replication.papers.marek import sensitivity
from replication.spec import ConfigError
from tests.papers.marek_tables import SEQ


class _Exp:
    """The parts of an Experiment the sensitivity helpers read."""

    class base:
        class data:
            seq_len = SEQ

        class optimizer:
            beta2_half_life_tokens = 30_000.0

    name = "marek_sensitivity"
    settings = {"centre_from": "marek_optimizers", "batch_sizes": [1, 256]}

def test_sensitivity_table_measures_change_from_the_centre_per_hyperparameter():
    best = pd.DataFrame({"batch_size": [1, 256], "optimizer.lr": [1e-3, 4e-3], "optimizer.beta1_half_life_tokens": [400.0, 6400.0]})
    centres = sensitivity.sensitivity_centres(_Exp, best)
    assert centres[256] == {"batch_size": 256, "optimizer.lr": 4e-3, "optimizer.beta1_half_life_tokens": 6400.0,
                           "optimizer.beta2_half_life_tokens": 30_000.0}
    with pytest.raises(ConfigError, match=r"no best AdamW cell at \[256\]"):
        sensitivity.sensitivity_centres(_Exp, best.iloc[:1])
    rows = []
    for b, centre in centres.items():
        steep = 0.01 if b == 1 else 0.2
        for seed in (0, 1, 2):
            rows.append({**centre, "seed": seed, "final_val_loss": 3.0 + 0.001 * seed})
            for key in sensitivity.SENSITIVITY_KEYS:
                for m in (0.125, 8.0):
                    loss = np.nan if (b == 256 and key == "optimizer.lr" and m == 8.0) else 3.0 + steep * abs(np.log2(m)) / 3
                    rows.append({**centre, key: centre[key] * m, "seed": seed, "final_val_loss": loss + 0.001 * seed})
    runs = pd.DataFrame(rows).assign(steps=300)
    table = sensitivity.sensitivity_table(runs, centres)
    assert len(table) == 2 * 3 * 3  # batch sizes x hyperparameters x (two multipliers and the centre)
    assert table.loc[table.multiplier == 1.0, "delta_loss"].tolist() == pytest.approx([0.0] * 6)
    small = table[(table.batch_size == 1) & (table.multiplier != 1.0)]
    assert small["delta_loss"].tolist() == pytest.approx([0.01] * 6)
    lr_large = table[(table.batch_size == 256) & (table.hyperparameter == "learning rate")].set_index("multiplier")["delta_loss"]
    assert lr_large[0.125] == pytest.approx(0.2) and np.isinf(lr_large[8.0])
    (c,) = sensitivity.sensitivity_claims(table, runs, centres)
    assert c["verdict"] == "confirmed" and c["measurement"]["parts"]["learning_rate"]["diverged"] == "a"
    best["edge_on"] = ["optimizer.beta1_half_life_tokens", ""]  # B=1's centre: the shortest beta1 half-life tried there
    (edged,) = sensitivity.sensitivity_claims(table, runs, centres, best)
    parts = edged["measurement"]["parts"]
    assert parts["beta1_half_life"]["edges"] == [{"hyperparameter": "beta1 half-life", "cell": "B=1"}]
    assert "edges" not in parts["learning_rate"] and edged["verdict"] == "not testable at this scale"
    low = runs.assign(batch_size=runs["batch_size"].replace({256: 16}))  # both batch sizes where the paper finds it flat
    low_centres = {16 if b == 256 else b: {**c, "batch_size": 16 if b == 256 else b} for b, c in centres.items()}
    (small_only,) = sensitivity.sensitivity_claims(sensitivity.sensitivity_table(low, low_centres), low, low_centres)
    assert small_only["verdict"] == "not testable at this scale" and "B <= 16" in small_only["reason"]
    flat = runs.assign(final_val_loss=3.0 + 0.001 * runs["seed"])
    assert sensitivity.sensitivity_claims(sensitivity.sensitivity_table(flat, centres), flat, centres)[0]["verdict"] == "within noise"
