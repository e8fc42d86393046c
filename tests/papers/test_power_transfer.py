"""power_transfer: the base width is one model for both parameterizations, and the fits tell an optimum that
stays put (muP) from one that drifts (SP)."""

import pandas as pd
import pytest

from replication.papers.power import transfer
from replication.params import experiment, load_params
from tests.papers.test_power_lr_surface import synthetic_table

S = {"widths": [32, 64, 128], "base_width": 64, "batch_size": 4, "budgets": [40960, 81920, 163840]}


@pytest.mark.slow
def test_mup_keeps_the_optimum_and_sp_drifts_on_a_synthetic_surface():
    frames = []
    for width in S["widths"]:
        for param, drift in (("muP", 0.0), ("SP", -1.0)):
            law = lambda b, t, w=width, d=drift: 1e-2 * (w / 64) ** d * (t / 40960) ** -0.5
            frames.append(synthetic_table(law, batch_sizes=(4,), budgets=S["budgets"], width=width, param=param))
    m = transfer.measure(pd.concat(frames, ignore_index=True), S)
    assert m["point"]["muP_width_slope"] == pytest.approx(0.0, abs=0.05)
    assert m["point"]["SP_width_slope"] == pytest.approx(-1.0, abs=0.05)
    assert m["point"]["muP_b_trend"] == pytest.approx(0.0, abs=0.03)
    claims = {c["id"]: c for c in transfer.claims(m, S)}
    assert claims["power.transfer.optimal_lr_transfers_under_mup"]["verdict"] == "confirmed"
    assert claims["power.transfer.exponent_transfers_across_width"]["verdict"] == "confirmed"


def test_the_base_width_is_trained_once_for_both_parameterizations():
    params = load_params("params.yaml")
    exp = experiment(params, "power_transfer", "cpu")
    s = exp.settings
    assert transfer.spec(exp, s["base_width"], "muP", 1e-2, 0).hash == transfer.spec(exp, s["base_width"], "SP", 1e-2, 0).hash
    wide = transfer.spec(exp, 2 * s["base_width"], "muP", 1e-2, 0)
    assert wide.model.mup_base_width == s["base_width"]
