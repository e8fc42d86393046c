"""Shen et al. Secs. 4-5 (Figs. 5-6, Table 5): one power schedule, eta(n) = min(eta_max, B a n^b), against WSD
and cosine each tuned per batch size and budget; its sensitivity to a and b; and its anytime property
(notebook `power_scheduler`).

Power runs carry every budget as a decay branched off one run (its LR before the decay does not depend on the
budget), so each is also the anytime test: decayed at any point, is it as good as a WSD run planned and
tuned for that budget? (a, b) are those fitted in `power_lr_surface`, read from its store (its runs are swept
first); WSD's per-cell best comes from the same store. Cosine trains a factor-2 LR grid around WSD's
optimum per cell, then 3 seeds at its best.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication import plots
from replication.claims import claim
from replication.params import experiment
from replication.papers.power import common, lr_surface
from replication.experiments import stored
from replication.verdicts import DRAWS, MIN_STEPS, bootstrap_difference, compare, pooled_sd

REQUIRES = ("power_lr_surface",)
KEYS = ("batch_sizes", "cosine_budgets", "cosine_lr_steps", "eta_max", "fixed_batch_size", "a_multipliers", "b_offsets", "published_b", "published_b_offsets",
        "seeds")


def wsd(exp, params: dict, results_root="results") -> tuple[pd.DataFrame, dict]:
    """The power_lr_surface table and its fit (raises while its runs are missing)."""
    table = lr_surface.complete_table(experiment(params, "power_lr_surface", exp.profile), params, results_root)
    return table, lr_surface.schedule_fit(lr_surface.optima(table))


def power_spec(exp, params: dict, batch_size: int, a: float, b: float, seed: int):
    s = common.settings(exp, KEYS)
    budgets = experiment(params, "power_lr_surface", exp.profile).settings["budgets"]
    return common.branched(exp, {"batch_size": batch_size, "optimizer.lr": s["eta_max"], "seed": seed, "schedule.name": "power",
                                 "schedule.power_a": float(f"{a:.4g}"), "schedule.power_b": float(f"{b:.4g}")}, budgets)


def cosine_spec(exp, batch_size: int, tokens: int, lr: float, seed: int):
    warmup = exp.base.schedule.warmup_tokens
    return exp.derived({"batch_size": batch_size, "tokens": tokens, "optimizer.lr": lr, "seed": seed, "schedule.name": "cosine",
                        "schedule.warmup_tokens": warmup}, "settings.cosine_budgets")


def _cosine_lrs(s: dict, best: pd.DataFrame, batch_size: int, tokens: int) -> list[float]:
    row = best[(best["batch_size"] == batch_size) & (best["tokens"] == tokens)]
    return common.lr_grid(float(row["best_lr"].iloc[0]), s["cosine_lr_steps"]) if len(row) else []


def runs(exp, params: dict, results_root="results") -> list:
    """Power at every batch size (3 seeds) with the fitted (a, b); a and b varied at the fixed batch size, b
    also at the paper's value and steps above it (`published_b`, `published_b_offsets`: the optimum is then not
    looked for around our own fit alone, nor cut off by the grid's top when it lies near the paper's);
    cosine over its grid per cell (seed 0), then 3 seeds at its best LR."""
    s = common.settings(exp, KEYS)
    table, fit = wsd(exp, params, results_root)
    a, b = fit["a"], fit["b"]
    out = [power_spec(exp, params, bs, a, b, seed) for bs in s["batch_sizes"] for seed in s["seeds"]]
    out += [power_spec(exp, params, s["fixed_batch_size"], a * k, b, seed) for k in s["a_multipliers"] for seed in s["seeds"]]
    out += [power_spec(exp, params, s["fixed_batch_size"], a, b + d, seed) for d in s["b_offsets"] for seed in s["seeds"]]
    out += [power_spec(exp, params, s["fixed_batch_size"], a, pb + d, seed) for pb in s["published_b"]
            for d in [0.0, *s["published_b_offsets"]] for seed in s["seeds"]]
    best = lr_surface.optima(table)
    store = stored(exp, results_root)
    for bs in s["batch_sizes"]:
        for t in s["cosine_budgets"]:
            grid = [cosine_spec(exp, bs, t, lr, s["seeds"][0]) for lr in _cosine_lrs(s, best, bs, t)]
            out += grid
            if grid and not not store.has_all(grid):
                done = common.loss_table(exp, grid, results_root)
                lr = float(done.loc[done["loss"].idxmin(), "lr"]) if done["loss"].notna().any() else grid[0].optimizer.lr
                out += [cosine_spec(exp, bs, t, lr, seed) for seed in s["seeds"][1:]]
    return list(dict.fromkeys(out))


def tables(exp, params: dict, results_root="results") -> dict:
    """power (one row per run and budget, with its a and b), cosine (per run), the WSD table and its fit."""
    s = common.settings(exp, KEYS)
    wsd_table, fit = wsd(exp, params, results_root)
    specs = runs(exp, params, results_root)
    label = lambda x: {"a": x.schedule.power_a, "b": x.schedule.power_b}
    power = common.loss_table(exp, [x for x in specs if x.schedule.name == "power"], results_root, label)
    cosine = common.loss_table(exp, [x for x in specs if x.schedule.name == "cosine"], results_root)
    a, b = float(f"{fit['a']:.4g}"), float(f"{fit['b']:.4g}")
    return {"power": power, "fitted": power[(power["a"] == a) & (power["b"] == b)], "cosine": cosine, "wsd": wsd_table,
            "fit": fit, "a": a, "b": b, "settings": s}


def _best_cells(frame: pd.DataFrame) -> dict:
    """(batch size, tokens) -> the seed losses at the grid LR with the lowest seed mean (3 seeds there)."""
    out = {}
    for (bs, t), g in frame.groupby(["batch_size", "tokens"]):
        stats = g.groupby("lr")["loss"].agg(["mean", "count"])
        full = stats[stats["count"] >= 2]
        lr = (full if len(full) else stats)["mean"].idxmin()
        rows = g[g["lr"] == lr]
        out[(bs, t)] = {"lr": lr, "losses": rows["loss"].tolist(), "steps": int(rows["steps"].min())}
    return out


def regret_table(t: dict) -> pd.DataFrame:
    """Per (batch size, budget): the mean loss of power (fitted a, b), of WSD and cosine at their best LR, and
    power's regret against the better of the tuned two."""
    wsd, cos = _best_cells(t["wsd"]), _best_cells(t["cosine"]) if len(t["cosine"]) else {}
    rows = []
    for (bs, tok), g in t["fitted"].groupby(["batch_size", "tokens"]):
        w = wsd.get((bs, tok))
        if w is None:
            continue
        c = cos.get((bs, tok))
        row = {"batch_size": bs, "tokens": tok, "steps": int(g["steps"].min()), "power": g["loss"].mean(), "power_seeds": g["loss"].count(),
               "wsd": float(np.mean(w["losses"])), "wsd_lr": w["lr"], "cosine": float(np.mean(c["losses"])) if c else np.nan,
               "cosine_lr": c["lr"] if c else np.nan}
        row["regret"] = row["power"] - np.nanmin([row["wsd"], row["cosine"]])
        rows.append(row)
    return pd.DataFrame(rows)


