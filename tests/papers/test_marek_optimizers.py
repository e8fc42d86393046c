"""Marek et al., Fig. 1a's optimizer claims: the ledger's rules on synthetic run tables whose answers are known."""

import numpy as np
import pandas as pd

from replication.claims import by_id
from replication.papers.marek import optimizers

SIZES = (1, 4, 16, 64, 256)


def _runs(table: dict[str, list[float]], noise=0.003, steps=(4000, 1000, 500, 300, 260)) -> pd.DataFrame:
    """Three seeds (mean -noise, mean, mean +noise) at the one LR of each (optimizer, batch size); a NaN mean diverged."""
    rows = [{"optimizer.name": o, "batch_size": b, "optimizer.lr": 1e-3, "optimizer.beta1_half_life_tokens": 800.0 if o == "adamw" else np.nan,
             "seed": s, "steps": n,
             "final_val_loss": np.nan if np.isnan(loss) else loss + noise * (s - 1), "status": "diverged" if np.isnan(loss) else "ok"}
            for o, losses in table.items() for b, loss, n in zip(SIZES, losses, steps) for s in range(3)]
    return pd.DataFrame(rows)


def _verdicts(runs: pd.DataFrame) -> dict[str, str]:
    best = optimizers.best_cells(runs)
    return {i: c["verdict"] for i, c in by_id(optimizers.optimizer_claims(best, runs)).items()}


PAPER_LIKE = {"muon": [3.67, 3.66, 3.70, 3.71, 3.72], "adamw": [3.68, 3.73, 3.73, 3.73, 3.75],
              "adafactor": [3.68, 3.74, 3.75, 3.82, 4.00], "sgd": [3.82, 4.11, 4.54, np.nan, np.nan]}


def test_optimizer_claims_confirm_a_world_shaped_like_fig_1a():
    assert _verdicts(_runs(PAPER_LIKE)) == {
        "marek.optimizers.small_batch_per_token": "confirmed", "marek.optimizers.adaptive_drift": "confirmed",
        "marek.optimizers.sgd_competitive_at_b1": "confirmed", "marek.optimizers.sgd_gap_grows": "confirmed"}


def test_optimizer_claims_reject_a_world_where_large_batches_win():
    verdicts = _verdicts(_runs({"muon": [4.0, 3.9, 3.8, 3.7, 3.6], "adamw": [4.5, 4.2, 3.9, 3.7, 3.6],
                                "adafactor": [4.2, 4.0, 3.9, 3.7, 3.6], "sgd": [5.0, 4.9, 4.8, 4.7, 4.6]}))
    assert verdicts["marek.optimizers.small_batch_per_token"] == "not confirmed"
    assert verdicts["marek.optimizers.sgd_competitive_at_b1"] == "not confirmed"
    assert verdicts["marek.optimizers.adaptive_drift"] == "not confirmed"  # 0.5 apart at B=1, together at B=256
    assert verdicts["marek.optimizers.sgd_gap_grows"] == "within noise"  # 1.0 behind at every batch size


def test_noise_and_starved_batch_sizes_decide_nothing():
    worse = {**PAPER_LIKE, "adamw": [3.80] + PAPER_LIKE["adamw"][1:]}  # B=1 0.07 behind B=4 (the paper's allowance: 0.04), seed sd 0.03
    assert _verdicts(_runs(worse, noise=0.03))["marek.optimizers.small_batch_per_token"] == "within noise"
    assert _verdicts(_runs(worse, noise=0.003))["marek.optimizers.small_batch_per_token"] == "not confirmed"
    assert _verdicts(_runs(PAPER_LIKE, noise=0.5))["marek.optimizers.sgd_gap_grows"] == "within noise"
    starved = _verdicts(_runs(PAPER_LIKE, steps=(400, 100, 25, 6, 2)))
    assert starved["marek.optimizers.small_batch_per_token"] == "not testable at this scale"  # B=4 is the best larger batch: 100 steps
    assert starved["marek.optimizers.sgd_gap_grows"] == "not testable at this scale"
    one_seed = _verdicts(_runs(PAPER_LIKE).query("seed == 0"))
    assert set(one_seed.values()) == {"not testable at this scale"}


def test_a_best_cell_on_the_edge_of_its_grid_decides_nothing():
    """AdamW at B=1 best at the shortest of three beta1 half-lives: the optimum may lie below the grid."""
    runs = _runs(PAPER_LIKE)
    b1 = runs[(runs["optimizer.name"] == "adamw") & (runs["batch_size"] == 1)]
    variants = [b1.assign(**{"optimizer.beta1_half_life_tokens": h, "final_val_loss": b1["final_val_loss"] + d}) for h, d in ((6400.0, 0.05), (100.0, -0.01))]
    runs = pd.concat([runs, *variants], ignore_index=True)
    best = optimizers.best_cells(runs)
    claims = by_id(optimizers.optimizer_claims(best, runs))
    small = claims["marek.optimizers.small_batch_per_token"]
    assert small["verdict"] == "not testable at this scale"
    assert small["reason"] == "best beta1 half-life on the grid edge at adamw, B=1 (would need: the grid extended past that edge until the best cell is interior)"
    assert claims["marek.optimizers.sgd_competitive_at_b1"]["verdict"] == "confirmed"  # SGD against Muon: AdamW's edge is not in it
    assert _verdicts(_runs(PAPER_LIKE))["marek.optimizers.small_batch_per_token"] == "confirmed"  # the same world without the edge


