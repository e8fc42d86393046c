"""The shared verdict rules on synthetic measurements: each must pass where it should and fail where it should,
and every verdict must be reachable."""

import numpy as np
import pytest
from scipy import stats

from replication import verdicts as v
from replication.verdicts import RuleError, bootstrap, compare, decide

ALLOW = {"allowance": 0.13, "allowance_source": "the paper calls a 0.13 gap competitive"}


def _seeds(mean: float, sd: float = 0.01, n: int = 3) -> list[float]:
    """n per-seed losses with exactly this mean and sample standard deviation."""
    z = np.linspace(-1, 1, n)
    return list(mean + sd * z / z.std(ddof=1))


def test_compare_measures_the_difference_its_standard_error_welch_dof_and_the_seed_spread():
    m = compare(_seeds(3.10), _seeds(3.00), steps=[400, 300, 900])
    assert m["difference"] == pytest.approx(0.10) and m["seed_sd"] == pytest.approx(0.01)
    assert m["se"] == pytest.approx(np.sqrt(2 * 0.01**2 / 3)) and m["n_seeds"] == 3 and m["min_steps"] == 300
    assert m["dof"] == pytest.approx(4.0)  # equal spreads, 3 + 3 seeds: Welch = n_a + n_b - 2
    lopsided = compare(_seeds(3.1, sd=0.1), _seeds(3.0, sd=0.001))
    assert lopsided["dof"] == pytest.approx(2.0, rel=1e-3)  # all the variance in one 3-seed cell


def test_the_t_critical_value_follows_the_degrees_of_freedom():
    assert v.t_critical(4) == pytest.approx(stats.t.ppf(0.975, 4)) == pytest.approx(2.776, abs=1e-3)
    assert v.t_critical(None) == pytest.approx(1.960, abs=1e-3)
    assert v.welch_dof((1, -1), ([1.0], [2.0, 3.0])) is None  # one seed: no spread to weigh


def test_difference_confirms_only_beyond_the_t_critical_value_in_the_claimed_direction():
    assert decide("difference", {"expect": "higher"}, compare(_seeds(3.10), _seeds(3.00))).verdict == "confirmed"
    assert decide("difference", {"expect": "lower"}, compare(_seeds(3.10), _seeds(3.00))).verdict == "not confirmed"
    # 2.5 SE: beyond 2 SE, but inside t(4) = 2.78 -- anti-conservative 2-SE rule would have called it
    m = compare(_seeds(3.0 + 2.5 * np.sqrt(2 * 0.01**2 / 3)), _seeds(3.00))
    d = decide("difference", {"expect": "higher"}, m)
    assert d.verdict == "within noise" and "t(4.0) = 2.78" in d.reason
    many = compare(_seeds(3.0 + 2.5 * np.sqrt(2 * 0.01**2 / 30), n=30), _seeds(3.00, n=30))  # 58 dof: t ~ 2.0
    assert decide("difference", {"expect": "higher"}, many).verdict == "confirmed"


def test_without_stored_dof_the_rule_falls_back_to_the_most_conservative_welch_bound():
    m = {k: val for k, val in compare(_seeds(3.0 + 3.5 * np.sqrt(2 * 0.01**2 / 3)), _seeds(3.0)).items() if k != "dof"}
    d = decide("difference", {"expect": "higher"}, m)  # 3.5 SE < t(2) = 4.30
    assert d.verdict == "within noise" and "t(2.0)" in d.reason


