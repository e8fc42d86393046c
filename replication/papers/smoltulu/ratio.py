"""SmolTulu (Alrashed 2024): the learning-rate / batch-size ratio in fine-tuning and the task families
(notebook `smoltulu_ratio`).

A model pretrained on Shakespeare (`settings.pretrain`) is fine-tuned on one mixture of every task of
`tasks` (Tulu's way: all tasks at once) over a grid of AdamW learning rate x batch size, in two arms:
- equal epochs (the paper's protocol): every cell sees the mixture `settings.epochs` times, so a smaller
  batch also takes more optimizer steps;
- equal steps (`settings.equal_steps_arm`: every batch size, or the smallest and largest): every cell takes
  the steps of the largest batch size at those epochs, so the ratio is separated from the number of updates
  (the confound the spec names: at 1.7B, BS 8 took 4x the steps of BS 32).
Each run records the held-out pretraining loss (forgetting) and its accuracy on every task's evaluation
split; families (reasoning, pretrained knowledge, patterns learned in fine-tuning: `tasks.py`) are scored
as the mean accuracy of their tasks. Verdicts compare error rates (1 - accuracy) so that a cell whose every
seed diverged counts as the worst, as the shared rules read losses. A task-accuracy claim reports how far
its deciding cell beats each task's heuristic baselines (`baselines.py`: chance, a constant answer, a number
copied from the prompt, the prompt's list echoed), and which deciding cells have their best LR on the grid's
edge, and how far its most forgetful deciding cell's held-out loss lies above a uniform guess (a collapsed
language model is not the fine-tuned model the paper's claims are about); the ledger reads all three as
"not testable at this scale" where they fail.
"""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication import plots
from replication.claims import claim, grid_edges
from replication.data import load_documents, split_names
from replication.fit import argmin_log_parabola, slope
from replication.papers.smoltulu import baselines, tasks
from replication.task_set import load_task_set, write_task_set
from replication.spec import ConfigError, RunSpec
from replication.experiments import finetuning, stored
from replication.verdicts import DRAWS, MIN_SEEDS, MIN_STEPS, bootstrap_difference, compare, pooled_sd

KEYS = ("pretrain", "sizes", "eval_fraction", "continuation_items", "task_seed", "epochs", "equal_steps_arm")
EPOCHS, STEPS = "equal epochs", "equal steps"
FAMILIES = (tasks.REASONING, tasks.KNOWLEDGE, tasks.LEARNED)
OPPOSED = (tasks.REASONING, tasks.KNOWLEDGE)  # the families whose optima the paper puts at opposite ends
CELL = ["batch_size", "lr"]

# Table 3 of the paper (SmolLM2-1.7B, SFT): the high-ratio SFT-1130 (LR 9e-5, BS 8) and the low-ratio SFT-1207 (3.1e-6, 32);
# the family is the one the abstract gives each benchmark from the 135M contours ("-": not assigned).
PAPER_SFT = pd.DataFrame(
    [("ARC", "reasoning", 51.0, 55.6), ("BBH", "-", 34.7, 34.0), ("GSM8K", "reasoning", 49.0, 42.8),
     ("HellaSwag", "knowledge", 61.5, 67.5), ("IFEval", "learned", 61.0, 47.8), ("MMLU-Pro", "-", 17.6, 17.9),
     ("PIQA", "knowledge", 72.7, 76.9)],
    columns=["benchmark", "family (135M)", "high ratio (11.25e-6)", "low ratio (0.097e-6)"])
PAPER_SFT["difference"] = PAPER_SFT["high ratio (11.25e-6)"] - PAPER_SFT["low ratio (0.097e-6)"]


def settings(exp) -> dict:
    return exp.checked_settings(KEYS)


def task_set(exp) -> str:
    """The mixture and evaluation items of `settings` plus continuation items from the pretraining corpus, of
    its held-out documents and of those it trained on, written once; returns the task set's hash (each
    fine-tuning run's `tasks`)."""
    s = settings(exp)
    train, evaluation = tasks.mixture(s["sizes"], s["eval_fraction"], s["task_seed"])
    docs = load_documents(exp.base.data)
    train_names, val_names = split_names(list(docs), exp.base.data.val_fraction)
    for task, names in ((tasks.CONTINUATION, val_names), (tasks.SEEN_CONTINUATION, train_names)):
        evaluation[task] = tasks.continuation_items("\n".join(docs[n] for n in names), s["continuation_items"], s["task_seed"])
    return write_task_set(train, evaluation)


def baseline_table(exp) -> pd.DataFrame:
    """Every evaluation task's heuristic baselines (`baselines.table`) on the items the runs were scored on:
    chance, the best constant answer, copying a number from the prompt, and the best of them."""
    s = settings(exp)
    evaluation = load_task_set(task_set(exp))["eval"]
    targets = tasks.evaluation_targets(s["sizes"], s["eval_fraction"], s["task_seed"])
    for task in tasks.CONTINUATIONS:
        targets[task] = [item["choices"][item["correct"]].strip() for item in evaluation[task]]
    return baselines.table(evaluation, targets, tasks.family)


