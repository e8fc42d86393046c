"""Zhang et al.'s theory: one-pass mini-batch SGD on high-dimensional linear regression with power-law
spectra, computed exactly in expectation (no Monte Carlo).

Setting (Lin et al. 2024, used by Zhang et al. Sec. 5): x ~ N(0, H) with eigenvalues lambda_i = i^-a,
y = <x, w*> + noise of variance sigma^2, the source condition lambda_i w*_i^2 = i^-b, and a model that
learns the top M coordinates (the rest stay at 0: the approximation error). In H's eigenbasis the
second moment A = E[e e^T] of the error e = w - w* is not diagonal (it starts as the rank-one w* w*^T),
but its diagonal evolves on its own: for Gaussian x, E[x x^T A x x^T] = 2 H A H + tr(H A) H, whose
diagonal reads only A's diagonal, so one SGD step with batch B and step size g maps the diagonal A to

    A <- (1 - g lambda)^2 A + g^2 / B (lambda^2 A + lambda sum_j(lambda_j A_j) + sigma^2 lambda)

and the excess risk, sum_i lambda_i A_i, is exact without the off-diagonal terms. Zhang et al. evaluate an exponential weight average (EWA) of
the iterates, w_bar <- tau w_bar + (1 - tau) w, under a constant step size; its risk is exact too, from
two more diagonals: D = E[e_bar e^T] and E = E[e_bar e_bar^T] (the noise of a step is independent of the
past, so E[e_bar_t e_{t+1}^T] = D_t (1 - g lambda)):

    D <- tau (1 - g lambda) D + (1 - tau) A_new
    E <- tau^2 E + 2 tau (1 - tau) (1 - g lambda) D + (1 - tau)^2 A_new

Every (step size, EWA decay) pair runs side by side as one array, so one call gives the whole
hyperparameter grid of one batch size, and S(B), the fewest steps at which any pair's EWA risk reaches
a target, is read off as the first step where the best column does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VERSION = 1  # bumped by any change that alters the computed risks, so stored results (`computed.py`) are recomputed


@dataclass(frozen=True)
class Problem:
    """Power-law linear regression: spectrum exponent `a`, source exponent `b`, noise `sigma`, `dim`
    coordinates of which the model learns the first `model_dim` (None: all)."""

    a: float = 2.0
    b: float = 4.0
    sigma: float = 1.0
    dim: int = 1024
    model_dim: int | None = None

    def __post_init__(self):
        if self.a <= 1 or self.b <= 1:
            raise ValueError(f"the exponents must exceed 1 (a={self.a}, b={self.b}): the spectrum and the risk must be summable")
        if self.model_dim is not None and not 0 < self.model_dim <= self.dim:
            raise ValueError(f"model_dim {self.model_dim} must lie in (0, dim={self.dim}]")

    @property
    def eigenvalues(self) -> np.ndarray:
        return np.arange(1, self.dim + 1, dtype=float) ** -self.a

    @property
    def initial_error(self) -> np.ndarray:
        """E[(w0 - w*)_i^2] from w0 = 0: w*_i^2 = i^-(b - a), so that lambda_i w*_i^2 = i^-b."""
        return np.arange(1, self.dim + 1, dtype=float) ** -(self.b - self.a)

    def max_step_size(self, batch_size: int) -> float:
        """The stability cap of the step size, 1 / (lambda_1 + tr(H) / B) (the theory's gamma <~ min(B/tr H, 1/||H||))."""
        lam = self.eigenvalues
        return 1.0 / (lam[0] + lam.sum() / batch_size)


def ewa_risk_curves(problem: Problem, batch_size: int, step_sizes, decays, steps: int,
                    target: float | None = None) -> np.ndarray:
    """Expected excess risk of the EWA iterate after every step (row t: after t steps; row 0: at w = 0),
    one column per (step size, EWA decay) pair (decay 0: the last iterate). With `target`, stops at the
    first step where some column's risk is at or below it (that step is S(B)); the rows end there."""
    g = np.repeat(np.asarray(step_sizes, dtype=float), len(decays))[:, None]
    tau = np.tile(np.asarray(decays, dtype=float), len(step_sizes))[:, None]
    lam = problem.eigenvalues[None, :]
    learned = np.zeros(problem.dim, dtype=bool)
    learned[: problem.model_dim or problem.dim] = True
    a = np.repeat(problem.initial_error[None, :], len(g), axis=0)
    d, e = a.copy(), a.copy()
    contraction = np.where(learned, 1 - g * lam, 1.0)  # unlearned coordinates stay where they are
    decay_a = np.where(learned, contraction**2 + g**2 / batch_size * lam**2, 1.0)
    noise_gain = np.where(learned, g**2 / batch_size * lam, 0.0)
    risks = [np.full(len(g), float((lam * a[:1]).sum()))]
    sigma2 = problem.sigma**2
    # The step's coefficients, formed once (the same products, in the same order, as written out in full each
    # step: the risks are bit for bit those of the plain loop), and buffers reused in place: the loop runs up
    # to half a million steps for B = 1.
    e_keep, e_from_d, e_from_a = tau**2, 2 * tau * (1 - tau) * contraction, (1 - tau) ** 2
    d_keep, d_from_a = tau * contraction, 1 - tau
    weighted, term = np.empty_like(a), np.empty_like(a)
    for _ in range(steps):
        np.multiply(lam, a, out=weighted)
        drive = weighted.sum(axis=1, keepdims=True) + sigma2  # tr(H A) + sigma^2
        np.multiply(decay_a, a, out=a)
        np.multiply(noise_gain, drive, out=term)
        a += term  # a is now A after the step
        np.multiply(e_keep, e, out=e)
        np.multiply(e_from_d, d, out=term)
        e += term
        np.multiply(e_from_a, a, out=term)
        e += term
        np.multiply(d_keep, d, out=d)
        np.multiply(d_from_a, a, out=term)
        d += term
        np.multiply(lam, e, out=weighted)
        risk = weighted.sum(axis=1)
        risks.append(risk)
        if target is not None and risk.min() <= target:
            break
    return np.asarray(risks)


def step_size_grid(problem: Problem, batch_size: int, count: int = 10, factor: float = 2.0) -> np.ndarray:
    """`count` step sizes from the stability cap down by `factor` each."""
    return problem.max_step_size(batch_size) * factor ** -np.arange(count, dtype=float)


def decay_grid(batch_size: int, half_lives_samples) -> np.ndarray:
    """EWA decays whose half-lives are fixed in samples (the per-token rule of Zhang et al.'s table), plus 0."""
    return np.array([0.0, *(0.5 ** (batch_size / h) for h in half_lives_samples)])


@dataclass(frozen=True)
class StepsToTarget:
    batch_sizes: np.ndarray
    steps: np.ndarray  # nan where the target was not reached within the cap
    target: float
    best_risk: float  # the best EWA risk with n samples at the smallest batch size


def steps_to_target(problem: Problem, samples: int, batch_sizes, epsilon: float = 0.1, steps_cap: float = 8.0,
                    step_sizes: int = 10, half_lives=(1 / 8, 1 / 32, 1 / 128)) -> StepsToTarget:
    """S(B) for every batch size: the target is (1 + epsilon) x the best risk the smallest batch size
    reaches with `samples` samples (over its step-size and EWA grid); each B then runs until some grid
    point reaches the target, for at most `steps_cap` x samples / B steps. Half-lives are fractions of `samples`."""
    if not epsilon >= 0 or not steps_cap >= 1:
        raise ValueError(f"epsilon must be >= 0 and steps_cap >= 1 (got {epsilon}, {steps_cap}): the target must be "
                         "reachable by the smallest batch size within its own run")
    batch_sizes = np.asarray(sorted(batch_sizes), dtype=int)
    halves = [h * samples for h in half_lives]

    def curves(b: int, steps: int, target=None) -> np.ndarray:
        return ewa_risk_curves(problem, b, step_size_grid(problem, b, step_sizes), decay_grid(b, halves), steps, target)

    b0 = int(batch_sizes[0])
    first = curves(b0, samples // b0).min(axis=1)
    best = float(first[-1])
    target = (1 + epsilon) * best
    reached = np.flatnonzero(first <= target)  # by the last row at the latest (epsilon >= 0): B0's curve is already there
    steps = [float(reached[0]) if reached.size else np.nan]
    for b in batch_sizes[1:]:
        cap = int(np.ceil(steps_cap * samples / b))
        risk = curves(int(b), cap, target).min(axis=1)
        steps.append(float(len(risk) - 1) if risk[-1] <= target else np.nan)
    return StepsToTarget(batch_sizes, np.asarray(steps), target, best)


def monte_carlo_risk(problem: Problem, batch_size: int, step_size: float, decay: float, steps: int, trials: int,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The same EWA risk curve by simulation (for tests): the mean over `trials` independent SGD runs on sampled
    data after every step, and the standard error of that mean (what a disagreement is measured in)."""
    rng = np.random.default_rng(seed)
    lam = problem.eigenvalues
    w_star = np.sqrt(problem.initial_error)
    learned = np.zeros(problem.dim, dtype=bool)
    learned[: problem.model_dim or problem.dim] = True
    w = np.zeros((trials, problem.dim))
    w_bar = w.copy()
    risk = lambda v: ((v - w_star) ** 2 * lam).sum(axis=1)  # noqa: E731 (one risk per trial)
    per_trial = [risk(w_bar)]
    for _ in range(steps):
        x = rng.standard_normal((trials, batch_size, problem.dim)) * np.sqrt(lam)
        y = x @ w_star + problem.sigma * rng.standard_normal((trials, batch_size))
        residual = np.einsum("tbd,td->tb", x, w) - y
        grad = np.einsum("tb,tbd->td", residual, x) / batch_size
        w = w - step_size * grad * learned
        w_bar = decay * w_bar + (1 - decay) * w
        per_trial.append(risk(w_bar))
    per_trial = np.asarray(per_trial)
    return per_trial.mean(axis=1), per_trial.std(axis=1, ddof=1) / np.sqrt(trials)
