"""The verdict rules every paper shares, so that a claim is decided the same way whoever measured it.

A claim's measurement is a plain dict (as metrics files store it); its ledger entry names the rule, the
rule's parameters and the regime the claim is about (replication/papers/<paper>/ledger.yaml). Every rule
first applies the gates, each of which reads "not testable at this scale" when it fails:

- the deciding cells train for at least `MIN_STEPS` optimizer steps (at a fixed token budget a shorter
  cell measures step starvation, not the batch size);
- every compared cell has at least `MIN_SEEDS` seeds (a measurement marked `exact`, an expectation
  computed in closed form as in Zhang et al.'s theory, has no seed noise and skips this gate);
- no deciding cell is a best cell on the edge of its hyperparameter grid (`edges`: its optimum may lie
  outside the grid, so its loss is only a bound);
- the measurement lies in the regime the paper's claim is about: the ledger's `requires` conditions,
  read from the measurement's `regime` values.

Then the statistics, sized for three seeds:

- a difference counts only beyond the two-sided 95 % Student-t critical value for its degrees of freedom
  (Welch-Satterthwaite, stored as `dof`) times its standard error, otherwise "within noise";
- an equivalence ("A is as good as B") is confirmed when that whole t interval lies under a tolerance of
  `SEED_SDS` measured seed standard deviations plus the gap the paper itself calls "as good" (named in the
  ledger beside the number), not confirmed when it lies wholly above it;
- a fitted slope or exponent carries at least `MIN_DRAWS` bootstrap draws over seeds; it is confirmed only
  when its whole 95 % bootstrap interval lies inside the paper's range (and so at least `SHARE_TO_CONFIRM`
  of the draws keep the verdict), not confirmed when the interval lies wholly outside, otherwise within noise;
- a claim of several parts (`all_of`) is not confirmed when any part the paper claims is contradicted;
  parts we added beside the paper's (`ours: true`) are shown but never lift or sink the verdict.

The report applies the same rules to the stored measurements, so a verdict is never typed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import numpy as np
from scipy import stats

MIN_STEPS = 250
MIN_SEEDS = 3
CONFIDENCE = 0.95  # two-sided, for differences, equivalence intervals and bootstrap intervals alike
SEED_SDS = 2.0  # an equivalence tolerates SEED_SDS seed standard deviations: what re-seeding one run can move it
DRAWS = 1000  # bootstrap draws every fitted quantity carries
MIN_DRAWS = 1000
SHARE_TO_CONFIRM = 0.8  # a fitted claim is confirmed only when at least this share of draws keeps the verdict

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


def share_words(verdict: str, share: float | None) -> str:
    """The share of bootstrap draws in words: inside the accepted range, or outside it for "not confirmed"."""
    if share is None or share != share:
        return ""
    return f"{share:.0%} of bootstrap draws {'outside' if verdict == NOT_CONFIRMED else 'inside'} the accepted range"


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


def welch_dof(weights: Iterable[float], cells: Iterable[Iterable[float]]) -> float | None:
    """The Welch-Satterthwaite degrees of freedom of sum_i w_i mean_i over independent cells (per-seed
    values): (sum v_i)^2 / sum v_i^2 / (n_i - 1) with v_i = w_i^2 s_i^2 / n_i. None when some weighted cell
    has fewer than two seeds; cells without spread add no variance and no term."""
    terms = []
    for w, cell in zip(weights, cells):
        cell = cell_losses(cell)
        if w == 0:
            continue
        if len(cell) < 2:
            return None
        terms.append((w * w * cell.var(ddof=1) / len(cell), len(cell) - 1))
    total = sum(v for v, _ in terms)
    if not terms or total == 0:
        return None
    return float(total**2 / sum(v * v / d for v, d in terms if v > 0))


def difference_dof(u_a, n_a, u_b, n_b):
    """Welch-Satterthwaite degrees of freedom of a difference of two means from their squared standard
    errors u and seed counts n (scalars or arrays; a side without spread adds no term)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        term = lambda u, n: np.where(np.asarray(u) > 0, np.asarray(u) ** 2 / (np.asarray(n) - 1), 0.0)  # noqa: E731
        return (np.asarray(u_a) + np.asarray(u_b)) ** 2 / (term(u_a, n_a) + term(u_b, n_b))