def arm_specs(exp, results_root="results") -> tuple[RunSpec, dict[str, list[RunSpec]]]:
    """The pretraining run and each arm's fine-tuning runs (the grid, budgets set by the arm; with
    `settings.equal_steps_arm: ends`, the equal-steps arm at the grid's smallest and largest batch size only,
    the two its claim compares, else at every batch size)."""
    s = settings(exp)
    pretrain, ft = finetuning(exp, results_root)
    digest = task_set(exp)
    n_train = len(load_task_set(digest)["train"])
    grid = ft.expand()
    sizes = sorted({x.batch_size for x in grid})
    if s["equal_steps_arm"] not in ("ends", "all"):
        raise ConfigError(f"experiments.{exp.name}.settings.equal_steps_arm: {s['equal_steps_arm']!r} is unknown; choose one of: all, ends")
    steps_sizes = {sizes[0], sizes[-1]} if s["equal_steps_arm"] == "ends" else set(sizes)
    seq = exp.base.data.seq_len
    steps_at = lambda b: max(1, round(s["epochs"] * n_train / b))
    fixed = steps_at(max(x.batch_size for x in grid))
    arms = {EPOCHS: [x.replace(tasks=digest, tokens=steps_at(x.batch_size) * x.batch_size * seq) for x in grid],
            STEPS: [x.replace(tasks=digest, tokens=fixed * x.batch_size * seq) for x in grid if x.batch_size in steps_sizes]}
    return pretrain, arms


def runs(exp, params: dict, results_root="results") -> list[RunSpec]:
    """Both arms (the largest batch size's runs are the same in both, and trained once)."""
    _, arms = arm_specs(exp, results_root)
    return list(dict.fromkeys(arms[EPOCHS] + arms[STEPS]))


def run_table(exp, results_root="results") -> tuple[dict, pd.DataFrame]:
    """`before` (the pretrained model: held-out loss, accuracy per task and family) and one row per (arm, run):
    cell, seed, steps, epochs, held-out pretraining loss, accuracy per task and per family (NaN: diverged)."""
    pretrain, arms = arm_specs(exp, results_root)
    store = stored(exp, results_root)
    pre, rows = store.read(pretrain.hash), []
    arm_records = [store.read(x.hash) for specs in arms.values() for x in specs]
    if pre is None or not any(arm_records):
        raise FileNotFoundError(f"{store.root}: runs of {exp.name} are missing; run its stage "
                                f"(or `python -m replication sweep {exp.name}`)")
    for arm, specs in arms.items():
        for x in specs:
            r = store.read(x.hash)
            if r is None:  # not stored yet (a bounded sweep): the tables use the stored runs
                continue
            rows.append({"arm": arm, "batch_size": x.batch_size, "lr": x.optimizer.lr, "ratio": x.optimizer.lr / x.batch_size,
                         "seed": x.seed, "status": r["status"], "steps": r["steps"], "tokens": r["tokens"], "epochs": r.get("epochs"),
                         "heldout_loss": r["final_val_loss"], **(r.get("task_accuracy") or {})})
    first = next(r for r in arm_records if r is not None and "task_accuracy_before" in r)
    names = sorted(first["task_accuracy_before"])
    df = pd.DataFrame(rows)
    for name in names:  # a column even if every run diverged
        df[name] = df[name] if name in df else np.nan
    before = {"heldout_loss": first["val"]["loss"][0], "pretrain_val_loss": pre["final_val_loss"], "pretrain_tokens": pre["tokens"],
              "uniform_loss": float(np.log(exp.base.data.vocab_size)), **first["task_accuracy_before"]}
    for fam in FAMILIES:
        members = [t for t in names if tasks.family(t) == fam]
        df[fam] = df[members].mean(axis=1, skipna=False)
        before[fam] = float(np.mean([before[t] for t in members]))
    return before, df


def task_columns(runs: pd.DataFrame) -> list[str]:
    return [c for c in runs.columns if c in tasks.TASKS or c in tasks.CONTINUATIONS]


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error over seeds per (arm, batch size, LR), with the fewest steps and the seed count."""
    metrics = [*task_columns(runs), *FAMILIES, "heldout_loss"]
    g = runs.groupby(["arm", *CELL])
    out = g[metrics].mean()
    se = g[metrics].sem().add_suffix("_se")
    extra = g.agg(ratio=("ratio", "first"), steps=("steps", "min"), epochs=("epochs", "first"), n_seeds=("seed", "nunique"),
                  diverged=("status", lambda s: int((s == "diverged").sum())))
    return pd.concat([extra, out, se], axis=1).reset_index()


def halves(arm_cells: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cells above and below the median of the grid's distinct ratios (cells at the median are in neither)."""
    log_ratio = np.log(arm_cells["ratio"])
    median = np.median(np.unique(np.round(log_ratio, 9)))
    return arm_cells[log_ratio > median + 1e-9], arm_cells[log_ratio < median - 1e-9]


