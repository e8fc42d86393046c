"""power_lr_surface: budgets branched off one run become rows, optima are parabolas in log LR, and the fits
recover the law a synthetic loss surface was made from."""

import json

import numpy as np
import pandas as pd
import pytest

from replication.fit import resampled
from replication.papers.power import common, lr_surface
from replication.params import experiment, load_params
from replication.spec import ConfigError
from replication.verdicts import DRAWS


def synthetic_table(law, batch_sizes=(2, 4, 8, 16), budgets=(40960, 81920, 163840, 327680), seeds=(0, 1, 2), noise=0.002,
                    seq_len=32, **extra):
    """Losses c (log lr - log eta*(B, T))^2 + floor over a factor-2 grid around each optimum, with seed noise."""
    rng = np.random.default_rng(0)
    rows = []
    for b in batch_sizes:
        for t in budgets:
            best = law(b, t)
            for k in range(-3, 4):
                lr = float(f"{best * 2.0 ** (k + 0.3):.4g}")  # the optimum lies between grid points
                for seed in seeds:
                    rows.append({"batch_size": b, "tokens": t, "lr": lr, "seed": seed, "steps": t // (b * seq_len), **extra,
                                 "loss": 5 + 0.05 * np.log(lr / best) ** 2 + noise * rng.standard_normal()})
    return pd.DataFrame(rows)


def test_budget_rows_read_the_branches_and_mark_what_a_diverged_run_never_reached():
    spec = {"tokens": 4096, "batch_size": 4, "data": {"seq_len": 16}, "decay_branches": [1024, 2048]}
    ok = {"spec": spec, "status": "ok", "final_val_loss": 4.0, "decay_branches": {"tokens": [1024, 2048], "val_loss": [5.0, 4.5]}}
    assert common.budget_rows(ok) == [{"tokens": 1024, "steps": 16, "loss": 5.0}, {"tokens": 2048, "steps": 32, "loss": 4.5},
                                      {"tokens": 4096, "steps": 64, "loss": 4.0}]
    diverged = {**ok, "status": "diverged", "final_val_loss": None, "decay_branches": {"tokens": [1024], "val_loss": [5.0]}}
    assert [r["loss"] for r in common.budget_rows(diverged)] == [5.0, None, None]


def test_optima_find_the_parabola_vertex_between_grid_points_and_flag_edges():
    table = synthetic_table(lambda b, t: 1e-2, batch_sizes=(4,), budgets=(327680,), noise=0.0)
    best = common.optima(table, ["batch_size", "tokens"])
    assert best["optimal_lr"].iloc[0] == pytest.approx(1e-2, rel=0.02) and not best["on_edge"].iloc[0]
    edge = common.optima(table[table["lr"] < 8e-3], ["batch_size", "tokens"])
    assert edge["on_edge"].iloc[0] and edge["n_seeds"].iloc[0] == 3


SETTINGS = {"budgets": [40960, 81920, 163840, 327680], "fixed_batch_size": 4}
FAR_ABOVE = {"model": "w64", "b_star": 64.0, "b_noise": 200.0}  # B* above every batch size of the synthetic grid


@pytest.mark.slow
def test_the_fits_recover_shens_law_from_a_synthetic_surface():
    a, b = 3.0, -0.5
    table = synthetic_table(lambda bs, t: bs * a * t**b)
    m = lr_surface.measure(table, SETTINGS)
    p = m["point"]
    assert len(m["draws"]) == DRAWS
    assert p["b"] == pytest.approx(b, abs=0.03) and p["a"] == pytest.approx(a, rel=0.3)
    assert p["token_slope"] == pytest.approx(b, abs=0.05) and p["batch_slope"] == pytest.approx(1.0, abs=0.05)
    assert p["free_batch_exponent"] == pytest.approx(1.0, abs=0.05)
    claims = {c["id"]: c for c in lr_surface.claims(m, SETTINGS, FAR_ABOVE)}
    assert claims["power.lr_surface.gamma_exponent"]["verdict"] == "confirmed"
    assert claims["power.lr_surface.optimal_lr_grows_with_batch"]["verdict"] == "confirmed"
    assert claims["power.lr_surface.optimal_lr_grows_with_batch"]["measurement"]["regime"] == {"largest_batch_over_critical": 16 / 200}
    # the same surface, but batch sizes past B_noise of the body (or it is not measured): Hypothesis 1 is not testable there
    for critical in ({"model": "w64", "b_star": 64.0, "b_noise": 8.0}, {"model": "w64", "b_star": 8.0, "b_noise": None}, None):
        grows = {c["id"]: c for c in lr_surface.claims(m, SETTINGS, critical)}["power.lr_surface.optimal_lr_grows_with_batch"]
        assert grows["verdict"] == "not testable at this scale" and "noise scale" in grows["reason"]


