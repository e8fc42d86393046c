"""Marek et al.: gradient accumulation is wasteful, and memory by optimizer (notebook `marek_memory`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication.claims import claim, grid_edges
from replication.fit import best_cell_runs, best_per_group, trained_steps
from replication.experiments import reseeded, staged
from replication import plots
from replication.papers.marek.common import best_specs
from replication.sizes import count_parameters
from replication.spec import ModelConfig
from replication.verdicts import compare


def runs(exp, params: dict, results_root="results") -> list:
    """Every run the notebook reads: the three accumulation arms' LR grid, the seeds of
    `settings.seeds_at_best` at each arm's best LR (once the grid is stored), and the memory measurements."""
    specs = staged(exp, results_root, [lambda specs, table: seeded_specs(exp, specs, table)])
    return specs + memory_specs(exp, exp.settings["memory_optimizers"], exp.settings["memory_batch_sizes"])


def accumulation_and_memory_runs(exp, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The accumulation arms' runs and the memory measurements apart (one sweep declares both)."""
    ids = {s.hash for s in memory_specs(exp, exp.settings["memory_optimizers"], exp.settings["memory_batch_sizes"])}
    measured = runs["id"].isin(ids)
    return runs[~measured].reset_index(drop=True), runs[measured].reset_index(drop=True)


def best_arms(runs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The best LR of each arm (`setup` column), chosen on seed `seed` and measured over all its seeds."""
    return best_per_group(runs, ["setup"], ["optimizer.lr"], select_seed=seed)


def seeded_specs(exp, specs: list, table: pd.DataFrame) -> list:
    """Each arm's best LR with every seed in `settings.seeds_at_best`."""
    table = table.assign(setup=accumulation_setup(table))
    best = best_specs(specs, table, best_arms(table, exp.base.seed), ["setup"], ["optimizer.lr"])
    return reseeded(best, [s.hash for s in best], exp.settings["seeds_at_best"])


def memory_specs(exp, optimizers: list[str], batch_sizes: list[int]) -> list:
    """Two-step runs of each optimizer at each batch size, on the experiment's model: only their measured
    memory is used. SGD is the paper's vanilla SGD (no momentum buffer)."""
    T = exp.base.data.seq_len
    return [
        exp.base.replace(**{"optimizer.name": o, "optimizer.beta1": 0.0 if o == "sgd" else exp.base.optimizer.beta1,
                            "batch_size": b, "micro_batch_size": None, "tokens": 2 * b * T,
                            "log_every_tokens": b * T, "eval_every_tokens": 2 * b * T})
        for o in optimizers for b in batch_sizes
    ]


def memory_claims(memory: pd.DataFrame) -> list[dict]:
    """Savings of SGD and Adafactor over AdamW at each batch size, in both accountings."""
    m = memory[memory["micro_batch_size"] == memory["batch_size"]].set_index(["optimizer", "batch_size"])
    small = m.index.get_level_values("batch_size").min()
    large = m.index.get_level_values("batch_size").max()

    def saving(opt, b, col):
        return 1 - m.loc[(opt, b), col] / m.loc[("adamw", b), col]

    measured = "; ".join(
        f"{plots.optimizer_label(o)} saves {saving(o, small, 'total'):.0%} at B={small} ({saving(o, small, 'total_fused'):.0%} fused), "
        f"{saving(o, large, 'total'):.0%} at B={large}"
        for o in ("sgd", "adafactor") if (o, small) in m.index and (o, large) in m.index
    )
    small_savings = [saving(o, small, "total") for o in ("sgd", "adafactor") if (o, small) in m.index]
    measurement = {"value": float(min(small_savings))} if small_savings else {"untestable": "no SGD or Adafactor run at the smallest batch size"}
    return [claim("marek.memory.lean_optimizers_save_memory",
                  measured + " (savings relative to AdamW as trained; 'fused' drops the gradients as the paper's accounting does; "
                  "the verdict reads the smaller of the two savings at the smallest batch size)", measurement)]


def accumulation_claims(best: pd.DataFrame, runs: pd.DataFrame, memory: pd.DataFrame) -> list[dict]:
    """Gradient accumulation: same loss as the large batch it emulates, no better per FLOP than the small
    batch it is made of, and a gradient buffer the small batch does not need. `runs` carries a `setup`
    column (`accumulation_setup`); every seed of each arm's best LR is compared."""
    cells = best_cell_runs(runs, best, ["setup"], ["optimizer.lr"])
    loss = lambda arm: cells[(arm,)]["final_val_loss"] if (arm,) in cells else pd.Series(dtype=float)
    steps = lambda *arms: [s for a in arms if (a,) in cells for s in trained_steps(cells[(a,)])]
    large, acc, small = "large batch", "large batch by accumulation", "small batch"
    same = compare(loss(acc), loss(large))
    no_benefit = compare(loss(acc), loss(small), steps(acc, small))
    if edges := grid_edges(best[best["setup"].isin([acc, small])], ["setup"], {"optimizer.lr": "LR"}):
        no_benefit["edges"] = edges  # an arm's best LR on the grid edge: its loss is only a bound
    mem = memory.set_index("setup")
    buffer = mem.loc[acc, "gradients"]
    identical = {"value": abs(same["difference"])} if same["difference"] is not None else {"untestable": "an arm has no finite loss"}
    return [
        claim("marek.memory.accumulation_matches_large_batch",
              f"mean best loss {same['a']:.4f} with accumulation vs {same['b']:.4f} at the same batch size without "
              f"({same['n_seeds']} seed(s) each, the same seeds)", identical),
        claim("marek.memory.accumulation_no_flop_benefit",
              f"mean best loss {no_benefit['b']:.4f} at the small batch vs {no_benefit['a']:.4f} accumulated, at equal tokens and FLOPs", no_benefit),
        claim("marek.memory.accumulation_needs_gradient_buffer",
              f"gradient buffer {buffer:.2f} MiB per run (one copy of the parameters); peak as trained here "
              f"{mem.loc[acc, 'total']:.2f} MiB accumulated vs {mem.loc[small, 'total']:.2f} MiB small batch",
              {"value": float(buffer / mem.loc[acc, "parameters"]) if "parameters" in mem else None,
               "untestable": "this workbook keeps gradients with and without accumulation (no update fused into the backward "
                             "pass), so the memory small-batch training saves is an accounting here, not a measurement"}),
    ]


def accumulation_setup(runs: pd.DataFrame) -> pd.Series:
    """Names the three arms of the accumulation experiment from batch size and micro-batch size."""
    largest = runs["batch_size"].max()
    micro = runs["micro_batch_size"].fillna(runs["batch_size"])
    return pd.Series(np.select([micro < runs["batch_size"], runs["batch_size"] == largest], ["large batch by accumulation", "large batch"], "small batch"),
                     index=runs.index)


# The paper's memory accounting for GPT-3 13B (utils/memory_plot.ipynb, ../shared/papers/marek.md): width 5140,
# 40 layers, sequences of 2048 tokens, a 50257-token vocabulary, every number in bf16 (2 bytes); the activations
# of one sequence counted as T (L D + V) numbers (rematerialisation assumed).
GPT3_13B = {"width": 5140, "depth": 40, "seq_len": 2048, "vocab_size": 50257, "bytes_per_number": 2}
GPU_MEMORY_GB = {"A100 40 GB": 40, "H100 80 GB": 80}


def paper_scale_memory(batch_sizes, model: dict = GPT3_13B) -> pd.DataFrame:
    """Memory of training `model` at each batch size by optimizer, in GB, from the paper's accounting: the
    weights, the optimizer state (AdamW two moments; Muon one moment, and a second for the embeddings it leaves
    to Adam; Adafactor a factored second moment, rows + columns per matrix, 0.008 GB where the paper counts
    0.072 GB, either under 0.3 % of the total; SGD none) and B sequences of
    activations. No gradient buffer (each gradient is applied as it is computed, the fused step); gradient
    accumulation adds one (the weights' size) and holds one micro-batch of activations instead of B. The
    paper's measured framework overhead (1.2-2.2 GB) is left out."""
    d, layers, t, v = model["width"], model["depth"], model["seq_len"], model["vocab_size"]
    counts = count_parameters(ModelConfig(width=d, depth=layers), v)
    gb = model["bytes_per_number"] / 1e9
    weights = counts["total"] * gb
    factored = (layers * (4 * 2 * d + 2 * (d + 4 * d)) + 2 * (v + d)) * gb  # 4 D x D attention, 2 D x 4D MLP, 2 V x D embeddings
    state = {"sgd": 0.0, "adafactor": factored, "muon": weights + counts["embedding"] * gb, "adamw": 2 * weights,
             "adamw, accumulation": 3 * weights}
    per_sequence = t * (layers * d + v) * gb
    rows = []
    for name, s in state.items():
        for b in (b for b in batch_sizes if b > 1 or "accumulation" not in name):  # at B = 1 there is nothing to accumulate
            activations = per_sequence * (1 if "accumulation" in name else b)
            rows.append({"optimizer": name, "batch_size": int(b), "weights_gb": weights, "state_gb": s, "activations_gb": activations,
                         "total_gb": weights + s + activations})
    return pd.DataFrame(rows)


def paper_scale_memory_figure(memory: pd.DataFrame):
    """Total memory against batch size per optimizer for the paper's 13B model, with the two GPU sizes the
    paper draws: which optimizers fit a batch of B sequences at all, and how soon activations dominate."""
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    close = memory.pivot(index="batch_size", columns="optimizer", values="total_gb")
    for name, g in memory.groupby("optimizer", sort=False):
        key = name.split(",")[0]
        words = " with accumulation (micro-batch 1)" if "accumulation" in name else ""
        under = [o for o in close if o != name and np.allclose(close[o], close[name], rtol=0.01)]  # lines that coincide
        if under and name == "sgd":
            words += f" (on {plots.optimizer_label(under[0])}'s line)"
        ax.plot(g["batch_size"], g["total_gb"], "--" if "accumulation" in name else ":" if name == "sgd" else "-",  # computed: no markers
                lw=2 if name == "sgd" else 1.5, zorder=3 if name == "sgd" else 2, color=plots.optimizer_colour(key),
                label=plots.optimizer_label(key) + words)
    for words, gb in GPU_MEMORY_GB.items():
        ax.axhline(gb, color=plots.PAPER_COLOUR, ls=":", lw=1)
        ax.annotate(words, (1, gb), xycoords=("axes fraction", "data"), xytext=(-3, 3), textcoords="offset points", ha="right", fontsize=7)
    plots.batch_axis(ax, memory["batch_size"])
    ax.set_ylabel("training memory (GB, bf16)")
    ax.legend(fontsize=7, loc="upper left")
    m = GPT3_13B
    ax.set_title(f"GPT-3 13B (width {m['width']}, {m['depth']} layers, sequences of {m['seq_len']}): the paper's accounting, no training",
                 fontsize=8)
    fig.text(0.01, -0.01, "Computed, not measured. Left out: the paper's measured framework overhead (1.2-2.2 GB per optimizer). "
             "Adafactor's factored state counted as rows + columns per matrix (0.008 GB; the paper: 0.072 GB).", fontsize=7, ha="left",
             va="top", wrap=True)
    fig.tight_layout()
    return fig