def _values(runs: pd.DataFrame, cell: pd.Series, column: str) -> list[float]:
    """Per seed of one cell: `column` (accuracy is turned into an error rate, 1 - accuracy; NaN: diverged)."""
    at = runs[(runs["arm"] == cell["arm"]) & (runs["batch_size"] == cell["batch_size"]) & (runs["lr"] == cell["lr"])]
    values = at[column].to_numpy(dtype=float)
    return list(values if column == "heldout_loss" else 1 - values)


def best_cell(arm_cells: pd.DataFrame, column: str) -> pd.Series:
    """The cell with the highest mean `column` (lowest for the held-out loss); a diverged cell is never best."""
    finite = arm_cells[np.isfinite(arm_cells[column])]
    pool = finite if len(finite) else arm_cells
    return pool.loc[pool[column].idxmin() if column == "heldout_loss" else pool[column].idxmax()]


def high_vs_low(runs: pd.DataFrame, table: pd.DataFrame, arm: str, family: str) -> dict:
    """The paper's contrast: the best cell of `family` among the high ratios against the best among the low
    ratios, as error rates (A = high, B = low: negative means the high ratio scores better)."""
    return _contrast(runs, *_high_low_cells(table, arm, family), family)


def _high_low_cells(table: pd.DataFrame, arm: str, family: str) -> tuple[pd.Series, pd.Series]:
    high, low = halves(table[table["arm"] == arm])
    return best_cell(high, family), best_cell(low, family)


def _fixed_steps_cells(table: pd.DataFrame, family: str) -> tuple[pd.Series, pd.Series]:
    """At equal steps, the best cell of `family` among the high ratios at the smaller batch sizes against the
    best among the low ratios at the larger ones (below / above the median of the grid's batch sizes). The
    two cells always differ in batch size, so the ratio moves by the batch size and not by the LR alone (the
    best of each ratio half may otherwise share a batch size: then the contrast is an LR effect). Each side
    keeps its own best LR, as in the equal-epochs contrast; one common LR would need a rule to pick it, and
    the largest batch size's best LR at equal steps is the grid's top."""
    arm_cells = table[table["arm"] == STEPS]
    high, low = halves(arm_cells)
    sizes = np.log(arm_cells["batch_size"])
    median = np.median(np.unique(sizes))
    small, large = arm_cells.index[sizes < median - 1e-9], arm_cells.index[sizes > median + 1e-9]
    return best_cell(high[high.index.isin(small)], family), best_cell(low[low.index.isin(large)], family)


def _contrast(runs: pd.DataFrame, a: pd.Series, b: pd.Series, family: str) -> dict:
    m = compare(_values(runs, a, family), _values(runs, b, family), [a["steps"], b["steps"]])
    return {**m, "high_cell": _label(a), "low_cell": _label(b)}


def lr_edges(arm_cells: pd.DataFrame, deciding: list[pd.Series]) -> list[dict]:
    """The deciding cells whose LR is the smallest or largest of the arm's LR grid (of at least 3): the
    family's accuracy there may keep rising past the grid, so the cell's score is only a bound."""
    grid = sorted(arm_cells["lr"].unique())
    frame = pd.DataFrame([{"batch_size": int(c["batch_size"]), "lr": float(c["lr"]),
                           "edge_on": "lr" if len(grid) >= 3 and c["lr"] in (grid[0], grid[-1]) else ""} for c in deciding])
    return grid_edges(frame.drop_duplicates(), ["batch_size", "lr"], {"lr": "learning rate"})


def collapse(cells: list[pd.Series], uniform_loss: float) -> float:
    """How far the largest held-out pretraining loss among `cells` lies above `uniform_loss` (ln V, a uniform
    guess): positive means some cell's language model has collapsed, so its task scores come from a body
    that no longer models text, outside the regime of the paper's fine-tuned models (which lose a few points)."""
    return float(max(c["heldout_loss"] for c in cells) - uniform_loss)


def margin_over_baselines(cell: pd.Series, family: str, base: pd.DataFrame) -> tuple[float, str]:
    """The smallest, over the tasks of `family`, of `cell`'s accuracy on the task minus the task's best
    heuristic baseline, and that task. Negative: on some task of the family the cell does no better than
    chance, a constant answer or a number copied from the prompt, so the family's score there is not (all)
    what fine-tuning taught."""
    bar = base.set_index("task")["best_baseline"]
    members = [t for t in cell.index if (t in tasks.TASKS or t in tasks.CONTINUATIONS) and tasks.family(t) == family]
    missing = [t for t in members if t not in bar.index]
    if missing:
        raise ValueError(f"no heuristic baseline for task(s) {', '.join(missing)}")
    return min((float(cell[t] - bar[t]), t) for t in members)


