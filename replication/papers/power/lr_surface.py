"""Shen et al. Sec. 3 (Figs. 2-4): the optimal WSD learning rate over batch sizes and token budgets, and the
power law gamma = eta_opt / B = a T^b fitted to it (notebook `power_lr_surface`).

Runs: every batch size over a factor-2 LR grid centred on centre_lr x (B / centre_batch_size)^lr_scaling,
each run carrying every budget as a branched decay (common.py). The grid grows past an edge where a budget's
best LR sits on it (up to `max_extension` steps a side), then the LRs around each budget's best are rerun with
the other seeds. Optima are parabolas in log LR over the seed-mean losses; the fits use optima with >= 250
steps that lie inside the grid, and their intervals resample seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication import plots
from replication.claims import claim
from replication.fit import lr_power_law
from replication.papers.power import common
from replication.params import experiment
from replication.experiments import stored
from replication.verdicts import DRAWS, MIN_STEPS

KEYS = ("batch_sizes", "budgets", "center_lr", "center_batch_size", "lr_scaling", "lr_steps", "max_extension", "seeds",
        "fixed_batch_size")


def grid_lrs(s: dict, batch_size: int, steps=None) -> list[float]:
    center = s["center_lr"] * (batch_size / s["center_batch_size"]) ** s["lr_scaling"]
    return common.lr_grid(center, s["lr_steps"] if steps is None else steps)


def spec(exp, batch_size: int, lr: float, seed: int):
    s = common.settings(exp, KEYS)
    return common.branched(exp, {"batch_size": batch_size, "optimizer.lr": lr, "seed": seed}, s["budgets"])


def runs(exp, params: dict, results_root="results") -> list:
    """Seed 0 over each batch size's grid (extended past edge optima); then, per batch size, the other seeds
    at every LR that is some budget's best or next to it."""
    s = common.settings(exp, KEYS)
    out = []
    for b in s["batch_sizes"]:
        lrs, best = common.grid_past_edges(exp, lambda low, high, b=b: grid_lrs(s, b, common.extended_steps(s["lr_steps"], low, high)),
                                           lambda lr, b=b: spec(exp, b, lr, s["seeds"][0]), s["max_extension"], results_root)
        out += [spec(exp, b, lr, s["seeds"][0]) for lr in lrs]
        out += [spec(exp, b, lr, seed) for lr in common.around(lrs, best or []) for seed in s["seeds"][1:]]
    return list(dict.fromkeys(out))


def complete_table(exp, params: dict, results_root="results") -> pd.DataFrame:
    """The table of every declared run, for topics that read this experiment: raises while one is missing."""
    store = stored(exp, results_root)
    specs = runs(exp, params, results_root)
    if not store.has_all(specs):
        raise RuntimeError(f"{exp.name}'s runs are read by another experiment: sweep {exp.name} first")
    return common.loss_table(exp, specs, results_root)


def table(exp, params: dict, results_root="results") -> pd.DataFrame:
    return common.loss_table(exp, runs(exp, params, results_root), results_root)


def optima(table: pd.DataFrame) -> pd.DataFrame:
    return _with_gamma(common.optima(table, ["batch_size", "tokens"]))


def _with_gamma(best: pd.DataFrame) -> pd.DataFrame:
    best["gamma"] = best["optimal_lr"] / best["batch_size"]
    return best


def gamma_cells(best: pd.DataFrame, per_budget: int = 3) -> pd.DataFrame:
    """Shen et al. fit gamma on the 3 best batch sizes of each budget (lowest loss at their optimal LR),
    here among the optima that may decide a verdict."""
    ok = common.verdict_cells(best)
    return ok.sort_values("best_loss").groupby("tokens").head(per_budget).sort_values(["tokens", "batch_size"])


def schedule_fit(best: pd.DataFrame) -> dict:
    """(a, b) for the power schedule: the gamma fit on the verdict cells, or, where they are too few (the smoke
    profile), on the 3 best batch sizes of every budget whatever their steps (`source` says which)."""
    for source, cells in (("optima with >= 250 steps inside the grid", gamma_cells(best)),
                          ("every optimum (too few with >= 250 steps inside the grid)", best.sort_values("best_loss").groupby("tokens").head(3))):
        if len(cells) >= 3 and cells["tokens"].nunique() > 1:
            fit = lr_power_law(cells["batch_size"], cells["tokens"], cells["optimal_lr"], draws=0)
            if np.isfinite(fit["a"]) and np.isfinite(fit["b"]):
                return {"a": fit["a"], "b": fit["b"], "source": source}
    raise RuntimeError("power_lr_surface has too few optima for a gamma = a T^b fit")


