"""zhang_steps_to_target: the steps-to-target protocol on synthetic records whose loss curves follow a known
law: staging (references, then targets, then seeds), S(B), B*, the claims and their regime gates."""

import numpy as np
import pytest

from replication import ledger
from replication.papers.zhang import protocol, steps_to_target
from replication.spec import ConfigError
from replication.verdicts import decide
from tests.papers.zhang_protocol import B_NOISE, fill, zhang_experiment


def _measured(tmp_path):
    """The synthetic experiment, every run it declares stored, and what the protocol measures from them."""
    exp = zhang_experiment()
    d = protocol.design(exp)
    fill(exp, tmp_path, steps_to_target)
    return exp, d, protocol.measure(exp, d, tmp_path)


@pytest.mark.slow
def test_the_protocol_declares_references_then_targets_then_seeds(tmp_path):
    exp = zhang_experiment()
    d = protocol.design(exp)
    first = steps_to_target.runs(exp, {}, tmp_path)
    assert len(first) == len(d.models) * len(d.lr_multipliers)
    assert {s.batch_size for s in first} == {d.reference_batch_size} and all(s.stop_below is None for s in first)
    specs = fill(exp, tmp_path, steps_to_target)
    targeted = [s for s in specs if s.stop_below is not None]
    seed0 = [s for s in targeted if s.seed == 0]
    assert len(seed0) == len(d.models) * len(d.batch_sizes) * len(d.lr_multipliers)
    later = [s for s in targeted if s.seed != 0]
    reached = protocol.measure(exp, d, tmp_path).steps.query("seed == 0").dropna(subset=["steps"])
    assert 0 < len(reached) < len(seed0) / len(d.lr_multipliers)  # the largest batch sizes run out of tokens
    assert len(later) == len(reached) * (len(d.seeds) - 1)  # the best LR of each cell that reached its target, only
    assert {round(s.schedule.warmup_fraction * s.tokens) for s in specs} == {d.warmup_tokens}  # warmup equal in tokens


@pytest.mark.slow
def test_the_fit_recovers_the_synthetic_noise_scale_and_the_claims_are_decided(tmp_path):
    exp, d, m = _measured(tmp_path)
    for model in d.models:
        fit = m.fits[(model, 1.0)]
        assert fit["b_noise"] == pytest.approx(B_NOISE, rel=0.5)
        assert fit["slope_small"] < -0.8
    moved = (m.frame.grid_step - m.frame.steps) / m.frame.steps
    assert moved.dropna().max() < 0.05  # evaluations at 1.05^k: interpolation moves S by under 5 %
    claims, exponent = steps_to_target.claims(m, exp, d)
    assert [c["id"] for c in claims] == ["zhang.steps_to_target.hyperbola", "zhang.steps_to_target.cbs_rule",
                                         "zhang.steps_to_target.chinchilla_exponent"]
    assert abs(exponent["estimate"]) < 0.3  # the synthetic law has one noise scale for every model
    assert abs(exponent["b_noise_exponent"]["estimate"]) < 0.3
    assert exponent["b_noise_exponent"]["low"] <= exponent["b_noise_exponent"]["estimate"] <= exponent["b_noise_exponent"]["high"]
    table = protocol.fit_table(m, exp, d)
    assert list(table["model"]) == list(d.models)
    for f, row in zip((m.fits[(model, 1.0)] for model in d.models), table.itertuples()):
        assert f["reference_batch_size"] == d.reference_batch_size  # B0 of the 20 % rule: the targets' batch size (the paper's 256)
        assert row.constant_share == pytest.approx(1.2 * d.reference_batch_size / f["b_star"])
        assert np.median(protocol.b_noise_draws(f)) == pytest.approx(f["b_noise"], rel=0.3)  # B* draws mapped back to b/a


@pytest.mark.slow
def test_the_chinchilla_exponent_reports_its_regime_and_is_gated_on_it(tmp_path):
    exp, d, m = _measured(tmp_path)
    claims, exponent = steps_to_target.claims(m, exp, d)
    sizes = [protocol.non_embedding_parameters(exp, d, model) for model in d.models]
    unreached = {model: [int(b) for b in m.fits[(model, 1.0)]["unreached"]] for model in d.models}
    assert {k: exponent["regime"][k] for k in ("model_size_range", "censored_batch_sizes")} == {
        "model_size_range": pytest.approx(max(sizes) / min(sizes)), "censored_batch_sizes": sum(map(len, unreached.values()))}
    assert exponent["regime"]["plateau_min_steps"] == protocol.fewest_steps(m, sorted({b for f in m.fits.values() for b in f.get("batch_sizes", [])}))
    assert exponent["censored"] == unreached and exponent["regime"]["censored_batch_sizes"] > 0
    assert claims[2]["verdict"] == "not testable at this scale" and "10x" in claims[2]["reason"]
    for model, bs in unreached.items():
        assert not bs or f"{model} B={', '.join(map(str, bs))}" in claims[2]["measured"]
    assert "B_noise = b/a ~ N^" in claims[2]["measured"]
    entry = ledger.entry("zhang.steps_to_target.chinchilla_exponent")
    wide = {**exponent, "regime": {"model_size_range": 14.0, "censored_batch_sizes": 0, "plateau_min_steps": 300}}
    assert decide(entry.rule, entry.params, wide, entry.requires).verdict in ("not confirmed", "within noise")  # exponent ~ 0
    censored = {**exponent, "regime": {"model_size_range": 14.0, "censored_batch_sizes": 1, "plateau_min_steps": 300}}
    assert "reaching the target" in decide(entry.rule, entry.params, censored, entry.requires).reason


@pytest.mark.slow
def test_a_batch_size_that_never_reaches_the_target_is_reported(tmp_path):
    exp, d, m = _measured(tmp_path)  # the synthetic noise scale makes B = 128 need 6x the reference tokens; the cap is 2.5x
    unreached = [b for f in m.fits.values() for b in f.get("unreached", [])]
    assert unreached and max(unreached) == max(d.batch_sizes)
    assert any("never reached" in c for c in protocol.caveats(m, d))
    # the report's side by side draws it as a triangle at its budget, on the axis B / B* of its model's fit
    table = protocol.mean_steps(m).set_index(["model", "batch_size"])
    for (model, mult), f in m.fits.items():
        row = table.loc[(model, max(d.batch_sizes))]
        assert not row["reached"] and row["seeds"] == 0
        budget = m.frame[(m.frame["model"] == model) & (m.frame["batch_size"] == max(d.batch_sizes))]["trained_steps"].max()
        assert row["steps"] == budget and row["b_over_b_star"] == pytest.approx(max(d.batch_sizes) / f["b_star"])
        reached = table.loc[model][table.loc[model]["reached"]]
        assert (reached["seeds"] >= 1).all() and len(reached) + len(f["unreached"]) == len(d.batch_sizes)


@pytest.mark.parametrize("change,match", [({"reference_batch_size": 3}, "not one of batch_sizes"), ({"colour": 1}, "unknown key"),
                                          ({"models": {"w": {"model.width": 32}}}, "reference_tokens")])


def test_bad_settings_name_the_key(change, match):
    with pytest.raises(ConfigError, match=match):
        protocol.design(zhang_experiment(**change))