def _label(cell: pd.Series) -> str:
    return f"LR {cell['lr']:.3g}, B {int(cell['batch_size'])} (LR/B {cell['ratio']:.2g})"


def forgetting(runs: pd.DataFrame, table: pd.DataFrame, uniform_loss: float, arm: str = EPOCHS) -> dict:
    """Mean held-out pretraining loss over the high-ratio cells minus over the low-ratio cells, its standard
    error from resampling every cell's seeds (cells are independent runs). Only cells whose mean held-out
    loss is below `uniform_loss` (a uniform guess over the vocabulary, ln V) take part, split into halves at
    the median of their own ratios: a cell above it has collapsed, and how much more it collapsed is not the
    graded forgetting the paper's benchmarks show. `cells` says how many cells of each half were compared
    and how many collapsed were left out."""
    arm_cells = table[table["arm"] == arm]
    kept = arm_cells[arm_cells["heldout_loss"] < uniform_loss]
    collapsed = len(arm_cells) - len(kept)
    high, low = halves(kept) if len(kept) else (kept, kept)
    keys = [("high", i) for i in high.index] + [("low", i) for i in low.index]
    values = {k: _values(runs, table.loc[k[1]], "heldout_loss") for k in keys}
    gap = lambda means: np.mean([v for k, v in means.items() if k[0] == "high"]) - np.mean([v for k, v in means.items() if k[0] == "low"])
    if high.empty or low.empty:
        return {"untestable": f"no {'high' if high.empty else 'low'}-ratio cell has a held-out loss below a uniform guess ({uniform_loss:.2f} nats)",
                "cells": {"high": len(high), "low": len(low), "collapsed": collapsed}, "difference": None, "se": None}
    return {**bootstrap_difference(values, gap, steps=[*high["steps"], *low["steps"]]),
            "cells": {"high": len(high), "low": len(low), "collapsed": collapsed}}


def optimum_ratio(arm_cells: pd.DataFrame, family: str) -> float:
    return float(best_cell(arm_cells, family)["ratio"])