def t_critical(dof):
    """The two-sided CONFIDENCE critical value of Student's t (the normal one without finite degrees of
    freedom); `dof` a number, None, or an array (then an array comes back)."""
    normal = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))
    if dof is None or np.ndim(dof) == 0:
        if dof is None or not np.isfinite(dof):
            return normal
        return float(stats.t.ppf(0.5 + CONFIDENCE / 2, max(dof, 1.0)))
    dof = np.asarray(dof, dtype=float)
    finite = np.isfinite(dof)
    return np.where(finite, stats.t.ppf(0.5 + CONFIDENCE / 2, np.maximum(np.where(finite, dof, 1.0), 1.0)), normal)


def _fewest(steps: Iterable[int]) -> int | None:
    """The fewest optimizer steps among `steps` (None when none is known)."""
    return min((int(s) for s in steps if s is not None and np.isfinite(s)), default=None)


def compare(a: Iterable[float], b: Iterable[float], steps: Iterable[int] = (), seed_sd: float | None = None) -> dict:
    """The measurement of "A against B" from their per-seed losses (NaN or None: a diverged seed): the
    difference of means (A - B), its standard error (independent seeds) and Welch-Satterthwaite degrees of
    freedom, the fewest seeds of the two, the seed spread (pooled over the two cells unless given, e.g.
    pooled over a grid), and the fewest optimizer steps among `steps`. A cell whose every seed diverged is
    marked `diverged` (infinitely bad: the rules read its difference as +-inf), since "diverged" must fail a
    claim, not drop out of it."""
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
        "dof": welch_dof((1, -1), (a, b)),
        "seed_sd": float(pooled_sd(a, b) if seed_sd is None else seed_sd),
        "n_seeds": int(n), "min_steps": _fewest(steps),
    }
    if len(diverged) == 1:
        alive = a if len(a) else b
        out.update(diverged=diverged[0], se=float(np.sqrt(var(alive))) if len(alive) > 1 else 0.0,
                   dof=float(len(alive) - 1) if len(alive) > 1 else None)
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


def bootstrap(cells: dict, statistic: Callable[[dict], float], draws: int = DRAWS, seed: int = 0, diverged: str = "drop") -> np.ndarray:
    """`statistic` over resampled seeds: each draw resamples every cell's per-seed values with replacement
    (cells are independent runs) and passes {cell: mean} to `statistic`."""
    rng = np.random.default_rng(seed)
    cells = {k: seed_values(v, diverged) for k, v in cells.items()}
    out = []
    for _ in range(draws):
        means = {k: (rng.choice(v, len(v)).mean() if len(v) else np.nan) for k, v in cells.items()}
        out.append(statistic(means))
    return np.asarray(out, dtype=float)


def _weights(statistic: Callable[[dict], float], means: dict, scale: float) -> dict:
    """How `statistic` moves with each cell's mean near `means` (a finite-difference gradient): the
    weights of the linear combination whose Welch-Satterthwaite degrees of freedom it inherits."""
    base, step = statistic(means), 1e-3 * (scale if scale > 0 else 1.0)
    return {k: (statistic({**means, k: v + step}) - base) / step for k, v in means.items()}


def bootstrap_difference(cells: dict, statistic: Callable[[dict], float], steps: Iterable[int] = (), draws: int = DRAWS,
                         diverged: str = "drop") -> dict:
    """The measurement of a difference that is a function of several cells' means (a gap between gaps, a
    spread): `statistic` on the means, its standard error from the bootstrap over seeds (rescaled by
    sqrt(n / (n - 1)) for the fewest seeds n, the bootstrap's small-sample shrinkage), its degrees of
    freedom (Welch-Satterthwaite over the cells it depends on, locally linearised), the fewest seeds of any
    cell and the fewest optimizer steps among `steps`. `diverged` as in `seed_values`."""
    raw = {k: list(v) for k, v in cells.items()}
    values = {k: seed_values(v, diverged) for k, v in raw.items()}
    n = min((len(values[k]) or len(raw[k]) for k in raw), default=0)  # a cell that diverged at every seed counts its attempts
    means = {k: v.mean() if len(v) else np.nan for k, v in values.items()}
    point = statistic(means)
    # the bootstrap variance of a mean of n seeds is (n - 1) / n of the sample's: undo that shrinkage (with 3 seeds the
    # raw bootstrap SE is 18 % too small)
    se = float(np.std(bootstrap(values, statistic, draws, diverged=diverged), ddof=1) * np.sqrt(n / (n - 1))) if n > 1 else None
    dof = None
    if n > 1 and np.isfinite(point) and all(np.isfinite(list(means.values()))):
        spread = np.nanmax([np.std(v) for v in values.values()] or [0.0])
        weights = _weights(statistic, means, float(spread))
        dof = welch_dof([weights[k] for k in values], [values[k] for k in values])
    return {"difference": None if not np.isfinite(point) else float(point), "se": se, "dof": dof, "n_seeds": int(n),
            "min_steps": _fewest(steps)}


