"""Synthetic run tables for the Marek topic tests: answers known by construction."""

import numpy as np
import pandas as pd

SEQ = 64


def runs_table(rows):
    base = {"optimizer.name": "adamw", "optimizer.lr": 1e-3, "optimizer.beta2": 0.95, "optimizer.beta2_half_life_tokens": np.nan,
            "micro_batch_size": np.nan, "seed": 0, "status": "ok"}
    out = pd.DataFrame([{**base, **r} for r in rows])
    out["id"] = [f"run{i}" for i in range(len(out))]
    return out