@pytest.mark.slow
def test_a_square_root_law_is_not_called_linear_and_gamma_loses_its_premise():
    table = synthetic_table(lambda bs, t: 1e-2 * (bs / 4) ** 0.5 * (t / 40960) ** -0.3)
    m = lr_surface.measure(table, SETTINGS)
    claims = {c["id"]: c for c in lr_surface.claims(m, {"budgets": [327680], "fixed_batch_size": 4}, FAR_ABOVE)}
    grows, gamma = claims["power.lr_surface.optimal_lr_grows_with_batch"], claims["power.lr_surface.gamma_exponent"]
    assert m["point"]["batch_slope"] == pytest.approx(0.5, abs=0.05) and grows["verdict"] == "not confirmed"
    assert gamma["measurement"]["regime"]["lr_batch_exponent"] == pytest.approx(m["point"]["batch_slope"])
    assert gamma["verdict"] == "not testable at this scale" and "premise" in gamma["reason"]


def test_optima_draws_are_the_optima_of_the_resampled_tables():
    table = synthetic_table(lambda bs, t: 1e-2, batch_sizes=(4, 8), budgets=(163840, 327680), noise=0.01)
    table.loc[(table["lr"] == table["lr"].max()) & (table["seed"] == 1), "loss"] = np.nan  # a diverged seed
    fast = common.optima_draws(table, ["batch_size", "tokens"], draws=25, seed=3)
    slow = [common.optima(t, ["batch_size", "tokens"]) for t in resampled(table, ["batch_size", "tokens", "lr"], 25, seed=3)]
    for a, b in zip(fast, slow):
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
    assert 0 < np.mean([f["resolved"].mean() for f in fast]) < 1  # the noise makes some optima unresolved, not all


def test_an_optimum_is_resolved_only_when_both_neighbours_are_worse_beyond_the_t_critical_value():
    def best(losses_by_lr):
        rows = [{"g": 0, "lr": lr, "seed": s, "loss": v, "steps": 300} for lr, vs in losses_by_lr.items() for s, v in enumerate(vs)]
        return common.optima(pd.DataFrame(rows), ["g"]).iloc[0]
    clear = {1e-3: [5.10, 5.11, 5.12], 2e-3: [5.00, 5.01, 5.02], 4e-3: [5.10, 5.11, 5.12]}
    assert best(clear)["resolved"]
    # 0.02 apart with seed sd 0.01 is 2.4 SE: beyond the old 2, not beyond t(4) = 2.78
    close = {**clear, 4e-3: [5.02, 5.03, 5.04]}
    assert not best(close)["resolved"]
    assert best({**clear, 4e-3: [np.nan] * 3})["resolved"]  # a neighbour that diverged at every seed is worse
    assert not best({1e-3: [5.1], 2e-3: [5.0], 4e-3: [5.1]})["resolved"]  # one seed: no standard error


