"""The shared verdict rules on synthetic measurements: each must pass where it should and fail where it should,
and every verdict must be reachable."""

import numpy as np
import pytest

from replication import verdicts as v
from replication.verdicts import RuleError, bootstrap, compare, decide

def _seeds(mean: float, sd: float = 0.01, n: int = 3) -> list[float]:
    """n per-seed losses with exactly this mean and sample standard deviation."""
    z = np.linspace(-1, 1, n)
    return list(mean + sd * z / z.std(ddof=1))


def test_compare_measures_the_difference_its_standard_error_and_the_seed_spread():
    m = compare(_seeds(3.10), _seeds(3.00), steps=[400, 300, 900])
    assert m["difference"] == pytest.approx(0.10) and m["seed_sd"] == pytest.approx(0.01)
    assert m["se"] == pytest.approx(np.sqrt(2 * 0.01**2 / 3)) and m["n_seeds"] == 3 and m["min_steps"] == 300


def test_difference_confirms_only_beyond_two_standard_errors_in_the_claimed_direction():
    assert decide("difference", {"expect": "higher"}, compare(_seeds(3.10), _seeds(3.00))).verdict == "confirmed"
    assert decide("difference", {"expect": "lower"}, compare(_seeds(3.10), _seeds(3.00))).verdict == "not confirmed"
    assert decide("difference", {"expect": "higher"}, compare(_seeds(3.012), _seeds(3.00))).verdict == "within noise"  # 1.5 SE


def test_equivalence_tolerates_two_seed_sds_plus_the_papers_own_gap():
    same = compare(_seeds(3.000), _seeds(3.000))
    assert decide("equivalent", {}, same).verdict == "confirmed"
    worse = compare(_seeds(3.10), _seeds(3.00))
    assert decide("equivalent", {}, worse).verdict == "not confirmed"
    assert decide("equivalent", {"allowance": 0.13}, worse).verdict == "confirmed"  # the paper calls a 0.13 gap competitive
    assert decide("equivalent", {}, compare(_seeds(3.02), _seeds(3.00))).verdict == "within noise"  # interval straddles 0.02


def test_a_bigger_seed_spread_widens_the_tolerance_it_is_never_a_fixed_constant():
    tight, loose = compare(_seeds(3.05, 0.005), _seeds(3.0, 0.005)), compare(_seeds(3.05, 0.05, n=12), _seeds(3.0, 0.05, n=12))
    assert decide("equivalent", {}, tight).verdict == "not confirmed"
    assert decide("equivalent", {}, loose).verdict == "confirmed"


def test_gates_few_seeds_and_few_steps_are_not_testable_at_this_scale():
    two_seeds = compare(_seeds(3.1, n=2), _seeds(3.0, n=2))
    assert decide("difference", {"expect": "higher"}, two_seeds).verdict == "not testable at this scale"
    starved = compare(_seeds(3.1), _seeds(3.0), steps=[24, 1000])
    decision = decide("equivalent", {}, starved)
    assert decision.verdict == "not testable at this scale" and "24 optimizer steps" in decision.reason
    assert decide("threshold", {"at_most": 1}, {"value": 0.5, "min_steps": 100}).verdict == "not testable at this scale"
    assert decide("equivalent", {}, {"untestable": "no runs"}).verdict == "not testable at this scale"


def test_a_cell_that_diverged_at_every_seed_is_infinitely_bad():
    m = compare([np.nan] * 3, _seeds(3.0))
    assert m["diverged"] == "a" and m["n_seeds"] == 3
    assert decide("equivalent", {}, m).verdict == "not confirmed"
    assert decide("difference", {"expect": "higher"}, m).verdict == "confirmed"
    assert decide("difference", {"expect": "higher"}, compare(_seeds(3.0), [None] * 3)).verdict == "not confirmed"


def _slope_measurement(true_slope: float, noise: float, n_seeds: int = 4, seed: int = 0) -> dict:
    """A log-log slope over 5 points, each the mean of n_seeds noisy seeds, with its bootstrap over seeds."""
    rng = np.random.default_rng(seed)
    x = np.log(np.array([1, 4, 16, 64, 256.0]))
    cells = {i: true_slope * xi + noise * rng.standard_normal(n_seeds) for i, xi in enumerate(x)}
    fit = lambda means: np.polyfit(x, [means[i] for i in range(len(x))], 1)[0]
    return {"estimate": fit({k: c.mean() for k, c in cells.items()}), "draws": list(bootstrap(cells, fit)), "n_seeds": n_seeds}


