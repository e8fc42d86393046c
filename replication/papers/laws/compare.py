"""Every published batch-size and learning-rate law fitted to one grid, and tested on the cells it was not fitted
on (notebook `laws_compare`).

The grid: power_lr_surface's protocol (WSD, exponential decay, every token budget a decay branched off one run)
at several widths. Its base width is power_lr_surface's own body, read from that experiment's store (the same
specs); the other widths train here, each batch size over a factor-2 LR grid centred on
centre_lr x (B / centre_batch_size)^lr_scaling x (base_width / width)^sp_width_scaling (standard
parameterization: the optimum drifts down with width), grown past an edge that is some budget's best LR, then
the other seeds at every LR that is some budget's best or next to it.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication import plots
from replication.claims import claim
from replication.experiments import stored
from replication.fit import argmin_log_parabolas
from replication.params import experiment
from replication.papers.laws.advise import _count, curves
from replication.papers.laws.published import Request, load_laws
from replication.papers.power import common, lr_surface
from replication.sizes import count_parameters, flops_per_token
from replication.spec import ConfigError
from replication.verdicts import DRAWS, MIN_STEPS

REQUIRES = ("power_lr_surface",)
KEYS = ("widths", "batch_sizes", "budgets", "center_lr", "center_batch_size", "lr_scaling", "sp_width_scaling", "lr_steps",
        "max_extension", "seeds")


def surface(exp, params: dict):
    """power_lr_surface in the same profile: the base width's runs."""
    return experiment(params, "power_lr_surface", exp.profile)


def base_width(exp, params: dict) -> int:
    """The width whose runs are power_lr_surface's; raises where the two experiments would not share specs."""
    s, other = common.settings(exp, KEYS), surface(exp, params)
    t = common.settings(other, lr_surface.KEYS)
    where = f"experiments.{exp.name}"
    if exp.base != other.base:
        raise ConfigError(f"{where}.run must be power_lr_surface's run (the base width's runs are read from its store)")
    if list(s["budgets"]) != list(t["budgets"]):
        raise ConfigError(f"{where}.settings.budgets: {s['budgets']} must be power_lr_surface's {t['budgets']}")
    if not set(s["batch_sizes"]) <= set(t["batch_sizes"]):
        raise ConfigError(f"{where}.settings.batch_sizes: {s['batch_sizes']} must be among power_lr_surface's {t['batch_sizes']}")
    width = other.base.model.width
    if width not in s["widths"]:
        raise ConfigError(f"{where}.settings.widths: {s['widths']} must include power_lr_surface's width {width}")
    return width


def centre(s: dict, width: int, batch_size: int, base: int) -> float:
    return s["center_lr"] * (batch_size / s["center_batch_size"]) ** s["lr_scaling"] * (base / width) ** s["sp_width_scaling"]


def spec(exp, width: int, batch_size: int, lr: float, seed: int):
    s = common.settings(exp, KEYS)
    return common.branched(exp, {"model.width": width, "batch_size": batch_size, "optimizer.lr": lr, "seed": seed}, s["budgets"])


def runs(exp, params: dict, results_root="results") -> list:
    """The widths other than the base width: per batch size, `seeded_grid` over its LR grid."""
    s, base = common.settings(exp, KEYS), base_width(exp, params)
    out = []
    for width in s["widths"]:
        if width == base:
            continue  # power_lr_surface's runs
        for b in s["batch_sizes"]:
            out += seeded_grid(exp, lambda low, high, w=width, b=b: common.lr_grid(centre(s, w, b, base), common.extended_steps(s["lr_steps"], low, high)),
                               lambda lr, seed, w=width, b=b: spec(exp, w, b, lr, seed), s["seeds"], s["max_extension"], results_root)
    return list(dict.fromkeys(out))


def seeded_grid(exp, values, make, seeds: list[int], max_extension: int, results_root="results") -> list:
    """One batch size's runs: the seed-0 grid `values(low, high)`, then the other seeds at and next to the best LR of
    every budget with >= 250 steps; and again, from the seed means, while a best moves (next to an LR without every
    seed, or onto an edge of the grid, which grows one step there, up to `max_extension` a side). power_lr_surface
    reseeds once, around seed 0's bests; here a best that the other seeds move is reseeded too, so every optimum
    the fits read has 3 seeds at it and both neighbours. `make(lr, seed)` is a run; the runs declared so far are
    returned (more follow once they are stored)."""
    store, low, high, chosen = stored(exp, results_root), 0, 0, set()
    while True:
        grid = values(low, high)
        specs = [make(lr, seeds[0]) for lr in grid] + [make(lr, seed) for lr in grid if lr in chosen for seed in seeds[1:]]
        if not store.has_all(specs):
            return specs
        losses = common.loss_table(exp, specs, results_root)
        read = common.optima(losses[losses["steps"] >= MIN_STEPS], ["tokens"])
        best = set(read["best_lr"]) if len(read) else set()
        grow_low, grow_high = grid[0] in best and low < max_extension, grid[-1] in best and high < max_extension
        more = set(common.around(grid, sorted(best))) - chosen
        if not (grow_low or grow_high or more):
            return specs
        low, high, chosen = low + grow_low, high + grow_high, chosen | more


def read_runs(exp, params: dict, results_root="results") -> list:
    """Every run the notebook reads as a cell of this grid: its own, and power_lr_surface's at the base width and
    this grid's batch sizes (what the report's scale table counts)."""
    s, other = common.settings(exp, KEYS), surface(exp, params)
    return runs(exp, params, results_root) + [x for x in lr_surface.runs(other, params, results_root) if x.batch_size in s["batch_sizes"]]


def _width(spec) -> dict:
    return {"width": spec.model.width}


