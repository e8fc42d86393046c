"""Zhang et al. Fig. 1: steps to a target loss against batch size for models trained with data scaled to
their size, the critical batch size B* of each, B* against model size, and McCandlish et al.'s gradient
noise scale beside it, and our B* law extrapolated to the paper's model sizes (notebook `zhang_steps_to_target`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication.claims import claim
from replication.fit import noise_scale
from replication import ledger, plots
from replication.papers.zhang import protocol
from replication.experiments import stored


def runs(exp, params: dict, results_root="results") -> list:
    return protocol.runs(exp, protocol.design(exp), results_root)


def noise_scale_table(exp, d: protocol.Design, results_root="results") -> pd.DataFrame:
    """B_simple over training from each model's best reference run (the gradient norms of k batches of B0
    and of their mean, measured at the live weights), from pairs of consecutive measurements."""
    store = stored(exp, results_root)
    rows = []
    for model in d.models:
        refs = [store.read(s.hash) for s in protocol.reference_specs(exp, d)
                if s.model == exp.derived(d.model_keys(model), "models").model]
        refs = [r for r in refs if r and r["status"] == "ok" and r.get("noise_scale")]
        if not refs:
            continue
        best = min(refs, key=lambda r: r["final_val_loss"])
        log = best["noise_scale"]
        for i in range(0, len(log["step"]) - 1, 2):
            est = noise_scale(log["small_sq"][i:i + 2], log["big_sq"][i:i + 2], log["small_batch"], log["big_batch"])
            step = (log["step"][i] + log["step"][i + 1]) / 2
            rows.append({"model": model, "step": step, "tokens": step * d.reference_batch_size * exp.base.data.seq_len,
                         "b_simple": est["b_simple"]})
    return pd.DataFrame(rows)


def parameters(exp, d: protocol.Design) -> list[int]:
    return [protocol.non_embedding_parameters(exp, d, model) for model in d.models]


def regime(exp, d: protocol.Design, fits: list[dict]) -> dict:
    """What the Chinchilla exponent's regime gate reads: the range of model sizes (largest / smallest
    non-embedding parameter count; the paper's spans 14x) and how many (model, batch size) pairs never
    reached the target, so that their fit's plateau is placed by the batch sizes that did."""
    n = parameters(exp, d)
    return {"model_size_range": max(n) / min(n),
            "censored_batch_sizes": sum(len(bs) for bs in protocol.censored(fits, list(d.models)).values())}


def claims(m: protocol.Measured, exp, d: protocol.Design) -> tuple[list[dict], dict]:
    mult = d.target_multiples[0]
    fits = [m.fits[(model, mult)] for model in d.models]
    largest = list(d.models)[-1]
    slope = protocol.small_batch_slope(m, largest, mult, d)
    ok = [f for f in fits if "b_star" in f]
    b_min, b_max = min(d.batch_sizes), max(d.batch_sizes)
    steps = protocol.fewest_steps(m, d.batch_sizes[:2])
    inside = ({"parts": {"above_smallest": {"value": min(f["b_star"] for f in ok) / b_min, "min_steps": steps},
                         "below_largest": {"value": max(f["b_star"] for f in ok) / b_max, "min_steps": steps}}}
              if len(ok) == len(fits) else {"untestable": next(f["error"] for f in fits if "error" in f)})
    exponent = protocol.exponent_measurement(parameters(exp, d), fits, m, d, list(d.models))
    exponent = {**exponent, "regime": {**exponent.get("regime", {}), **regime(exp, d, fits)}}
    if "estimate" in slope:  # the claim is about the whole hyperbola: its plateau needs enough batch sizes at the target
        slope = {**slope, "regime": {"batch_sizes_reaching_target": len(m.fits[(largest, mult)].get("batch_sizes", []))}}
    stars = ", ".join(f"{model} {f['b_star']:.1f}" if "b_star" in f else f"{model}: no fit" for model, f in zip(d.models, fits))
    return [
        claim("zhang.steps_to_target.hyperbola",
              f"slope of S(B) between B={d.batch_sizes[0]} and {d.batch_sizes[1]} ({largest}): "
              + (f"{slope['estimate']:.2f}; fit R^2 (log) {m.fits[(largest, mult)].get('r2', float('nan')):.3f}" if "estimate" in slope else slope["untestable"]),
              slope),
        claim("zhang.steps_to_target.cbs_rule", f"B* (sequences): {stars}; swept {b_min}-{b_max}", inside),
        claim("zhang.steps_to_target.chinchilla_exponent",
              f"{len(fits)} models over {exponent['regime']['model_size_range']:.1f}x in N: " + protocol.exponent_words(exponent, "N"), exponent),
    ], exponent