def test_equivalence_tolerates_two_seed_sds_plus_the_papers_own_gap_with_a_t_interval():
    same = compare(_seeds(3.000, n=5), _seeds(3.000, n=5))
    assert decide("equivalent", {}, same).verdict == "confirmed"
    # with 3 seeds a t(4) interval is 2.27 seed sds wide on each side: equal means cannot confirm "as good" on
    # seed noise alone (only a paper's own gap, more seeds or a better A can)
    assert decide("equivalent", {}, compare(_seeds(3.0), _seeds(3.0))).verdict == "within noise"
    worse = compare(_seeds(3.10), _seeds(3.00))
    assert decide("equivalent", {}, worse).verdict == "not confirmed"
    assert decide("equivalent", ALLOW, worse).verdict == "confirmed"
    assert decide("equivalent", {}, compare(_seeds(3.02), _seeds(3.00))).verdict == "within noise"  # interval straddles 0.02
    # with 2 SE this interval would end under the tolerance; with t(4) it reaches over it
    se = np.sqrt(2 * 0.01**2 / 3)
    edge = compare(_seeds(0.02 - 2.4 * se), _seeds(0.0))
    assert edge["difference"] + 2 * se < 0.02 < edge["difference"] + v.t_critical(4) * se
    assert decide("equivalent", {}, edge).verdict == "within noise"


def test_an_allowance_must_name_the_papers_sentence():
    with pytest.raises(RuleError, match="allowance_source"):
        decide("equivalent", {"allowance": 0.04}, compare(_seeds(3.0), _seeds(3.0)))


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


def test_a_best_cell_on_the_grid_edge_blocks_the_verdict():
    m = {**compare(_seeds(3.1), _seeds(3.0)), "edges": [v.edge("LR", "optimizer muon, batch_size 16")]}
    d = decide("difference", {"expect": "higher"}, m)
    assert d.verdict == "not testable at this scale" and d.reason.startswith("best LR on the grid edge at optimizer muon, batch_size 16")
    assert "would need: the grid extended past that edge" in d.reason
    assert decide("difference", {"expect": "higher"}, {**m, "edges": []}).verdict == "confirmed"
    parts = {"a": {"rule": "difference", "params": {"expect": "higher"}}}
    assert decide("all_of", {"parts": parts}, {"parts": {"a": compare(_seeds(3.1), _seeds(3.0))}, "edges": m["edges"]}).verdict == v.NOT_TESTABLE


REQUIRES = [{"value": "half_life_share", "at_most": 0.1, "says": "the optimal half-life is at most 10 % of the run"}]


def test_regime_conditions_gate_with_the_value_and_the_limit():
    m = compare(_seeds(3.1), _seeds(3.0))
    inside = decide("difference", {"expect": "higher"}, {**m, "regime": {"half_life_share": 0.015}}, REQUIRES)
    assert inside.verdict == "confirmed"
    outside = decide("difference", {"expect": "higher"}, {**m, "regime": {"half_life_share": 0.86}}, REQUIRES)
    assert outside.verdict == "not testable at this scale"
    assert outside.reason == "the optimal half-life is at most 10 % of the run (0.86 vs 0.1)"
    at_least = [{"value": "n_range", "at_least": 10, "says": "a 10x range of N"}]
    reach = [{**at_least[0], "reach": "widths 32-512"}]
    assert decide("difference", {"expect": "higher"}, {**m, "regime": {"n_range": 4.0}}, reach).reason == "a 10x range of N (4 vs 10; would need: widths 32-512)"
    assert decide("difference", {"expect": "higher"}, {**m, "regime": {"n_range": 4.0}}, at_least).reason == "a 10x range of N (4 vs 10)"
    unmeasured = decide("difference", {"expect": "higher"}, {**m, "regime": {"half_life_share": None}}, REQUIRES)
    assert unmeasured.verdict == "not testable at this scale" and "not measured" in unmeasured.reason
    with pytest.raises(RuleError, match="reports no regime value 'half_life_share'"):
        decide("difference", {"expect": "higher"}, m, REQUIRES)
    with pytest.raises(RuleError, match="needs value, says and at_most or at_least"):
        decide("difference", {"expect": "higher"}, m, [{"value": "x", "says": "no bound"}])


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


def _draws(estimate: float, low: float, high: float, n: int = 1000) -> dict:
    """An exact-free fitted measurement whose draws spread evenly over [low, high]."""
    return {"estimate": estimate, "draws": list(np.linspace(low, high, n)), "n_seeds": 3}