def premise(path: str = "metrics/power/lr_surface.json") -> dict:
    """The regime the schedule's transfer across batch sizes needs: the exponent of eta_opt in B that
    power_lr_surface measured (one (a, b) with LR proportional to B presumes 1); None before that stage ran."""
    try:
        stored = {c["id"]: c for c in json.loads(Path(path).read_text())["claims"]}
        estimate = stored["power.lr_surface.optimal_lr_grows_with_batch"]["measurement"].get("estimate")
    except (OSError, KeyError, ValueError):
        estimate = None
    return {"lr_batch_exponent": estimate}


def claims(t: dict, regime: dict | None = None) -> list[dict]:
    """The Sec. 4-5 claims; the transfer claims carry `regime` (default: `premise()`, read from power_lr_surface)."""
    s = t["settings"]
    regime = premise() if regime is None else regime
    wsd, cos = _best_cells(t["wsd"]), _best_cells(t["cosine"]) if len(t["cosine"]) else {}
    power = {k: g["loss"].tolist() for k, g in t["fitted"].groupby(["batch_size", "tokens"])}
    steps = {k: int(g["steps"].min()) for k, g in t["fitted"].groupby(["batch_size", "tokens"])}
    cells = [k for k in power if k in wsd and steps[k] >= MIN_STEPS]
    sd = pooled_sd(*(power[k] for k in cells), *(wsd[k]["losses"] for k in cells))
    gaps = {k: np.mean(power[k]) - np.mean(wsd[k]["losses"]) for k in cells}
    worst = max(gaps, key=gaps.get) if gaps else None
    matches = ({**compare(power[worst], wsd[worst]["losses"], [steps[worst], wsd[worst]["steps"]], seed_sd=sd), "regime": regime} if worst
               else {"untestable": f"no (batch size, budget) cell trains for >= {MIN_STEPS} steps"})
    at_b = [k for k in cells if k[0] == s["fixed_batch_size"]]
    gaps_b = {k: gaps[k] for k in at_b}
    worst_b = max(gaps_b, key=gaps_b.get) if gaps_b else None
    anytime = (compare(power[worst_b], wsd[worst_b]["losses"], [steps[worst_b], wsd[worst_b]["steps"]], seed_sd=sd) if worst_b
               else {"untestable": f"no budget of B={s['fixed_batch_size']} trains for >= {MIN_STEPS} steps"})
    cos_cells = [k for k in cos if k in power and min(steps[k], cos[k]["steps"]) >= MIN_STEPS]
    if cos_cells:
        series = {f"p{i}": power[k] for i, k in enumerate(cos_cells)} | {f"c{i}": cos[k]["losses"] for i, k in enumerate(cos_cells)}
        beats = {**bootstrap_difference(series, lambda m: np.mean([m[f"p{i}"] - m[f"c{i}"] for i in range(len(cos_cells))]),
                                        [steps[k] for k in cos_cells]), "regime": regime}
    else:
        beats = {"untestable": f"no cosine cell trains for >= {MIN_STEPS} steps"}
    cos_gap = np.mean([np.mean(power[k]) - np.mean(cos[k]["losses"]) for k in cos_cells]) if cos_cells else np.nan
    sens = sensitivity(t)
    fmt = lambda k: f"B={k[0]}, T={k[1]:,}"
    return [
        claim("power.scheduler.power_matches_tuned_wsd",
              f"one (a, b) = ({t['a']:.3g}, {t['b']:.2f}) for {len(cells)} cells: worst regret against tuned WSD "
              + (f"{gaps[worst]:+.3f} nats ({fmt(worst)}); median {np.median(list(gaps.values())):+.3f}" if worst else "n/a"), matches),
        claim("power.scheduler.power_beats_cosine",
              f"power - tuned cosine, mean over {len(cos_cells)} cells: {cos_gap:+.3f} nats", beats),
        claim("power.scheduler.a_flat_b_sharp",
              f"loss range over a x {min(s['a_multipliers'] + [1]):g}-{max(s['a_multipliers'] + [1]):g}: {sens['a_range']:.3f}; over "
              f"b {t['b']:+.2f} {min(s['b_offsets']):+g} to {max(s['b_offsets']):+g}: {sens['b_range']:.3f}; optimal b {sens['b_opt']:.2f} "
              f"over b = {', '.join(f'{v:.2f}' for v in sens['b_means'].index)} (the paper's "
              + ", ".join(f"{v:g}" for v in s["published_b"]) + " included)",
              {"parts": {"b_matters_more_than_a": sens["b_vs_a"], "optimal_b": sens["optimal_b"]}}),
        claim("power.scheduler.anytime",
              f"B={s['fixed_batch_size']}: decays branched off one power run vs WSD tuned per budget, worst "
              + (f"{gaps_b[worst_b]:+.3f} nats ({fmt(worst_b)})" if worst_b else "n/a"), anytime),
    ]


