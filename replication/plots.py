"""One house style; every figure is saved by `save` as PNG plus the data behind it as CSV.

Generic plots live here; a figure of one paper topic lives in that topic's module (`replication/papers/`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication.spec import get_dotted

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


def scale_caption(exp, runs: pd.DataFrame | None = None) -> str:
    """What every figure states about its scale: profile, tokens per run, sequence length and seeds."""
    seeds = "" if runs is None or "seed" not in runs else f", {runs['seed'].nunique()} seed(s) at most per cell"
    return f"{exp.profile} profile: {exp.base.tokens:,} tokens per run, sequences of {exp.base.data.seq_len}{seeds}"


def loss_curves(records: list[dict], label_key: str = "batch_size", ax=None):
    """Train (thin) and validation (markers) loss against tokens, one colour per run."""
    if ax is None:
        _, ax = plt.subplots()
    for i, r in enumerate(records):
        label = f"{label_key.split('.')[-1]}={get_dotted(r['spec'], label_key)}"
        colour = f"C{i}"
        ax.plot(*full_intervals(r["train"]["tokens"], r["train"]["loss"]), color=colour, alpha=0.5, lw=1)
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


def marker_height(values) -> float:
    """Where diverged cells are drawn (as x): a little above the highest finite value."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return finite.max() + 0.05 * (finite.max() - finite.min() + 1e-9) if len(finite) else 1.0


def batch_colour(i: int, n: int):
    """Batch sizes coloured cold (small) to warm (large), as in the paper's figures."""
    return plt.get_cmap("coolwarm")(i / max(1, n - 1))


def loss_vs_lr_panels(runs: pd.DataFrame, panel: str, loss: str = "final_val_loss"):
    """One panel per value of `panel`, loss against learning rate, one line per batch size (mean over
    seeds); diverged runs are drawn as x at the top of their panel."""
    panels = sorted(runs[panel].unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), sharey=True, squeeze=False)
    top = marker_height(runs[loss])
    sizes = sorted(runs["batch_size"].unique())
    for ax, value in zip(axes[0], panels):
        sub = runs[runs[panel] == value]
        for i, b in enumerate(sizes):
            colour = batch_colour(i, len(sizes))
            cells = sub[sub["batch_size"] == b].groupby("optimizer.lr")[loss].mean()
            ax.plot(cells.index, cells.to_numpy(), "o-", ms=4, color=colour, label=f"B={b}")
            failed = cells[cells.isna()]
            if len(failed):
                ax.plot(failed.index, [top] * len(failed), "x", color=colour, ms=8, mew=2)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (as trained)")
        ax.set_title(str(value))
    axes[0][0].set_ylabel("final validation loss")
    axes[0][-1].legend()
    return fig


def full_intervals(tokens: list, loss: list) -> tuple[list, list]:
    """A train-loss log without a last point that averages a much shorter interval than the others (the
    steps left over at the end of a run): such a point is a near one-step value, a spike, not the curve."""
    if len(tokens) >= 3:
        gaps = np.diff(tokens)
        if gaps[-1] < 0.5 * np.median(gaps[:-1]):
            return list(tokens[:-1]), list(loss[:-1])
    return list(tokens), list(loss)


def train_curves(records: list[dict], labels: list[str], x: str = "tokens", ax=None):
    """Train loss (mean over each logging interval) against tokens or training FLOPs, one line per run; the
    lines get thinner and their styles differ, so runs whose curves coincide (accumulation vs the batch it
    emulates) are all visible."""
    if x not in ("tokens", "flops"):
        raise ValueError(f"x: {x!r} must be 'tokens' or 'flops'")
    if ax is None:
        _, ax = plt.subplots()
    styles = ["-", "--", "-.", ":"]
    for i, (r, label) in enumerate(zip(records, labels)):
        scale = r["flops_per_token"] if x == "flops" else 1
        tokens, loss = full_intervals(r["train"]["tokens"], r["train"]["loss"])
        ax.plot([t * scale for t in tokens], loss, color=f"C{i}", ls=styles[i % len(styles)], lw=2.6 - 1.4 * i / max(1, len(records) - 1),
                label=label)
        if r["status"] == "diverged":
            ax.plot([r["tokens"] * scale], [r["train"]["loss"][-1] if r["train"]["loss"] else float("nan")], "x", color=f"C{i}", ms=8)
    ax.set_xlabel("training FLOPs" if x == "flops" else "tokens seen")
    ax.set_ylabel("train loss (nats / token)")
    ax.legend()
    return ax