def figure(m: protocol.Measured, exp, d: protocol.Design, measurement: dict, noise: pd.DataFrame):
    mult = d.target_multiples[0]
    fig, grid = plt.subplots(2, 2, figsize=(12, 9.2))
    axes = grid.ravel()
    labels = [f"{model} ({n / 1e3:.0f} k params, {d.reference_tokens(model) / 1e3:.0f} k tokens)"
              for model, n in zip(d.models, parameters(exp, d))]
    protocol.plot_steps(axes[0], m, d, [(model, mult) for model in d.models], labels)
    axes[0].set_title("Steps to each model's target", fontsize=9)
    fits = [m.fits[(model, mult)] for model in d.models]
    seq = exp.base.data.seq_len  # the paper's B* counts sequences of 512 tokens; ours of `seq`
    paper = (lambda n: 93.2 * (n / 1e6) ** 0.468 * 512 / seq,
             f"paper: 93.2 N_M^0.468 x 512 / {seq} (fitted on 85M-1.2B, far outside this range)")
    protocol.plot_cbs(axes[1], parameters(exp, d), fits, measurement, "non-embedding parameters", reference=paper)
    axes[1].set_title("B* against model size (data ~ parameters)", fontsize=9)
    ax = axes[2]
    for i, model in enumerate(d.models):
        colour = plots.ordinal_colour(i, len(d.models))
        rows = noise[noise["model"] == model] if len(noise) else noise
        if len(rows):
            ax.plot(rows["tokens"], rows["b_simple"].clip(lower=1e-2), "o-", ms=4, color=colour, label=f"{model}: B_simple")
        if "b_star" in m.fits[(model, mult)]:
            ax.axhline(m.fits[(model, mult)]["b_star"], color=colour, ls="--", lw=0.8)
            ax.axhline(m.fits[(model, mult)]["b_noise"], color=colour, ls=":", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="tokens (reference run)", ylabel="sequences")
    ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())  # decades only: minor labels collide
    ax.set_title("Gradient noise scale B_simple over training\n(dashed: measured B*; dotted: the fit's B_noise = b/a)", fontsize=9)
    ax.legend(fontsize=7)
    forecast_panel(axes[3], parameters(exp, d), measurement, exp.base.data.seq_len)
    fig.tight_layout()
    return fig


def paper_cbs_tokens() -> dict[float, float]:
    """Zhang et al.'s critical batch sizes in tokens per step by parameter count (their Fig. 1, C4,
    Chinchilla-scaled models; B* from S(B) = a + b/B fitted on their nine batch sizes, in sequences of 512
    tokens), read from the ledger's side-by-side reference beside the paper's steps."""
    b_star = ledger.papers()["zhang"].references["steps_to_target"]["paper_b_star"]
    return {plots.size_order(name)[1]: sequences * 512 for name, sequences in b_star.items()}


def forecast_panel(ax, params: list[float], measurement: dict, seq_len: int) -> None:
    """Our B* law extrapolated to the paper's model sizes, in tokens per step (sequence lengths differ), with
    the 95 % band of its exponent's bootstrap (pivoting on our models), beside the paper's measured B*."""
    ours = np.asarray(params, dtype=float)
    paper = paper_cbs_tokens()
    n = np.geomspace(ours.min(), max(paper) * 2, 100)
    if "estimate" not in measurement:
        ax.text(0.5, 0.5, "no B* law fitted at this scale", ha="center", transform=ax.transAxes)
    else:
        k, c = measurement["estimate"], measurement["coefficient"]
        law = lambda x, e: c * np.exp(np.log(ours).mean() * (k - e)) * x ** e * seq_len  # noqa: E731 (pivot: our models' mean log N)
        ax.plot(n, law(n, k), "--", color=plots.FIT_COLOUR, label=f"ours extrapolated: B* ~ N^{k:.2f}")
        if measurement.get("draws"):
            low, high = np.percentile(measurement["draws"], [2.5, 97.5])
            ax.fill_between(n, law(n, low), law(n, high), color=plots.FIT_COLOUR, alpha=0.2, lw=0,
                            label=f"95 % interval of the exponent ({low:.2f} to {high:.2f})")
        ax.axvspan(ours.min(), ours.max(), color="0.85", alpha=0.6, lw=0, label="our models")
    ax.plot(list(paper), list(paper.values()), "o", color=plots.PAPER_COLOUR, label="paper's B* (Fig. 1)")
    ax.plot(n, 93.2 * (n / 1e6) ** 0.468 * 512, "-", color=plots.PAPER_COLOUR, lw=1, label="paper's law 93.2 N_M^0.468 x 512 tokens")
    ax.set(xscale="log", yscale="log", xlabel="non-embedding parameters N (the paper's: total)", ylabel="critical batch size B* (tokens per step)")
    ax.set_title("Forecast: our law at the paper's model sizes", fontsize=9)
    ax.legend(fontsize=7)
