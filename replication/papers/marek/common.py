"""What several Marek et al. topics share: optimizer names, LR tables, measured memory."""

from __future__ import annotations

import pandas as pd


OPTIMIZER_LABELS = {"sgd": "SGD (no momentum)", "adamw": "AdamW", "adafactor": "Adafactor", "muon": "Muon"}


ADAPTIVE = ("adamw", "adafactor", "muon")


def lr_table(runs: pd.DataFrame, lr_batch_exponent: float, index: str = "optimizer.name") -> pd.DataFrame:
    """Final loss per (`index`, grid LR) x batch size, where the grid LR is the LR at batch size 1
    (each run trained at grid LR * batch_size**exponent); NaN marks a diverged run (mean over seeds)."""
    base = (runs["optimizer.lr"] / runs["batch_size"] ** lr_batch_exponent).round(10)
    return (runs.assign(**{"lr at B=1": base})
            .groupby([index, "lr at B=1", "batch_size"])["final_val_loss"].mean().unstack("batch_size"))


MEMORY_PARTS = ("parameters", "gradients", "optimizer_state", "activations")


def memory_frame(records: list[dict]) -> pd.DataFrame:
    """Measured memory per run in MiB, by part (live tensors: parameters, gradients, optimizer state, and
    the activations autograd saved for one micro-batch), plus two totals: `total` as trained here
    (every gradient materialised) and `total_fused`, the accounting of the paper's memory figure, where a
    run without accumulation applies each tensor's update in the backward pass and keeps no gradients."""
    rows = []
    for r in records:
        s, mem = r["spec"], r["memory"]
        accumulates = s["micro_batch_size"] not in (None, s["batch_size"])
        row = {"optimizer": s["optimizer"]["name"], "batch_size": s["batch_size"], "micro_batch_size": s["micro_batch_size"] or s["batch_size"]}
        row.update({part: mem[part] / 2**20 for part in MEMORY_PARTS})
        row["total"] = sum(row[p] for p in MEMORY_PARTS)
        row["total_fused"] = row["total"] - (0 if accumulates else row["gradients"])
        rows.append(row)
    return pd.DataFrame(rows)