RANGE = {"low": 0.3, "high": 0.7, "exclude": 0}


def test_interval_confirms_only_when_the_whole_bootstrap_interval_is_in_range():
    d = decide("interval", RANGE, _slope_measurement(0.5, 0.02))
    assert d.verdict == "confirmed" and d.share > 0.95
    assert decide("interval", RANGE, _slope_measurement(0.0, 0.02)).verdict == "not confirmed"
    noisy = decide("interval", RANGE, _slope_measurement(0.5, 2.0))
    assert noisy.verdict == "within noise" and noisy.share < 0.8  # in range, but the interval is wide
    # the estimate alone never confirms: in range, but the interval leaves it (no exclude given)
    assert decide("interval", {"low": -0.1, "high": 0.1}, _draws(0.08, -0.12, 0.25)).verdict == "within noise"
    assert decide("interval", {"low": -0.1, "high": 0.1}, _draws(0.0, -0.05, 0.05)).verdict == "confirmed"


def test_interval_touching_the_range_is_within_noise_not_partly_and_outside_is_not_confirmed():
    touching = decide("interval", {"low": -0.3, "high": 0.3, "exclude": 1}, _draws(-0.81, -0.89, -0.25))
    assert touching.verdict == "within noise" and touching.share < 0.2
    assert v.share_words(touching.verdict, touching.share) == "8% of bootstrap draws inside the accepted range"
    outside = decide("interval", {"low": -0.3, "high": 0.3}, _draws(-0.8, -0.9, -0.5))
    assert outside.verdict == "not confirmed" and outside.share == 1.0
    straddles_exclude = decide("interval", {"low": -1, "high": 1, "exclude": 0}, _draws(0.5, -0.1, 0.9))
    assert straddles_exclude.verdict == "within noise"


def test_interval_needs_a_thousand_draws_and_an_unresolved_optimum_is_within_noise():
    with pytest.raises(RuleError, match="at least 1000 finite bootstrap draws, got 200"):
        decide("interval", RANGE, _draws(0.5, 0.45, 0.55, n=200))
    d = decide("interval", RANGE, {**_draws(0.5, 0.45, 0.55), "unresolved": "at B=1 the optimum's neighbours are within the noise"})
    assert d.verdict == "within noise" and "neighbours" in d.reason


def test_threshold_and_all_of():
    assert decide("threshold", {"at_most": 1.5}, {"value": 0.9}).verdict == "confirmed"
    assert decide("threshold", {"at_least": 0.4}, {"value": 0.2}).verdict == "not confirmed"
    parts = {"a": {"rule": "difference", "params": {"expect": "higher"}}, "b": {"rule": "equivalent"}}
    yes, no = compare(_seeds(3.1), _seeds(3.0)), compare(_seeds(3.3), _seeds(3.0))
    noise = compare(_seeds(3.01), _seeds(3.0))
    assert decide("all_of", {"parts": parts}, {"parts": {"a": yes, "b": compare(_seeds(3.0, n=5), _seeds(3.0, n=5))}}).verdict == "confirmed"
    # a contradicted part sinks the claim: not "partly"
    assert decide("all_of", {"parts": parts}, {"parts": {"a": yes, "b": no}}).verdict == "not confirmed"
    assert decide("all_of", {"parts": parts}, {"parts": {"a": compare(_seeds(2.9), _seeds(3.0)), "b": no}}).verdict == "not confirmed"
    partly = {"a": yes, "b": compare(_seeds(3.02), _seeds(3.0))}
    assert decide("all_of", {"parts": parts}, {"parts": partly}).verdict == "partly"
    assert decide("all_of", {"parts": parts}, {"parts": {"a": noise, "b": compare(_seeds(3.02), _seeds(3.0))}}).verdict == "within noise"
    assert decide("all_of", {"parts": parts}, {"untestable": "one optimizer only"}).verdict == "not testable at this scale"


