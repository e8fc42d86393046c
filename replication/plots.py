"""One house style; every figure is saved by `save` as PNG plus the data behind it as CSV."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 110,
    "savefig.dpi": 130,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
}
plt.rcParams.update(STYLE)


def save(fig, path: str | Path, data: pd.DataFrame | None = None) -> Path:
    """Write `fig` to `path` (PNG) and, when given, its data to the same name with .csv."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", metadata={"Software": None})
    if data is not None:
        data.to_csv(path.with_suffix(".csv"), index=False)
    return path


def loss_curves(records: list[dict], label_key: str = "batch_size", ax=None):
    """Train (thin) and validation (markers) loss against tokens, one colour per run."""
    if ax is None:
        _, ax = plt.subplots()
    for i, r in enumerate(records):
        label = f"{label_key.split('.')[-1]}={_get(r['spec'], label_key)}"
        colour = f"C{i}"
        ax.plot(r["train"]["tokens"], r["train"]["loss"], color=colour, alpha=0.5, lw=1)
        ax.plot(r["val"]["tokens"], r["val"]["loss"], "o-", color=colour, ms=3, label=f"{label} (val)")
        if r["status"] == "diverged":
            ax.axvline(r["tokens"], color=colour, ls=":", lw=1)
            ax.annotate("diverged", (r["tokens"], ax.get_ylim()[1]), color=colour, fontsize=8, ha="right", va="top")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats / token)")
    ax.legend()
    return ax


def curves_frame(records: list[dict]) -> pd.DataFrame:
    """The data behind `loss_curves`, long format."""
    rows = []
    for r in records:
        for split in ("train", "val"):
            for step, tokens, loss in zip(r[split]["step"], r[split]["tokens"], r[split]["loss"]):
                rows.append({"id": r["id"], "batch_size": r["spec"]["batch_size"], "split": split, "step": step, "tokens": tokens, "loss": loss})
    return pd.DataFrame(rows)


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d