def edge(hyperparameter: str, cell: str) -> dict:
    """One best cell on the edge of its hyperparameter grid, as a measurement's `edges` lists it."""
    return {"hyperparameter": hyperparameter, "cell": cell}


# ------------------------------------------------------------------------------------------------ gates
def _gate(m: dict, seeds: bool = True) -> Decision | None:
    if m.get("untestable"):
        return Decision(NOT_TESTABLE, str(m["untestable"]))
    steps = m.get("min_steps")
    if steps is not None and steps < MIN_STEPS:
        return Decision(NOT_TESTABLE, f"a deciding cell trains for {steps} optimizer steps (< {MIN_STEPS})")
    if seeds and not m.get("exact") and (m.get("n_seeds") or 0) < MIN_SEEDS:
        return Decision(NOT_TESTABLE, f"{m.get('n_seeds') or 0} seed(s) at a deciding cell (< {MIN_SEEDS})")
    return _edge_gate(m)


def _edge_gate(m: dict) -> Decision | None:
    edges = m.get("edges") or []
    if edges:
        return Decision(NOT_TESTABLE, "; ".join(f"best {e['hyperparameter']} on the grid edge at {e['cell']}" for e in edges)
                        + " (would need: the grid extended past that edge until the best cell is interior)")
    return None


def regime_gate(m: dict, requires: Iterable[dict]) -> Decision | None:
    """The ledger's `requires` conditions ({value, at_most | at_least, says}) read from the measurement's
    `regime` values: any that fails makes the claim "not testable at this scale", naming every failed
    condition with its value and limit. A measurement that does not report a required value is an error."""
    if m.get("untestable"):
        return None
    regime, failed = m.get("regime") or {}, []
    for condition in requires:
        key, says = condition["value"], condition["says"]
        if key not in regime:
            raise RuleError(f"the ledger requires {says!r} but the measurement reports no regime value {key!r} "
                            f"(has {', '.join(sorted(regime)) or 'none'})")
        value = regime[key]
        if value is None or not np.isfinite(value):
            failed.append(f"{says} (not measured here" + (f"; would need: {condition['reach']})" if condition.get("reach") else ")"))
            continue
        for bound, fails in (("at_most", lambda v, b: v > b), ("at_least", lambda v, b: v < b)):
            if bound in condition and fails(value, condition[bound]):
                failed.append(f"{says} ({value:.3g} vs {condition[bound]:g}"
                              + (f"; would need: {condition['reach']})" if condition.get("reach") else ")"))
    return Decision(NOT_TESTABLE, "; ".join(failed)) if failed else None


def _difference(m: dict) -> float:
    """A - B, with a cell that diverged at every seed read as infinitely bad."""
    if m.get("diverged") in ("a", "b"):
        return np.inf if m["diverged"] == "a" else -np.inf
    return _need(m, "difference")[0]


def _critical(m: dict) -> tuple[float, str]:
    """The t critical value of a measurement and how to say it: its stored degrees of freedom, else the
    most conservative Welch bound (the fewest seeds minus one)."""
    dof = m.get("dof")
    if dof is None and not m.get("exact"):
        dof = max((m.get("n_seeds") or 2) - 1, 1)
    t = t_critical(dof)
    return t, (f"t({dof:.1f}) = {t:.2f}" if dof is not None else f"z = {t:.2f}")


def _need(m: dict, *keys: str) -> list:
    missing = [k for k in keys if m.get(k) is None]
    if missing:
        raise RuleError(f"the measurement lacks {', '.join(missing)} (has {', '.join(sorted(m)) or 'nothing'})")
    return [m[k] for k in keys]