def test_a_part_we_added_is_shown_but_never_counts():
    ours = {"paper": {"rule": "difference", "params": {"expect": "higher"}},
            "contrast": {"rule": "difference", "params": {"expect": "higher"}, "ours": True}}
    yes, no = compare(_seeds(3.1), _seeds(3.0)), compare(_seeds(2.9), _seeds(3.0))
    lifted = decide("all_of", {"parts": ours}, {"parts": {"paper": no, "contrast": yes}})
    assert lifted.verdict == "not confirmed" and "contrast (ours, not counted): confirmed" in lifted.reason
    sunk = decide("all_of", {"parts": ours}, {"parts": {"paper": yes, "contrast": no}})
    assert sunk.verdict == "confirmed"
    with pytest.raises(RuleError, match="every part is marked ours"):
        decide("all_of", {"parts": {"contrast": ours["contrast"]}}, {"parts": {"contrast": yes}})
    with pytest.raises(RuleError, match="unknown key"):
        decide("all_of", {"parts": {"a": {"rule": "threshold", "mine": True}}}, {"parts": {}})


def test_bad_rules_and_measurements_are_errors_that_name_the_problem():
    with pytest.raises(RuleError, match="unknown rule 'equal'"):
        decide("equal", {}, {})
    with pytest.raises(RuleError, match="takes allowance, allowance_source, not tolerance"):
        decide("equivalent", {"tolerance": 0.02}, {})
    with pytest.raises(RuleError, match="lacks se"):
        decide("difference", {}, {"difference": 0.1, "n_seeds": 3})
    with pytest.raises(RuleError, match="lacks part"):
        decide("all_of", {"parts": {"a": {"rule": "threshold"}}}, {"parts": {}})


def test_every_verdict_but_not_run_yet_is_reachable_from_a_rule():
    """("not run yet" belongs to the ledger: a metrics file that does not exist; see test_ledger.)"""
    parts = {"a": {"rule": "difference", "params": {"expect": "higher"}}, "b": {"rule": "equivalent"}}
    reached = {
        decide("difference", {"expect": "higher"}, compare(_seeds(3.1), _seeds(3.0))).verdict,
        decide("all_of", {"parts": parts}, {"parts": {"a": compare(_seeds(3.1), _seeds(3.0)), "b": compare(_seeds(3.02), _seeds(3.0))}}).verdict,
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


def test_a_bootstrapped_difference_carries_welch_dof_of_the_cells_it_depends_on():
    cells = {"a": _seeds(3.1), "b": _seeds(3.0), "c": _seeds(5.0, sd=1.0), "d": _seeds(3.0)}
    gap = v.bootstrap_difference(cells, lambda m: (m["a"] - m["b"]) - (m["d"] - m["b"]))  # c does not enter; b cancels
    assert gap["dof"] == pytest.approx(4.0, rel=1e-3)
    spread = v.bootstrap_difference(cells, lambda m: max(m["a"], m["b"]) - min(m["a"], m["b"]))
    assert spread["dof"] == pytest.approx(4.0, rel=1e-3)


def test_an_exact_measurement_needs_no_seeds_but_still_enough_steps():
    draws = list(np.linspace(0.45, 0.55, 1000))
    exact = {"estimate": 0.5, "draws": draws, "exact": True, "min_steps": 300}
    assert v.interval(exact, low=0.35, high=0.65, exclude=0).verdict == v.CONFIRMED
    assert v.interval({**exact, "exact": False}, low=0.35, high=0.65).verdict == v.NOT_TESTABLE
    assert v.interval({**exact, "min_steps": 100}, low=0.35, high=0.65).verdict == v.NOT_TESTABLE


def test_a_bootstrapped_standard_error_is_not_shrunk_by_few_seeds():
    cells = {"a": _seeds(3.1), "b": _seeds(3.0)}
    m = v.bootstrap_difference(cells, lambda means: means["a"] - means["b"], draws=20000)
    assert m["se"] == pytest.approx(compare(cells["a"], cells["b"])["se"], rel=0.03)  # the analytic SE of a difference of means