def _at(t: dict) -> pd.DataFrame:
    """The power runs at the fixed batch size and the largest budget whose steps reach MIN_STEPS there."""
    s = t["settings"]
    g = t["power"][t["power"]["batch_size"] == s["fixed_batch_size"]]
    return g[g["tokens"] == g["tokens"].max()]


def _b_optimum(means: pd.Series) -> float:
    """The vertex of a parabola in b through the best b and its neighbours (the best b at an edge)."""
    means = means.sort_index()
    i = int(np.nanargmin(means.to_numpy()))
    if i in (0, len(means) - 1):
        return float(means.index[i])
    x, y = means.index[i - 1:i + 2].to_numpy(float), means.iloc[i - 1:i + 2].to_numpy(float)
    c2, c1, _ = np.polyfit(x, y, 2)
    return float(np.clip(-c1 / (2 * c2), x[0], x[-1])) if c2 > 0 else float(means.index[i])


def _unresolved_b(b_rows: pd.DataFrame) -> str | None:
    """Why the best b is not resolved, by the rule every optimum obeys (`common.resolved`: both neighbours worse
    beyond the t critical value times the standard error of the difference), or None when it is."""
    stats = b_rows.groupby("b")["loss"].agg(["mean", "count", "var"]).sort_index()
    mean, count, var = (stats[c].to_numpy(float)[None] for c in ("mean", "count", "var"))
    if common.resolved(mean, count, var)[0]:
        return None
    i = int(np.nanargmin(stats["mean"].to_numpy()))
    near = [j for j in (i - 1, i + 1) if 0 <= j < len(stats)]
    gaps = ", ".join(f"{stats.index[j]:.2f} {stats['mean'].iloc[j] - stats['mean'].iloc[i]:+.3f}" for j in near)
    return f"the best b ({stats.index[i]:.2f}) is not resolved: a neighbour is not worse beyond the seeds' t interval ({gaps} nats)"