def test_follow_ups_go_to_the_compared_cells_and_refine_towards_the_better_neighbour():
    from replication.papers.marek.common import refine_factor

    runs = _runs(PAPER_LIKE, steps=(4000, 1000, 500, 100, 20))
    cells = optimizers.compared(runs, every_batch_size=("adamw",))
    assert set(cells["batch_size"]) == {1, 4, 16}  # 64 and 256 train for fewer than 250 steps
    assert set(cells.loc[cells["batch_size"] == 4, "optimizer.name"]) == {"adamw"}  # only AdamW between the ends
    grid = pd.DataFrame({"optimizer.lr": [1e-3, 4e-3, 1.6e-2], "final_val_loss": [3.2, 3.0, 3.1]})
    assert refine_factor(grid, 4e-3, 2.0) == 2.0  # the upper neighbour is better
    assert refine_factor(grid.assign(final_val_loss=[3.05, 3.0, np.nan]), 4e-3, 2.0) == 0.5  # a diverged neighbour is worst
    assert refine_factor(grid.assign(final_val_loss=[2.9, 3.0, 3.1]), 1e-3, 2.0) == 0.5  # at the edge: outwards


def test_the_toy_quadratic_steps_are_torch_s_heavy_ball_and_show_the_paper_s_point():
    """Without noise, torch.optim.SGD's path is the heavy-ball recurrence v = mu v + g, p = p - lr v on
    x^2 + 10 y^2; with the paper's settings momentum pulls far ahead at large batch and not at small batch."""
    path = optimizers.momentum_toy(steps=5, lr=0.05, momentum=0.4, noise=0.0, runs=2)
    p, v = np.array([1.0, 1.0]), np.zeros(2)
    for k in range(5):
        v = 0.4 * v + np.array([2.0, 20.0]) * p
        p = p - 0.05 * v
        assert np.allclose(path[k + 1], p), k
    final = optimizers.momentum_toy_table(runs=400).groupby(["regime", "momentum"])["loss_median"].last()
    assert final[("large batch", 0.4)] < 0.2 * final[("large batch", 0.0)]
    assert final[("small batch", 0.4)] > 0.8 * final[("small batch", 0.0)]


def _beta1_grid(best_half_life: float, batch_size: int) -> pd.DataFrame:
    """AdamW at one batch size over beta1 half-lives 800 x 8^k (k = -3..1), 3 seeds, 32-token sequences: the
    loss lowest at `best_half_life` (and one LR, so only the half-life can sit on an edge)."""
    lives = [800.0 / 8**3, 800.0 / 8**2, 800.0 / 8, 800.0, 6400.0]
    lives = [h for h in lives if h >= best_half_life]
    return pd.DataFrame([{"optimizer.name": "adamw", "batch_size": batch_size, "optimizer.lr": 1e-3, "optimizer.beta1_half_life_tokens": h,
                          "seed": s, "steps": 128000 // (32 * batch_size), "tokens": 128000, "status": "ok",
                          "final_val_loss": 4.0 + 0.01 * np.log2(h / best_half_life) + 0.001 * s} for h in lives for s in range(3)])


def test_a_shortest_beta1_half_life_where_beta1_is_already_zero_is_the_end_of_its_range_not_an_edge():
    at_b4 = optimizers.best_cells(_beta1_grid(12.5, 4)).iloc[0]  # 128 tokens a step: beta1 = 0.5^(128 / 12.5) < 0.001
    assert at_b4["optimizer.beta1_half_life_tokens"] == 12.5 and not at_b4["best_on_edge"]
    at_b1 = optimizers.best_cells(_beta1_grid(12.5, 1)).iloc[0]  # 32 tokens a step: beta1 = 0.17, momentum still on
    assert at_b1["best_on_edge"] and at_b1["edge_on"] == "optimizer.beta1_half_life_tokens"


def test_a_best_cell_on_an_edge_gets_the_next_value_past_it():
    from replication.params import experiment, load_params

    base = experiment(load_params("params.yaml"), "marek_optimizers", "cpu").base
    runs = _beta1_grid(100.0, 1)
    spec = base.replace(**{"optimizer.name": "adamw", "batch_size": 1, "optimizer.lr": 1e-3, "optimizer.beta1_half_life_tokens": 100.0})
    steps = {"optimizer.lr": 2.0, "optimizer.beta1_half_life_tokens": 8.0}
    nxt = optimizers.past_edges([spec], runs, optimizers.best_cells(runs), steps)
    assert [s.optimizer.beta1_half_life_tokens for s in nxt] == [12.5]  # 100 .. 6400 tried, 100 best: one step below
    interior = _beta1_grid(12.5, 1)  # 12.5 .. 6400 tried
    interior.loc[interior["optimizer.beta1_half_life_tokens"] == 100.0, "final_val_loss"] -= 0.1  # 100 best, inside the grid
    assert optimizers.past_edges([spec], interior, optimizers.best_cells(interior), steps) == []
