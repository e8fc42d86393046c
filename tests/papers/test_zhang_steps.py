"""The steps-to-target protocol shared by zhang_steps_to_target, zhang_data_size and zhang_model_size, on
synthetic records whose loss curves follow a known law: staging, S(B), B*, claims."""

import dataclasses

import numpy as np
import pytest

from replication import ledger
from replication.params import experiment, load_params
from replication.papers.zhang import common, data_size, model_size, steps_to_target
from replication.record import new_record
from replication.spec import ConfigError
from replication.store import Store
from replication.train import log_spaced_steps
from replication.verdicts import decide

B_NOISE = 24.0  # sequences: the synthetic runs' noise scale


def _experiment(name="zhang_steps_to_target", **settings):
    exp = experiment(load_params("params.yaml"), name, "cpu")
    return dataclasses.replace(exp, settings={**exp.settings, **settings})


def _fake(spec, seed_noise=0.01) -> dict:
    """A record whose EWA loss falls as a power of the effective tokens, tokens / (1 + B / B_NOISE), best at
    the middle LR multiplier; it stops where `stop_below` says, like the trainer."""
    d_ref = 2.0 * 1e-2 * (spec.batch_size / 4) ** 0.5
    quality = np.exp(-0.5 * np.log(spec.optimizer.lr / d_ref * 2) ** 2)
    jitter = np.exp(np.random.default_rng(spec.seed).normal(0, seed_noise))
    r = new_record(spec, {})
    for step in sorted(log_spaced_steps(1.05, spec.steps) | {spec.steps}):
        tokens = step * spec.tokens_per_step
        loss = 3 + 4 * (tokens * quality * jitter / (1 + spec.batch_size / B_NOISE) / 1000) ** -0.3
        r["val"]["step"].append(step)
        r["val"]["tokens"].append(tokens)
        r["val"]["loss"].append(loss)
        if spec.stop_below is not None and loss <= spec.stop_below:
            r["stopped_at_step"] = step
            break
    r.update(steps=r["val"]["step"][-1], tokens=r["val"]["tokens"][-1], final_val_loss=r["val"]["loss"][-1],
             best_val_loss=min(r["val"]["loss"]), epochs=0.1)
    return r


def _fill(exp, root) -> list:
    """Write fake records for whatever the topic declares until it declares nothing new."""
    store = Store(root, exp.profile, exp.name)
    while True:
        specs = steps_to_target.runs(exp, {}, root)
        missing = [s for s in specs if store.read(s.hash) is None]
        if not missing:
            return specs
        for s in missing:
            store.write(_fake(s))


def test_the_protocol_declares_references_then_targets_then_seeds(tmp_path):
    exp = _experiment()
    d = common.design(exp)
    first = steps_to_target.runs(exp, {}, tmp_path)
    assert len(first) == len(d.models) * len(d.lr_multipliers)
    assert {s.batch_size for s in first} == {d.reference_batch_size} and all(s.stop_below is None for s in first)
    specs = _fill(exp, tmp_path)
    targeted = [s for s in specs if s.stop_below is not None]
    seed0 = [s for s in targeted if s.seed == 0]
    assert len(seed0) == len(d.models) * len(d.batch_sizes) * len(d.lr_multipliers)
    later = [s for s in targeted if s.seed != 0]
    reached = common.measure(exp, d, tmp_path).steps.query("seed == 0").dropna(subset=["steps"])
    assert 0 < len(reached) < len(seed0) / len(d.lr_multipliers)  # the largest batch sizes run out of tokens
    assert len(later) == len(reached) * (len(d.seeds) - 1)  # the best LR of each cell that reached its target, only
    assert {round(s.schedule.warmup_fraction * s.tokens) for s in specs} == {d.warmup_tokens}  # warmup equal in tokens


def test_the_fit_recovers_the_synthetic_noise_scale_and_the_claims_are_decided(tmp_path):
    exp = _experiment()
    d = common.design(exp)
    _fill(exp, tmp_path)
    m = common.measure(exp, d, tmp_path)
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
    table = common.fit_table(m, exp, d)
    assert list(table["model"]) == list(d.models)
    for f, row in zip((m.fits[(model, 1.0)] for model in d.models), table.itertuples()):
        assert row.constant_share == pytest.approx(1.2 * min(d.batch_sizes) / f["b_star"])
        assert np.median(common.b_noise_draws(f)) == pytest.approx(f["b_noise"], rel=0.3)  # B* draws mapped back to b/a


def test_the_chinchilla_exponent_reports_its_regime_and_is_gated_on_it(tmp_path):
    exp = _experiment()
    d = common.design(exp)
    _fill(exp, tmp_path)
    m = common.measure(exp, d, tmp_path)
    claims, exponent = steps_to_target.claims(m, exp, d)
    sizes = [common.non_embedding_parameters(exp, d, model) for model in d.models]
    unreached = {model: [int(b) for b in m.fits[(model, 1.0)]["unreached"]] for model in d.models}
    assert {k: exponent["regime"][k] for k in ("model_size_range", "censored_batch_sizes")} == {
        "model_size_range": pytest.approx(max(sizes) / min(sizes)), "censored_batch_sizes": sum(map(len, unreached.values()))}
    assert exponent["regime"]["plateau_min_steps"] == common.fewest_steps(m, sorted({b for f in m.fits.values() for b in f.get("batch_sizes", [])}))
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


def test_a_batch_size_that_never_reaches_the_target_is_reported(tmp_path):
    exp = _experiment()  # the synthetic noise scale makes B = 128 need 6x the reference tokens; the cap is 2.5x
    d = common.design(exp)
    _fill(exp, tmp_path)
    m = common.measure(exp, d, tmp_path)
    unreached = [b for f in m.fits.values() for b in f.get("unreached", [])]
    assert unreached and max(unreached) == max(d.batch_sizes)
    assert any("never reached" in c for c in common.caveats(m, d))


def test_data_size_reads_every_target_from_the_same_runs(tmp_path):
    exp = _experiment("zhang_data_size")
    d = common.design(exp)
    store = Store(tmp_path, exp.profile, exp.name)
    while missing := [s for s in data_size.runs(exp, {}, tmp_path) if store.read(s.hash) is None]:
        for s in missing:
            store.write(_fake(s))
    m = common.measure(exp, d, tmp_path)
    assert sorted(m.steps["target_multiple"].unique()) == list(d.target_multiples)
    b_opt = data_size.optimal_batch_sizes(m, d)
    assert len(b_opt) == len(d.target_multiples)
    claims, exponent = data_size.claims(m, exp, d)
    assert claims[0]["id"] == "zhang.data_size.cbs_grows_with_data" and "estimate" in exponent


def test_model_size_needs_one_budget():
    exp = _experiment("zhang_model_size")
    models = {k: {**v, "reference_tokens": 1000 * (i + 1)} for i, (k, v) in enumerate(exp.settings["models"].items())}
    with pytest.raises(ValueError, match="share one reference_tokens"):
        model_size.runs(dataclasses.replace(exp, settings={**exp.settings, "models": models}), {}, "unused")


@pytest.mark.parametrize("change,match", [({"reference_batch_size": 3}, "not one of batch_sizes"), ({"colour": 1}, "unknown key"),
                                          ({"models": {"w": {"model.width": 32}}}, "reference_tokens")])
def test_bad_settings_name_the_key(change, match):
    with pytest.raises(ConfigError, match=match):
        common.design(_experiment(**change))