def test_interval_confirms_a_slope_in_range_and_reports_the_share_of_draws_that_keep_it():
    d = decide("interval", {"low": 0.3, "high": 0.7, "exclude": 0}, _slope_measurement(0.5, 0.02))
    assert d.verdict == "confirmed" and d.share > 0.95
    assert decide("interval", {"low": 0.3, "high": 0.7, "exclude": 0}, _slope_measurement(0.0, 0.02)).verdict == "not confirmed"
    noisy = decide("interval", {"low": 0.3, "high": 0.7, "exclude": 0}, _slope_measurement(0.5, 2.0))
    assert noisy.verdict == "partly" and noisy.share < 0.8  # in range, but the interval reaches 0


def test_threshold_and_all_of():
    assert decide("threshold", {"at_most": 1.5}, {"value": 0.9}).verdict == "confirmed"
    assert decide("threshold", {"at_least": 0.4}, {"value": 0.2}).verdict == "not confirmed"
    parts = {"a": {"rule": "difference", "params": {"expect": "higher"}}, "b": {"rule": "equivalent"}}
    yes, no = compare(_seeds(3.1), _seeds(3.0)), compare(_seeds(3.3), _seeds(3.0))
    assert decide("all_of", {"parts": parts}, {"parts": {"a": yes, "b": compare(_seeds(3.0), _seeds(3.0))}}).verdict == "confirmed"
    assert decide("all_of", {"parts": parts}, {"parts": {"a": yes, "b": no}}).verdict == "partly"
    assert decide("all_of", {"parts": parts}, {"parts": {"a": compare(_seeds(2.9), _seeds(3.0)), "b": no}}).verdict == "not confirmed"
    assert decide("all_of", {"parts": parts}, {"parts": {"a": compare(_seeds(3.0), _seeds(3.0)), "b": no}}).verdict == "within noise"
    assert decide("all_of", {"parts": parts}, {"untestable": "one optimizer only"}).verdict == "not testable at this scale"


def test_bad_rules_and_measurements_are_errors_that_name_the_problem():
    with pytest.raises(RuleError, match="unknown rule 'equal'"):
        decide("equal", {}, {})
    with pytest.raises(RuleError, match="takes allowance, not tolerance"):
        decide("equivalent", {"tolerance": 0.02}, {})
    with pytest.raises(RuleError, match="lacks se"):
        decide("difference", {}, {"difference": 0.1, "n_seeds": 3})
    with pytest.raises(RuleError, match="lacks part"):
        decide("all_of", {"parts": {"a": {"rule": "threshold"}}}, {"parts": {}})


def test_every_verdict_but_not_run_yet_is_reachable_from_a_rule():
    """("not run yet" belongs to the ledger: a metrics file that does not exist; see test_ledger.)"""
    reached = {
        decide("difference", {"expect": "higher"}, compare(_seeds(3.1), _seeds(3.0))).verdict,
        decide("interval", {"low": 0.3, "high": 0.7, "exclude": 0}, _slope_measurement(0.5, 2.0)).verdict,
        decide("equivalent", {}, compare(_seeds(3.1), _seeds(3.0))).verdict,
        decide("equivalent", {}, compare(_seeds(3.02), _seeds(3.0))).verdict,
        decide("equivalent", {}, compare(_seeds(3.1, n=2), _seeds(3.0, n=2))).verdict,
    }
    assert reached == set(v.VERDICTS) - {v.NOT_RUN}


def test_a_diverged_seed_is_dropped_or_kept_as_an_infinite_loss():
    cells = {"a": [3.0, np.nan, 3.1], "b": [3.0, 3.0, 3.0]}
    dropped = v.bootstrap_difference(cells, lambda m: m["a"] - m["b"])
    assert dropped["n_seeds"] == 2 and dropped["difference"] == pytest.approx(0.05)
    kept = v.bootstrap_difference(cells, lambda m: float(np.isfinite(m["a"])), diverged="inf")
    assert kept["n_seeds"] == 3 and kept["difference"] == 0.0  # the mean over seeds with a diverged one is infinite


def test_an_exact_measurement_needs_no_seeds_but_still_enough_steps():
    draws = list(np.linspace(0.45, 0.55, 50))
    exact = {"estimate": 0.5, "draws": draws, "exact": True, "min_steps": 300}
    assert v.interval(exact, low=0.35, high=0.65, exclude=0).verdict == v.CONFIRMED
    assert v.interval({**exact, "exact": False}, low=0.35, high=0.65).verdict == v.NOT_TESTABLE
    assert v.interval({**exact, "min_steps": 100}, low=0.35, high=0.65).verdict == v.NOT_TESTABLE