def table(exp, params: dict, results_root="results") -> pd.DataFrame:
    """Loss per width, batch size, LR, seed and budget: the base width from power_lr_surface (its batch sizes that
    this grid names), the others from this experiment's store."""
    s, base = common.settings(exp, KEYS), base_width(exp, params)
    other = surface(exp, params)
    mine = common.loss_table(exp, runs(exp, params, results_root), results_root, _width)
    theirs = lr_surface.complete_table(other, params, results_root).assign(width=base)
    theirs = theirs[theirs["batch_size"].isin(s["batch_sizes"])]
    return pd.concat([theirs, mine], ignore_index=True)[list(mine.columns) if len(mine) else list(theirs.columns)]


# ---------------------------------------------------------------- the optima

def sizes(exp, params: dict) -> pd.DataFrame:
    """Per width: N (non-embedding parameters, the count Step Law fits on; Porian et al. add the output head), the
    embedding and output-head parameters, and training FLOPs per token (6 N with the output head, plus attention),
    which turn D into DeepSeek's C."""
    s = common.settings(exp, KEYS)
    rows = []
    for width in s["widths"]:
        body = exp.derived({"model.width": width}, "settings.widths")
        counts = count_parameters(body.model, body.data.vocab_size)
        rows.append({"width": width, "N": counts["non_embedding"], "embedding": counts["embedding"],
                     "flops_per_token": flops_per_token(body.model, body.data.vocab_size, body.data.seq_len)})
    return pd.DataFrame(rows)