# ------------------------------------------------------------------------------------------------ rules
def difference(m: dict, expect: str = "lower") -> Decision:
    """A is `lower` (or `higher`) than B: the difference must exceed the t critical value times its
    standard error in that direction."""
    if expect not in ("lower", "higher"):
        raise RuleError(f"difference: expect must be 'lower' or 'higher', not {expect!r}")
    gate = _gate(m)
    if gate:
        return gate
    d, (se,) = _difference(m), _need(m, "se")
    if np.isinf(d):
        return Decision(CONFIRMED if (d < 0) == (expect == "lower") else NOT_CONFIRMED, f"{'A' if d > 0 else 'B'} diverged at every seed")
    t, says = _critical(m)
    if abs(d) <= t * se:
        return Decision(WITHIN_NOISE, f"|{d:+.3f}| <= {says} x SE {se:.3f}")
    right = d < 0 if expect == "lower" else d > 0
    return Decision(CONFIRMED if right else NOT_CONFIRMED,
                    f"{d:+.3f} is {abs(d) / se:.1f} SE {'below' if d < 0 else 'above'} zero ({says})")


def equivalent(m: dict, allowance: float = 0.0, allowance_source: str | None = None) -> Decision:
    """A is no worse than B (difference A - B, lower is better) beyond a tolerance of SEED_SDS measured seed
    standard deviations plus `allowance`, the gap the paper itself calls "as good" (`allowance_source`
    quotes where). Confirmed when the whole t interval of the difference lies under the tolerance, not
    confirmed when it lies above it, otherwise within noise."""
    if allowance and not allowance_source:
        raise RuleError("equivalent: an allowance needs allowance_source, the paper's sentence that calls that gap as good")
    gate = _gate(m)
    if gate:
        return gate
    d, (se, sd) = _difference(m), _need(m, "se", "seed_sd")
    if np.isinf(d):
        return Decision(NOT_CONFIRMED if d > 0 else CONFIRMED, f"{'A' if d > 0 else 'B'} diverged at every seed")
    t, says = _critical(m)
    tolerance = allowance + SEED_SDS * sd
    low, high = d - t * se, d + t * se
    span = (f"{d:+.3f} [{low:+.3f}, {high:+.3f}] ({says}) vs tolerance {tolerance:.3f} ({SEED_SDS:g} x seed sd {sd:.3f}"
            + (f" + the paper's {allowance:g})" if allowance else ")"))
    if high <= tolerance:
        return Decision(CONFIRMED, span)
    if low > tolerance:
        return Decision(NOT_CONFIRMED, span)
    return Decision(WITHIN_NOISE, span)


def interval(m: dict, low: float = -np.inf, high: float = np.inf, exclude: float | None = None) -> Decision:
    """A fitted slope or exponent against the paper's range [low, high] (clear of `exclude`, e.g. 0: "it
    moves at all"): confirmed when its whole 95 % bootstrap interval lies inside the range and clear of
    `exclude`; not confirmed when it lies wholly outside the range; otherwise within noise. The estimate
    alone never confirms. A measurement that reports its optimum `unresolved` (the neighbours of a best grid
    point within the seed noise) is within noise whatever the fit says. The share is that of draws that
    keep the verdict: inside (confirmed, within noise) or outside (not confirmed)."""
    gate = _gate(m)
    if gate:
        return gate
    (estimate,) = _need(m, "estimate")
    draws = np.asarray([d for d in m.get("draws") or [] if d is not None], dtype=float)
    draws = draws[np.isfinite(draws)]
    if len(draws) < MIN_DRAWS:
        raise RuleError(f"interval: needs at least {MIN_DRAWS} finite bootstrap draws, got {len(draws)}")
    ci_low, ci_high = np.percentile(draws, [100 * (0.5 - CONFIDENCE / 2), 100 * (0.5 + CONFIDENCE / 2)])
    inside = (draws >= low) & (draws <= high)
    if exclude is not None:
        inside &= np.sign(draws - exclude) == np.sign(estimate - exclude)
    target = f"[{low:g}, {high:g}]" + (f", excluding {exclude:g}" if exclude is not None else "")
    says = f"{estimate:.2f} (95 % {ci_low:.2f} to {ci_high:.2f}) against {target}"
    clear = exclude is None or not ci_low <= exclude <= ci_high
    if ci_high < low or ci_low > high:
        return Decision(NOT_CONFIRMED, says, share=round(float(1 - inside.mean()), 3))
    share = round(float(inside.mean()), 3)
    if m.get("unresolved"):
        return Decision(WITHIN_NOISE, f"{says}; {m['unresolved']}", share=share)
    if low <= ci_low and ci_high <= high and clear and share >= SHARE_TO_CONFIRM:
        return Decision(CONFIRMED, says, share=share)
    return Decision(WITHIN_NOISE, says, share=share)


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
    """A claim with several parts, each decided by its own rule. Only the parts the paper claims count
    (a part marked `ours: true`, a contrast we added, is shown but does not count): not confirmed when any
    counted part is; confirmed when all are confirmed; not testable when one is; partly when some are
    confirmed and the rest within noise; otherwise within noise."""
    if not parts:
        raise RuleError("all_of: needs at least one part")
    if all(spec.get("ours") for spec in parts.values()):
        raise RuleError("all_of: every part is marked ours; at least one must be the paper's")
    if m.get("untestable"):
        return Decision(NOT_TESTABLE, str(m["untestable"]))
    gate = _edge_gate(m)
    if gate:
        return gate
    measured = m.get("parts") or {}
    missing = [p for p in parts if p not in measured]
    if missing:
        raise RuleError(f"all_of: the measurement lacks part(s) {', '.join(missing)}")
    decisions = {name: decide(spec["rule"], spec.get("params") or {}, measured[name], spec.get("requires") or ())
                 for name, spec in parts.items()}
    counted = [d.verdict for name, d in decisions.items() if not parts[name].get("ours")]
    reason = "; ".join(f"{name}{' (ours, not counted)' if parts[name].get('ours') else ''}: {d.verdict} ({d.reason}"
                       + (f"; {share_words(d.verdict, d.share)}" if d.share is not None else "") + ")" for name, d in decisions.items())
    if NOT_CONFIRMED in counted:
        return Decision(NOT_CONFIRMED, reason)
    if all(v == CONFIRMED for v in counted):
        return Decision(CONFIRMED, reason)
    if NOT_TESTABLE in counted:
        return Decision(NOT_TESTABLE, reason)
    return Decision(PARTLY if CONFIRMED in counted else WITHIN_NOISE, reason)


