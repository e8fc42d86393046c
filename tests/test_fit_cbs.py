"""Critical-batch-size fits: the paper's own table gives the paper's numbers, synthetic data its known answer."""

import numpy as np
import pytest

from replication.fit import critical_batch_size, noise_scale, power_law, steps_to_target

BATCH = 2 ** np.arange(6, 15)
# Zhang et al.'s measured steps (spec section 2, from plots/chinchilla.ipynb) and the spec's recomputed B*
PAPER = {
    85: ([46000, 23000, 13282, 7000, 3840, 2528, 1917, 1600, 1600], 745),
    151: ([96000, 49000, 24000, 12000, 7128, 4350, 2940, 2400, 2300], 955),
    302: ([196000, 90000, 46000, 23400, 13300, 7224, 4980, 3400, 2879], 1394),
    604: ([311000, 166000, 81000, 37440, 21320, 11400, 7199, 4700, 3800], 1889),
    1200: ([642000, 331000, 176000, 94000, 46500, 25000, 15360, 8900, 6500], 2533),
}


@pytest.mark.slow
@pytest.mark.parametrize("size", PAPER)
def test_the_papers_table_gives_the_papers_critical_batch_size(size):
    steps, expected = PAPER[size]
    fit = critical_batch_size(BATCH, steps, reference_batch_size=256)
    assert fit["b_star"] == pytest.approx(expected, abs=1)
    assert fit["b_star_low"] < fit["b_star"] < fit["b_star_high"]
    assert fit["r2"] > 0.99


@pytest.mark.slow
def test_the_papers_critical_batch_sizes_give_its_exponent():
    sizes = list(PAPER)
    stars = [critical_batch_size(BATCH, PAPER[n][0], reference_batch_size=256)["b_star"] for n in sizes]
    law = power_law(sizes, stars)
    assert law["exponent"] == pytest.approx(0.468, abs=0.002)
    assert law["coefficient"] == pytest.approx(93.2, rel=0.01)
    assert law["exponent_low"] < 0.468 < law["exponent_high"]


def test_per_seed_steps_recover_a_known_noise_scale():
    rng = np.random.default_rng(0)
    batch = np.array([2, 4, 8, 16, 32, 64, 128])
    s_min, b_noise = 50.0, 40.0
    seeds = (s_min * (1 + b_noise / batch))[:, None] * np.exp(rng.normal(0, 0.03, (len(batch), 3)))
    fit = critical_batch_size(batch, seeds)
    assert fit["b_noise"] == pytest.approx(b_noise, rel=0.15)
    assert fit["b_star_low"] < 1.2 * 2 + 0.2 * b_noise < fit["b_star_high"]
    assert fit["slope_small"] == pytest.approx(np.log((1 + 20) / (1 + 10)) / np.log(2) * -1, abs=0.1)


def test_batch_sizes_that_never_reach_the_target_are_listed_not_fitted():
    steps = [400.0, 200.0, 110.0, 70.0, np.nan]
    fit = critical_batch_size([1, 2, 4, 8, 16], steps)
    assert fit["unreached"] == [16.0] and fit["batch_sizes"] == [1, 2, 4, 8]
    with pytest.raises(ValueError, match=">= 3 batch sizes"):
        critical_batch_size([1, 2, 4], [100.0, np.nan, np.nan])


def test_steps_to_target_interpolates_in_log_steps():
    hit = steps_to_target([10, 20, 40], [5.0, 4.0, 3.0], 3.5)
    assert hit["step"] == pytest.approx(np.sqrt(20 * 40)) and hit["grid_step"] == 40 and hit["previous_step"] == 20
    assert steps_to_target([10, 20], [5.0, 4.0], 3.0) is None
    assert steps_to_target([10, 20], [3.0, 2.0], 3.5)["step"] == 10


def test_a_robust_power_law_is_not_carried_by_one_outlier():
    x = np.array([1, 2, 4, 8, 16, 32], dtype=float)
    y = 3 * x**0.5
    y[-1] *= 4  # one wild point
    assert power_law(x, y)["exponent"] == pytest.approx(0.5, abs=0.05)
    assert power_law(x, y, robust=False)["exponent"] > 0.65


def test_the_noise_scale_estimator_is_exact_on_its_own_model():
    g2, trace = 2.0, 30.0  # |G|^2 and tr(Sigma): E|g_B|^2 = |G|^2 + tr(Sigma) / B
    est = noise_scale([g2 + trace / 4], [g2 + trace / 16], 4, 16)
    assert est["b_simple"] == pytest.approx(trace / g2) and est["gradient_sq"] == pytest.approx(g2)


def _lr_grid(alpha=1.0, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    b, t = np.meshgrid([16, 32, 64, 128, 256], [1e8, 3e8, 1e9, 3e9, 1e10])
    lr = 4.6 * b**alpha * t**-0.51 * np.exp(rng.normal(0, noise, b.shape))
    return b.ravel(), t.ravel(), lr.ravel()


def test_the_lr_power_law_recovers_shen_et_als_constants():
    from replication.fit import lr_power_law

    law = lr_power_law(*_lr_grid())
    assert law["a"] == pytest.approx(4.6, rel=0.3) and law["b"] == pytest.approx(-0.51, abs=0.03)
    assert law["a_low"] < 4.6 < law["a_high"] and law["b_low"] < -0.51 < law["b_high"]
    assert law["batch_exponent"] == pytest.approx(1.0, abs=0.05)


def test_a_square_root_batch_law_shows_in_the_free_exponent_not_in_the_fixed_form():
    from replication.fit import lr_power_law

    law = lr_power_law(*_lr_grid(alpha=0.5))
    assert law["batch_exponent"] == pytest.approx(0.5, abs=0.05)
    assert law["batch_exponent_high"] < 0.8
    assert law["rms_fixed"] > 2 * law["rms_free"]  # eta / B = a T^b cannot fit it
    with pytest.raises(ValueError, match="token budgets"):
        lr_power_law([16, 32, 64], [1e8] * 3, [1e-3, 2e-3, 4e-3])
