"""One house style; every figure is saved by `save` as PNG plus the data behind it as CSV.

Generic plots live here; a figure of one paper topic lives in that topic's module (`replication/papers/`)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.colors import LinearSegmentedColormap
import numpy as np
import pandas as pd

from replication.spec import get_dotted
from replication.verdicts import MIN_STEPS, t_critical

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


# One visual language. Colours: one per optimizer (the Okabe-Ito palette, safe for colour-blind readers), one
# map for batch size keyed on the value itself (so B = 16 is the same colour in every figure), and a second
# map for any other ordered quantity (tokens, width, branch point), so neighbouring panels never encode two
# quantities in one map. Markers: one meaning each, explained by `marker_legend`.
OPTIMIZER_COLOURS = {"adamw": "#0072B2", "adafactor": "#009E73", "muon": "#CC79A7", "sgd": "#D55E00"}
SERIES_COLOURS = ["#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#9467bd", "#d62728"]  # none close to an optimizer's colour
OPTIMIZER_LABELS = {"sgd": "SGD (no momentum)", "adamw": "AdamW", "adafactor": "Adafactor", "muon": "Muon"}
# Batch size: cold (small) to warm (large), as in Marek et al.'s figures, one distinct and readable colour per doubling
# from 1 to 1024 (log2 B between them; beyond, the ends).
BATCH_COLOURS = ["#08306b", "#2166ac", "#4393c3", "#35978f", "#1a9850", "#7f9f1f", "#bf812d", "#e08214", "#d6604d", "#b2182b",
                 "#67001f"]
_BATCH_MAP = LinearSegmentedColormap.from_list("batch_size", BATCH_COLOURS)
ORDINAL_MAP = "viridis"
VALUE_MAP = "cividis"  # a heatmap's value (accuracy, loss above the best); "_r" where lower is better
WARNING_COLOUR = "#c62828"  # text that marks what a verdict cannot read (a step count under MIN_STEPS)
PAPER_COLOUR = "0.35"  # the paper's published law or values, drawn as a line, never as markers
FIT_COLOUR = "#E69F00"  # our fit of a law to our cells
MARKERS = {
    "cell": dict(marker="o", ms=5),  # a cell a verdict may read
    "short": dict(marker="o", ms=6, mfc="white"),  # fewer than MIN_STEPS optimizer steps: in no verdict
    "edge": dict(marker="D", ms=7, mfc="white", mew=1.6),  # a best cell on the edge of its grid: its optimum may lie beyond
    "unreached": dict(marker="^", ms=8, mfc="white", mew=1.4),  # never reached its target: drawn at the budget
    "unresolved": dict(marker="s", ms=6, mfc="white", mew=1.4),  # an optimum a grid neighbour matches within seed noise
    "diverged": dict(marker="x", ms=8, mew=2),  # every setting diverged: drawn at the top of the panel
}
MARKER_WORDS = {
    "cell": "filled: a cell a verdict may read",
    "short": "hollow: < {min_steps} optimizer steps, in no verdict",
    "edge": "diamond: best cell on the edge of its grid",
    "unreached": "triangle: never reached its target (drawn at the budget)",
    "unresolved": "hollow square: optimum not resolved (a neighbour within seed noise)",
    "diverged": "x: diverged",
}
ERROR_BARS = "bars: 95 % Student-t interval of the mean over seeds"
# Parts of a whole (memory: parameters, gradients, optimizer state, activations) in greys and hatches, never in
# the optimizer colours, so a bar's colour is never read as an optimizer.
PART_STYLES = [dict(color="0.25", edgecolor="white"), dict(color="0.5", edgecolor="white"), dict(color="0.75", edgecolor="white"),
               dict(color="white", edgecolor="0.4", hatch="///"), dict(color="0.9", edgecolor="0.4", hatch="..")]


LABELS = {"optimizer.lr": "learning rate", "optimizer.beta1": "beta1", "optimizer.beta2": "beta2", "batch_size": "batch size B",
          "optimizer.weight_decay": "weight decay", "optimizer.name": "optimizer", "final_val_loss": "final validation loss",
          "optimizer.beta2_half_life_tokens": "beta2 half-life (tokens)", "optimizer.beta1_half_life_tokens": "beta1 half-life (tokens)"}


def column_label(column: str) -> str:
    """A run-table column as a reader says it (`optimizer.lr` -> "learning rate")."""
    if column in LABELS or " " in column:  # a phrase already (e.g. "LR at B=1 (trained at LR x B^0.3)")
        return LABELS.get(column, column)
    return column.split(".")[-1].replace("_", " ")


def value_cmap(reverse: bool = False):
    """The colour map of a heatmap's value (grey where a cell has none)."""
    cmap = plt.get_cmap(VALUE_MAP + ("_r" if reverse else "")).copy()
    cmap.set_bad("0.8")
    return cmap


