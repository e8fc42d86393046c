"""zhang_linear_regression on the smoke problem: S(B) per n and M, B* grows with n, not with a large M."""

import pytest

from replication.params import experiment, load_params
from replication.papers.zhang import linear_regression


@pytest.mark.slow
def test_the_critical_batch_size_grows_with_samples_not_with_a_large_model():
    exp = experiment(load_params("params.yaml"), "zhang_linear_regression", "smoke")
    steps, fits = linear_regression.compute(exp, progress=False)
    by_n = fits[fits["sweep"] == "n"].sort_values("n")
    assert by_n["b_star"].is_monotonic_increasing
    claims, measurement = linear_regression.claims(steps, fits, exp)
    assert [c["id"] for c in claims] == ["zhang.linear_regression.cbs_grows_with_n", "zhang.linear_regression.cbs_independent_of_m"]
    assert 0.3 < measurement["estimate"] < 0.9 and measurement["exact"]
    assert claims[1]["verdict"] == "confirmed"
    assert linear_regression.runs(exp, {}) == []