def test_b_star_is_read_for_the_same_body_and_profile_only(tmp_path):
    params = load_params("params.yaml")
    exp = experiment(params, "power_lr_surface", "cpu")
    path = tmp_path / "steps_to_target.json"
    fits = [{"model": "w32", "b_star": 6.0, "b_noise": 20.0, "target_multiple": 1.0},
            {"model": "w64", "b_star": 7.0, "b_noise": 24.0, "target_multiple": 1.0}]
    path.write_text(json.dumps({"profile": "cpu", "fits": fits}))
    assert lr_surface.critical_batch_size(exp, params, path) == {"model": "w64", "b_star": 7.0, "b_noise": 24.0}
    path.write_text(json.dumps({"profile": "gpu", "fits": fits}))
    assert lr_surface.critical_batch_size(exp, params, path) is None
    assert lr_surface.critical_batch_size(exp, params, tmp_path / "missing.json") is None
    other = exp.__class__(exp.name, exp.profile, exp.base.replace(**{"model.width": 96}),
                          exp.grids, exp.settings)
    path.write_text(json.dumps({"profile": "cpu", "fits": fits}))
    assert lr_surface.critical_batch_size(other, params, path) is None  # no zhang model is this body


def test_the_schedule_fit_falls_back_to_every_optimum_when_too_few_cells_decide():
    table = synthetic_table(lambda bs, t: bs * 3.0 * t**-0.5, budgets=(1024, 2048))  # every cell under 250 steps
    fit = lr_surface.schedule_fit(lr_surface.optima(table))
    assert fit["b"] == pytest.approx(-0.5, abs=0.05) and fit["source"].startswith("every optimum")


def test_settings_errors_name_the_key():
    params = load_params("params.yaml")
    exp = experiment(params, "power_lr_surface", "smoke")
    bad = exp.__class__(exp.name, exp.profile, exp.base, exp.grids, {**exp.settings, "budget": [1]})
    with pytest.raises(ConfigError, match="settings.budget: unknown key"):
        lr_surface.runs(bad, params)
    unsorted = exp.__class__(exp.name, exp.profile, exp.base, exp.grids, {**exp.settings, "budgets": [2048, 1024]})
    with pytest.raises(ConfigError, match="budgets.*must increase"):
        lr_surface.runs(unsorted, params)


def test_each_run_carries_every_smaller_budget_as_a_branch():
    params = load_params("params.yaml")
    exp = experiment(params, "power_lr_surface", "cpu")
    specs = lr_surface.runs(exp, params, results_root="/nonexistent")
    assert {s.batch_size for s in specs} == set(exp.settings["batch_sizes"])
    assert all(list(s.decay_branches) == exp.settings["budgets"][:-1] and s.tokens == exp.settings["budgets"][-1] for s in specs)


def test_a_grid_grows_past_an_edge_best_and_declares_the_new_run_until_it_is_stored(tmp_path):
    """The extension is declared (so the sweep trains it) while missing, and stops at max_extension."""
    from replication.record import new_record
    from replication.store import Store

    params = load_params("params.yaml")
    exp = experiment(params, "power_lr_surface", "smoke")
    store = Store(tmp_path, "smoke", exp.name)
    make = lambda lr: lr_surface.spec(exp, 2, lr, 0)
    values = lambda low, high: common.lr_grid(1e-2, common.extended_steps([-1, 0, 1], low, high))

    def store_runs(lrs):  # loss falls as the LR grows: the best is always the top of the grid
        for lr in lrs:
            r = new_record(make(lr), {})
            r.update(final_val_loss=5 - lr, decay_branches={"tokens": list(make(lr).decay_branches),
                                                             "val_loss": [6 - lr] * len(make(lr).decay_branches)})
            store.write(r)

    store_runs(values(0, 0))
    grid, best = common.grid_past_edges(exp, values, make, 2, tmp_path)
    assert grid == common.lr_grid(1e-2, [-1, 0, 1, 2]) and best is None  # the new run is named, to train next
    store_runs(grid)
    grid, best = common.grid_past_edges(exp, values, make, 2, tmp_path)
    assert grid == common.lr_grid(1e-2, [-1, 0, 1, 2, 3]) and best is None
    store_runs(grid)
    grid, best = common.grid_past_edges(exp, values, make, 2, tmp_path)
    assert grid == common.lr_grid(1e-2, [-1, 0, 1, 2, 3]) and best == [grid[-1]]  # max_extension reached
    assert common.around(grid, best) == grid[-2:]
