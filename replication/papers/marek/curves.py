"""Marek et al.: the GPT-2 / GPT-3 loss-curve panels, from the runs of `marek_beta2` and `marek_optimizers` (notebook `marek_curves`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from replication.claims import verdict


REQUIRES = ("marek_beta2", "marek_optimizers")  # trains nothing of its own: its series are their runs


def runs(exp, params: dict, results_root="results") -> list:
    return []


def curve_arms(beta2_runs: pd.DataFrame, optimizer_runs: pd.DataFrame) -> pd.DataFrame:
    """The five series of the paper's loss-curve panels, each at its best LR: AdamW at the largest batch
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
        cell = runs_of_arm[runs_of_arm["final_val_loss"].notna()]
        if len(cell):
            best = cell.loc[cell["final_val_loss"].idxmin()]
            rows.append({"label": label, "source": source, "id": best["id"], "optimizer.lr": best["optimizer.lr"], "loss": best["final_val_loss"], "outcome": "ok"})
        else:
            rows.append({"label": label, "source": source, "id": None, "optimizer.lr": np.nan, "loss": np.nan,
                         "outcome": "every LR diverged" if len(runs_of_arm) else "no runs"})
    return pd.DataFrame(rows)


def curve_claims(arms: pd.DataFrame, tolerance: float) -> list[dict]:
    large, fixed, scaled, adafactor, sgd = arms["loss"]
    names = list(arms["label"])
    outcomes = list(arms["outcome"])

    def judge(arm_indices, confirmed, partly=False):
        """A diverged arm fails the claim it is part of; an arm with no runs leaves it untested."""
        if any(outcomes[i] == "no runs" for i in arm_indices):
            return verdict(None)
        if any(outcomes[i] != "ok" for i in arm_indices):
            return verdict(False)
        return verdict(bool(confirmed()), partly=bool(partly()) if callable(partly) else partly)

    claims = [
        {
            "id": "marek.curves.scaled_adam_b1_matches_large_batch", "claim": "Adam at batch size 1 with beta2 scaled to keep its half-life in tokens matches or beats AdamW at a large batch, per token.",
            "paper": "GPT-2 124M: 3.38 vs 3.40; GPT-3 1.3B: 2.81 vs 2.97 (final loss, B=1 vs B=512).",
            "measured": f"{names[2]}: {scaled:.3f}; {names[0]}: {large:.3f}",
            "verdict": judge([2, 0], lambda: scaled <= large + tolerance),
        },
        {
            "id": "marek.curves.unscaled_adam_b1_worse", "claim": "Without scaling beta2 (0.95 at batch size 1), small-batch Adam is clearly worse.",
            "paper": "GPT-2: 4.40 vs 3.38 with beta2 scaled; GPT-3: 3.47 vs 2.81.",
            "measured": f"{names[1]}: {fixed:.3f} vs {scaled:.3f} scaled",
            "verdict": judge([1, 2], lambda: fixed > scaled + tolerance),
        },
        {
            "id": "marek.curves.adafactor_b1_matches_adam", "claim": "Adafactor at batch size 1 is about as good as Adam at batch size 1 (or better).",
            "paper": "GPT-2: 3.37 vs 3.38; GPT-3: 2.82 vs 2.81.",
            "measured": f"{names[3]}: {adafactor:.3f} vs Adam {scaled:.3f}",
            "verdict": judge([3, 2, 0], lambda: adafactor <= scaled + tolerance, lambda: adafactor < large + tolerance),
        },
        {
            "id": "marek.curves.sgd_b1_close_to_large_batch_adamw", "claim": "Vanilla SGD at batch size 1 comes close to AdamW at a large batch.",
            "paper": "GPT-3 1.3B: ~0.02-0.05 nats behind AdamW B=512; GPT-2 124M: ~0.13 behind.",
            "measured": f"{names[4]}: {sgd:.3f}, {sgd - large:+.3f} vs {names[0]}" if outcomes[4] == "ok" else f"{names[4]}: {outcomes[4]}",
            "verdict": judge([4, 0], lambda: sgd <= large + tolerance, lambda: sgd <= large + 0.13 + tolerance),
        },
    ]
    return claims
