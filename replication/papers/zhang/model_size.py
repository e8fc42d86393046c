"""Zhang et al. Sec. 4: at a fixed token budget, the critical batch size against model size (each model
trained towards the loss it reaches with that budget) (notebook `zhang_model_size`)."""

from __future__ import annotations

import matplotlib.pyplot as plt

from replication.claims import claim
from replication.papers.zhang import protocol
from replication.papers.zhang.steps_to_target import parameters


def runs(exp, params: dict, results_root="results") -> list:
    d = protocol.design(exp)
    budgets = {d.reference_tokens(model) for model in d.models}
    if len(budgets) != 1:
        raise ValueError(f"{exp.name}: every model must share one reference_tokens (fixed data), got {sorted(budgets)}")
    return protocol.runs(exp, d, results_root)


def claims(m: protocol.Measured, exp, d: protocol.Design) -> tuple[list[dict], dict]:
    mult = d.target_multiples[0]
    fits = [m.fits[(model, mult)] for model in d.models]
    exponent = protocol.exponent_measurement(parameters(exp, d), fits, m, d, list(d.models))
    stars = ", ".join(f"{model} {f['b_star']:.1f}" if "b_star" in f else f"{model}: no fit" for model, f in zip(d.models, fits))
    return [claim("zhang.model_size.cbs_flat_in_model_size", f"{protocol.exponent_words(exponent, 'N')}; B* (sequences): {stars}",
                  exponent)], exponent


def figure(m: protocol.Measured, exp, d: protocol.Design, measurement: dict):
    mult = d.target_multiples[0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = [f"{model} ({n / 1e3:.0f} k params, target {m.goal[model][mult]:.3f})" for model, n in zip(d.models, parameters(exp, d))]
    protocol.plot_steps(axes[0], m, d, [(model, mult) for model in d.models], labels)
    axes[0].set_title(f"Steps to each model's loss at {d.reference_tokens(list(d.models)[0]) / 1e3:.0f} k tokens", fontsize=9)
    protocol.plot_cbs(axes[1], parameters(exp, d), [m.fits[(model, mult)] for model in d.models], measurement, "non-embedding parameters")
    axes[1].set_title("B* against model size at fixed data", fontsize=9)
    fig.tight_layout()
    return fig