RULES: dict[str, Callable[..., Decision]] = {
    "difference": difference, "equivalent": equivalent, "interval": interval, "threshold": threshold, "all_of": all_of,
}
_PART_KEYS = {"rule", "params", "ours", "requires"}  # requires: a regime only that part's claim is about
_CONDITION_KEYS = {"value", "at_most", "at_least", "says", "reach"}  # reach: the setting that would meet it


def check_rule(rule: str, params: dict) -> None:
    """Fail early, naming the problem, on an unknown rule or a parameter the rule does not take."""
    import inspect

    if rule not in RULES:
        raise RuleError(f"unknown rule {rule!r}; the rules are: {', '.join(RULES)}")
    accepted = set(inspect.signature(RULES[rule]).parameters) - {"m"}
    unknown = set(params) - accepted
    if unknown:
        raise RuleError(f"rule {rule!r} takes {', '.join(sorted(accepted)) or 'no parameters'}, not {', '.join(sorted(unknown))}")
    if rule == "equivalent" and params.get("allowance") and not params.get("allowance_source"):
        raise RuleError("equivalent: an allowance needs allowance_source, the paper's sentence that calls that gap as good")
    for name, spec in (params.get("parts") or {}).items() if rule == "all_of" else ():
        extra = set(spec) - _PART_KEYS
        if extra:
            raise RuleError(f"all_of part {name!r}: unknown key(s) {', '.join(sorted(extra))}; a part has {', '.join(sorted(_PART_KEYS))}")
        check_rule(spec.get("rule", ""), spec.get("params") or {})
        check_requires(spec.get("requires") or [])


def check_requires(requires: Iterable[dict]) -> None:
    """Fail early on a `requires` condition that is not {value, says, at_most | at_least[, reach]}."""
    for condition in requires:
        if not isinstance(condition, dict):
            raise RuleError(f"requires: each condition is a mapping, not {condition!r}")
        extra, missing = set(condition) - _CONDITION_KEYS, {"value", "says"} - set(condition)
        if extra or missing or not ({"at_most", "at_least"} & set(condition)):
            raise RuleError(f"requires: {condition!r} needs value, says and at_most or at_least (and optionally reach)")


def decide(rule: str, params: dict, measurement: dict, requires: Iterable[dict] = ()) -> Decision:
    """The verdict of `measurement` under `rule` with `params` and the regime conditions `requires` (as a
    ledger entry names them)."""
    check_rule(rule, params)
    requires = list(requires or ())
    check_requires(requires)
    return regime_gate(measurement, requires) or RULES[rule](measurement, **params)
