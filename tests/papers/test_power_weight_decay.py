"""power_weight_decay: the AdamW timescale at the optimum, on a synthetic surface that holds it constant."""

import numpy as np
import pandas as pd
import pytest

from replication.papers.power import weight_decay


@pytest.mark.slow
def test_a_constant_timescale_is_found_constant():
    tokens, seq_len, tau = 327680, 32, 0.2
    rng = np.random.default_rng(0)
    rows = []
    for b, lr in ((4, 5e-3), (8, 7e-3), (16, 1e-2), (32, 1.4e-2)):
        best = b / (lr * tau * tokens / seq_len)  # lambda_opt for the timescale tau
        for k in (-2, -1, 0, 1, 2):
            wd = float(f"{best * 3.0 ** (k + 0.2):.4g}")
            rows += [{"batch_size": b, "lr": lr, "wd": wd, "seed": s, "tokens": tokens, "steps": tokens // (b * seq_len),
                      "loss": 5 + 0.02 * np.log(wd / best) ** 2 + 0.001 * rng.standard_normal()} for s in range(3)]
    m = weight_decay.measure(pd.DataFrame(rows), {"tokens": tokens}, seq_len)
    assert m["best"]["tau"].to_numpy() == pytest.approx(tau, rel=0.15)
    assert m["tau_slope"] == pytest.approx(0.0, abs=0.1)
    assert weight_decay.claims(m, {"tokens": tokens})[0]["verdict"] == "confirmed"


def test_timescale_is_batch_over_lr_decay_and_data():
    assert weight_decay.timescale(8, 1e-2, 0.5, 32768, 32) == pytest.approx(8 / (1e-2 * 0.5 * 1024))
