"""Marek et al.: the GPT-2 / GPT-3 loss-curve panels, from the runs of `marek_beta2` and `marek_optimizers` (notebook `marek_curves`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from replication.claims import claim, grid_edges
from replication.fit import best_cell_runs, best_per_group, trained_steps
from replication.papers.marek.common import decidable
from replication.verdicts import compare


REQUIRES = ("marek_beta2", "marek_optimizers")  # trains nothing of its own: its series are their runs
TUNED = ["optimizer.lr", "optimizer.beta1_half_life_tokens"]  # what marek_optimizers tunes for AdamW
NAMES = {"optimizer.lr": "LR", "optimizer.beta1_half_life_tokens": "beta1 half-life"}


def runs(exp, params: dict, results_root="results") -> list:
    return []


def best_arm(label: str, source: str, runs: pd.DataFrame, seed: int = 0, over: tuple = ("optimizer.lr",)) -> dict:
    """One series: the best cell of `runs` over the hyperparameters `over` (chosen on seed `seed`, every seed
    of that cell kept), with `edge_on`, the ones whose best value is on the edge of what was tried. An arm
    that diverged at every setting keeps its attempts (infinitely bad); one with no runs says so."""
    over = list(over)
    row = {"label": label, "source": source, "id": None, "optimizer.lr": np.nan, "loss": np.nan, "losses": list(runs["final_val_loss"]),
           "steps": None, "edge_on": "", "outcome": "every setting diverged" if len(runs) else "no runs"}
    if not len(runs):
        return row
    runs = runs.assign(arm=label)
    best = best_per_group(runs, ["arm"], over, edge_keys=over, select_seed=seed)
    if best["loss"].isna().all():
        return row  # diverged runs stop early: no scale to report
    cell = best_cell_runs(runs, best, ["arm"], over)[(label,)].sort_values("seed")
    return {**row, "id": cell["id"].iloc[0], "optimizer.lr": cell["optimizer.lr"].iloc[0], "loss": cell["final_val_loss"].mean(),
            "losses": list(cell["final_val_loss"]), "steps": min(trained_steps(cell), default=None),
            "edge_on": best["edge_on"].iloc[0], "outcome": "ok"}


def curve_arms(beta2_runs: pd.DataFrame, optimizer_runs: pd.DataFrame, seed: int = 0, tuned_baseline: bool = True) -> pd.DataFrame:
    """The five series of the paper's loss-curve panels, each at its best cell (chosen on seed `seed`, with
    every seed of that cell kept). The large-batch AdamW baseline is, with `tuned_baseline`, the best
    (LR, beta1 half-life) cell of `marek_optimizers` at its largest batch size with >= MIN_STEPS steps: a
    small batch must match the large batch at its best, not an untuned one (the two experiments must then
    share model, data and budget: `common.setup_differences`); otherwise the beta2 experiment's AdamW at
    its largest batch with beta2 0.95 and beta1 untuned. Then Adam at batch size 1 with beta2 0.95 and with
    the half-life fixed in tokens (from the beta2 experiment), Adafactor and SGD at batch size 1 (from the
    optimizer experiment)."""
    small = beta2_runs["batch_size"].min()
    adamw = optimizer_runs[optimizer_runs["optimizer.name"] == "adamw"]
    if tuned_baseline:
        sizes = decidable(adamw)["batch_size"] if len(adamw) else pd.Series(dtype=int)
        large = sizes.max() if len(sizes) else adamw["batch_size"].max()
        baseline = best_arm(f"AdamW B={large}, tuned LR and beta1 half-life", "optimizers",
                            adamw[adamw["batch_size"] == large], seed, over=TUNED)
    else:
        large = beta2_runs["batch_size"].max()
        baseline = best_arm(f"AdamW B={large}, beta2 0.95, beta1 untuned", "beta2",
                            beta2_runs[(beta2_runs["regime"] == "fixed beta2") & (beta2_runs["batch_size"] == large)], seed)
    b2, opt = beta2_runs, optimizer_runs
    rows = [baseline,
            best_arm(f"Adam B={small}, beta2 0.95 (not scaled)", "beta2", b2[(b2["regime"] == "fixed beta2") & (b2["batch_size"] == small)], seed),
            best_arm(f"Adam B={small}, beta2 half-life fixed in tokens", "beta2",
                     b2[(b2["regime"] == "fixed half-life") & (b2["batch_size"] == small)], seed),
            best_arm(f"Adafactor B={small}", "optimizers", opt[(opt["optimizer.name"] == "adafactor") & (opt["batch_size"] == small)], seed),
            best_arm(f"SGD B={small} (no momentum)", "optimizers", opt[(opt["optimizer.name"] == "sgd") & (opt["batch_size"] == small)], seed)]
    return pd.DataFrame(rows)


def curve_claims(arms: pd.DataFrame) -> list[dict]:
    """The loss-curve claims from every seed of each arm's best cell; an arm that diverged at every setting
    counts as infinitely bad (it fails a claim that it matches another), an arm with no runs leaves it
    untestable, and an arm whose best cell is on the edge of its grid makes it not testable."""
    names = list(arms["label"])
    edge_on = arms["edge_on"] if "edge_on" in arms else pd.Series("", index=arms.index)

    def measure(i: int, j: int) -> dict:
        missing = [names[k] for k in (i, j) if arms["outcome"].iloc[k] == "no runs"]
        if missing:
            return {"untestable": f"no runs of {', '.join(missing)}"}
        m = compare(arms["losses"].iloc[i], arms["losses"].iloc[j], [arms["steps"].iloc[i], arms["steps"].iloc[j]])
        edges = grid_edges(arms.iloc[[i, j]].assign(arm=[names[i], names[j]], edge_on=list(edge_on.iloc[[i, j]])), ["arm"], NAMES)
        return {**m, "edges": edges} if edges else m

    def words(i: int, j: int) -> str:
        show = lambda k: f"{arms['loss'].iloc[k]:.3f} ({len(arms['losses'].iloc[k])} seed(s))" if arms["outcome"].iloc[k] == "ok" else arms["outcome"].iloc[k]
        return f"{names[i]}: {show(i)}; {names[j]}: {show(j)}"

    pairs = [("marek.curves.scaled_adam_b1_matches_large_batch", 2, 0), ("marek.curves.unscaled_adam_b1_worse", 1, 2),
             ("marek.curves.adafactor_b1_matches_adam", 3, 2), ("marek.curves.sgd_b1_close_to_large_batch_adamw", 4, 0)]
    return [claim(claim_id, words(i, j), measure(i, j)) for claim_id, i, j in pairs]