def _variables(frame: pd.DataFrame, size: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the laws' variables: N, D (tokens), B (sequences) and C (FLOPs)."""
    out = frame.merge(size, on="width")
    return out.assign(D=out["tokens"].astype(float), C=out["flops_per_token"] * out["tokens"].astype(float),
                      **({"B": out["batch_size"].astype(float)} if "batch_size" in out else {}))


def lr_optima(table: pd.DataFrame, size: pd.DataFrame) -> pd.DataFrame:
    """The optimal LR per (width, batch size, budget): power_lr_surface's parabola over the seed means."""
    return _variables(common.optima(table, ["width", "batch_size", "tokens"]), size)


def batch_table(table: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Per (width, budget, batch size) with >= 250 steps whose LR optimum lies inside its grid: the seeds' losses at
    that batch size's best grid LR, what the loss-optimal batch size is read from. A batch size under 250 steps
    leaves this table, so a budget's batch grid ends where its steps do (an optimum at that end is an edge)."""
    readable = common.verdict_cells(best)[["width", "batch_size", "tokens", "best_lr"]]
    rows = table.merge(readable, on=["width", "batch_size", "tokens"])
    return rows[rows["lr"] == rows["best_lr"]].drop(columns="best_lr")


def _enough_batch_sizes(btable: pd.DataFrame) -> pd.Series:
    """The rows of (width, budget) groups with at least 3 batch sizes: the fewest a batch-size optimum is read from."""
    return btable.groupby(["width", "tokens"])["batch_size"].transform("nunique") >= 3


def batch_optima(btable: pd.DataFrame, size: pd.DataFrame) -> pd.DataFrame:
    """The loss-optimal batch size per (width, budget): a parabola in log B over the loss at each batch size's best
    LR, with the same edge and resolution rules as an optimal LR. Budgets with fewer than 3 batch sizes left out."""
    enough = _enough_batch_sizes(btable)
    if not enough.any():
        return pd.DataFrame(columns=["width", "tokens", "optimal_batch_size", "on_edge", "resolved", "steps", "n_seeds"])
    return _variables(common.optima(btable[enough], ["width", "tokens"], x="batch_size"), size)


def batch_optima_draws(btable: pd.DataFrame, size: pd.DataFrame, draws: int = DRAWS) -> list[pd.DataFrame]:
    """`batch_optima` on seed resamples of the losses at each batch size's best LR (which stays where the seed
    means put it)."""
    enough = _enough_batch_sizes(btable)
    if not enough.any():
        return []
    return [_variables(d, size) for d in common.optima_draws(btable[enough], ["width", "tokens"], x="batch_size", draws=draws)]


# ---------------------------------------------------------------- the laws' forms, fitted to our optima

# Each law's functional form: (variables with a free exponent, variables with a fixed one). The coefficient is free.
# Laws whose LR form has no B (Step Law, DeepSeek, Porian et al.) fitted their LR at their own optimal batch size;
# here they are fitted over every batch size's optimum, so they predict one LR for all of a cell's batch sizes.
LR_FORMS = {
    "constant": ((), {}),
    "sqrt_rule": ((), {"B": 0.5}),
    "linear_rule": ((), {"B": 1.0}),
    "shen_power": (("D",), {"B": 1.0}),
    "step_law": (("N", "D"), {}),
    "deepseek": (("C",), {}),
    "porian": (("N",), {}),
    "free": (("N", "B", "D"), {}),
}
BATCH_FORMS = {
    "constant": ((), {}),
    "step_law": (("D",), {}),  # and Power Lines' B_opt: a power law in D alone
    "deepseek": (("C",), {}),
    "porian": (("N",), {}),
    "free": (("N", "D"), {}),
}
FORM_WORDS = {"lr": {"constant": "one LR for every cell", "sqrt_rule": "c B^0.5", "linear_rule": "c B", "shen_power": "a B D^b",
                     "step_law": "c N^a D^b", "deepseek": "c C^a", "porian": "c N^a", "free": "c N^a B^b D^d"},
              "batch": {"constant": "one batch size for every cell", "step_law": "c D^b", "deepseek": "c C^b", "porian": "c N^b",
                        "free": "c N^a D^b"}}


def fit_form(form: tuple, frame: pd.DataFrame, target: str) -> dict | None:
    """Least squares in log space of `target` on the form's variables: {"c": coefficient, <variable>: exponent}
    (fixed exponents included), or None where the cells cannot pin a free exponent (a variable that does not vary)."""
    free, fixed = form
    if len(frame) < len(free) + 1:
        return None
    y = np.log(frame[target].to_numpy(float)) - sum(p * np.log(frame[v].to_numpy(float)) for v, p in fixed.items())
    design = np.column_stack([np.ones(len(frame))] + [np.log(frame[v].to_numpy(float)) for v in free])
    if len(frame) < design.shape[1] or np.linalg.matrix_rank(design) < design.shape[1]:
        return None
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    return {"c": float(np.exp(coef[0])), **dict(zip(free, map(float, coef[1:]))), **fixed}


def predict(fitted: dict, frame: pd.DataFrame) -> np.ndarray:
    out = np.full(len(frame), fitted["c"])
    for variable, power in fitted.items():
        if variable != "c":
            out = out * frame[variable].to_numpy(float) ** power
    return out


def published_exponents(law_id: str, quantity: str) -> dict[str, float]:
    """The exponents laws.yaml records for a law's LR or batch size (empty for a rule or a law without it)."""
    law = {law.id: law for law in load_laws()}.get(law_id)
    power = law.laws.get(quantity) if law else None
    return dict(power.powers) if power else {}


def _exponent_rows(forms: dict, cells: pd.DataFrame, draws: list[pd.DataFrame], target: str, quantity: str) -> pd.DataFrame:
    """Per form and free variable: our exponent on `cells`, its 95 % interval over the refits on `draws`, and the
    published one (`published_other`: Power Lines', the second law of Step Law's batch-size form)."""
    rows = []
    for name, form in forms.items():
        point = fit_form(form, cells, target)
        refits = [fit_form(form, d, target) for d in draws]
        published = published_exponents(name, quantity)
        other = published_exponents("power_lines", quantity) if (name, quantity) == ("step_law", "batch") else {}
        for variable in form[0]:
            values = np.array([r[variable] for r in refits if r is not None])
            low, high = np.percentile(values, [2.5, 97.5]) if len(values) else (np.nan, np.nan)
            rows.append({"quantity": quantity, "law": name, "variable": variable, "ours": point[variable] if point else np.nan,
                         "low": low, "high": high, "published": published.get(variable, np.nan),
                         "published_other": other.get(variable, np.nan)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- held-out regret

def _loss_at(curve: pd.Series, lr: float) -> tuple[float, bool]:
    """The seed-mean loss at `lr` on one cell's LR curve, linear in log LR between grid points; beyond the grid,
    the loss at its end (a lower bound), flagged."""
    x, y = np.log(curve.index.to_numpy(float)), curve.to_numpy(float)
    finite = np.isfinite(y)
    x, y = x[finite], y[finite]
    return float(np.interp(np.log(lr), x, y)), not x[0] <= np.log(lr) <= x[-1]


def _lr_regret_rows(cells: pd.DataFrame, curves: dict, forms: dict) -> list[dict]:
    """Leave each (width, budget) of `cells` (readable optima) out, fit every form on the rest, and read the loss at
    its predicted LR on each held-out batch size's curve (`curves[(width, batch size, budget)]`: seed-mean loss by
    LR) against that curve's best."""
    rows = []
    for (width, tokens), held in cells.groupby(["width", "tokens"]):
        rest = cells[(cells["width"] != width) | (cells["tokens"] != tokens)]
        for name, form in forms.items():
            fitted = fit_form(form, rest, "optimal_lr")
            if fitted is None:
                continue
            for b, optimal, lr in zip(held["batch_size"], held["optimal_lr"], predict(fitted, held)):
                curve = curves[(width, b, tokens)]
                loss, beyond = _loss_at(curve, lr)
                rows.append({"law": name, "width": width, "tokens": tokens, "batch_size": b, "predicted_lr": lr,
                             "optimal_lr": optimal, "regret": loss - float(np.nanmin(curve.to_numpy(float))), "beyond_grid": beyond})
    return rows


def _curves(table: pd.DataFrame, cells: pd.DataFrame) -> dict:
    """Per (width, batch size, budget) of `cells`: its seed-mean loss by LR."""
    means = table.groupby(["width", "batch_size", "tokens", "lr"])["loss"].mean()
    return {key: means.loc[key] for key in cells[["width", "batch_size", "tokens"]].itertuples(index=False, name=None)}


def lr_regret(table: pd.DataFrame, best: pd.DataFrame, forms: dict = LR_FORMS) -> pd.DataFrame:
    """Leave one (width, budget) cell out, fit every LR form on the optima of the others, predict the LR at each of
    the held-out cell's batch sizes, and read the loss there on its measured LR curve against the curve's best
    seed mean: one row per form and held-out (width, budget, batch size)."""
    cells = common.verdict_cells(best)
    return pd.DataFrame(_lr_regret_rows(cells, _curves(table, cells), forms))


def lr_regret_draws(table: pd.DataFrame, best: pd.DataFrame, forms: dict = LR_FORMS, draws: int = DRAWS, seed: int = 0) -> pd.DataFrame:
    """Each form's median held-out regret on `draws` resamples of the seeds within every (cell, LR): the curves and
    the optima the forms are fitted to both come from the resample (the same readable cells). One row per draw,
    one column per form."""
    cells = common.verdict_cells(best)
    rng = np.random.default_rng(seed)
    curves, optima = {}, {}
    for key in cells[["width", "batch_size", "tokens"]].itertuples(index=False, name=None):
        g = table[(table["width"] == key[0]) & (table["batch_size"] == key[1]) & (table["tokens"] == key[2])]
        lrs = np.sort(g["lr"].unique())
        means = np.column_stack([_resampled_means(g.loc[g["lr"] == lr, "loss"].to_numpy(float), draws, rng) for lr in lrs])
        curves[key], optima[key] = (lrs, means), argmin_log_parabolas(lrs, means)
    keys = list(curves)
    out = []
    for d in range(draws):
        cells_d = cells.assign(optimal_lr=[optima[k][d] for k in cells[["width", "batch_size", "tokens"]].itertuples(index=False, name=None)])
        rows = _lr_regret_rows(cells_d, {k: pd.Series(curves[k][1][d], index=curves[k][0]) for k in keys}, forms)
        out.append(pd.DataFrame(rows).groupby("law")["regret"].median() if rows else pd.Series(dtype=float))
    return pd.DataFrame(out).reset_index(drop=True)


def _resampled_means(values: np.ndarray, draws: int, rng) -> np.ndarray:
    """The mean of the finite values of `draws` resamples (with replacement) of one cell's seeds (NaN: all diverged)."""
    picked = values[rng.integers(0, len(values), (draws, len(values)))]
    finite = np.isfinite(picked)
    with np.errstate(invalid="ignore"):
        return np.where(finite, picked, 0.0).sum(axis=1) / finite.sum(axis=1)


def batch_regret(btable: pd.DataFrame, bbest: pd.DataFrame, forms: dict = BATCH_FORMS) -> pd.DataFrame:
    """The same for the batch size, over the (width, budget) cells whose loss-optimal batch size is readable: each
    form fitted on the others predicts a batch size, rounded to the nearest measured one in log B; the regret is
    the loss at that batch size (at its best LR) over the best batch size's."""
    cells = common.verdict_cells(bbest) if len(bbest) else bbest
    losses = btable.groupby(["width", "tokens", "batch_size"])["loss"].mean()
    rows = []
    for _, held in cells.iterrows():
        rest = cells[(cells["width"] != held["width"]) | (cells["tokens"] != held["tokens"])]
        curve = losses.loc[(held["width"], held["tokens"])]
        for name, form in forms.items():
            fitted = fit_form(form, rest, "optimal_batch_size")
            if fitted is None:
                continue
            b = float(predict(fitted, held.to_frame().T)[0])
            nearest = curve.index[np.argmin(np.abs(np.log(curve.index.to_numpy(float)) - np.log(b)))]
            rows.append({"law": name, "width": held["width"], "tokens": held["tokens"], "predicted_batch_size": b,
                         "optimal_batch_size": held["optimal_batch_size"], "rounded_to": int(nearest),
                         "regret": float(curve.loc[nearest] - curve.min()), "beyond_grid": not curve.index.min() <= b <= curve.index.max()})
    return pd.DataFrame(rows)


def factor_two_cost(table: pd.DataFrame, best: pd.DataFrame) -> float:
    """The median loss of an LR one factor-2 grid step off the best (the worse side), over the readable cells: what a
    miss by the grid's step costs here, the scale a regret is read against."""
    cells = common.verdict_cells(best)
    curves = _curves(table, cells)
    costs = []
    for _, row in cells.iterrows():
        curve = curves[(row["width"], row["batch_size"], row["tokens"])]
        costs.append(max(_loss_at(curve, row["best_lr"] * f)[0] for f in (0.5, 2.0)) - float(curve.min()))
    return float(np.median(costs)) if costs else np.nan


def regret_summary(regret: pd.DataFrame, draws: pd.DataFrame | None = None, baseline: str = "sqrt_rule") -> pd.DataFrame:
    """Per form, best first: the held-out cells, the median and worst regret (nats), how many predictions left the
    grid; with `draws` (`lr_regret_draws`), the 95 % interval of its median's difference from `baseline`'s in the same
    seed resamples (below zero: the form beats the baseline beyond the seeds' noise). A resample's own median is not
    shown: resampled curves are noisier, and a regret measured from a noisy curve's minimum is biased upward, which
    a difference between two forms on the same resample cancels."""
    if not len(regret):
        return pd.DataFrame(columns=["law", "cells", "median_regret", "worst_regret", "beyond_grid"])
    out = regret.groupby("law", sort=False).agg(cells=("regret", "size"), median_regret=("regret", "median"),
                                                worst_regret=("regret", "max"), beyond_grid=("beyond_grid", "sum")).reset_index()
    if draws is not None and len(draws):
        if baseline in draws:
            diff = draws.sub(draws[baseline], axis=0)
            out[f"minus_{baseline}_low"] = out["law"].map(diff.quantile(0.025))
            out[f"minus_{baseline}_high"] = out["law"].map(diff.quantile(0.975))
    return out.sort_values("median_regret", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------- the tables the notebook shows

PUBLISHED_WORDS = {  # whose exponent a form's published column shows (the batch size in D: two laws share the form)
    ("lr", "shen_power"): "Shen et al.", ("lr", "step_law"): "Step Law", ("lr", "deepseek"): "DeepSeek", ("lr", "porian"): "Porian et al.",
    ("batch", "step_law"): "Step Law; Power Lines", ("batch", "deepseek"): "DeepSeek", ("batch", "porian"): "Porian et al.",
}


def _exponents_words(m: dict, quantity: str, law: str) -> tuple[str, str]:
    """One form's fitted exponents with their 95 % intervals, and the published ones with whose they are."""
    rows = m["exponents"][(m["exponents"]["quantity"] == quantity) & (m["exponents"]["law"] == law)]
    fixed = {"lr": LR_FORMS, "batch": BATCH_FORMS}[quantity][law][1]
    ours = [f"{r['variable']} {r['ours']:+.2f} ({r['low']:+.2f} to {r['high']:+.2f})" if np.isfinite(r["ours"]) else f"{r['variable']}: not fitted"
            for _, r in rows.iterrows()] + [f"{v} {p:+g} (fixed)" for v, p in fixed.items()]
    published = []
    for _, r in rows.iterrows():
        values = [v for v in (r["published"], r["published_other"]) if np.isfinite(v)]
        published += [f"{r['variable']} {v:+.3g}" for v in dict.fromkeys(values)]
    words = PUBLISHED_WORDS.get((quantity, law))
    return "; ".join(ours) or "none (a coefficient alone)", (", ".join(published) + f" ({words})") if published else ""


def laws_table(m: dict, quantity: str) -> pd.DataFrame:
    """The issue's table, per form (best held-out prediction first): its form, our exponents (95 % over seed
    resamples), the published ones, its held-out cells, median regret in nats, the 95 % interval of that median's
    difference from the square-root rule's over seed resamples (the LR only), the worst regret, and how many
    predictions left the grid."""
    summary = m["lr_summary" if quantity == "lr" else "batch_summary"].set_index("law")
    forms = list(summary.index) + [f for f in (LR_FORMS if quantity == "lr" else BATCH_FORMS) if f not in summary.index]
    rows = []
    for law in forms:
        ours, published = _exponents_words(m, quantity, law)
        row = {"form": law, "as": FORM_WORDS[quantity][law], "ours (95 %)": ours, "published": published}
        if law in summary.index:
            r = summary.loc[law]
            row.update({"held-out cells": int(r["cells"]), "median regret (nats)": round(float(r["median_regret"]), 4)})
            if "minus_sqrt_rule_low" in summary:
                row["minus the sqrt rule's (95 %)"] = ("(the baseline)" if law == "sqrt_rule" else
                                                       f"{r['minus_sqrt_rule_low']:+.4f} to {r['minus_sqrt_rule_high']:+.4f}")
            row.update({"worst regret": round(float(r["worst_regret"]), 4), "beyond the grid": int(r["beyond_grid"])})
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- measure, claims

def _same_cells(draws: list[pd.DataFrame], cells: pd.DataFrame, keys: list[str]) -> list[pd.DataFrame]:
    """Each resample's optima at the cells the point estimate reads: a fit's interval resamples the seeds of a fixed
    set of cells (a cell that a resample would push onto its grid's edge keeps its parabola optimum there)."""
    return [d.merge(cells[keys], on=keys) if len(d) else d for d in draws]


def measure(table: pd.DataFrame, size: pd.DataFrame, draws: int = DRAWS) -> dict:
    """Everything the notebook reads: the optima (LR and batch size), each form's exponents over the readable optima
    with 95 % intervals over seed resamples, and the held-out regret per form."""
    best = lr_optima(table, size)
    lr_cells = common.verdict_cells(best)
    lr_draws = _same_cells([_variables(d, size) for d in common.optima_draws(table, ["width", "batch_size", "tokens"], draws=draws)],
                           lr_cells, ["width", "batch_size", "tokens"])
    btable = batch_table(table, best)
    bbest = batch_optima(btable, size)
    b_cells = common.verdict_cells(bbest) if len(bbest) else bbest
    bdraws = _same_cells(batch_optima_draws(btable, size, draws), b_cells, ["width", "tokens"])
    exponents = pd.concat([_exponent_rows(LR_FORMS, lr_cells, lr_draws, "optimal_lr", "lr"),
                           _exponent_rows(BATCH_FORMS, b_cells, bdraws, "optimal_batch_size", "batch")], ignore_index=True)
    fits = pd.DataFrame([{"quantity": quantity, "law": name, **(fit_form(form, cells, target) or {})}
                         for quantity, forms, cells, target in (("lr", LR_FORMS, lr_cells, "optimal_lr"),
                                                                ("batch", BATCH_FORMS, b_cells, "optimal_batch_size"))
                         for name, form in forms.items()])
    lr_held, batch_held = lr_regret(table, best), batch_regret(btable, bbest)
    lr_held_draws = lr_regret_draws(table, best, draws=draws) if len(lr_cells) else None
    return {"best": best, "batch_best": bbest, "lr_cells": lr_cells, "batch_cells": b_cells, "batch_table": btable,
            "exponents": exponents, "fits": fits, "lr_regret": lr_held, "batch_regret": batch_held, "lr_summary": regret_summary(lr_held, lr_held_draws),
            "batch_summary": regret_summary(batch_held), "factor_two_cost": factor_two_cost(table, best), "lr_draws": lr_draws,
            "batch_draws": bdraws}


MIN_TOKENS_PER_PARAMETER = 2.0  # the fewest tokens per non-embedding parameter among the laws' fits (Step Law: 1B on 2B tokens)


def in_regime(cells: pd.DataFrame) -> pd.DataFrame:
    """The optima a ledger claim reads: those trained on at least MIN_TOKENS_PER_PARAMETER tokens per non-embedding
    parameter, inside the range the laws were fitted on (fewer: an under-trained run no law describes)."""
    return cells[cells["D"] / cells["N"] >= MIN_TOKENS_PER_PARAMETER] if len(cells) else cells


def _exponent_measurement(m: dict, quantity: str, form: tuple, variable: str, cells: pd.DataFrame, why: str | None,
                          regime: dict) -> dict:
    """The `interval` rule's input for one fitted exponent (`variable`'s in `form`, fitted to `cells` and refitted on
    every seed resample of the same cells): the point value and draws, the fewest steps and seeds among the optima,
    the `regime` values the ledger requires; or why it cannot be read (`why`, or a form the cells cannot pin)."""
    target, keys = ("optimal_lr", ["width", "batch_size", "tokens"]) if quantity == "lr" else ("optimal_batch_size", ["width", "tokens"])
    point = fit_form(form, cells, target) if why is None and len(cells) else None
    if point is None:
        return {"untestable": why or "the optima in the regime do not vary in " + variable}
    refits = [fit_form(form, d.merge(cells[keys], on=keys), target) if len(d) else None
              for d in (m["lr_draws"] if quantity == "lr" else m["batch_draws"])]
    out = {**common.interval_measurement(point[variable], [r[variable] if r else np.nan for r in refits], cells, True, ""),
           "regime": regime}
    unresolved = int((~cells["resolved"].astype(bool)).sum())
    if unresolved:  # the shared rule: an exponent that rests on optima a grid neighbour matches within the noise is within noise
        out["unresolved"] = (f"{unresolved} of the {len(cells)} {'optimal LRs' if quantity == 'lr' else 'loss-optimal batch sizes'} "
                             "the fit rests on are not resolved (a grid neighbour within the seeds' t interval)")
    return out


def _size_range(cells: pd.DataFrame, at_fixed: str | None = None) -> float | None:
    """The largest ratio of N among `cells` (at one value of `at_fixed`, the best such), None without cells."""
    if not len(cells):
        return None
    groups = [g for _, g in cells.groupby(at_fixed)] if at_fixed else [cells]
    return float(max(g["N"].max() / g["N"].min() for g in groups))


def claims(m: dict) -> list[dict]:
    """The `laws` ledger's findings, each an exponent fitted to the readable optima in the laws' regime (`in_regime`):
    the loss-optimal batch size's in N at fixed D (Step Law, Power Lines: none) and in D (it grows), and the optimal
    LR's in N at fixed B and D (it falls). A batch-size fit holds the other variable only where the cells vary in it
    (one budget: B ~ N^a there). The model-size claims report the range of N they span, which the ledger requires."""
    lr_cells, b_cells = in_regime(m["lr_cells"]), in_regime(m["batch_cells"])
    widths_at_a_budget = int(b_cells.groupby("tokens")["width"].nunique().max()) if len(b_cells) else 0
    budgets = b_cells["tokens"].nunique() if len(b_cells) else 0
    in_n = (("N", "D") if budgets > 1 else ("N",), {})
    in_d = (("N", "D") if len(b_cells) and b_cells["width"].nunique() > 1 else ("D",), {})
    regime = f"with >= {MIN_TOKENS_PER_PARAMETER:g} tokens per non-embedding parameter"
    batch_n = _exponent_measurement(m, "batch", in_n, "N", b_cells, None if widths_at_a_budget >= 2 else
                                    f"fewer than two widths share a budget {regime} and a readable loss-optimal batch size (3+ batch "
                                    f"sizes of >= {MIN_STEPS} steps, the best inside them)", {"model_size_range": _size_range(b_cells, "tokens")})
    batch_d = _exponent_measurement(m, "batch", in_d, "D", b_cells, None if budgets >= 2 else
                                    f"fewer than two budgets {regime} with a readable loss-optimal batch size (3+ batch sizes of >= "
                                    f"{MIN_STEPS} steps, the best inside them)", {})
    lr_n = _exponent_measurement(m, "lr", LR_FORMS["free"], "N", lr_cells, None if len(lr_cells) and lr_cells["width"].nunique() >= 2 else
                                 f"fewer than two widths with an optimal LR inside its grid at >= {MIN_STEPS} steps {regime}",
                                 {"model_size_range": _size_range(lr_cells)})
    span = lambda f, col: f"{f[col].min():,.0f}-{f[col].max():,.0f}" if len(f) else "none"  # noqa: E731
    value = lambda x: f"{x['estimate']:.2f}" if "estimate" in x else "n/a"  # noqa: E731
    ratio = lambda f: f"{(f['D'] / f['N']).min():.1f}-{(f['D'] / f['N']).max():.1f}" if len(f) else "none"  # noqa: E731
    lr_fit = fit_form(LR_FORMS["free"], lr_cells, "optimal_lr") if len(lr_cells) else None
    other = lambda v: f"{lr_fit[v]:.2f}" if lr_fit else "n/a"  # noqa: E731
    return [
        claim("laws.compare.batch_independent_of_n",
              f"B_opt ~ N^{value(batch_n)}" + (" at fixed D" if in_n[0] == ("N", "D") else "") + f" over {len(b_cells)} (width, budget) "
              f"cells {regime}: N = {span(b_cells, 'N')}, D = {span(b_cells, 'tokens')} tokens ({ratio(b_cells)} per parameter)", batch_n),
        claim("laws.compare.batch_grows_with_tokens",
              f"B_opt ~ D^{value(batch_d)}" + (" at fixed N" if in_d[0] == ("N", "D") else "") + f" over D = {span(b_cells, 'tokens')} "
              f"tokens ({len(b_cells)} cells {regime})", batch_d),
        claim("laws.compare.lr_falls_with_n",
              f"eta_opt ~ N^{value(lr_n)} B^{other('B')} D^{other('D')} over {len(lr_cells)} optima {regime}: N = {span(lr_cells, 'N')}, "
              f"B = {span(lr_cells, 'batch_size')} sequences, D = {span(lr_cells, 'tokens')} tokens", lr_n),
    ]


def caveats(m: dict) -> list[str | None]:
    best, bbest = m["best"], m["batch_best"]
    out = [common.steps_caveat(best), common.edge_caveat(best, ["width", "batch_size", "tokens"])]
    if len(bbest):
        edge = bbest[bbest["on_edge"]]
        out.append(f"{len(edge)} of {len(bbest)} loss-optimal batch sizes sit at the end of the batch sizes with >= {MIN_STEPS} "
                   "steps, so they decide nothing: "
                   + ", ".join(f"(width {r['width']}, {r['tokens']:,} tokens)" for _, r in edge.iterrows()) + "." if len(edge) else None)
    for name, cells in (("optimal LRs", m["lr_cells"]), ("loss-optimal batch sizes", m["batch_cells"])):
        if len(cells) and (~cells["resolved"].astype(bool)).any():
            out.append(f"{int((~cells['resolved'].astype(bool)).sum())} of the {len(cells)} {name} the fits read are not resolved (a grid "
                       "neighbour is within the seeds' t interval): each sits where the parabola through the seed means puts it, so "
                       "a claim resting on them reads within noise whatever its interval says (the shared rule).")
    readable = m["lr_cells"]
    if len(readable):
        kept = in_regime(readable)
        out.append(f"{len(kept)} of the {len(readable)} readable optimal LRs train >= {MIN_TOKENS_PER_PARAMETER:g} tokens per "
                   "non-embedding parameter (the fewest among the laws' fits); the ledger's claims read only those, the fits and "
                   "held-out regrets in the tables read all of them.")
    if len(best):
        n, d = best["N"], best["tokens"]
        ranges = [law.fitted for law in load_laws()]
        low = lambda v: min(r[v][0] for r in ranges if v in r)  # noqa: E731
        out.append(f"The laws were fitted at {low('N'):.2g} parameters and {low('D'):.2g} tokens and up; these cells are {n.min():,}-{n.max():,} "
                   f"non-embedding parameters (standard parameterization) and {d.min():,}-{d.max():,} tokens, so a fitted exponent "
                   "describes this scale, and the published constants are not expected to hold here.")
        share = 1 - best["N"] / (best["N"] + best["embedding"])
        out.append(f"N counts non-embedding parameters, as Step Law does; at these widths the embeddings and output head are "
                   f"{share.min():.0%}-{share.max():.0%} of all parameters, so how N is counted moves both the exponents of N and "
                   "which cells pass the tokens-per-parameter cut (Porian et al. count the output head: with it the cells that "
                   "pass span less than the 4x in N the model-size claims require).")
    return out


# ---------------------------------------------------------------- the figure

PUBLISHED_AT = (1.24e8, 1.3e9)  # the two model sizes the published laws are drawn at (GPT-2 small, a 1.3B model)


def caption(exp, m: dict) -> str:
    """What the figure states about its scale: profile, widths and their N, budgets, batch sizes, seeds."""
    best, cells = m["best"], m["lr_cells"]
    widths = sorted(best["width"].unique())
    seeds = f"{int(cells['n_seeds'].min())} seeds at and next to every optimum the fits read" if len(cells) else "no optimum the fits read"
    return (f"{exp.profile} profile: widths {', '.join(map(str, widths))} x depth {exp.base.model.depth} (N = {best['N'].min():,}-"
            f"{best['N'].max():,} non-embedding), sequences of {exp.base.data.seq_len}, {best['tokens'].min():,}-{best['tokens'].max():,} "
            f"tokens (decays branched off one run), batch sizes {best['batch_size'].min()}-{best['batch_size'].max()}; {seeds}")


def published_curves(sizes_n=PUBLISHED_AT, seq_len: int = 2048) -> pd.DataFrame:
    """Each law's own batch size (tokens per step) and peak LR over D = 1e8-1e12 tokens at each N of `sizes_n`
    (advise's curves): one row per law, N and budget."""
    return pd.concat([curves(Request(params=n, tokens=1e10, seq_len=seq_len), load_laws(), decades=2.0).assign(N=n) for n in sizes_n],
                     ignore_index=True)


def _published_panel(ax, frame: pd.DataFrame, column: str, label: str) -> None:
    """One quantity of every law against D: a colour per law, a line style per N, the spread between the laws at
    each N shaded (the critical batch size, an upper bound, drawn dotted and left out of the spread)."""
    values = frame.dropna(subset=[column])
    styles = dict(zip(sorted(values["N"].unique()), ("-", "--")))
    laws = list(dict.fromkeys(values["law"]))
    for n, style in styles.items():
        at = values[values["N"] == n]
        optimal = at[~at["critical_batch"]] if column == "batch_tokens" else at
        spread = optimal.groupby("tokens")[column].agg(["min", "max"])
        ax.fill_between(spread.index, spread["min"], spread["max"], color="0.88" if style == "-" else "0.8", alpha=0.6, lw=0, zorder=0,
                        label=f"spread between the laws, N = {_count(n)}")
        for law, g in at.groupby("law", sort=False):
            critical = bool(g["critical_batch"].iloc[0]) and column == "batch_tokens"
            ax.plot(g["tokens"], g[column], ls=":" if critical else style, lw=1.0 if critical else 1.6,
                    color=plots.PAPER_COLOUR if critical else plots.series_colour(laws.index(law)),
                    label=(f"{law} (critical: an upper bound)" if critical else law) if style == "-" else None)
    for n, style in styles.items():
        ax.plot([], [], ls=style, color="0.3", label=f"N = {_count(n)}")
    ax.set(xscale="log", yscale="log", xlabel="training tokens D", ylabel=label)
    ax.legend(fontsize=6.5, ncol=2)


def _our_panel(ax, all_optima: pd.DataFrame, fitted: dict | None, draws: list[dict], target: str, fixed: dict, label: str) -> None:
    """Our optima against D, a colour per width (filled: the fit reads it; otherwise its marker says why not), and
    the fitted form per width at the `fixed` values of the rest, with its 95 % band over seed resamples."""
    widths = sorted(all_optima["width"].unique())
    for i, width in enumerate(widths):
        colour = plots.ordinal_colour(i, len(widths))
        mine = all_optima[(all_optima["width"] == width)]
        for _, row in mine.iterrows():
            plots.mark(ax, row["tokens"], row[target], colour, common.optimum_kind(row), ms=5)
        if fitted is None or not len(mine):
            continue
        d = np.geomspace(all_optima["tokens"].min(), all_optima["tokens"].max(), 40)
        grid = pd.DataFrame({"D": d, "N": mine["N"].iloc[0], "C": mine["flops_per_token"].iloc[0] * d, **fixed})
        ax.plot(d, predict(fitted, grid), color=colour, lw=1.4, label=f"width {width} (N = {mine['N'].iloc[0]:,})")
        curves = np.array([predict(f, grid) for f in draws if f is not None])
        if len(curves):
            ax.fill_between(d, *np.percentile(curves, [2.5, 97.5], axis=0), color=colour, alpha=0.15, lw=0)
    kinds = {common.optimum_kind(r) for _, r in all_optima.iterrows()}
    ax.set(xscale="log", xlabel="training tokens D")
    plots.log_ticks(ax, sorted(all_optima["tokens"].unique()))
    if target == "optimal_batch_size":
        plots.batch_axis(ax, sorted(set(all_optima["best_batch_size"])), axis="y", label=label)
    else:
        ax.set(yscale="log", ylabel=label)
    plots.marker_legend(ax, sorted(kinds - {"cell"}), fontsize=6.5)


def figure(m: dict, published: pd.DataFrame, fixed_batch: int):
    """Top: every law's published recommendation against D at two model sizes. Bottom: our loss-optimal batch size
    and optimal LR (at one batch size) against D per width, with the free forms fitted to the readable optima."""
    fig, axes = plt.subplots(2, 2, figsize=(11.5, 9.0))
    _published_panel(axes[0, 0], published, "batch_tokens", "loss-optimal batch size (tokens per step)")
    axes[0, 0].set_title("published laws: batch size (solid / dashed: the two N)", fontsize=9)
    _published_panel(axes[0, 1], published, "lr", "peak learning rate")
    axes[0, 1].set_title("published laws: peak LR at each law's own batch size", fontsize=9)
    b_cells = m["batch_cells"]
    form = (("N", "D") if len(b_cells) and b_cells["width"].nunique() > 1 and b_cells["tokens"].nunique() > 1 else ("D",), {})
    if len(m["batch_best"]):
        _our_panel(axes[1, 0], m["batch_best"], fit_form(form, b_cells, "optimal_batch_size") if len(b_cells) else None,
                   [fit_form(form, d, "optimal_batch_size") if len(d) else None for d in m["batch_draws"][:200]], "optimal_batch_size", {},
                   "loss-optimal batch size B (sequences)")
    axes[1, 0].set_title("ours: loss-optimal batch size, fit " + " ".join(["c"] + [f"{v}^{e}" for v, e in zip(form[0], "ab")])
                         + " on the readable optima", fontsize=9)
    at_b = m["best"][m["best"]["batch_size"] == fixed_batch]
    free = LR_FORMS["free"]
    _our_panel(axes[1, 1], at_b, fit_form(free, m["lr_cells"], "optimal_lr"),
               [fit_form(free, d, "optimal_lr") for d in m["lr_draws"][:200]], "optimal_lr", {"B": float(fixed_batch)},
               f"optimal LR at B = {fixed_batch}")
    axes[1, 1].set_title(f"ours: optimal LR at B = {fixed_batch}, fit c N^a B^b D^d on every readable optimum", fontsize=9)
    fig.tight_layout()
    return fig


def summary_markdown(m: dict) -> str:
    """The held-out result in words, from the numbers: which form predicts the optimal LR best, whether its lead
    over the square-root rule is beyond the seeds' noise, and what a factor-2 miss costs here."""
    summary = m["lr_summary"]
    if not len(summary):
        return "No readable optimal LR: nothing is held out at this scale."
    first, cost = summary.iloc[0], m["factor_two_cost"]
    held = m["lr_regret"][["width", "tokens"]].drop_duplicates()
    words = [f"Held out one (width, budget) cell at a time, **{first['law']}** ({FORM_WORDS['lr'][first['law']]}) predicts the optimal LR "
             f"best: a median regret of {first['median_regret']:.4f} nats over {int(first['cells'])} batch sizes of {len(held)} held-out cells "
             f"(an LR one factor-2 step off the best costs {cost:.4f} in the median cell)."]
    if "minus_sqrt_rule_low" in summary:
        beat = summary[summary["minus_sqrt_rule_high"] < 0]["law"].tolist()
        lose = summary[summary["minus_sqrt_rule_low"] > 0]["law"].tolist()
        words.append(("Beyond the seeds' noise (the 95 % interval of the difference in median regret below zero), "
                      + ", ".join(beat) + " beat the square-root rule" if beat else
                      "No form beats the square-root rule beyond the seeds' noise") + "; "
                     + (", ".join(lose) + " do worse than it." if lose else "none does worse than it beyond that noise."))
    b = m["batch_summary"]
    if len(b):
        bbest = m["batch_cells"]
        words.append(f"For the batch size, {int(b['cells'].iloc[0])} (width, budget) cells have a readable optimum to hold out "
                     f"({bbest['optimal_batch_size'].min():.3g}-{bbest['optimal_batch_size'].max():.3g} sequences); median (worst) "
                     "regret: " + ", ".join(f"{r['law']} {r['median_regret']:.4f} ({r['worst_regret']:.4f})" for _, r in b.iterrows()) + " nats.")
    else:
        words.append("No (width, budget) cell has a readable loss-optimal batch size to hold out.")
    return " ".join(words)
