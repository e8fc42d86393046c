"""Marek et al.: 1-D sensitivity to the learning rate and the beta half-lives (notebook `marek_sensitivity`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication.experiments import declared_runs, stored_table
from replication.claims import claim, grid_edges
from replication.fit import trained_steps
from replication.papers.marek.common import SAME_SETUP, setup_differences
from replication.params import experiment
from replication import plots
from replication.spec import ConfigError
from replication.verdicts import bootstrap_difference


REQUIRES = ("marek_optimizers",)  # the centres are that experiment's best AdamW cells


def centre_cells(source_runs: pd.DataFrame) -> pd.DataFrame:
    """Each batch size's best AdamW cell (LR and beta1 half-life) in the source experiment, every run it
    declares (refined LRs and tuned beta1 included): the measured optimum the 1-D sweeps centre on."""
    from replication.papers.marek.optimizers import best_cells

    return best_cells(source_runs[source_runs["optimizer.name"] == "adamw"])


def runs(exp, params: dict, results_root="results") -> list:
    """Every run the notebook reads: the 1-D sweeps around each centre, each with every seed of
    `settings.seeds` (known once the source experiment is stored)."""
    source = experiment(params, exp.settings["centre_from"], exp.profile)
    check_same_setup(exp, source)
    table = stored_table(source, declared_runs(source, params, results_root), results_root)
    if table is None:
        raise RuntimeError(f"{exp.name} takes its centres from {source.name}: sweep {source.name} first")
    return sensitivity_specs(exp, sensitivity_centres(exp, centre_cells(table)))


SENSITIVITY_KEYS = {
    "optimizer.lr": "learning rate",
    "optimizer.beta1_half_life_tokens": "beta1 half-life",
    "optimizer.beta2_half_life_tokens": "beta2 half-life",
}
TABLE_KEYS = tuple(SENSITIVITY_KEYS)  # the run table shows which hyperparameter each run moves


def sensitivity_centres(exp, centres: pd.DataFrame) -> dict[int, dict]:
    """The centre of each batch size in `settings.batch_sizes`: its best AdamW LR and beta1 half-life in
    the source experiment (`centre_cells`), and the experiment's beta2 half-life (the source's too)."""
    best = centres.set_index("batch_size")
    missing = [b for b in exp.settings["batch_sizes"] if b not in best.index or pd.isna(best.loc[b, "optimizer.lr"])]
    if missing:
        raise ConfigError(f"experiments.{exp.name}.settings.batch_sizes: no best AdamW cell at {missing} in {exp.settings['centre_from']}")
    return {
        b: {"batch_size": b, "optimizer.lr": float(best.loc[b, "optimizer.lr"]),
            "optimizer.beta1_half_life_tokens": float(best.loc[b, "optimizer.beta1_half_life_tokens"]),
            "optimizer.beta2_half_life_tokens": exp.base.optimizer.beta2_half_life_tokens}
        for b in exp.settings["batch_sizes"]
    }


def check_same_setup(exp, source, fields: tuple[str, ...] = SAME_SETUP) -> None:
    """An experiment that takes its centres from another must train the same model on the same data."""
    for f, (mine, theirs) in setup_differences(exp, source, fields).items():
        raise ConfigError(f"experiments.{exp.name}: its run.{f} differs from experiments.{source.name}'s, "
                          f"whose best LRs it uses as centres: {mine!r} != {theirs!r}")


def sensitivity_specs(exp, centres: dict[int, dict]) -> list:
    """Per batch size and seed: the centre run, and each hyperparameter scaled by each multiplier alone."""
    specs = []
    for centre in centres.values():
        for seed in exp.settings["seeds"]:
            specs.append(exp.base.replace(**centre, seed=seed))
            for key in SENSITIVITY_KEYS:
                for m in exp.settings["multipliers"]:
                    specs.append(exp.base.replace(**{**centre, key: centre[key] * m}, seed=seed))
    return specs


def sensitivity_cells(runs: pd.DataFrame, centres: dict[int, dict]) -> dict[tuple, pd.Series]:
    """Per-seed losses (NaN: diverged) of every (batch size, hyperparameter, multiplier) cell, the others at
    their centre; multiplier 1 is the centre itself."""
    cells = {}
    for b, centre in centres.items():
        at_b = runs[runs["batch_size"] == b]
        ratios = {k: at_b[k] / centre[k] for k in SENSITIVITY_KEYS}
        for key, label in SENSITIVITY_KEYS.items():
            others = [np.isclose(ratios[k], 1.0) for k in SENSITIVITY_KEYS if k != key]
            along = at_b[np.logical_and.reduce(others)].assign(multiplier=ratios[key].round(6))
            for m, cell in along.groupby("multiplier"):
                cells[(b, label, m)] = cell["final_val_loss"].astype(float)
    return cells


def sensitivity_table(runs: pd.DataFrame, centres: dict[int, dict]) -> pd.DataFrame:
    """Loss change against the centre (mean over seeds, with its standard error) for each batch size,
    hyperparameter and multiplier; a diverged run makes its cell infinite (worse than any loss)."""
    rows = []
    for (b, label, m), losses in sensitivity_cells(runs, centres).items():
        centre_loss = runs.loc[(runs["batch_size"] == b) & np.logical_and.reduce(
            [np.isclose(runs[k] / centres[b][k], 1.0) for k in SENSITIVITY_KEYS]), "final_val_loss"].mean()
        finite = losses.dropna()
        rows.append({"batch_size": b, "hyperparameter": label, "multiplier": m, "n_seeds": len(losses),
                     "delta_loss": (losses.mean() if losses.notna().all() else np.inf) - centre_loss,
                     "delta_se": finite.std(ddof=1) / np.sqrt(len(finite)) if len(finite) > 1 else np.nan})
    if not rows:
        raise FileNotFoundError("marek_sensitivity: no run around the current centres (marek_optimizers' best cells) is "
                                "stored yet; run the stage again to train them (finished runs are kept)")
    return pd.DataFrame(rows)


def centre_edges(centre_cells: pd.DataFrame | None, batch_sizes) -> dict[str, list[dict]]:
    """The `edges` of each part of the claim: a centre (a best cell of the source experiment, `centre_cells`)
    whose tuned value of a hyperparameter sits on the edge of its grid there is no measured optimum along
    that hyperparameter, so the 1-D sweep along it is not centred on the optimum. Keyed by hyperparameter in
    words, as SENSITIVITY_KEYS names them."""
    if centre_cells is None:
        return {}
    cells = centre_cells[centre_cells["batch_size"].isin(list(batch_sizes))]
    out = {}
    for e in grid_edges(cells, ["batch_size"], SENSITIVITY_KEYS):
        out.setdefault(e["hyperparameter"], []).append(e)
    return out


def sensitivity_claims(table: pd.DataFrame, runs: pd.DataFrame, centres: dict[int, dict],
                       centre_cells: pd.DataFrame | None = None) -> list[dict]:
    """Flatter at small batch, per hyperparameter: the worst loss change over the multipliers at the largest
    batch size minus that at the smallest, with a bootstrap over seeds (a diverged multiplier is infinitely bad).
    A part whose centre is a best cell on the edge of the source's grid along that hyperparameter
    (`centre_cells`: the source's best AdamW cells, `centre_cells()`) carries that edge. The `regime` names
    the larger batch size compared: the paper finds every B <= 16 flat, so only a larger one can show it."""
    worst = table.groupby(["hyperparameter", "batch_size"])["delta_loss"].max().unstack("batch_size")
    small, large = worst.columns.min(), worst.columns.max()
    edges = centre_edges(centre_cells, [small, large])
    cells = sensitivity_cells(runs, centres)
    steps = trained_steps(runs[runs["batch_size"].isin([small, large])])
    parts = {}
    for label in SENSITIVITY_KEYS.values():
        part = label.replace(" ", "_").replace("-", "_")
        if np.isinf(worst.loc[label, large]) or np.isinf(worst.loc[label, small]):
            both = np.isinf(worst.loc[label, large]) and np.isinf(worst.loc[label, small])
            parts[part] = {"untestable": "a multiplier diverged at both batch sizes"} if both else {
                "diverged": "a" if np.isinf(worst.loc[label, large]) else "b", "se": 0.0,
                "n_seeds": int(min(len(v) for k, v in cells.items() if k[1] == label)), "min_steps": min(steps, default=None)}
        else:
            mine = {k: v for k, v in cells.items() if k[1] == label and k[0] in (small, large)}

            def change(means: dict, b) -> float:
                at_b = {m: v for (bb, _, m), v in means.items() if bb == b}
                return max(at_b.values()) - at_b[1.0]

            parts[part] = bootstrap_difference(mine, lambda means: change(means, large) - change(means, small), steps)
        if label in edges:
            parts[part]["edges"] = edges[label]
    measured = "; ".join(f"{h}: worst change {worst.loc[h, small]:.3f} at B={small} vs {worst.loc[h, large]:.3f} at B={large}"
                         for h in worst.index)
    if np.isinf(worst.to_numpy()).any():
        measured += " (inf: a multiplier diverged)"
    if edges:
        measured += "; centre on the edge of its grid in " + ", ".join(f"{e['hyperparameter']} at {e['cell']}" for v in edges.values() for e in v)
    return [claim("marek.sensitivity.small_batch_flatter", measured, {"parts": parts, "regime": {"large_batch_size": int(large)}})]


def sensitivity_panels(table: pd.DataFrame):
    """One panel per hyperparameter: loss change against the multiplier of its centre value, one line per
    batch size (mean over seeds, 95 % seed intervals); diverged cells drawn as x at the top."""
    names = list(dict.fromkeys(table["hyperparameter"]))
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.8), sharey=True, squeeze=False)
    top = plots.marker_height(table["delta_loss"])
    diverged = False
    for ax, name in zip(axes[0], names):
        for b in sorted(table["batch_size"].unique()):
            colour = plots.batch_colour(b)
            line = table[(table["hyperparameter"] == name) & (table["batch_size"] == b)].sort_values("multiplier")
            ok = line[np.isfinite(line["delta_loss"])]
            ax.errorbar(ok["multiplier"], ok["delta_loss"], yerr=plots.t_interval(ok["delta_se"], ok["n_seeds"]),
                        marker="o", ms=4, capsize=3, color=colour, label=f"B={b}")
            bad = line[~np.isfinite(line["delta_loss"])]
            if len(bad):
                diverged = True
                plots.mark(ax, bad["multiplier"], [top] * len(bad), colour, "diverged")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"{name}: multiple of the centre")
        ax.axhline(0, color="k", lw=0.5)
    axes[0][0].set_ylabel("loss minus the centre's loss (nats / token)")
    plots.marker_legend(axes[0][-1], ["diverged"] if diverged else [])
    fig.text(0.5, -0.08, plots.ERROR_BARS, ha="center", fontsize=8)
    return fig