def sensitivity(t: dict, draws: int = DRAWS) -> dict:
    """Loss range over a (b fixed) and over b within the offsets around the fit (a fixed) at the fixed batch
    size and largest budget, and b's optimum over every b tried, the paper's included (its interval from
    `draws` resamples of the seeds at every b)."""
    g = _at(t)
    a_rows, b_rows = g[g["b"] == t["b"]], g[g["a"] == t["a"]]
    near = b_rows[(b_rows["b"] - t["b"]).abs() <= max(map(abs, t["settings"]["b_offsets"])) + 1e-9]  # the range compared with a's
    a_cells = {f"a{a}": list(x["loss"]) for a, x in a_rows.groupby("a")}
    b_cells = {f"b{b}": list(x["loss"]) for b, x in near.groupby("b")}
    spread = lambda m, prefix: np.nanmax([v for k, v in m.items() if k.startswith(prefix)]) - np.nanmin([v for k, v in m.items() if k.startswith(prefix)])
    steps = [int(g["steps"].min())] if len(g) else []
    b_vs_a = bootstrap_difference(a_cells | b_cells, lambda m: spread(m, "b") - spread(m, "a"), steps)
    draws = [_b_optimum(x.groupby("b")["loss"].mean()) for x in common.resampled(b_rows, ["b"], draws)] if len(b_rows) else []
    b_means = b_rows.groupby("b")["loss"].mean()
    b_opt = _b_optimum(b_means) if len(b_means) else np.nan
    near_means = near.groupby("b")["loss"].mean()
    optimal_b = {"estimate": b_opt, "draws": draws, "min_steps": steps[0] if steps else None,
                 "n_seeds": int(b_rows.groupby("b")["loss"].count().min()) if len(b_rows) else 0}
    if len(b_rows) and (why := _unresolved_b(b_rows)):
        optimal_b["unresolved"] = why
    a_means = a_rows.groupby("a")["loss"].mean()
    return {"a_range": float(a_means.max() - a_means.min()) if len(a_means) else np.nan,
            "b_range": float(near_means.max() - near_means.min()) if len(near_means) else np.nan,
            "b_opt": b_opt, "b_vs_a": b_vs_a, "optimal_b": optimal_b, "a_means": a_means, "b_means": b_means}


