"""Marek et al.: the GPT-2 / GPT-3 loss-curve panels, from the runs of `marek_beta2` and `marek_optimizers` (notebook `marek_curves`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from replication.claims import claim
from replication.fit import trained_steps
from replication.verdicts import compare


REQUIRES = ("marek_beta2", "marek_optimizers")  # trains nothing of its own: its series are their runs


def runs(exp, params: dict, results_root="results") -> list:
    return []


def curve_arms(beta2_runs: pd.DataFrame, optimizer_runs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The five series of the paper's loss-curve panels, each at its best LR (chosen on seed `seed`, with
    every seed of that LR kept): AdamW at the largest batch
    with beta2 0.95, Adam at batch size 1 with beta2 0.95 and with the half-life fixed in tokens (from the
    beta2 experiment), Adafactor and SGD at batch size 1 (from the optimizer experiment)."""
    large, small = beta2_runs["batch_size"].max(), beta2_runs["batch_size"].min()
    wanted = [
        (f"AdamW B={large}, beta2 0.95", "beta2", beta2_runs, lambda r: (r.regime == "fixed beta2") & (r.batch_size == large)),
        (f"Adam B={small}, beta2 0.95 (not scaled)", "beta2", beta2_runs, lambda r: (r.regime == "fixed beta2") & (r.batch_size == small)),
        (f"Adam B={small}, beta2 half-life fixed in tokens", "beta2", beta2_runs, lambda r: (r.regime == "fixed half-life") & (r.batch_size == small)),
        (f"Adafactor B={small}", "optimizers", optimizer_runs, lambda r: (r["optimizer.name"] == "adafactor") & (r.batch_size == small)),
        (f"SGD B={small} (no momentum)", "optimizers", optimizer_runs, lambda r: (r["optimizer.name"] == "sgd") & (r.batch_size == small)),
    ]
    rows = []
    for label, source, runs, select in wanted:
        runs_of_arm = runs[select(runs)]
        cells = runs_of_arm[runs_of_arm["seed"] == seed].groupby("optimizer.lr")["final_val_loss"].mean().dropna()
        if len(cells):
            cell = runs_of_arm[runs_of_arm["optimizer.lr"] == cells.idxmin()].sort_values("seed")
            rows.append({"label": label, "source": source, "id": cell["id"].iloc[0], "optimizer.lr": cells.idxmin(), "loss": cell["final_val_loss"].mean(),
                         "losses": list(cell["final_val_loss"]), "steps": min(trained_steps(cell), default=None), "outcome": "ok"})
        else:
            rows.append({"label": label, "source": source, "id": None, "optimizer.lr": np.nan, "loss": np.nan,
                         "losses": list(runs_of_arm["final_val_loss"]),  # every attempt diverged
                         "steps": None,  # diverged runs stop early: no scale to report
                         "outcome": "every LR diverged" if len(runs_of_arm) else "no runs"})
    return pd.DataFrame(rows)


def curve_claims(arms: pd.DataFrame) -> list[dict]:
    """The loss-curve claims from every seed of each arm's best LR; an arm that diverged at every LR counts
    as infinitely bad (it fails a claim that it matches another), an arm with no runs leaves it untestable."""
    names = list(arms["label"])

    def measure(i: int, j: int) -> dict:
        missing = [names[k] for k in (i, j) if arms["outcome"].iloc[k] == "no runs"]
        if missing:
            return {"untestable": f"no runs of {', '.join(missing)}"}
        return compare(arms["losses"].iloc[i], arms["losses"].iloc[j], [arms["steps"].iloc[i], arms["steps"].iloc[j]])

    def words(i: int, j: int) -> str:
        show = lambda k: f"{arms['loss'].iloc[k]:.3f} ({len(arms['losses'].iloc[k])} seed(s))" if arms["outcome"].iloc[k] == "ok" else arms["outcome"].iloc[k]
        return f"{names[i]}: {show(i)}; {names[j]}: {show(j)}"

    pairs = [("marek.curves.scaled_adam_b1_matches_large_batch", 2, 0), ("marek.curves.unscaled_adam_b1_worse", 1, 2),
             ("marek.curves.adafactor_b1_matches_adam", 3, 2), ("marek.curves.sgd_b1_close_to_large_batch_adamw", 4, 0)]
    return [claim(claim_id, words(i, j), measure(i, j)) for claim_id, i, j in pairs]