def curves_table(records: list[dict], labels: list[str]) -> pd.DataFrame:
    """The data behind `train_curves`, long format."""
    return pd.DataFrame([
        {"label": label, "id": r["id"], "tokens": t, "flops": t * r["flops_per_token"], "train_loss": loss}
        for r, label in zip(records, labels) for t, loss in zip(r["train"]["tokens"], r["train"]["loss"])
    ])


def memory_bars(memory: pd.DataFrame, label: pd.Series, parts: tuple[str, ...]):
    """Stacked bars of measured memory per run, one segment per part; one panel per batch size, each on
    its own scale, so the activations of a large batch do not squash the small-batch comparison."""
    sizes = sorted(memory["batch_size"].unique()) if "batch_size" in memory else [None]
    fig, axes = plt.subplots(1, len(sizes), figsize=(max(6.4, 0.9 * len(memory) + 1.5 * len(sizes)), 4.0), squeeze=False)
    for ax, b in zip(axes[0], sizes):
        rows = memory["batch_size"] == b if b is not None else np.ones(len(memory), bool)
        bottom = np.zeros(int(rows.sum()))
        for i, part in enumerate(parts):
            ax.bar(label[rows].to_numpy(), memory.loc[rows, part].to_numpy(), bottom=bottom, color=f"C{i}", label=part.replace("_", " "))
            bottom += memory.loc[rows, part].to_numpy()
        ax.set_title(f"batch size {b}" if b is not None else "")
        ax.tick_params(axis="x", rotation=30)
    axes[0][0].set_ylabel("MiB per run")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def heatmaps(runs: pd.DataFrame, panel: str, x: str, y: str, value: str = "final_val_loss", tolerance: float | None = None):
    """One heatmap per value of `panel` (mean over seeds), coloured by the loss above that panel's best cell
    on one shared scale of that difference, so each panel's flatness is what the colours compare (the
    panels' own levels are in the titles); cell labels are the losses. Diverged cells are grey and marked x;
    with `tolerance`, cells within it of their panel's best are outlined."""
    panels = sorted(runs[panel].unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.0), squeeze=False)
    grids = {p: runs[runs[panel] == p].pivot_table(index=y, columns=x, values=value, dropna=False) for p in panels}
    above = {p: g.to_numpy(dtype=float) - np.nanmin(g.to_numpy(dtype=float)) if np.isfinite(g.to_numpy(dtype=float)).any()
             else g.to_numpy(dtype=float) for p, g in grids.items()}
    finite = np.concatenate([a[np.isfinite(a)] for a in above.values()]) if above else np.array([])
    vmax = max(float(np.quantile(finite, 0.9)), 1e-3) if len(finite) else 1.0
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("0.8")
    image = None
    for ax, p in zip(axes[0], panels):
        grid = grids[p]
        data = grid.to_numpy(dtype=float)
        image = ax.imshow(np.ma.masked_invalid(above[p]), origin="lower", aspect="auto", cmap=cmap, vmin=0, vmax=vmax)
        best = np.nanmin(data) if np.isfinite(data).any() else np.nan
        for (i, j), v in np.ndenumerate(data):
            if not np.isfinite(v):
                ax.text(j, i, "x", ha="center", va="center", color="k")
            else:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if above[p][i, j] < vmax / 2 else "k")
                if tolerance is not None and v <= best + tolerance:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=1.5))
        ax.set_xticks(range(len(grid.columns)), [f"{c:.2g}" for c in grid.columns], rotation=45)
        ax.set_yticks(range(len(grid.index)), [f"{r:g}" for r in grid.index])
        ax.set_xlabel(x)
        ax.set_title(f"{panel} = {p} (best {best:.3f})")
        ax.grid(False)
    axes[0][0].set_ylabel(y)
    fig.colorbar(image, ax=axes[0].tolist(), label=f"{value.replace('_', ' ')} above the panel's best")
    return fig


def log_ticks(ax, values, axis: str = "x", fmt=lambda v: f"{v:,.0f}" if v >= 1 else f"{v:g}") -> None:
    """Label a log axis at `values` only (the measured points), with no minor-tick labels crowding them."""
    values = sorted(set(float(v) for v in values))
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_ticks(values, [fmt(v) for v in values])
    target.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
