"""The exact linear-regression recursion (Zhang et al.'s theory) against simulation, and its known regimes."""

import numpy as np
import pytest

from replication.theory import Problem, ewa_risk_curves, monte_carlo_risk, steps_to_target


@pytest.mark.slow
@pytest.mark.parametrize("batch_size,decay", [(1, 0.0), (4, 0.9), (16, 0.0), (16, 0.8)])
def test_exact_risk_matches_a_monte_carlo_simulation_within_its_standard_error(batch_size, decay):
    """At dimension 256 (200 learned) and a step size half the stability cap, every step of the exact curve lies
    within 4.5 standard errors of a 1,500-run simulation (each error under 2 % of the risk). Strong enough to
    fail: without the 2 H A H term of the fourth moment the B = 1 curve is 7 standard errors off at some step
    (the averaged and large-batch curves, which that term moves less, 1-3); a wrong EWA recursion is off by 9-400."""
    problem = Problem(a=2.0, b=3.0, sigma=0.5, dim=256, model_dim=200)
    step_size = problem.max_step_size(batch_size) / 2
    exact = ewa_risk_curves(problem, batch_size, [step_size], [decay], 25)[:, 0]
    simulated, standard_error = monte_carlo_risk(problem, batch_size, step_size, decay, 25, trials=1500, seed=1)
    assert exact[0] == pytest.approx(simulated[0])  # w = 0: no randomness yet
    assert np.all(standard_error[1:] < 0.02 * exact[1:])
    assert np.all(np.abs(exact - simulated)[1:] <= 4.5 * standard_error[1:])


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


def test_a_target_the_smallest_batch_size_cannot_reach_is_refused():
    with pytest.raises(ValueError, match="epsilon must be >= 0 and steps_cap >= 1"):
        steps_to_target(Problem(dim=16), 64, [1, 2], epsilon=-0.5)
    with pytest.raises(ValueError, match="steps_cap >= 1"):
        steps_to_target(Problem(dim=16), 64, [1, 2], steps_cap=0.5)


@pytest.mark.parametrize("kwargs,match", [({"a": 1.0}, "exceed 1"), ({"model_dim": 0}, "model_dim"), ({"dim": 8, "model_dim": 9}, "model_dim")])
def test_bad_problems_are_rejected_with_the_reason(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Problem(**kwargs)