def optimizer_colour(name: str):
    """The colour of optimizer `name` in every figure (unknown names get a neutral grey)."""
    return OPTIMIZER_COLOURS.get(name, "0.5")


FAMILY_COLOURS = {"reasoning": SERIES_COLOURS[0], "knowledge": SERIES_COLOURS[1], "learned": SERIES_COLOURS[2]}  # SmolTulu's task families, in every panel


def named_colour(name: str, otherwise):
    """The colour of a series known by name: an optimizer's (by key or label), a task family's where the name
    says which ("GSM8K (reasoning)"), else `otherwise` (an index into the series colours, or a colour)."""
    by_label = {v: k for k, v in OPTIMIZER_LABELS.items()}
    key = name if name in OPTIMIZER_COLOURS else by_label.get(name)
    if key:
        return OPTIMIZER_COLOURS[key]
    family = next((f for f in FAMILY_COLOURS if f in name), None)
    if family:
        return FAMILY_COLOURS[family]
    return series_colour(otherwise) if isinstance(otherwise, (int, np.integer)) else otherwise


def size_order(name: str):
    """Sort key that orders series by the size their name starts with ("85M" < "1.2B", "w32" < "w128"), the rest
    after them by name."""
    found = re.match(r"\s*w?(\d+(?:\.\d+)?)\s*([kKMBT]?)\b", name)
    if not found:
        return (1, 0.0, name)
    scale = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[found.group(2)]
    return (0, float(found.group(1)) * scale, name)


def optimizer_label(name: str) -> str:
    return OPTIMIZER_LABELS.get(name, name)


def batch_colour(batch_size: float):
    """The colour of batch size `batch_size` in every figure: log2(B) placed on one fixed scale, so the same B is
    the same colour whichever other batch sizes a figure shows."""
    position = float(np.clip(np.log2(float(batch_size)) / (len(BATCH_COLOURS) - 1), 0.0, 1.0))
    return _BATCH_MAP(position)


def ordinal_colour(i: int, n: int):
    """The colour of the i-th of n values of an ordered quantity other than batch size."""
    return plt.get_cmap(ORDINAL_MAP)(0.9 * i / max(1, n - 1))


def series_colour(i: int):
    """The colour of the i-th of several unordered series (tasks, families, methods) that are not optimizers."""
    return SERIES_COLOURS[i % len(SERIES_COLOURS)]


def mark(ax, x, y, colour, kind: str = "cell", **kwargs):
    """Draw points of one `kind` (a key of MARKERS) in `colour`; returns the artist."""
    if kind not in MARKERS:
        raise ValueError(f"kind: {kind!r} is not one of {sorted(MARKERS)}")
    x, y = np.atleast_1d(x), np.atleast_1d(y)
    return ax.plot(x, y, ls="none", color=colour, **{**MARKERS[kind], **kwargs})[0]


