"""Zhang et al. Sec. 4: at a fixed model, the critical batch size against the amount of data (targets
at 0.5x-4x a reference budget), and beyond the paper (Bergsma et al. 2025, "Power Lines") the
loss-optimal batch size at each budget (notebook `zhang_data_size`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from replication.claims import claim
from replication.fit import argmin_log_parabola, power_law
from replication import plots
from replication.papers.zhang import protocol


def runs(exp, params: dict, results_root="results") -> list:
    return protocol.runs(exp, protocol.design(exp), results_root)


def budgets(d: protocol.Design) -> list[float]:
    model = list(d.models)[0]
    return [k * d.reference_tokens(model) for k in d.target_multiples]


def optimal_batch_sizes(m: protocol.Measured, d: protocol.Design) -> pd.DataFrame:
    """Per target: the batch size that reaches it in the fewest tokens (B x S(B), mean over seeds), located
    between grid points by a parabola in log B: at a budget, the loss-optimal batch size of Power Lines."""
    rows = []
    model = list(d.models)[0]
    for mult in d.target_multiples:
        s = m.steps[(m.steps["model"] == model) & (m.steps["target_multiple"] == mult)].dropna(subset=["steps"])
        tokens = s.assign(tokens=s["steps"] * s["batch_size"]).groupby("batch_size")["tokens"].mean()
        if len(tokens) < 3:
            continue
        b_opt = argmin_log_parabola(tokens.index.to_numpy(), tokens.to_numpy())
        rows.append({"target_multiple": mult, "tokens": mult * d.reference_tokens(model), "b_opt": b_opt,
                     "on_edge": b_opt in (tokens.index.min(), tokens.index.max())})
    return pd.DataFrame(rows)


def claims(m: protocol.Measured, exp, d: protocol.Design) -> tuple[list[dict], dict]:
    model = list(d.models)[0]
    fits = [m.fits[(model, k)] for k in d.target_multiples]
    exponent = protocol.exponent_measurement(budgets(d), fits, m, d, [f"{k:g}x" for k in d.target_multiples])
    stars = ", ".join(f"{k:g}x {f['b_star']:.1f}" if "b_star" in f else f"{k:g}x: no fit" for k, f in zip(d.target_multiples, fits))
    return [claim("zhang.data_size.cbs_grows_with_data", f"{protocol.exponent_words(exponent, 'D')}; B* (sequences) by budget: {stars}",
                  exponent)], exponent


def power_lines(b_opt: pd.DataFrame) -> dict:
    """The power law of B_opt in data size, from the budgets whose optimum lies inside the batch-size grid
    (no verdict: beyond the paper, and four budgets). An optimum on the grid's edge only bounds B_opt."""
    inside = b_opt[~b_opt["on_edge"]] if len(b_opt) else b_opt
    if len(inside) < 3:
        edge = b_opt[b_opt["on_edge"]]["b_opt"].unique() if len(b_opt) else []
        return {"exponent": None, "note": f"B_opt lies on the edge of the batch-size grid ({', '.join(f'{b:g}' for b in edge)}) at "
                                          f"{len(b_opt) - len(inside)} of {len(b_opt)} budgets: it is bounded, not located, so no power law is fitted"}
    law = power_law(inside["tokens"], inside["b_opt"])
    return {"exponent": law["exponent"], "low": law["exponent_low"], "high": law["exponent_high"], "budgets": len(inside)}


def figure(m: protocol.Measured, exp, d: protocol.Design, measurement: dict, b_opt: pd.DataFrame):
    model = list(d.models)[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    protocol.plot_steps(axes[0], m, d, [(model, k) for k in d.target_multiples],
                      [f"target at {k:g}x ({k * d.reference_tokens(model) / 1e3:.0f} k tokens, loss {m.goal[model][k]:.3f})" for k in d.target_multiples])
    axes[0].set_title(f"{model}: steps to targets of growing data", fontsize=9)
    protocol.plot_cbs(axes[1], budgets(d), [m.fits[(model, k)] for k in d.target_multiples], measurement, "tokens of the reference run's target")
    if len(b_opt):
        axes[1].plot(b_opt["tokens"], b_opt["b_opt"], ":", color=plots.PAPER_COLOUR, marker="s", ms=4, label="B_opt: fewest tokens to the target")
        axes[1].legend(fontsize=7)
    axes[1].set_title("B* (and the loss-optimal B) against data size", fontsize=9)
    fig.tight_layout()
    return fig