def mean_draws(arm_runs: pd.DataFrame, column: str, draws: int = DRAWS, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """The cells of one arm (batch size, LR, ratio) and `draws` rows of their seed means of `column` with
    every cell's seeds resampled with replacement (cells are independent runs; a diverged seed is NaN and a
    cell whose resampled seeds all diverged has no mean), drawn as `fit.resampled` draws them."""
    groups = [(key, g) for key, g in arm_runs.groupby(CELL)]
    keys = pd.DataFrame([{"batch_size": b, "lr": lr, "ratio": g["ratio"].iloc[0]} for (b, lr), g in groups])
    values = [g[column].to_numpy(dtype=float) for _, g in groups]
    rng = np.random.default_rng(seed)
    picks = [np.empty((draws, len(v)), dtype=int) for v in values]
    for d in range(draws):
        for c, v in enumerate(values):
            picks[c][d] = rng.integers(0, len(v), len(v))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-diverged resample: NaN, as cells() gives
        means = np.column_stack([np.nanmean(v[pick], axis=1) for v, pick in zip(values, picks)])
    return keys, means


def _best_ratio(keys: pd.DataFrame, means: np.ndarray) -> float:
    """The ratio of the cell with the highest mean (a diverged cell is never best)."""
    finite = np.isfinite(means)
    return float(keys["ratio"].iloc[int(np.argmax(np.where(finite, means, -np.inf)))]) if finite.any() else np.nan


def opposite_optima(runs: pd.DataFrame, table: pd.DataFrame, arm: str = EPOCHS, draws: int = DRAWS) -> dict:
    """log10 of (the reasoning family's best ratio / the pretrained-knowledge family's: the paper's pattern
    benchmarks HellaSwag and PIQA), over cell means, with seeds resampled."""
    arm_runs, arm_cells = runs[runs["arm"] == arm], table[table["arm"] == arm]
    estimate = np.log10(optimum_ratio(arm_cells, tasks.REASONING) / optimum_ratio(arm_cells, tasks.KNOWLEDGE))
    (keys, reasoning), (_, pattern) = (mean_draws(arm_runs, fam, draws) for fam in OPPOSED)
    values = [np.log10(_best_ratio(keys, r) / _best_ratio(keys, p)) for r, p in zip(reasoning, pattern)]
    return _interval(estimate, values, arm_cells)


def ridge(arm_cells: pd.DataFrame, family: str) -> tuple[float, pd.DataFrame]:
    """The best LR of `family` at each batch size (vertex of a parabola in log LR through the best cell and its
    neighbours) and the slope of log best-LR on log B over the batch sizes whose best LR is inside the LR grid:
    1 = the optimum follows the ratio, 0.5 = LR / sqrt(B), 0 = the LR alone."""
    rows = []
    for b, g in arm_cells.groupby("batch_size"):
        g = g.sort_values("lr")
        i = int(np.nanargmax(g[family].to_numpy(dtype=float))) if np.isfinite(g[family]).any() else 0
        rows.append({"batch_size": b, "best_lr": argmin_log_parabola(g["lr"], -g[family].to_numpy(dtype=float)),
                     "on_edge": i in (0, len(g) - 1)})
    best = pd.DataFrame(rows)
    inside = best[~best["on_edge"]]
    return (slope(inside["batch_size"], inside["best_lr"]) if len(inside) >= 2 else float("nan")), best


def ridge_slope(runs: pd.DataFrame, table: pd.DataFrame, arm: str = EPOCHS, family: str = tasks.REASONING, draws: int = DRAWS) -> dict:
    """The ridge slope with its bootstrap draws, the number of batch sizes it is fitted on (`regime`: two
    cannot tell a slope of 0.5 from 1) and the batch sizes whose best LR is on the LR grid's edge (`edges`:
    their best LR is only a bound, so leaving them out of the fit selects the batch sizes it rests on)."""
    arm_runs, arm_cells = runs[runs["arm"] == arm], table[table["arm"] == arm]
    estimate, best = ridge(arm_cells, family)
    gates = {"regime": {"batch_sizes_in_fit": int((~best["on_edge"]).sum())},
             "edges": grid_edges(best.assign(edge_on=np.where(best["on_edge"], "lr", "")), ["batch_size"], {"lr": "learning rate"}),
             "best": best.to_dict("records")}
    if not np.isfinite(estimate):
        return {"untestable": f"the best LR of {family} lies inside the LR grid at {int((~best['on_edge']).sum())} batch size(s) (< 2)", **gates}
    keys, means = mean_draws(arm_runs, family, draws)
    values = [ridge(keys.assign(**{family: row}), family)[0] for row in means]
    return {**_interval(estimate, values, arm_cells), **gates}


def _interval(estimate: float, values, arm_cells: pd.DataFrame) -> dict:
    return {"estimate": float(estimate), "draws": [float(v) for v in values if np.isfinite(v)],
            "min_steps": int(arm_cells["steps"].min()), "n_seeds": int(arm_cells["n_seeds"].min())}


def equal_ratio_spread(runs: pd.DataFrame, table: pd.DataFrame, column: str, arm: str = EPOCHS) -> pd.DataFrame:
    """Along every diagonal of equal LR / B with at least two cells: the largest gap between its cells' means
    against twice the standard error of a difference of two cell means (the grid's pooled seed spread).
    If scores depend on the ratio alone, every gap is within that noise."""
    arm_cells = table[table["arm"] == arm]
    sd = pooled_sd(*[np.asarray(_values(runs, c, column)) for _, c in arm_cells.iterrows()])
    n = arm_cells["n_seeds"].min()
    rows = []
    for ratio, g in arm_cells.groupby(arm_cells["ratio"].round(12)):
        if len(g) < 2:
            continue
        rows.append({"ratio": ratio, "cells": len(g), "batch_sizes": "-".join(str(int(b)) for b in g["batch_size"]),
                     "gap": float(g[column].max() - g[column].min()), "noise_2se": float(2 * sd * np.sqrt(2 / n)) if n > 1 else np.nan})
    out = pd.DataFrame(rows)
    if len(out):  # None where one seed per cell leaves no noise to compare with
        out["within_noise"] = [bool(g <= n) if np.isfinite(n) else None for g, n in zip(out["gap"], out["noise_2se"])]
    return out


def family_table(runs: pd.DataFrame, table: pd.DataFrame, before: dict, arm: str = EPOCHS) -> pd.DataFrame:
    """Ours beside the paper's: per task and family, the best accuracy among the high ratios and among the low
    ratios (each its own best cell, mean over seeds), their difference and its standard error."""
    rows = []
    for column in [*task_columns(runs), *FAMILIES]:
        m = high_vs_low(runs, table, arm, column)
        rows.append({"task": column, "family": tasks.family(column) if column not in FAMILIES else column + " (mean)",
                     "pretrained": before.get(column), "high ratio": None if m["a"] is None else 1 - m["a"],
                     "low ratio": None if m["b"] is None else 1 - m["b"],
                     "difference": None if m["difference"] is None else -m["difference"], "se": m["se"],
                     "high cell": m["high_cell"], "low cell": m["low_cell"]})
    return pd.DataFrame(rows)


def by_ratio(table: pd.DataFrame, arm: str = EPOCHS, base: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each family's best cell at each LR / B (the cells the verdicts compare are the best of the high and of
    the low half of these ratios), in percent with its standard error and seeds, its steps, whether its LR is
    on the edge of the LR grid, which half of the grid's ratios it is in, and the family's mean over the
    ratio's cells beside it: what the report draws beside the paper's two 1.7B configurations. With the
    heuristic baselines `base`, a family whose best cell does not beat them on some task says so in `label`
    (its task-accuracy claims are then not testable)."""
    c = table[table["arm"] == arm]
    high, low = halves(c)
    grid = sorted(c["lr"].unique())
    rows = []
    for fam in FAMILIES:
        label = fam
        if base is not None:
            margin, task = margin_over_baselines(best_cell(c, fam), fam, base)
            label += f" (below its {task} baseline: no verdict)" if margin < 0 else ""
        for r, g in c.groupby(c["ratio"].round(12)):
            best = best_cell(g, fam)
            rows.append({"family": fam, "label": label, "ratio": r, "accuracy_pct": 100 * float(best[fam]),
                         "accuracy_se_pct": 100 * float(best[f"{fam}_se"]), "n_seeds": int(best["n_seeds"]),
                         "mean_pct": 100 * float(g[fam].mean()), "steps": int(best["steps"]), "cells": len(g),
                         "best_on_edge": len(grid) >= 3 and best["lr"] in (grid[0], grid[-1]),
                         "half": "high" if g.index.isin(high.index).all() else "low" if g.index.isin(low.index).all() else "median"})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ claims
def claims(runs: pd.DataFrame, table: pd.DataFrame, base: pd.DataFrame | None, uniform_loss: float) -> list[dict]:
    """Every claim. The task-accuracy claims report, as `regime`, the smallest margin of the better compared
    cell over its family's heuristic baselines (`base`, from `baseline_table`; None: not measured), and as
    `edges` the compared cells whose LR is on the grid's edge. Forgetting is compared over the cells whose
    held-out loss is below `uniform_loss` (`before["uniform_loss"]`: ln of the vocabulary)."""
    def gated(m: dict, arm: str, deciding: list[pd.Series], judged: list[tuple[pd.Series, str]]) -> dict:
        """`m` with the smallest margin over the baselines of each (cell, family) in `judged` (and its task), how
        far the most forgetful deciding cell's held-out loss lies above a uniform guess (`collapse`), and the
        edges of `deciding`."""
        margin, task = min(margin_over_baselines(cell, family, base) for cell, family in judged) if base is not None else (None, None)
        return {**m, "regime": {"margin_over_baselines": margin, "heldout_above_uniform": collapse(deciding, uniform_loss)},
                "margin_task": task, "edges": lr_edges(table[table["arm"] == arm], deciding)}

    def contrast(claim_id: str, arm: str, family: str, what: str, cells: tuple[pd.Series, pd.Series]) -> dict:
        better = max(cells, key=lambda c: c[family])  # the family's better compared cell: the one that shows what was learned
        m = gated(_contrast(runs, *cells, family), arm, list(cells), [(better, family)])
        if m["a"] is None or m["b"] is None:
            return claim(claim_id, f"{what}: a compared cell diverged at every seed", m)
        return claim(claim_id, f"{what} ({arm}): best {1 - m['a']:.3f} at a high ratio ({m['high_cell']}) vs {1 - m['b']:.3f} at a "
                               f"low ratio ({m['low_cell']}), {-m['difference']:+.3f}" + (f" (SE {m['se']:.3f})" if m["se"] else "")
                               + _margin_words(m), m)

    out = [contrast("smoltulu.ratio.reasoning_prefers_high_ratio", EPOCHS, tasks.REASONING, "reasoning accuracy",
                    _high_low_cells(table, EPOCHS, tasks.REASONING)),
           contrast("smoltulu.ratio.pattern_prefers_low_ratio", EPOCHS, tasks.KNOWLEDGE, "pretrained-knowledge accuracy",
                    _high_low_cells(table, EPOCHS, tasks.KNOWLEDGE)),
           contrast("smoltulu.ratio.learned_patterns_prefer_low_ratio", EPOCHS, tasks.LEARNED, "learned-pattern accuracy",
                    _high_low_cells(table, EPOCHS, tasks.LEARNED))]
    arm_cells = table[table["arm"] == EPOCHS]
    optima = [best_cell(arm_cells, fam) for fam in OPPOSED]
    opposite = gated(opposite_optima(runs, table), EPOCHS, optima, list(zip(optima, OPPOSED)))
    out.append(claim("smoltulu.ratio.opposite_optima", f"the reasoning optimum's LR/B is 10^{opposite['estimate']:.2f} x the pretrained-knowledge "
                                                        f"optimum's ({EPOCHS}: {_label(optima[0])} vs {_label(optima[1])})"
                                                        + _margin_words(opposite), opposite))
    ridge_m = ridge_slope(runs, table)
    optima_by_size = [best_cell(g, tasks.REASONING) for _, g in arm_cells.groupby("batch_size")]  # the cells the ridge rests on
    ridge_m["regime"] = {**ridge_m.get("regime", {}), "heldout_above_uniform": collapse(optima_by_size, uniform_loss)}
    spread = equal_ratio_spread(runs, table, tasks.REASONING)
    judged = spread[spread["within_noise"].notna()] if len(spread) else spread
    agree = (f"; along equal-ratio diagonals the reasoning cells agree within 2 SE on {int(judged['within_noise'].sum())} of {len(judged)}"
             if len(judged) else "")
    out.append(claim("smoltulu.ratio.ratio_not_lr_alone", _ridge_words(ridge_m) + agree, ridge_m))
    loss = forgetting(runs, table, uniform_loss=uniform_loss)
    n = loss["cells"]
    compared = (f"{n['high']} high- and {n['low']} low-ratio cells below a uniform guess ({uniform_loss:.2f} nats; "
                f"{n['collapsed']} collapsed cell(s) above it left out)")
    out.append(claim("smoltulu.ratio.high_ratio_forgets",
                     (f"held-out pretraining loss {loss['difference']:+.3f} nats higher over the high-ratio cells than the low-ratio ones"
                      + (f" (SE {loss['se']:.3f})" if loss["se"] else "") if loss["difference"] is not None else "held-out pretraining loss: no contrast")
                     + f", over the {compared}", loss))
    out.append(contrast("smoltulu.ratio.survives_fixed_steps", STEPS, tasks.REASONING,
                        "reasoning accuracy at equal steps, high ratios at the smaller batch sizes vs low ratios at the larger",
                        _fixed_steps_cells(table, tasks.REASONING)))
    return out


def _margin_words(m: dict) -> str:
    margin = (m.get("regime") or {}).get("margin_over_baselines")
    return ("; no heuristic baselines measured" if margin is None
            else f"; smallest margin over a task's best heuristic baseline {margin:+.3f} ({m['margin_task']})")


def _ridge_words(ridge_m: dict) -> str:
    """What the ridge slope rests on: its estimate over the batch sizes whose best LR is inside the grid."""
    if "estimate" not in ridge_m:
        return ridge_m["untestable"]
    sizes = lambda on_edge: ", ".join(str(int(r["batch_size"])) for r in ridge_m["best"] if bool(r["on_edge"]) == on_edge)  # noqa: E731
    edges = sizes(True)
    return (f"slope of log best LR on log B for reasoning: {ridge_m['estimate']:.2f} over batch sizes {sizes(False)}"
            + (f" (at {edges} the best LR is on the grid's edge, left out)" if edges else ""))


def caveats(runs: pd.DataFrame, table: pd.DataFrame, before: dict, base: pd.DataFrame | None = None) -> list[str]:
    out = []
    few = table[table["steps"] < MIN_STEPS]
    if len(few):
        out.append(f"{len(few)} cell(s) train for fewer than {MIN_STEPS} optimizer steps (batch sizes "
                   f"{', '.join(str(int(b)) for b in sorted(few['batch_size'].unique()))}); a claim resting on them is not testable here.")
    if table["n_seeds"].min() < MIN_SEEDS:
        out.append(f"{int(table['n_seeds'].min())} seed(s) per cell: every comparison is not testable at this scale.")
    if base is not None:
        bar = base.set_index("task")["best_baseline"]
        floor = [f"{t} (best cell {table[t].max():.3f}, baseline {bar[t]:.3f})" for t in task_columns(runs) if table[t].max() <= bar[t]]
        if floor:
            out.append(f"no fine-tuning cell beats the best heuristic baseline (chance, a constant answer, a number copied from the prompt, its list echoed) of "
                       f"{', '.join(floor)}: at this size those tasks are not learned beyond a heuristic, so a task-accuracy claim "
                       "on their family is not testable.")
    else:
        floor = [t for t in task_columns(runs) if t not in tasks.CONTINUATIONS and runs[t].max() <= max(before.get(t, 0), 0.05)]
        if floor:
            out.append(f"no fine-tuning cell lifts {', '.join(floor)} above the pretrained model (or 5 %): at this size those tasks "
                       "are not learned, so they add a near-constant to their family's mean.")
    diverged = int(runs["status"].eq("diverged").sum())
    if diverged:
        out.append(f"{diverged} run(s) diverged; their cells count the lost seeds as failures.")
    return out


# ------------------------------------------------------------------------------------------------ figures
def _heatmap(ax, arm_cells: pd.DataFrame, column: str, title: str, lower_is_better: bool = False, fmt: str = "{:.2f}") -> None:
    grid = arm_cells.pivot_table(index="batch_size", columns="lr", values=column, dropna=False)
    data = grid.to_numpy(dtype=float)
    colours = plots.value_cmap(reverse=lower_is_better)
    image = ax.imshow(np.ma.masked_invalid(data), origin="lower", aspect="auto", cmap=colours)
    for (i, j), v in np.ndenumerate(data):
        r, g, b, _ = image.cmap(image.norm(v)) if np.isfinite(v) else (1, 1, 1, 1)
        ax.text(j, i, "x" if not np.isfinite(v) else fmt.format(v), ha="center", va="center", fontsize=7,
                color="k" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "w")
    contours, finite = None, data[np.isfinite(data)]
    if min(data.shape) >= 2 and finite.size > 3 and np.ptp(finite) > 0:  # the paper's contours, through the cell centres
        contours = ax.contour(np.ma.masked_invalid(data), levels=5, colors="0.1", linewidths=0.7, alpha=0.7)
    steps = [np.unique(np.round(np.diff(np.log(v)), 9)) for v in (grid.columns.to_numpy(float), grid.index.to_numpy(float))]
    if all(len(d) == 1 for d in steps) and steps[0][0] == steps[1][0]:  # equal log steps: equal LR / B lies on diagonals
        for k in range(-len(grid.index) + 1, len(grid.columns)):
            ax.plot([k - 0.5, k + len(grid.index) - 0.5], [-0.5, len(grid.index) - 0.5], color="0.5", lw=0.6, alpha=0.5)
    ax.set_xlim(-0.5, len(grid.columns) - 0.5)
    ax.set_ylim(-0.5, len(grid.index) - 0.5)
    ax.set_xticks(range(len(grid.columns)), [f"{c:.2g}" for c in grid.columns], rotation=45)
    ax.set_yticks(range(len(grid.index)), [str(int(b)) for b in grid.index])
    ax.set_title(title, fontsize=9)
    ax.grid(False)
    bar = plt.colorbar(image, ax=ax, fraction=0.046)
    if contours is not None:
        bar.add_lines(contours)


def figure(table: pd.DataFrame, before: dict):
    """Rows: the two arms; columns: each family's accuracy and the held-out pretraining loss, over LR (x)
    and batch size (y), mean over seeds, with contour lines (their levels marked on the colour bar) as in the
    paper's Fig. 1. Faint straight lines are diagonals of equal LR / B."""
    arms = [a for a in (EPOCHS, STEPS) if a in set(table["arm"])]
    fig, axes = plt.subplots(len(arms), len(FAMILIES) + 1, figsize=(4.7 * (len(FAMILIES) + 1), 4.2 * len(arms)), squeeze=False)
    for row, arm in zip(axes, arms):
        c = table[table["arm"] == arm]
        for ax, fam in zip(row, FAMILIES):
            _heatmap(ax, c, fam, f"{arm}: {fam} accuracy (pretrained {before[fam]:.2f})")
        _heatmap(row[-1], c, "heldout_loss", f"{arm}: held-out pretraining loss (pretrained {before['heldout_loss']:.2f})", lower_is_better=True)
        row[0].set_ylabel("batch size")
    for ax in axes[-1]:
        ax.set_xlabel("learning rate")
    fig.tight_layout()
    return fig


def task_figure(table: pd.DataFrame, runs: pd.DataFrame, before: dict, arm: str = EPOCHS):
    """Accuracy of every task over (LR, batch size) at equal epochs: the paper's Fig. 1 contours, one per task."""
    names = task_columns(runs)
    cols = 4
    fig, axes = plt.subplots(-(-len(names) // cols), cols, figsize=(4.2 * cols, 3.6 * -(-len(names) // cols)), squeeze=False)
    c = table[table["arm"] == arm]
    for ax, name in zip(axes.flat, names):
        _heatmap(ax, c, name, f"{name.replace('_', ' ')} ({tasks.family(name)}; pretrained {before[name]:.2f})")
        ax.set_xlabel("learning rate", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("batch size")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def collapse_figure(table: pd.DataFrame):
    """Each family's accuracy and the held-out loss against LR / B, one line per batch size (solid: equal epochs,
    dashed: equal steps, its points shifted right by 8 % so that neither hides the other; 95 % seed intervals):
    the lines fall on one curve if the ratio alone decides."""
    fig, axes = plt.subplots(1, len(FAMILIES) + 1, figsize=(4.7 * (len(FAMILIES) + 1), 4))
    sizes = sorted(table["batch_size"].unique())
    for ax, column in zip(axes, [*FAMILIES, "heldout_loss"]):
        for b in sizes:
            for arm, style, shift in ((EPOCHS, "o-", 1.0), (STEPS, "o--", 1.08)):
                g = table[(table["arm"] == arm) & (table["batch_size"] == b)].sort_values("ratio")
                ax.errorbar(g["ratio"] * shift, g[column], yerr=plots.t_interval(g[f"{column}_se"], g["n_seeds"]), fmt=style, ms=3, capsize=2,
                            color=plots.batch_colour(b), lw=1.4 if arm == EPOCHS else 1.0, label=f"B={int(b)}, {arm}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate / batch size")
        ax.set_title(f"{column} accuracy" if column in FAMILIES else "held-out pretraining loss (nats / token)", fontsize=9)
    axes[0].legend(fontsize=6, ncol=2, title=plots.ERROR_BARS, title_fontsize=6)
    fig.tight_layout()
    return fig
