"""Shen et al. Fig. 4 and Table 1: with muP the optimal LR, and gamma = a T^b, transfer across width; in the
standard parameterization (SP) they drift (notebook `power_transfer`).

Runs: each width, with and without muP (`model.mup_base_width`; at the base width the two are the same
model, trained once), at one batch size over a factor-2 LR grid, every budget a branched WSD decay (the
`power_lr_surface` protocol, grid extension and seeds included). SP's grid centre moves with width as
centre x (base width / width)^sp_width_scaling so that its drifting optimum stays inside.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication import plots
from replication.claims import claim
from replication.papers.power import common
from replication.verdicts import DRAWS, MIN_STEPS

KEYS = ("widths", "base_width", "batch_size", "budgets", "center_lr", "sp_width_scaling", "lr_steps", "max_extension", "seeds")
PARAMETERIZATIONS = ("muP", "SP")


def _center(s: dict, width: int, param: str) -> float:
    return s["center_lr"] * ((s["base_width"] / width) ** s["sp_width_scaling"] if param == "SP" else 1.0)


def spec(exp, width: int, param: str, lr: float, seed: int):
    s = common.settings(exp, KEYS)
    mup = s["base_width"] if param == "muP" and width != s["base_width"] else None  # at the base width muP is SP
    return common.branched(exp, {"model.width": width, "model.mup_base_width": mup, "batch_size": s["batch_size"],
                                 "optimizer.lr": lr, "seed": seed}, s["budgets"])


def _label(spec) -> dict:
    return {"width": spec.model.width}


def runs(exp, params: dict, results_root="results") -> list:
    s = common.settings(exp, KEYS)
    out = []
    for width in s["widths"]:
        for param in PARAMETERIZATIONS:
            make = lambda lr, seed=s["seeds"][0], w=width, p=param: spec(exp, w, p, lr, seed)
            lrs, best = common.grid_past_edges(
                exp, lambda low, high, w=width, p=param: common.lr_grid(_center(s, w, p), common.extended_steps(s["lr_steps"], low, high)),
                make, s["max_extension"], results_root)
            out += [make(lr) for lr in lrs] + [make(lr, seed) for lr in common.around(lrs, best or []) for seed in s["seeds"][1:]]
    return list(dict.fromkeys(out))


def table(exp, params: dict, results_root="results") -> pd.DataFrame:
    """Losses per width, parameterization, LR, seed and budget (the base width's runs count for both)."""
    s = common.settings(exp, KEYS)
    specs = runs(exp, params, results_root)
    frames = []
    for param in PARAMETERIZATIONS:
        mine = [x for x in specs if (x.model.mup_base_width is not None) == (param == "muP") or x.model.width == s["base_width"]]
        frames.append(common.loss_table(exp, mine, results_root, _label).assign(param=param))
    return pd.concat(frames, ignore_index=True)


def _fits(best: pd.DataFrame, s: dict) -> dict:
    out = {}
    top = max(s["budgets"])
    for param in PARAMETERIZATIONS:
        ok = common.verdict_cells(best[best["param"] == param])
        for width, g in ok.groupby("width"):  # gamma = a T^b at one batch size: a line in log-log (NaN under two budgets)
            gamma, tokens = g["optimal_lr"] / g["batch_size"], g["tokens"]
            b = common.slope(tokens, gamma)
            out[f"{param}_b_w{width}"] = b
            out[f"{param}_a_w{width}"] = float(np.exp(np.mean(np.log(gamma)) - b * np.mean(np.log(tokens))))
        at_top = ok[ok["tokens"] == top]
        out[f"{param}_width_slope"] = common.slope(at_top["width"], at_top["optimal_lr"])  # eta_opt ~ width^slope at the largest budget
        bs = [(w, out.get(f"{param}_b_w{w}", np.nan)) for w in s["widths"]]
        bs = [(w, b) for w, b in bs if np.isfinite(b)]
        out[f"{param}_b_trend"] = float(np.polyfit(np.log2([w for w, _ in bs]), [b for _, b in bs], 1)[0]) if len(bs) > 1 else np.nan
    return out


def measure(table: pd.DataFrame, s: dict, draws: int = DRAWS) -> dict:
    by = ["param", "width", "batch_size", "tokens"]
    best = common.optima(table, by)
    return {"best": best, "point": _fits(best, s), "draws": pd.DataFrame([_fits(b, s) for b in common.optima_draws(table, by, draws=draws)])}


def _interval(m: dict, key: str, cells: pd.DataFrame) -> dict:
    return common.interval_measurement(m["point"].get(key, np.nan), m["draws"][key], cells, cells["width"].nunique() >= 2,
                                       f"fewer than 2 widths with optima of >= {MIN_STEPS} steps inside the grid")


def claims(m: dict, s: dict) -> list[dict]:
    best, p = m["best"], m["point"]
    ok = common.verdict_cells(best)
    top = max(s["budgets"])
    mup, sp = ok[ok["param"] == "muP"], ok[ok["param"] == "SP"]
    bs = ", ".join(f"w{w} {p.get(f'muP_b_w{w}', np.nan):.2f}" for w in s["widths"])
    return [
        claim("power.transfer.exponent_transfers_across_width",
              f"muP: b per width {bs}; trend {p['muP_b_trend']:+.3f} per doubling of width", _interval(m, "muP_b_trend", mup)),
        claim("power.transfer.optimal_lr_transfers_under_mup",
              f"T={top:,}: eta_opt ~ width^{p['muP_width_slope']:.2f} under muP, width^{p['SP_width_slope']:.2f} under SP",
              {"parts": {"mup_stays": _interval(m, "muP_width_slope", mup[mup["tokens"] == top]),
                         "sp_drifts": _interval(m, "SP_width_slope", sp[sp["tokens"] == top])}}),
    ]


def figure(table: pd.DataFrame, m: dict, s: dict):
    best, p = m["best"], m["point"]
    top = max(s["budgets"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, param in zip(axes[:2], PARAMETERIZATIONS):
        common.plot_loss_curves(ax, table[table["param"] == param], "width", {"tokens": top}, best[best["param"] == param],
                                label=lambda w: f"width {w}")
        ax.set_title(f"{param}, T = {top:,}, B = {s['batch_size']}: eta_opt ~ width^{p[f'{param}_width_slope']:.2f}", fontsize=9)
    ax = axes[2]
    kinds = set()
    for param in ("muP", "SP"):
        for j, width in enumerate(s["widths"]):
            g = best[(best["param"] == param) & (best["width"] == width)].sort_values("tokens")
            colour = plots.ordinal_colour(j, len(s["widths"]))
            gamma = g["optimal_lr"] / s["batch_size"]
            ax.plot(g["tokens"], gamma, "-" if param == "muP" else "--", color=colour, lw=1,
                    label=f"{param} width {width}: b = {p.get(f'{param}_b_w{width}', np.nan):.2f}")
            for (_, row), value in zip(g.iterrows(), gamma):
                kind = common.optimum_kind(row)
                kinds.add(kind)
                plots.mark(ax, row["tokens"], value, colour, kind)
    t = np.geomspace(min(s["budgets"]), max(s["budgets"]), 50)
    ax.plot(t, 4.6 * t ** -0.51, ":", color=plots.PAPER_COLOUR, label="paper: 4.6 T^-0.51")
    ax.set(xscale="log", yscale="log", xlabel="tokens T", ylabel="gamma = optimal LR / B")
    plots.log_ticks(ax, s["budgets"])
    ax.set_title("gamma against tokens per width (paper: the same a, b under muP)\n(solid: muP, dashed: SP)", fontsize=9)
    plots.marker_legend(ax, sorted(kinds - {"cell"}), fontsize=6, ncol=2, loc="lower left")
    fig.tight_layout()
    return fig
