"""Marek et al.: small-batch full fine-tuning vs LoRA, the Gemma 3 result scaled down (notebook `marek_finetune`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication.experiments import finetuning, reseeded, stored_table
from replication.claims import claim, grid_edges
from replication.verdicts import compare
from replication.fit import best_per_group, trained_steps
from replication import plots
from replication.papers.marek.common import memory_frame


def seeded_specs(ft, runs: pd.DataFrame) -> list:
    """The best LR of each arm with every seed in `settings.seeds_at_best`."""
    first = best_per_group(runs, ["arm"], ["optimizer.lr"], select_seed=ft.base.seed)
    best_ids = runs.merge(first.dropna(subset=["loss"])[["arm", "optimizer.lr"]]).id
    return reseeded(ft.expand(), list(best_ids), ft.settings["seeds_at_best"])


def runs(exp, params: dict, results_root="results") -> list:
    """Every fine-tuning run the notebook reads (each starts from the pretraining run's weights): the grid,
    then each arm's best LR re-seeded (known once the grid is stored)."""
    _, ft = finetuning(exp, results_root)
    grid = ft.expand()
    table = stored_table(ft, grid, results_root)
    if table is None:
        return grid
    return grid + seeded_specs(ft, table.assign(arm=finetune_arm(table)))


def finetune_arm(runs: pd.DataFrame) -> pd.Series:
    """Names each fine-tuning run's arm from its method, optimizer and batch size, e.g. 'LoRA r=8, AdamW B=16'."""
    rank = runs["lora_rank"] if "lora_rank" in runs else pd.Series(np.nan, index=runs.index)
    method = rank.map(lambda r: f"LoRA r={int(r)}, " if pd.notna(r) else "full, ")
    return method + runs["optimizer.name"].map(plots.optimizer_label) + " B=" + runs["batch_size"].astype(str)


def finetune_table(best: pd.DataFrame, runs: pd.DataFrame, records: list[dict]) -> pd.DataFrame:
    """Per arm: the best loss (mean over seeds at the best LR), the loss of the pretrained model it started
    from (the step-0 evaluation of a fine-tuning record), and the measured memory of a run of the best
    cell in MiB (neither depends on the seed)."""
    best = best.dropna(subset=["loss"]).reset_index(drop=True)
    ids = runs.merge(best[["arm", "optimizer.lr"]]).drop_duplicates("arm").set_index("arm").loc[best["arm"], "id"]
    by_id = {r["id"]: r for r in records}
    memory = memory_frame([by_id[i] for i in ids]).drop(columns=["micro_batch_size"])
    memory.insert(2, "lora_rank", [by_id[i]["spec"]["lora_rank"] for i in ids])
    out = best[["arm", "optimizer.lr", "loss", "loss_se", "n_seeds", *(["edge_on"] if "edge_on" in best else [])]].copy()
    out.insert(2, "before", [by_id[i]["val"]["loss"][0] for i in ids])
    return pd.concat([out, memory], axis=1)


def finetune_claims(table: pd.DataFrame, runs: pd.DataFrame) -> list[dict]:
    """The paper's fine-tuning claims from the per-arm table of `finetune_table` and every seed of each
    arm's best LR (`runs` carries an `arm` column)."""
    t = table.set_index("arm")
    full, lora = t[t["lora_rank"].isna()], t[t["lora_rank"].notna()]
    seeds = runs.merge(table[["arm", "optimizer.lr"]], on=["arm", "optimizer.lr"])
    cell = lambda arm: seeds.loc[seeds["arm"] == arm, "final_val_loss"]
    steps = lambda *arms: trained_steps(seeds[seeds["arm"].isin(arms)])

    def arms(optimizer: str, batch: int | None = None) -> pd.DataFrame:
        rows = full[full["optimizer"] == optimizer]
        return rows if batch is None else rows[rows["batch_size"] == batch]

    def with_edges(m: dict, *compared: str) -> dict:
        """`m` with the `edges` of the compared arms whose best LR sits on the edge of their LR grid."""
        edges = grid_edges(t.loc[list(compared)].reset_index(), ["arm"], {"optimizer.lr": "LR"})
        return {**m, "edges": edges} if edges else m

    def versus(claim_id: str, ours: pd.DataFrame, theirs: pd.DataFrame) -> dict:
        a, b = ours["loss"].idxmin(), theirs["loss"].idxmin()
        m = with_edges(compare(cell(a), cell(b), steps(a, b)), a, b)
        return claim(claim_id, f"best loss {m['a']:.3f} ({a}) vs {m['b']:.3f} ({b}): {m['difference']:+.3f} nats, "
                               f"{m['n_seeds']} seed(s) at each best LR", m)

    def missing(claim_id: str, arms_needed: str) -> dict:
        return claim(claim_id, f"no {arms_needed} arm with a finite loss on this profile", {"untestable": f"no {arms_needed} arm with a finite loss"})

    claims = []
    adafactor, adam = arms("adafactor"), arms("adamw")
    small = full["batch_size"].min() if len(full) else None
    claims.append(versus("marek.finetune.adafactor_b1_matches_adam", adafactor, adam) if len(adafactor) and len(adam)
                  else missing("marek.finetune.adafactor_b1_matches_adam", "Adafactor or full AdamW"))
    claims.append(versus("marek.finetune.adafactor_beats_lora", adafactor, lora) if len(adafactor) and len(lora)
                  else missing("marek.finetune.adafactor_beats_lora", "Adafactor or LoRA"))
    small_lora = lora[lora["batch_size"] == small]
    if not len(adafactor) or not len(small_lora):
        claims.append(missing("marek.finetune.adafactor_at_lora_memory", "Adafactor or small-batch LoRA"))
    else:
        ratio = adafactor["total_fused"].min() / small_lora["total_fused"].min()
        ratio_trained = adafactor["total"].min() / small_lora["total"].min()
        adam_small = arms("adamw", small)
        claims.append(claim(
            "marek.finetune.adafactor_at_lora_memory",
            f"Adafactor B={small} needs {ratio:.2f}x the memory of LoRA at B={small} without a gradient buffer "
            f"(the paper's accounting), {ratio_trained:.2f}x as trained here"
            + (f"; Adam B={small} {adam_small['total_fused'].min() / small_lora['total_fused'].min():.2f}x" if len(adam_small) else ""),
            {"value": float(ratio)}))
    adam_small = arms("adamw", small)
    adam_large = adam.drop(adam_small.index)
    claims.append(versus("marek.finetune.scaled_adam_b1_matches_b16", adam_small, adam_large) if len(adam_small) and len(adam_large)
                  else missing("marek.finetune.scaled_adam_b1_matches_b16", "small- and large-batch AdamW"))
    sgd = arms("sgd")
    if len(sgd) and len(full) > len(sgd) and len(lora):
        others, a = full.drop(sgd.index), sgd["loss"].idxmin()
        b, c = others["loss"].idxmin(), lora["loss"].idxmin()
        parts = {"close_to_best": with_edges(compare(cell(a), cell(b), steps(a, b)), a, b),
                 "beats_lora": with_edges(compare(cell(a), cell(c), steps(a, c)), a, c)}
        claims.append(claim("marek.finetune.sgd_b1_nearly_as_good",
                            f"SGD's best loss {parts['close_to_best']['a']:.3f} ({a}): {parts['close_to_best']['difference']:+.3f} nats against "
                            f"the best other full fine-tuning ({b}), {parts['beats_lora']['difference']:+.3f} against the best LoRA ({c})", {"parts": parts}))
    else:
        claims.append(missing("marek.finetune.sgd_b1_nearly_as_good", "SGD, other full fine-tuning or LoRA"))
    return claims


def _arm_style(arm: str) -> str:
    """Line style of a fine-tuning arm: full fine-tuning solid (dash-dot at the larger batch size), LoRA dashed
    (dotted at the larger batch size); its colour is its optimizer's."""
    large = not arm.endswith(" B=1")
    return ("--" if not large else ":") if arm.startswith("LoRA") else ("-" if not large else "-.")


def finetune_panels(runs: pd.DataFrame, table: pd.DataFrame, memory: str = "total_fused"):
    """Left: loss against LR for each fine-tuning arm (mean over seeds; x = diverged), coloured by optimizer.
    Right: each arm's best loss (95 % seed interval) against its measured memory, the fused accounting the
    verdict reads by default (the paper's bar chart, memory on an axis instead of bar widths)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.2))
    top = plots.marker_height(runs["final_val_loss"])
    for arm, group in runs.groupby("arm", sort=True):
        colour = plots.optimizer_colour(group["optimizer.name"].iloc[0])
        cells = group.groupby("optimizer.lr")["final_val_loss"].mean()
        left.plot(cells.index, cells.to_numpy(), marker="o", ms=4, ls=_arm_style(arm), color=colour, label=arm)
        failed = cells[cells.isna()]
        if len(failed):
            plots.mark(left, failed.index, [top] * len(failed), colour, "diverged")
        row = table[table["arm"] == arm]
        right.errorbar(row[memory], row["loss"], yerr=plots.t_interval(row["loss_se"], row["n_seeds"]), fmt="o", color=colour, ms=6,
                       capsize=3)
        for _, r in row.iterrows():
            right.annotate(arm, (r[memory], r["loss"]), xytext=(5, 4), textcoords="offset points", fontsize=7, color=colour)
    before = table["before"].mean()
    left.axhline(before, color="grey", ls=":", lw=1)
    left.annotate("pretrained, before fine-tuning", (0.02, before), xycoords=("axes fraction", "data"),
                  xytext=(0, -10), textcoords="offset points", fontsize=7, color="grey")
    left.set_xscale("log")
    left.set_xlabel("learning rate")
    left.set_ylabel("validation loss on the new domain (nats / token)")
    left.legend(fontsize=7)
    words = {"total_fused": "fused: no separate gradient buffer, the paper's accounting", "total": "as trained"}.get(memory, memory)
    right.set_xlabel(f"measured training memory, MiB ({words})")
    right.set_ylabel("best validation loss (nats / token)")
    right.set_title(plots.ERROR_BARS, fontsize=8)
    fig.tight_layout()
    return fig