def _fits(best: pd.DataFrame, fixed_batch: int, fixed_tokens: int) -> dict:
    ok = common.verdict_cells(best)
    at_b, at_t, g = ok[ok["batch_size"] == fixed_batch], ok[ok["tokens"] == fixed_tokens], gamma_cells(best)
    gamma = lr_power_law(g["batch_size"], g["tokens"], g["optimal_lr"], draws=0) if len(g) >= 3 and g["tokens"].nunique() > 1 else {}
    free = lr_power_law(ok["batch_size"], ok["tokens"], ok["optimal_lr"], draws=0) if len(ok) >= 3 and ok["tokens"].nunique() > 1 else {}
    return {"token_slope": common.slope(at_b["tokens"], at_b["optimal_lr"]),
            "batch_slope": common.slope(at_t["batch_size"], at_t["optimal_lr"]),
            "a": gamma.get("a", np.nan), "b": gamma.get("b", np.nan),
            "free_batch_exponent": free.get("batch_exponent", np.nan), "free_token_exponent": free.get("token_exponent", np.nan)}


def measure(table: pd.DataFrame, s: dict, draws: int = DRAWS) -> dict:
    """The fitted slopes and (a, b) of the seed-mean optima, and the same fits on `draws` seed resamples."""
    fixed_tokens = max(s["budgets"])
    best = optima(table)
    point = _fits(best, s["fixed_batch_size"], fixed_tokens)
    resampled = [_fits(_with_gamma(b), s["fixed_batch_size"], fixed_tokens) for b in common.optima_draws(table, ["batch_size", "tokens"], draws=draws)]
    return {"best": best, "point": point, "draws": pd.DataFrame(resampled)}


def critical_batch_size(exp, params: dict, path="metrics/zhang/steps_to_target.json") -> dict | None:
    """B* that zhang_steps_to_target measured for this experiment's body (the same model and data), read from
    its metrics: {model, b_star, b_noise}; None where no model of that experiment is this body, or its
    metrics are missing, of another profile, or lack that model's fit. Hypothesis 1 (eta_opt ~ B) is a
    claim about batch sizes below B*: above it the optimal LR saturates (McCandlish et al. 2018)."""
    zhang = experiment(params, "zhang_steps_to_target", exp.profile)
    body = lambda spec: (spec.model, spec.data.corpus, spec.data.hf_config, spec.data.vocab_size, spec.data.seq_len)  # noqa: E731
    names = [name for name, model in zhang.settings["models"].items()
             if body(zhang.derived({k: v for k, v in model.items() if k.startswith("model.")}, f"settings.models.{name}")) == body(exp.base)]
    path = Path(path)
    if not names or not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    fits = [f for f in metrics.get("fits") or [] if f.get("model") == names[0] and f.get("b_star") is not None]
    if metrics.get("profile") != exp.profile or not fits:
        return None
    fit = min(fits, key=lambda f: f.get("target_multiple", 1.0))  # the first target, Zhang et al.'s own
    return {"model": names[0], "b_star": float(fit["b_star"]), "b_noise": fit.get("b_noise")}


def _interval(m: dict, key: str, cells: pd.DataFrame, regime: dict | None = None) -> dict:
    out = common.interval_measurement(m["point"][key], m["draws"][key], cells, len(cells) >= 2,
                                      f"fewer than two optima with >= {MIN_STEPS} steps inside the grid")
    return {**out, "regime": regime} if regime is not None else out


