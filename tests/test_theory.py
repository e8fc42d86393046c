"""The exact linear-regression recursion (Zhang et al.'s theory) against simulation, and its known regimes."""

import numpy as np
import pytest

from replication.theory import Problem, ewa_risk_curves, monte_carlo_risk, steps_to_target


@pytest.mark.parametrize("batch_size,step_size,decay", [(1, 0.2, 0.0), (2, 0.3, 0.9), (4, 0.5, 0.5)])
def test_exact_risk_matches_a_monte_carlo_simulation(batch_size, step_size, decay):
    problem = Problem(a=2.0, b=3.0, sigma=0.5, dim=6, model_dim=4)
    assert step_size < problem.max_step_size(batch_size)
    exact = ewa_risk_curves(problem, batch_size, [step_size], [decay], 30)[:, 0]
    simulated = monte_carlo_risk(problem, batch_size, step_size, decay, 30, trials=20000, seed=1)
    assert np.max(np.abs(exact - simulated) / exact) < 0.05


def test_the_unlearned_coordinates_are_the_approximation_error():
    problem = Problem(a=2.0, b=3.0, sigma=0.0, dim=50, model_dim=5)
    floor = float((problem.eigenvalues * problem.initial_error)[5:].sum())
    risk = ewa_risk_curves(problem, 4, [0.05], [0.99], 5000)[-1, 0]  # a small step, averaged: converged
    assert floor < risk < floor * 1.01


def test_small_batches_scale_linearly_and_the_knee_moves_right_with_n():
    problem = Problem(a=2.0, b=4.0, dim=256)
    batch_sizes = [1, 2, 4, 8, 16, 32, 64, 128]
    small = steps_to_target(problem, 1024, batch_sizes)
    large = steps_to_target(problem, 4096, batch_sizes)
    assert small.steps[0] / small.steps[1] == pytest.approx(2.0, rel=0.15)  # slope -1 at small B
    efficiency = lambda r: r.steps[0] / (r.steps * r.batch_sizes)  # 1: perfect linear scaling
    assert efficiency(large)[5] > efficiency(small)[5] + 0.1  # at B = 32 more samples keep linear scaling longer


def test_a_target_stops_the_recursion_at_the_first_step_that_reaches_it():
    problem = Problem(dim=64)
    full = ewa_risk_curves(problem, 2, [0.2, 0.1], [0.0], 200)
    target = full[50].min()
    stopped = ewa_risk_curves(problem, 2, [0.2, 0.1], [0.0], 200, target=target)
    assert len(stopped) - 1 == int(np.argmax(full.min(axis=1) <= target)) <= 50


@pytest.mark.parametrize("kwargs,match", [({"a": 1.0}, "exceed 1"), ({"model_dim": 0}, "model_dim"), ({"dim": 8, "model_dim": 9}, "model_dim")])
def test_bad_problems_are_rejected_with_the_reason(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Problem(**kwargs)
