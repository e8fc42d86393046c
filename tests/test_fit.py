import numpy as np
import pandas as pd
import pytest

from replication.fit import argmin_log_parabola, argmin_log_parabolas, best_per_group, fraction_within, loglog_slope


def test_best_per_group_picks_the_lowest_mean_over_seeds_and_counts_divergence():
    rows = []
    for b in (1, 4):
        for lr, base in ((1e-3, 3.0), (3e-3, 2.5), (1e-2, None)):
            for seed, noise in ((0, -0.1), (1, 0.1)):
                loss = None if base is None else base + b * 0.01 + noise
                rows.append({"batch_size": b, "optimizer.lr": lr, "seed": seed, "final_val_loss": loss,
                             "status": "ok" if loss is not None else "diverged"})
    best = best_per_group(pd.DataFrame(rows), ["batch_size"], ["optimizer.lr"])
    assert best["optimizer.lr"].tolist() == [3e-3, 3e-3]
    assert best["loss"].tolist() == pytest.approx([2.51, 2.54])
    assert best["loss_se"].tolist() == pytest.approx([0.1, 0.1])
    assert best["n_diverged_settings"].tolist() == [1, 1] and best["n_seeds"].tolist() == [2, 2]
    assert best["best_on_edge"].tolist() == [False, False]  # 3e-3 lies inside the tried 1e-3..1e-2


def test_best_per_group_flags_an_optimum_on_the_edge_of_the_grid():
    rows = [{"batch_size": 1, "optimizer.lr": lr, "final_val_loss": loss, "status": "ok"}
            for lr, loss in ((1e-3, 3.0), (3e-3, 2.9), (1e-2, 2.8))]
    best = best_per_group(pd.DataFrame(rows), ["batch_size"], ["optimizer.lr"])
    assert best["optimizer.lr"].tolist() == [1e-2] and best["best_on_edge"].tolist() == [True]


def test_fraction_within_counts_diverged_cells_as_outside():
    assert fraction_within([3.0, 3.01, 3.2, np.nan], tolerance=0.05) == 0.5
    assert fraction_within([np.nan, np.inf], 0.1) == 0.0


def test_loglog_slope_recovers_a_known_exponent():
    rng = np.random.default_rng(0)
    x = np.array([1, 4, 16, 64, 256, 1024], dtype=float)
    y = 7.0 * x**0.5 * np.exp(rng.normal(0, 0.02, len(x)))
    fit = loglog_slope(x, y)
    assert fit["ci_low"] < 0.5 < fit["ci_high"]
    assert fit["slope"] == pytest.approx(0.5, abs=0.03) and fit["n"] == 6
    flat = loglog_slope(x, np.full(len(x), 3.0) * np.exp(rng.normal(0, 0.02, len(x))))
    assert flat["ci_low"] < 0 < flat["ci_high"]
    with pytest.raises(ValueError, match="at least 3 points"):
        loglog_slope([1, 2], [1, 2])


def test_the_optima_of_many_rows_at_once_are_each_rows_own_optimum_to_the_bit():
    rng = np.random.default_rng(0)
    grid = np.array([3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
    rows = rng.normal(5, 0.3, (400, len(grid)))
    rows[rng.random(rows.shape) < 0.15] = np.nan  # diverged points, some rows without any finite one
    rows[:5] = np.nan
    rows[5] = -np.log(grid)  # concave at the edge: the edge
    rows[6] = (np.log(grid) - np.log(2e-3)) ** 2  # an interior vertex
    rows[7, 1:4] = [5.0, 4.0, 5.0]  # a row whose best point has finite neighbours among NaNs
    together = argmin_log_parabolas(grid[::-1], rows[:, ::-1])  # unsorted grids are sorted, with their columns
    for row, value in zip(rows, together):
        alone = argmin_log_parabola(grid, row) if np.isfinite(row).any() else np.nan
        assert value == alone or (np.isnan(value) and np.isnan(alone))


def test_argmin_log_parabola_finds_the_vertex_between_grid_points():
    x = np.array([1e-4, 1e-3, 1e-2, 1e-1])
    y = (np.log(x) - np.log(3e-3)) ** 2
    assert argmin_log_parabola(x, y) == pytest.approx(3e-3, rel=1e-6)
    assert argmin_log_parabola(x, -np.log(x)) == pytest.approx(1e-1)  # on the edge: the edge


def test_edge_keys_leave_out_hyperparameters_with_a_natural_bound():
    rows = [{"batch_size": 1, "optimizer.lr": lr, "optimizer.beta1": b1, "final_val_loss": 3.0 + (lr - 3e-3) ** 2 + b1,
             "status": "ok"} for lr in (1e-3, 3e-3, 1e-2) for b1 in (0.0, 0.5, 0.9)]
    best = best_per_group(pd.DataFrame(rows), ["batch_size"], ["optimizer.lr", "optimizer.beta1"], edge_keys=["optimizer.lr"])
    assert best["optimizer.beta1"].tolist() == [0.0] and best["best_on_edge"].tolist() == [False]
    assert best_per_group(pd.DataFrame(rows), ["batch_size"], ["optimizer.lr", "optimizer.beta1"])["best_on_edge"].tolist() == [True]


def test_best_per_group_of_no_runs_keeps_its_columns():
    """A profile whose runs are all too short to decide (no batch size reaches MIN_STEPS) leaves an empty
    table; what reads the best cells must get no cells, not a KeyError."""
    from replication.fit import best_cell_runs

    empty = pd.DataFrame(columns=["batch_size", "optimizer.lr", "seed", "final_val_loss", "status", "steps"])
    best = best_per_group(empty, ["batch_size"], ["optimizer.lr"])
    assert {"loss", "optimizer.lr", "best_on_edge"} <= set(best.columns) and best.empty
    assert best_cell_runs(empty, best, ["batch_size"], ["optimizer.lr"]) == {}
