"""What several Marek et al. topics share: optimizer names, LR tables, best cells, measured memory."""

from __future__ import annotations

import numpy as np
import pandas as pd

from replication.fit import best_cell_runs
from replication.verdicts import MIN_STEPS


ADAPTIVE = ("adamw", "adafactor", "muon")


def lr_table(runs: pd.DataFrame, lr_batch_exponent: float, index: str = "optimizer.name") -> pd.DataFrame:
    """Final loss per (`index`, grid LR) x batch size, where the grid LR is the LR at batch size 1
    (each run trained at grid LR * batch_size**exponent); NaN marks a diverged run (mean over seeds)."""
    base = (runs["optimizer.lr"] / runs["batch_size"] ** lr_batch_exponent).round(10)
    return (runs.assign(**{"lr at B=1": base})
            .groupby([index, "lr at B=1", "batch_size"])["final_val_loss"].mean().unstack("batch_size"))


SAME_SETUP = ("model", "data", "tokens", "schedule")  # what two experiments must share for their runs to be compared


def setup_differences(exp, other, fields: tuple[str, ...] = SAME_SETUP) -> dict[str, tuple]:
    """The run settings among `fields` (model, data with its sequence length, token budget, schedule) in
    which two experiments' base runs differ, as {field: (exp's, other's)}: empty when a run of one can be
    compared with a run of the other like for like (their tuned hyperparameters may differ)."""
    mine, theirs = exp.base.to_dict(), other.base.to_dict()
    return {f: (mine[f], theirs[f]) for f in fields if mine[f] != theirs[f]}


def decidable(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of batch sizes that train for at least MIN_STEPS optimizer steps: the only ones a verdict
    reads, so the only ones follow-ups are spent on (the others stay in the figures, marked)."""
    return runs[runs.groupby("batch_size")["steps"].transform("max") >= MIN_STEPS]


def best_specs(specs: list, table: pd.DataFrame, best: pd.DataFrame, by: list[str], over: list[str]) -> list:
    """The spec (first seed) of each group's best cell in `best`."""
    by_id = {s.hash: s for s in specs}
    return [by_id[g.sort_values("seed")["id"].iloc[0]] for g in best_cell_runs(table, best, by, over).values()]


def refine_factor(runs: pd.DataFrame, lr: float, factor: float) -> float:
    """Which way to refine a best coarse LR: towards its better grid neighbour (x factor or / factor), or
    outwards when it sits on the edge of the grid (the optimum may lie beyond)."""
    losses = runs.groupby("optimizer.lr")["final_val_loss"].mean().fillna(np.inf)
    lower, upper = losses[losses.index < lr], losses[losses.index > lr]
    if lower.empty or upper.empty:
        return 1 / factor if lower.empty else factor
    return factor if upper.iloc[0] < lower.iloc[-1] else 1 / factor


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