def claims(m: dict, s: dict, critical: dict | None = None) -> list[dict]:
    """The three claims of Sec. 3. Hypothesis 1 is tested only below B_noise of the same body (`critical`, from
    `critical_batch_size`; None: not measured, so not testable), and gamma = eta_opt / B is a constant of B
    only if eta_opt ~ B: gamma's exponent is gated on the batch exponent that Hypothesis 1 measures."""
    best, p = m["best"], m["point"]
    ok = common.verdict_cells(best)
    at_b = ok[ok["batch_size"] == s["fixed_batch_size"]]
    at_t = ok[ok["tokens"] == max(s["budgets"])]
    g = gamma_cells(best)
    span = lambda f, col: f"{f[col].min():,}-{f[col].max():,}" if len(f) else "none"  # noqa: E731
    # the LR saturates as B approaches the gradient noise scale (McCandlish et al. 2018), so Hypothesis 1 is
    # read below B_noise = b/a of the same body (B* = 1.2 B0 + 0.2 b/a would also carry the design's B0)
    b_noise = critical.get("b_noise") if critical else None
    largest = float(at_t["batch_size"].max()) if len(at_t) else np.nan
    star_words = (f"largest B / B_noise = {largest:g} / {b_noise:.3g} = {largest / b_noise:.2f} (B_noise of zhang_steps_to_target's "
                  f"{critical['model']}, the same body; its B* is {critical['b_star']:.3g})" if b_noise
                  else "B_noise of this body not measured (metrics/zhang/steps_to_target.json)")
    return [
        claim("power.lr_surface.optimal_lr_falls_with_tokens",
              f"B={s['fixed_batch_size']}: eta_opt ~ T^{p['token_slope']:.2f} over T = {span(at_b, 'tokens')} tokens", _interval(m, "token_slope", at_b)),
        claim("power.lr_surface.optimal_lr_grows_with_batch",
              f"T={max(s['budgets']):,}: eta_opt ~ B^{p['batch_slope']:.2f} over B = {span(at_t, 'batch_size')}; {star_words}; "
              f"free fit over all cells: eta_opt ~ B^{p['free_batch_exponent']:.2f} T^{p['free_token_exponent']:.2f}",
              _interval(m, "batch_slope", at_t, {"largest_batch_over_critical": largest / b_noise if b_noise else None})),
        claim("power.lr_surface.gamma_exponent",
              f"gamma = {p['a']:.3g} T^{p['b']:.2f} on the 3 best batch sizes of {g['tokens'].nunique()} budgets; its premise "
              f"eta_opt ~ B^1 measured as B^{p['batch_slope']:.2f} (T={max(s['budgets']):,})",
              _interval(m, "b", g, {"lr_batch_exponent": float(p["batch_slope"]) if np.isfinite(p["batch_slope"]) else None})),
    ]


def gamma_metrics(best: pd.DataFrame, label: str = "ours") -> pd.DataFrame:
    """What the report's side-by-side figure reads: gamma at each cell the fit reads (the 3 best batch sizes
    per budget), with its marker kind (an optimum a grid neighbour matches within seed noise is not resolved)."""
    g = gamma_cells(best)
    kind = [common.optimum_kind(row) for _, row in g.iterrows()]
    return g[["tokens", "batch_size", "gamma", "steps"]].assign(kind=kind, model=label).reset_index(drop=True)


