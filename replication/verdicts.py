"""The verdict rules every paper shares, so that a claim is decided the same way whoever measured it.

A claim's measurement is a plain dict (as metrics files store it); its ledger entry names the rule and
the rule's parameters (replication/papers/<paper>/ledger.yaml). Every rule first applies the gates:

- a claim whose deciding cells train for fewer than `MIN_STEPS` optimizer steps is "not testable at this
  scale" (at a fixed token budget such a cell measures step starvation, not the batch size);
- a comparison needs `MIN_SEEDS` seeds at every compared cell, or it is "not testable at this scale" (a
  measurement marked `exact`, an expectation computed in closed form as in Zhang et al.'s theory, has no
  seed noise and skips this gate);
- a difference counts only when it exceeds `Z` standard errors of the difference, otherwise "within noise"
  (never "confirmed" by default);
- tolerances come from the measured seed spread (`SEED_SDS` x `seed_sd`), plus the gap the paper itself allows.

A fitted slope or exponent carries bootstrap draws over seeds; its verdict states the share of draws that
keep it. The report applies the same rules to the stored measurements, so a verdict is never typed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import numpy as np

MIN_STEPS = 250
MIN_SEEDS = 3
Z = 2.0
SEED_SDS = 2.0  # an equivalence tolerates SEED_SDS seed standard deviations: what re-seeding one run can move it

CONFIRMED, PARTLY, NOT_CONFIRMED = "confirmed", "partly", "not confirmed"
WITHIN_NOISE, NOT_TESTABLE, NOT_RUN = "within noise", "not testable at this scale", "not run yet"
VERDICTS = (CONFIRMED, PARTLY, NOT_CONFIRMED, WITHIN_NOISE, NOT_TESTABLE, NOT_RUN)


class RuleError(ValueError):
    """A rule asked for with a name, parameters or measurement it cannot use."""


@dataclass(frozen=True)
class Decision:
    verdict: str
    reason: str
    share: float | None = None  # share of bootstrap draws that keep the verdict (fitted quantities only)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


# ------------------------------------------------------------------------------------------ measurements
def cell_losses(losses: Iterable[float]) -> np.ndarray:
    """The finite per-seed losses of one cell (a diverged seed has none)."""
    values = np.asarray([v for v in losses if v is not None], dtype=float)
    return values[np.isfinite(values)]


def pooled_sd(*cells: Iterable[float]) -> float:
    """The seed-to-seed standard deviation pooled over cells with at least two seeds (NaN if none)."""
    cells = [cell_losses(c) for c in cells]
    dof = sum(len(c) - 1 for c in cells if len(c) > 1)
    if dof == 0:
        return float("nan")
    return float(np.sqrt(sum(((c - c.mean()) ** 2).sum() for c in cells if len(c) > 1) / dof))


def _fewest(steps: Iterable[int]) -> int | None:
    """The fewest optimizer steps among `steps` (None when none is known)."""
    return min((int(s) for s in steps if s is not None and np.isfinite(s)), default=None)


def compare(a: Iterable[float], b: Iterable[float], steps: Iterable[int] = (), seed_sd: float | None = None) -> dict:
    """The measurement of "A against B" from their per-seed losses (NaN or None: a diverged seed): the
    difference of means (A - B), its standard error (independent seeds), the fewest seeds of the two, the
    seed spread (pooled over the two cells unless given, e.g. pooled over a grid), and the fewest optimizer
    steps among `steps`. A cell whose every seed diverged is marked `diverged` (infinitely bad: the rules
    read its difference as +-inf), since "diverged" must fail a claim, not drop out of it."""
    a, b = list(a), list(b)
    tried = {"a": len(a), "b": len(b)}
    a, b = cell_losses(a), cell_losses(b)
    diverged = [k for k, cell in (("a", a), ("b", b)) if tried[k] and not len(cell)]
    n = min(tried["a"] if "a" in diverged else len(a), tried["b"] if "b" in diverged else len(b))
    var = lambda c: c.var(ddof=1) / len(c) if len(c) > 1 else np.nan
    out = {
        "a": float(a.mean()) if len(a) else None, "b": float(b.mean()) if len(b) else None,
        "difference": float(a.mean() - b.mean()) if len(a) and len(b) else None,
        "se": float(np.sqrt(var(a) + var(b))) if len(a) > 1 and len(b) > 1 else None,
        "seed_sd": float(pooled_sd(a, b) if seed_sd is None else seed_sd),
        "n_seeds": int(n), "min_steps": _fewest(steps),
    }
    if len(diverged) == 1:
        out.update(diverged=diverged[0], se=float(np.sqrt(var(a if len(a) else b))) if max(len(a), len(b)) > 1 else 0.0)
    elif diverged:
        out["untestable"] = "both compared cells diverged at every seed"
    return out


def seed_values(losses: Iterable[float], diverged: str = "drop") -> np.ndarray:
    """A cell's per-seed losses: a diverged seed (NaN, None, inf) is dropped, or with `diverged="inf"`
    kept as an infinite loss (for statistics where a diverged run is an outcome, like the share of a grid
    near its best)."""
    if diverged == "inf":
        return np.asarray([np.inf if v is None or not np.isfinite(v) else v for v in losses], dtype=float)
    return cell_losses(losses)


def bootstrap(cells: dict, statistic: Callable[[dict], float], draws: int = 200, seed: int = 0, diverged: str = "drop") -> np.ndarray:
    """`statistic` over resampled seeds: each draw resamples every cell's per-seed values with replacement
    (cells are independent runs) and passes {cell: mean} to `statistic`."""
    rng = np.random.default_rng(seed)
    cells = {k: seed_values(v, diverged) for k, v in cells.items()}
    out = []
    for _ in range(draws):
        means = {k: (rng.choice(v, len(v)).mean() if len(v) else np.nan) for k, v in cells.items()}
        out.append(statistic(means))
    return np.asarray(out, dtype=float)


def bootstrap_difference(cells: dict, statistic: Callable[[dict], float], steps: Iterable[int] = (), draws: int = 200,
                         diverged: str = "drop") -> dict:
    """The measurement of a difference that is a function of several cells' means (a gap between gaps, a
    spread): `statistic` on the means, its standard error from the bootstrap over seeds, the fewest seeds of
    any cell and the fewest optimizer steps among `steps`. `diverged` as in `seed_values`."""
    raw = {k: list(v) for k, v in cells.items()}
    values = {k: seed_values(v, diverged) for k, v in raw.items()}
    n = min((len(values[k]) or len(raw[k]) for k in raw), default=0)  # a cell that diverged at every seed counts its attempts
    point = statistic({k: v.mean() if len(v) else np.nan for k, v in values.items()})
    se = float(np.std(bootstrap(values, statistic, draws, diverged=diverged), ddof=1)) if n > 1 else None
    return {"difference": None if not np.isfinite(point) else float(point), "se": se, "n_seeds": int(n),
            "min_steps": _fewest(steps)}


# ------------------------------------------------------------------------------------------------ gates
def _gate(m: dict, seeds: bool = True) -> Decision | None:
    if m.get("untestable"):
        return Decision(NOT_TESTABLE, str(m["untestable"]))
    steps = m.get("min_steps")
    if steps is not None and steps < MIN_STEPS:
        return Decision(NOT_TESTABLE, f"a deciding cell trains for {steps} optimizer steps (< {MIN_STEPS})")
    if seeds and not m.get("exact") and (m.get("n_seeds") or 0) < MIN_SEEDS:
        return Decision(NOT_TESTABLE, f"{m.get('n_seeds') or 0} seed(s) at a deciding cell (< {MIN_SEEDS})")
    return None


def _difference(m: dict) -> float:
    """A - B, with a cell that diverged at every seed read as infinitely bad."""
    if m.get("diverged") in ("a", "b"):
        return np.inf if m["diverged"] == "a" else -np.inf
    return _need(m, "difference")[0]


def _need(m: dict, *keys: str) -> list:
    missing = [k for k in keys if m.get(k) is None]
    if missing:
        raise RuleError(f"the measurement lacks {', '.join(missing)} (has {', '.join(sorted(m)) or 'nothing'})")
    return [m[k] for k in keys]


# ------------------------------------------------------------------------------------------------ rules
def difference(m: dict, expect: str = "lower") -> Decision:
    """A is `lower` (or `higher`) than B: the difference must exceed Z standard errors in that direction."""
    if expect not in ("lower", "higher"):
        raise RuleError(f"difference: expect must be 'lower' or 'higher', not {expect!r}")
    gate = _gate(m)
    if gate:
        return gate
    d, (se,) = _difference(m), _need(m, "se")
    if np.isinf(d):
        return Decision(CONFIRMED if (d < 0) == (expect == "lower") else NOT_CONFIRMED, f"{'A' if d > 0 else 'B'} diverged at every seed")
    if abs(d) <= Z * se:
        return Decision(WITHIN_NOISE, f"|{d:+.3f}| <= {Z:g} x SE {se:.3f}")
    right = d < 0 if expect == "lower" else d > 0
    return Decision(CONFIRMED if right else NOT_CONFIRMED, f"{d:+.3f} is {abs(d) / se:.1f} SE {'below' if d < 0 else 'above'} zero")


def equivalent(m: dict, allowance: float = 0.0) -> Decision:
    """A is no worse than B (difference A - B, lower is better) beyond a tolerance of SEED_SDS measured seed
    standard deviations plus `allowance`, the gap the paper itself still calls competitive. Confirmed when
    the whole Z-SE interval of the difference lies under the tolerance, not confirmed when it lies above
    it, otherwise within noise."""
    gate = _gate(m)
    if gate:
        return gate
    d, (se, sd) = _difference(m), _need(m, "se", "seed_sd")
    if np.isinf(d):
        return Decision(NOT_CONFIRMED if d > 0 else CONFIRMED, f"{'A' if d > 0 else 'B'} diverged at every seed")
    tolerance = allowance + SEED_SDS * sd
    low, high = d - Z * se, d + Z * se
    span = (f"{d:+.3f} [{low:+.3f}, {high:+.3f}] vs tolerance {tolerance:.3f} ({SEED_SDS:g} x seed sd {sd:.3f}"
            + (f" + paper's {allowance:g})" if allowance else ")"))
    if high <= tolerance:
        return Decision(CONFIRMED, span)
    if low > tolerance:
        return Decision(NOT_CONFIRMED, span)
    return Decision(WITHIN_NOISE, span)


def interval(m: dict, low: float = -np.inf, high: float = np.inf, exclude: float | None = None) -> Decision:
    """A fitted slope or exponent against the paper's range [low, high]: confirmed when the estimate is in
    range and its bootstrap 95 % interval excludes `exclude` (e.g. 0: "it grows at all"); partly when only
    one holds or the interval reaches into the range; not confirmed when the interval lies outside it.
    The share is that of bootstrap draws on the same side of the range (and of `exclude`) as the estimate."""
    gate = _gate(m)
    if gate:
        return gate
    (estimate,) = _need(m, "estimate")
    draws = np.asarray([d for d in m.get("draws") or [] if d is not None], dtype=float)
    draws = draws[np.isfinite(draws)]
    if len(draws) < 20:
        raise RuleError(f"interval: needs at least 20 finite bootstrap draws, got {len(draws)}")
    ci_low, ci_high = np.percentile(draws, [2.5, 97.5])
    inside = low <= estimate <= high
    clear = exclude is None or not ci_low <= exclude <= ci_high
    if inside and clear:
        verdict = CONFIRMED
    elif inside or (ci_high >= low and ci_low <= high):
        verdict = PARTLY
    else:
        verdict = NOT_CONFIRMED
    same = (draws >= low) & (draws <= high) if inside else ~((draws >= low) & (draws <= high))
    if exclude is not None and inside:
        same &= np.sign(draws - exclude) == np.sign(estimate - exclude)
    target = f"[{low:g}, {high:g}]" + (f", excluding {exclude:g}" if exclude is not None else "")
    return Decision(verdict, f"{estimate:.2f} (95 % {ci_low:.2f} to {ci_high:.2f}) against {target}", share=round(float(same.mean()), 3))


def threshold(m: dict, at_most: float | None = None, at_least: float | None = None) -> Decision:
    """A deterministic quantity (memory, a count: no seed noise) against the paper's bound."""
    gate = _gate(m, seeds=False)
    if gate:
        return gate
    (value,) = _need(m, "value")
    ok = (at_most is None or value <= at_most) and (at_least is None or value >= at_least)
    bound = " and ".join(s for s in (at_most is not None and f"<= {at_most:g}", at_least is not None and f">= {at_least:g}") if s)
    return Decision(CONFIRMED if ok else NOT_CONFIRMED, f"{value:.4g} against {bound}")