def figure(t: dict, regret: pd.DataFrame):
    s = t["settings"]
    fig, grid = plt.subplots(2, 2, figsize=(11.5, 8.8))  # 2 x 2: readable at the width REPORT.md gives it
    axes = grid.ravel()
    ax = axes[0]
    shown, kinds = [0.0], set()
    for bs, g in regret.groupby("batch_size"):
        colour = plots.batch_colour(bs)
        power, cosine = g["power"] - g["wsd"], g["cosine"] - g["wsd"]
        ax.plot(g["tokens"], power, "-", color=colour, lw=1.2, label=f"B={bs}: power - tuned WSD")
        ax.plot(g["tokens"], cosine, "--", color=colour, lw=1, label=f"B={bs}: tuned cosine - tuned WSD")
        for tokens, value, steps in zip(g["tokens"], power, g["steps"]):
            kind = plots.cell_kind(steps)
            kinds.add(kind)
            plots.mark(ax, tokens, value, colour, kind, ms=4)
        ok = (g["steps"] >= MIN_STEPS).to_numpy()
        shown += [*power[ok], *cosine[ok]]
    ax.axhline(0, color="k", lw=0.7)
    ax.set(xscale="log", xlabel="tokens T", ylabel="loss minus tuned WSD's (nats)")
    plots.log_ticks(ax, sorted(regret["tokens"].unique()))
    plots.visible_range(ax, shown)  # cells under MIN_STEPS steps are drawn but do not set the scale
    ax.set_title(f"One power schedule (a={t['a']:.3g}, b={t['b']:.2f}) against per-cell tuning", fontsize=9)
    plots.marker_legend(ax, sorted(kinds - {"cell"}), fontsize=6)
    ax = axes[1]
    bs = s["fixed_batch_size"]
    g = regret[regret["batch_size"] == bs].set_index("tokens")
    ax.plot(g.index, g["power"] - g["wsd"], "-", color=plots.series_colour(0), label="power: decays branched off one run")
    for tokens, value, steps in zip(g.index, g["power"] - g["wsd"], g["steps"]):
        plots.mark(ax, tokens, value, plots.series_colour(0), plots.cell_kind(steps))
    readable = (g["power"] - g["wsd"])[g["steps"] >= MIN_STEPS]
    w = t["wsd"][t["wsd"]["batch_size"] == bs]
    top = w["tokens"].max()
    if top in g.index:
        one = w[w["lr"] == g.loc[top, "wsd_lr"]].groupby("tokens")["loss"].mean()
        ax.plot(one.index, one.to_numpy() - g["wsd"].reindex(one.index).to_numpy(), "D--", color=plots.series_colour(1), ms=4,
                label=f"WSD at the one LR tuned for T={top:,}")
    ax.axhline(0, color="k", lw=0.7, label="WSD tuned for each budget")
    ax.set(xscale="log", xlabel="tokens T (the budget each decay ends at)", ylabel="loss minus tuned WSD's (nats)")
    plots.visible_range(ax, [0.0, *readable])  # cells under MIN_STEPS steps (hollow) do not set the scale
    plots.log_ticks(ax, sorted(g.index))
    ax.set_title(f"Anytime, B = {bs}: one run, decayed at any budget", fontsize=9)
    ax.legend(fontsize=7)
    raw = _at(t)
    for ax, name, rows in ((axes[2], "a", raw[raw["b"] == t["b"]]), (axes[3], "b", raw[raw["a"] == t["a"]])):
        cells = rows.groupby(name)["loss"]
        ax.errorbar(cells.mean().index, cells.mean().to_numpy(), yerr=[plots.seed_interval(v) for _, v in cells], fmt="o-", capsize=2,
                    color=plots.batch_colour(bs))
        ax.set(xlabel=name, ylabel="validation loss (nats / token)")
        ax.axvline(t[name], color="k", lw=0.7, ls=":", label=f"ours: {t[name]:.3g}")
        ax.set_xticks(sorted(rows[name].unique()), [f"{v:.2f}" for v in sorted(rows[name].unique())], rotation=45, fontsize=7)
    axes[3].axvline(-0.51, color=plots.PAPER_COLOUR, lw=1, ls="--", label="paper: -0.51")
    for ax in axes[2:]:
        ax.legend(fontsize=7, title=plots.ERROR_BARS, title_fontsize=6)
    axes[2].set_ylim(*axes[3].get_ylim())  # one scale: flat against sharp
    axes[2].set_title(f"(Fig. 5, left) sensitivity to a, B={bs}, T={_at(t)['tokens'].max():,}; paper: flat", fontsize=9)
    axes[3].set_title("(Fig. 5, right) sensitivity to b; paper: sharp, optimum near -0.51", fontsize=9)
    fig.tight_layout()
    return fig


def caveats(t: dict, regret: pd.DataFrame) -> list[str | None]:
    short = regret[regret["steps"] < MIN_STEPS]
    return [(f"{len(short)} of {len(regret)} (batch size, budget) cells train for fewer than {MIN_STEPS} steps: shown hollow, "
             "deciding nothing.") if len(short) else None,
            f"(a, b) = ({t['a']:.4g}, {t['b']:.3f}) are fitted on this replication's own WSD optima (power_lr_surface, {t['fit']['source']}), not the "
            "paper's (4, -0.51): a depends on sequence length, tokenizer and parameterization, so only b is comparable.",
            "WSD's per-cell optimum and the power runs share the data order and the model; WSD's best LR is picked from the same "
            "seeds it is scored on, which flatters WSD slightly (a winner's curse of one grid step at most)."]