def figure(table: pd.DataFrame, m: dict, s: dict):
    """Shen et al. Figs. 2-4 on a 2 x 2 grid (readable at the width REPORT.md gives it)."""
    best, p = m["best"], m["point"]
    fixed_tokens = max(s["budgets"])
    fig, grid = plt.subplots(2, 2, figsize=(11.5, 8.8))
    axes = grid.ravel()
    common.plot_loss_curves(axes[0], table, "tokens", {"batch_size": s["fixed_batch_size"]}, best, label=lambda t: f"T={t:,}")
    axes[0].set_title(f"(Fig. 2a) B = {s['fixed_batch_size']}: loss against LR per budget", fontsize=9)
    common.plot_loss_curves(axes[1], table, "batch_size", {"tokens": fixed_tokens}, best, label=lambda b: f"B={b}")
    axes[1].set_title(f"(Fig. 2b) T = {fixed_tokens:,}: loss against LR per batch size", fontsize=9)
    ax = axes[2]
    budgets = sorted(best["tokens"].unique())
    kinds = set()
    for i, t in enumerate(budgets):
        g = best[best["tokens"] == t].sort_values("batch_size")
        colour = plots.ordinal_colour(i, len(budgets))
        ax.plot(g["batch_size"], g["optimal_lr"], "-", color=colour, lw=1, label=f"T={t:,}")
        for _, row in g.iterrows():
            kind = common.optimum_kind(row)
            kinds.add(kind)
            plots.mark(ax, row["batch_size"], row["optimal_lr"], colour, kind, ms=5)
    ax.set(yscale="log", ylabel="optimal LR")
    plots.batch_axis(ax, s["batch_sizes"])
    readable = best[[common.optimum_kind(r) == "cell" for _, r in best.iterrows()]]
    if len(readable):
        plots.visible_range(ax, readable["optimal_lr"])
        b = np.array(sorted(s["batch_sizes"]), dtype=float)
        anchor = np.exp(np.log(readable["optimal_lr"]).mean() - np.log(readable["batch_size"]).mean())
        ax.plot(b, anchor * b, "--", color=plots.PAPER_COLOUR, lw=1, label="slope 1 (paper: eta_opt ~ B)")
    ax.set_title(f"(Fig. 3) optimal LR against batch size; slope at T={fixed_tokens:,}: {p['batch_slope']:.2f}, paper: about 1", fontsize=9)
    plots.marker_legend(ax, sorted(kinds - {"cell"}), fontsize=7)
    ax = axes[3]
    g = gamma_cells(best)
    ax.plot(best["tokens"], best["gamma"], ".", color="0.75", label="every cell")
    ax.plot(g["tokens"], g["gamma"], "o", color="k", ms=4, label="3 best batch sizes per budget")
    t = np.geomspace(min(budgets), max(budgets), 50)
    if np.isfinite(p["b"]):
        draws = m["draws"][["a", "b"]].dropna() if "draws" in m and {"a", "b"} <= set(m["draws"]) else pd.DataFrame()
        if len(draws):  # the band of the seed resamples' fits, pointwise 2.5-97.5 %
            curves = np.array([a * t ** b for a, b in draws.to_numpy()])
            ax.fill_between(t, *np.percentile(curves, [2.5, 97.5], axis=0), color=plots.FIT_COLOUR, alpha=0.2, lw=0,
                            label="95 % band over seed resamples")
        ax.plot(t, p["a"] * t ** p["b"], "-", color=plots.FIT_COLOUR, label=f"our fit {p['a']:.3g} T^{p['b']:.2f}")
    ax.plot(t, 4.6 * t ** -0.51, "--", color=plots.PAPER_COLOUR, label="paper: 4.6 T^-0.51 (Eq. 5)")
    ax.set(xscale="log", yscale="log", xlabel="tokens T", ylabel="gamma = optimal LR / B (B in sequences)")
    plots.log_ticks(ax, budgets)
    ax.set_title("(Fig. 4) gamma against tokens", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def caveats(table: pd.DataFrame, m: dict, critical: dict | None = None) -> list[str | None]:
    best, p = m["best"], m["point"]
    out = [common.edge_caveat(best, ["batch_size", "tokens"]), common.steps_caveat(best)]
    if critical:  # the optimal LR saturates as B approaches the noise scale B_noise = b/a (McCandlish et al. 2018), not B*
        sizes = sorted(best["batch_size"].unique())
        scale, name = (critical["b_noise"], "B_noise") if critical.get("b_noise") is not None else (critical["b_star"], "B*")
        above = [b for b in sizes if b > scale]
        noise = f"B_noise = b/a = {scale:.3g} and " if name == "B_noise" else ""
        measured = f"zhang_steps_to_target measures {noise}B* = {critical['b_star']:.3g} for this body ({critical['model']})"
        out.append(f"{measured}: batch sizes {', '.join(map(str, above))} of {sizes[0]}-{sizes[-1]} lie above {name}, where the optimal LR is "
                   "expected to saturate (McCandlish et al. 2018), so the linear rule of Hypothesis 1 cannot be tested on them." if above else
                   f"{measured}: every batch size lies below {name}.")
    g = gamma_cells(best)
    if np.isfinite(p["free_batch_exponent"]) and abs(p["free_batch_exponent"] - 1) > 0.3 and g["tokens"].nunique() > 1:
        first, last = (sorted(g[g["tokens"] == t]["batch_size"]) for t in (g["tokens"].min(), g["tokens"].max()))
        out.append(f"Our optimal LR grows about as B^{p['free_batch_exponent']:.2f}, not B^1, so gamma = eta_opt / B itself falls "
                   f"with B; the 3 best batch sizes move from {first} at {g['tokens'].min():,} tokens to {last} at {g['tokens'].max():,}, "
                   f"so the fitted b ({p['b']:.2f}) mixes eta_opt's own token exponent (free fit: T^{p['free_token_exponent']:.2f}) "
                   "with that shift. Read b beside the free fit, not alone.")
    read = common.verdict_cells(best)  # the optima the fits read
    if len(read) and not read["resolved"].all():
        top = read[read["tokens"] == read["tokens"].max()]
        loose = sorted(int(b) for b in top.loc[~top["resolved"].astype(bool), "batch_size"])
        out.append(f"{int(read['resolved'].sum())} of the {len(read)} optima the fits read (>= {MIN_STEPS} steps, inside the grid) are "
                   f"resolved; at the largest budget ({int(top['tokens'].iloc[0]):,} tokens) B = {', '.join(map(str, loose)) or 'none'} are not. "
                   "An unresolved optimum has a grid neighbour within the seed noise (Welch t), so its optimal LR is where the parabola "
                   "through the seed means puts it (hollow squares), and every slope and gamma fit rests on such optima. Resolving them "
                   "takes more seeds at the best LR and its neighbours; a finer LR grid would place each optimum better but bring its "
                   "neighbours closer, so it would resolve fewer.")
    out.append(f"The largest budget is {table['tokens'].max():,} tokens against the paper's 2B-256B, and the body has about 0.1M "
               "non-embedding parameters in the standard parameterization against 12M-121M under muP (see power_transfer).")
    return out
