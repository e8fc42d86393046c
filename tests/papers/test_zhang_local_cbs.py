"""zhang_local_cbs: the local CBS rule, and chains of runs that start from other runs' weights, resumed
after the weights (a cache, never committed) are gone."""

import json
import shutil

import pandas as pd
import pytest

from replication.params import experiment, load_params
from replication.experiments import declared_runs, sweep
from replication.papers.zhang import local_cbs
from replication.store import Store


def test_the_local_cbs_is_the_largest_batch_size_within_the_tolerance():
    branches = pd.DataFrame({"branch_tokens": [1] * 6 + [2] * 6, "batch_size": [2, 2, 4, 4, 8, 8] * 2, "seed": [0, 1] * 6,
                             "final_val_loss": [5.0, 5.02, 5.01, 5.03, 5.2, 5.3, 4.0, 4.0, 4.01, 4.0, 4.015, 4.02]})
    cbs = local_cbs.local_cbs(branches, 0.02, 2)
    assert list(cbs["local_cbs"]) == [4, 8]


def _branches(losses: dict) -> pd.DataFrame:
    """A branch table from {(branch tokens, batch size): [loss per seed]}, every branch 256 steps."""
    return pd.DataFrame([{"branch_tokens": t, "batch_size": b, "seed": i, "final_val_loss": v, "steps": 256, "status": "ok"}
                         for (t, b), values in losses.items() for i, v in enumerate(values)])


def test_the_tolerance_is_two_standard_errors_of_the_gap_it_thresholds_or_the_floor():
    noisy = _branches({(1, 2): [5.0, 5.2, 5.4], (1, 4): [5.0, 5.2, 5.4]})  # sd 0.2 a side: the gap's SE is 0.2 x sqrt(2 / 3)
    assert local_cbs.tolerance(noisy, 0.02, 2) == pytest.approx(2 * 0.2 * (2 / 3) ** 0.5)
    quiet = _branches({(1, 2): [5.0, 5.001, 5.002], (1, 4): [5.0, 5.001, 5.002]})
    assert local_cbs.tolerance(quiet, 0.02, 2) == 0.02


def _exp(**settings):
    params = load_params("params.yaml")
    params["experiments"]["zhang_local_cbs"]["settings"].update(settings)
    return experiment(params, "zhang_local_cbs", "cpu")


def _arms() -> pd.DataFrame:
    rows = []
    for arm, b, steps, loss in (("constant", "2-2-2", 4032, 5.0), ("warmup", "8-16-32", 300, 5.0), ("large", "16-16-16", 504, 5.3)):
        rows += [{"arm": arm, "seed": i, "batch_sizes": b, "steps": steps, "final_val_loss": loss + 0.01 * i, "status": "ok"} for i in range(5)]
    return pd.DataFrame(rows)


def test_a_local_cbs_at_the_top_of_the_grid_at_the_first_branch_point_leaves_the_rise_untestable():
    exp = _exp()
    top = max(exp.settings["branch_batch_sizes"])
    branches = _branches({(t, b): [5.0, 5.01, 5.02, 5.03, 5.04] for t in (1, 2) for b in exp.settings["branch_batch_sizes"]})
    cbs = local_cbs.measured_cbs(exp, branches)
    assert list(cbs["local_cbs"]) == [top, top] and cbs["censored"].all()
    rise = {c["id"]: c for c in local_cbs.claims(exp, cbs, _arms(), branches)}["zhang.local_cbs.rises_over_training"]
    assert rise["verdict"] == "not testable at this scale" and "lower bound" in rise["measurement"]["untestable"]


def test_a_rise_read_through_the_noise_is_confirmed_and_the_control_decides_the_large_batch_finding():
    exp = _exp(window_tokens=4096)  # no longer than the training before the first branch point: a local measurement
    seeds = [0.0, 0.001, 0.002, 0.003, 0.004]
    early = {(1, b): [5.0 + 0.5 * (b > 2) + s for s in seeds] for b in exp.settings["branch_batch_sizes"]}  # only B = 2 keeps up
    late = {(2, b): [4.0 + 0.5 * (b > 16) + s for s in seeds] for b in exp.settings["branch_batch_sizes"]}  # up to 16 keeps up
    branches = _branches({**early, **late})
    cbs = local_cbs.measured_cbs(exp, branches)
    assert list(cbs["local_cbs"]) == [2, 16] and not cbs["censored"].any()
    assert set(local_cbs.rise_draws(branches, exp.settings, float(cbs["tolerance"].iloc[0]), draws=50)) == {3.0}
    claims = {c["id"]: c for c in local_cbs.claims(exp, cbs, _arms(), branches)}
    assert claims["zhang.local_cbs.rises_over_training"]["verdict"] == "confirmed"
    assert claims["zhang.local_cbs.warmup_beats_constant_large"]["verdict"] == "confirmed"  # 5.0 vs 5.3, seed sd 0.016
    worse = _arms().assign(final_val_loss=lambda f: f["final_val_loss"] + 0.6 * (f["arm"] == "warmup"))
    claims = {c["id"]: c for c in local_cbs.claims(exp, cbs, worse, branches)}
    assert claims["zhang.local_cbs.warmup_beats_constant_large"]["verdict"] == "not confirmed"
    long_windows = {c["id"]: c for c in local_cbs.claims(_exp(), cbs, _arms(), branches)}["zhang.local_cbs.rises_over_training"]
    assert long_windows["verdict"] == "not testable at this scale" and "window" in long_windows["reason"]


def test_a_warmup_that_starts_at_the_control_s_batch_size_cannot_test_the_control():
    exp = _exp(window_tokens=4096)
    seeds = [0.0, 0.001, 0.002, 0.003, 0.004]
    branches = _branches({(t, b): [5.0 + 0.5 * (b > 16) + s for s in seeds] for t in (1, 2) for b in exp.settings["branch_batch_sizes"]})
    cbs = local_cbs.measured_cbs(exp, branches)
    assert list(cbs["local_cbs"]) == [16, 16]
    claim = {c["id"]: c for c in local_cbs.claims(exp, cbs, _arms(), branches)}["zhang.local_cbs.warmup_beats_constant_large"]
    assert claim["verdict"] == "not testable at this scale" and "share their early stages" in claim["measurement"]["untestable"]


@pytest.mark.slow
def test_a_chain_resumes_without_its_weights_and_gives_the_same_record(tmp_path):
    params = load_params("params.yaml")
    exp = experiment(params, "zhang_local_cbs", "smoke")
    sweep("zhang_local_cbs", params, "smoke", results_root=tmp_path, progress=False, workers=1)
    store = Store(tmp_path, "smoke", "zhang_local_cbs")
    specs = declared_runs(exp, params, tmp_path)
    assert all(store.read(s.hash) for s in specs)
    last = [s for s in specs if s.init_from][-1]  # the last stage of a chain
    before = store.read(last.hash)["val"]["loss"]
    shutil.rmtree(store.root / "_weights")
    store.path(last.hash).unlink()
    sweep("zhang_local_cbs", params, "smoke", results_root=tmp_path, progress=False, workers=1)
    assert store.read(last.hash)["val"]["loss"] == before
    arms = local_cbs.arm_table(exp, tmp_path)
    assert set(arms["arm"]) == {"constant", "warmup", "large"} and len(arms) == 3 * len(exp.settings["seeds"])
    large = arms[arms["arm"] == "large"]["batch_sizes"].iloc[0]
    assert set(large.split("-")) == {str(exp.settings["control_batch_size"])}