def marker_legend(ax, kinds, loc: str = "best", **kwargs):
    """A legend of what each marker `kind` drawn in `ax` means, beside the series legend the axes has."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    for kind in dict.fromkeys(kinds):
        handles.append(Line2D([], [], ls="none", color="0.3", **MARKERS[kind]))
        labels.append(MARKER_WORDS[kind].format(min_steps=MIN_STEPS))
    return ax.legend(handles, labels, loc=loc, **{"fontsize": 8, **kwargs})


def seed_interval(values) -> float:
    """Half-width of the 95 % Student-t interval of the mean of `values` (the seeds of one cell), the bar
    every figure draws; 0 for a single seed (no interval, no bar)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return 0.0
    return float(t_critical(len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def t_interval(se, n_seeds) -> np.ndarray:
    """The same half-width from a table's standard error and seed count per cell (0 where one seed or none)."""
    se, n = np.asarray(se, dtype=float), np.asarray(n_seeds, dtype=float)
    half = t_critical(np.maximum(n - 1, 1)) * se
    return np.where((n >= 2) & np.isfinite(half), half, 0.0)


def cell_kind(steps=None, on_edge: bool = False, finite: bool = True) -> str:
    """The marker kind of one cell: diverged, short (under MIN_STEPS), on the edge of its grid, or readable."""
    if not finite:
        return "diverged"
    if steps is not None and np.isfinite(steps) and steps < MIN_STEPS:
        return "short"
    return "edge" if on_edge else "cell"


def batch_axis(ax, sizes, axis: str = "x", label: str = "batch size B (sequences)"):
    """A log2 batch-size axis with ticks at the batch sizes measured only (none at sizes never run)."""
    sizes = sorted({int(b) for b in sizes if np.isfinite(b)})
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=2)
    (ax.set_xticks if axis == "x" else ax.set_yticks)(sizes, [str(b) for b in sizes])
    ax.minorticks_off()
    (ax.set_xlabel if axis == "x" else ax.set_ylabel)(label)


def dodge(i: int, n: int, width: float = 0.12) -> float:
    """The factor that shifts the i-th of n series sideways on a log axis (a fraction `width` of a doubling in
    all), so points at one x do not hide each other; multiply the x values by it."""
    return float(2 ** (width * (i - (n - 1) / 2) / max(1, n - 1))) if n > 1 else 1.0


def connect_neighbours(ax, every_x, x, y, shift: float = 1.0, at=None, **line):
    """Lines between the points (x, y) of one series only where two neighbouring values of `every_x` (all the grid
    values a figure has) were both measured, so no line runs across a grid value the series lacks; drawn at
    x * `shift`. `at`: each point's grid value where x is not itself on the grid (B / B* against batch sizes)."""
    every_x, x, y = sorted(set(every_x)), np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    at = x if at is None else np.asarray(at, dtype=float)
    for a, b in zip(every_x, every_x[1:]):
        pair = np.isin(at, [a, b])
        if pair.sum() == 2:
            ax.plot(x[pair] * shift, y[pair], **line)


def visible_range(ax, values, axis: str = "y", pad: float = 0.06):
    """Set `axis`'s range from `values` alone (the cells a verdict reads), so excluded cells drawn in the
    same axes never stretch it; points outside the range are clipped by the axes."""
    values = np.asarray(values, dtype=float)
    log = (ax.get_yscale() if axis == "y" else ax.get_xscale()) == "log"
    values = values[np.isfinite(values) & ((values > 0) if log else True)]
    if not len(values):
        return
    values = np.log10(values) if log else values
    low, high = values.min(), values.max()
    span = (high - low) or abs(high) * 0.1 or 1.0
    limits = (low - pad * span, high + pad * span)
    (ax.set_ylim if axis == "y" else ax.set_xlim)(*(10 ** np.array(limits) if log else limits))


def save(fig, path: str | Path, data: pd.DataFrame | None = None) -> Path:
    """Write `fig` to `path` (PNG) and, when given, its data to the same name with .csv."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", metadata={"Software": None})
    if data is not None:
        data.to_csv(path.with_suffix(".csv"), index=False)
    return path


def seed_words(runs: pd.DataFrame | None, cells: list[str] | None = None) -> str:
    """How many seeds the cells of `runs` have, as a reader needs it: "3 seeds per cell", or "3 seeds at
    4 cells, 1 at the other 20" when only some cells (the best ones) were repeated. A cell is a row's grid
    keys (the columns before `status` in a run table) unless `cells` names them."""
    if runs is None or "seed" not in runs or not len(runs):
        return ""
    columns = list(runs.columns)
    if cells is None and "status" not in columns:
        return ""  # not a run table (its grid keys first, then the outcome from `status` on): cells cannot be told apart
    cell = cells if cells is not None else [c for c in columns[:columns.index("status")] if c not in ("seed", "id")]
    counts = runs.groupby(cell, dropna=False)["seed"].nunique() if cell else pd.Series([runs["seed"].nunique()])
    by_count = counts.value_counts().sort_index(ascending=False)
    if len(by_count) == 1:
        n = int(by_count.index[0])
        return f"{n} seed{'s' if n > 1 else ''} per cell"
    most, cells_ = int(by_count.index[0]), int(by_count.iloc[0])
    rest = ", ".join(f"{int(n)} at {int(c)} other{'s' if c > 1 else ''}" for n, c in by_count.iloc[1:].items())
    return f"{most} seeds at {cells_} cell{'s' if cells_ > 1 else ''}, {rest}"


def scale_caption(exp, runs: pd.DataFrame | None = None, model: bool = True, cells: list[str] | None = None) -> str:
    """What every figure states about its scale: profile, tokens per run, model, sequence length and how many
    seeds each cell has (cells: `seed_words`)."""
    m = exp.base.model
    model_words = f", model width {m.width} x depth {m.depth}" if model else ""
    seeds = seed_words(runs, cells)
    finished = runs[runs["status"] == "ok"] if runs is not None and "status" in runs and (runs["status"] == "ok").any() else runs
    trained = finished["tokens"].dropna() if finished is not None and "tokens" in finished else pd.Series(dtype=float)  # not a diverged run's
    tokens = (f"{int(trained.min()):,}-{int(trained.max()):,} tokens per run" if trained.nunique() > 1 else
              f"{int(trained.iloc[0]) if len(trained) else exp.base.tokens:,} tokens per run")
    return f"{exp.profile} profile: {tokens}{model_words}, sequences of {exp.base.data.seq_len}" + (f", {seeds}" if seeds else "")


def _run_colour(record: dict, label_key: str, i: int):
    """A run's colour by what its label names: batch size and optimizer have theirs; anything else a series."""
    if label_key == "batch_size":
        return batch_colour(record["spec"]["batch_size"])
    if label_key == "optimizer.name":
        return optimizer_colour(record["spec"]["optimizer"]["name"])
    return series_colour(i)


def loss_curves(records: list[dict], label_key: str = "batch_size", ax=None):
    """Train (thin) and validation (markers) loss against tokens, one colour per run (its batch size's)."""
    if ax is None:
        _, ax = plt.subplots()
    for i, r in enumerate(records):
        value = get_dotted(r["spec"], label_key)
        label = f"B={value}" if label_key == "batch_size" else (optimizer_label(value) if label_key == "optimizer.name" else f"{label_key}={value}")
        colour = _run_colour(r, label_key, i)
        ax.plot(*full_intervals(r["train"]["tokens"], r["train"]["loss"]), color=colour, alpha=0.5, lw=1)
        short = r["steps"] < MIN_STEPS  # hollow: too few optimizer steps for any verdict
        ax.plot(r["val"]["tokens"], r["val"]["loss"], "o-", color=colour, ms=3, mfc="white" if short else colour,
                label=f"{label} (val)" + (f", {r['steps']} steps" if short else ""))
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


def loss_by_batch_size(ax, runs: pd.DataFrame, x: str, loss: str = "final_val_loss", top: float | None = None) -> set:
    """Loss against the setting `x` in one axes, one line per batch size (mean over seeds, 95 % seed
    intervals), in the workbook's markers: hollow under MIN_STEPS optimizer steps, a diamond where a batch
    size's best cell is the first or last of its grid (of at least 3), a diverged cell an x at `top`. Returns
    the marker kinds drawn (for `marker_legend`)."""
    kinds = set()
    for b in sorted(runs["batch_size"].unique()):
        colour = batch_colour(b)
        group = runs[runs["batch_size"] == b].groupby(x)
        cells = group[loss].mean()
        steps = group["steps"].min() if "steps" in runs else pd.Series(np.nan, index=cells.index)
        finite = cells[np.isfinite(cells)]
        best = finite.idxmin() if len(finite) and len(cells) >= 3 else None
        ax.errorbar(cells.index, cells.to_numpy(), yerr=[seed_interval(v) for _, v in group[loss]], color=colour, capsize=2, lw=1.2,
                    label=f"B={b}")
        for value, cell in cells.items():
            kind = cell_kind(steps[value], on_edge=value == best and value in (cells.index[0], cells.index[-1]), finite=np.isfinite(cell))
            kinds.add(kind)
            mark(ax, value, cell if kind != "diverged" else top, colour, kind)
    return kinds


def readable_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs a verdict may read (MIN_STEPS optimizer steps or more), or all of them where none has."""
    return runs[runs["steps"] >= MIN_STEPS] if "steps" in runs and (runs["steps"] >= MIN_STEPS).any() else runs


def readable_cells(runs: pd.DataFrame, keys: list[str], loss: str = "final_val_loss") -> pd.Series:
    """Mean loss per cell over the cells a verdict may read: what sets a loss axis."""
    return readable_runs(runs).groupby(keys)[loss].mean()


def loss_vs_lr_panels(runs: pd.DataFrame, panel: str, loss: str = "final_val_loss"):
    """One panel per value of `panel`, loss against learning rate, one line per batch size (mean over seeds,
    95 % seed intervals); a cell of fewer than MIN_STEPS optimizer steps is hollow, a diverged one an x at
    the top of its panel, and neither sets the loss axis."""
    panels = sorted(runs[panel].unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), sharey=True, squeeze=False)
    cells = readable_cells(runs, [panel, "batch_size", "optimizer.lr"], loss)
    top = marker_height(cells)
    kinds = set()
    for ax, value in zip(axes[0], panels):
        kinds |= loss_by_batch_size(ax, runs[runs[panel] == value], "optimizer.lr", loss, top)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (as trained)")
        ax.set_title(str(value) if isinstance(value, str) else f"{column_label(panel)} = {value}")  # a named arm says itself
    visible_range(axes[0][0], [*cells, *([top] if "diverged" in kinds else [])])
    axes[0][0].set_ylabel("final validation loss (nats / token)")
    marker_legend(axes[0][-1], sorted(kinds - {"cell"}), loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.text(0.5, -0.08, ERROR_BARS, ha="center", fontsize=8)
    return fig


def full_intervals(tokens: list, loss: list) -> tuple[list, list]:
    """A train-loss log without a last point that averages a much shorter interval than the others (the
    steps left over at the end of a run): such a point is a near one-step value, a spike, not the curve."""
    if len(tokens) >= 3:
        gaps = np.diff(tokens)
        if gaps[-1] < 0.5 * np.median(gaps[:-1]):
            return list(tokens[:-1]), list(loss[:-1])
    return list(tokens), list(loss)


def train_curves(records: list[dict], labels: list[str], x: str = "tokens", ax=None, finals: list | None = None):
    """Train loss (mean over each logging interval) against tokens or training FLOPs, one line per run; the
    lines get thinner and their styles differ, so runs whose curves coincide (accumulation vs the batch it
    emulates) are all visible. With `finals` (per run, the final validation losses of its cell's seeds), a
    marker at each curve's end shows their mean and 95 % seed interval."""
    if x not in ("tokens", "flops"):
        raise ValueError(f"x: {x!r} must be 'tokens' or 'flops'")
    if ax is None:
        _, ax = plt.subplots()
    styles = ["-", "--", "-.", ":"]
    optimizers = {r["spec"]["optimizer"]["name"] for r in records}
    seen: dict = {}  # runs drawn so far per colour
    for i, (r, label) in enumerate(zip(records, labels)):
        scale = r["flops_per_token"] if x == "flops" else 1
        tokens, loss = full_intervals(r["train"]["tokens"], r["train"]["loss"])
        # one colour per optimizer when the runs differ in it, else one per batch size; the style tells apart runs of one colour
        colour = optimizer_colour(r["spec"]["optimizer"]["name"]) if len(optimizers) > 1 else batch_colour(r["spec"]["batch_size"])
        same_colour = seen.get(colour, 0)
        seen[colour] = same_colour + 1
        style = styles[same_colour % len(styles)]
        ax.plot([t * scale for t in tokens], loss, color=colour, ls=style, lw=2.6 - 1.4 * i / max(1, len(records) - 1), label=label)
        if r["status"] == "diverged":
            mark(ax, r["tokens"] * scale, r["train"]["loss"][-1] if r["train"]["loss"] else float("nan"), colour, "diverged")
        if finals is not None and len(finals[i]):  # what the verdicts read: the final validation loss over the seeds
            ax.errorbar([r["tokens"] * scale], [np.mean(finals[i])], yerr=[seed_interval(finals[i])], fmt="o", color=colour, capsize=3,
                        ms=5, mec="k", mew=0.6)
    if finals is not None:
        ax.errorbar([], [], yerr=[], fmt="o", color="0.4", capsize=3, ms=5, mec="k", mew=0.6,
                    label="final validation loss over seeds (what the verdicts read; 95 % t interval)")
    ax.set_xlabel("training FLOPs" if x == "flops" else "tokens seen")
    ax.set_ylabel("train loss (nats / token)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the curves, never over them
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
            ax.bar(label[rows].to_numpy(), memory.loc[rows, part].to_numpy(), bottom=bottom, label=part.replace("_", " "),
                   **PART_STYLES[i % len(PART_STYLES)])
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
    with `tolerance`, cells within it of their panel's best are outlined. Panels share `x`'s labels, so a grid
    scaled per panel (LR x B^exponent) is passed as its unscaled column."""
    panels = sorted(runs[panel].unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.0), squeeze=False)
    grids = {p: runs[runs[panel] == p].pivot_table(index=y, columns=x, values=value, dropna=False) for p in panels}
    above = {p: g.to_numpy(dtype=float) - np.nanmin(g.to_numpy(dtype=float)) if np.isfinite(g.to_numpy(dtype=float)).any()
             else g.to_numpy(dtype=float) for p, g in grids.items()}
    finite = np.concatenate([a[np.isfinite(a)] for a in above.values()]) if above else np.array([])
    vmax = max(float(np.quantile(finite, 0.9)), 1e-3) if len(finite) else 1.0
    cmap = value_cmap()
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
        ax.set_xticks(range(len(grid.columns)), [f"{c:.3g}" for c in grid.columns], rotation=45)
        ax.set_xlabel(column_label(x))
        ax.set_yticks(range(len(grid.index)), [f"{r:g}" for r in grid.index])
        ax.set_title(f"{column_label(panel)} = {p} (best {best:.3f})")
        ax.grid(False)
    axes[0][0].set_ylabel(column_label(y))
    fig.colorbar(image, ax=axes[0].tolist(), extend="max", label=f"{value.replace('_', ' ')} above the panel's best (nats)")
    return fig


def log_ticks(ax, values, axis: str = "x", fmt=lambda v: f"{v:,.0f}" if v >= 1 else f"{v:g}") -> None:
    """Label a log axis at `values` only (the measured points), with no minor-tick labels crowding them."""
    values = sorted(set(float(v) for v in values))
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_ticks(values, [fmt(v) for v in values])
    target.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