def all_of(m: dict, parts: dict) -> Decision:
    """A claim with several parts, each decided by its own rule: confirmed when all are, partly when
    some are, and otherwise the weakest part's verdict (not testable, within noise, not confirmed)."""
    if not parts:
        raise RuleError("all_of: needs at least one part")
    if m.get("untestable"):
        return Decision(NOT_TESTABLE, str(m["untestable"]))
    measured = m.get("parts") or {}
    missing = [p for p in parts if p not in measured]
    if missing:
        raise RuleError(f"all_of: the measurement lacks part(s) {', '.join(missing)}")
    decisions = {name: decide(spec["rule"], spec.get("params") or {}, measured[name]) for name, spec in parts.items()}
    verdicts = [d.verdict for d in decisions.values()]
    reason = "; ".join(f"{name}: {d.verdict} ({d.reason})" for name, d in decisions.items())
    if all(v == CONFIRMED for v in verdicts):
        return Decision(CONFIRMED, reason)
    if NOT_TESTABLE in verdicts:
        return Decision(NOT_TESTABLE, reason)
    if CONFIRMED in verdicts:
        return Decision(PARTLY, reason)
    return Decision(WITHIN_NOISE if WITHIN_NOISE in verdicts else NOT_CONFIRMED, reason)


RULES: dict[str, Callable[..., Decision]] = {
    "difference": difference, "equivalent": equivalent, "interval": interval, "threshold": threshold, "all_of": all_of,
}


def check_rule(rule: str, params: dict) -> None:
    """Fail early, naming the problem, on an unknown rule or a parameter the rule does not take."""
    import inspect

    if rule not in RULES:
        raise RuleError(f"unknown rule {rule!r}; the rules are: {', '.join(RULES)}")
    accepted = set(inspect.signature(RULES[rule]).parameters) - {"m"}
    unknown = set(params) - accepted
    if unknown:
        raise RuleError(f"rule {rule!r} takes {', '.join(sorted(accepted)) or 'no parameters'}, not {', '.join(sorted(unknown))}")
    for spec in (params.get("parts") or {}).values() if rule == "all_of" else ():
        check_rule(spec.get("rule", ""), spec.get("params") or {})


def decide(rule: str, params: dict, measurement: dict) -> Decision:
    """The verdict of `measurement` under `rule` with `params` (as a ledger entry names them)."""
    check_rule(rule, params)
    return RULES[rule](measurement, **params)
