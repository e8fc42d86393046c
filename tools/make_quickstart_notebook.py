"""Writes notebooks/quickstart.ipynb (kept as a script so the notebook's source diffs cleanly)."""

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md(
        "# Quickstart: the reference model at two batch sizes\n\n"
        "This notebook trains the workbook's reference GPT (pre-norm, RMSNorm without scale, QK-norm, RoPE, "
        "GELU MLP, untied embeddings, after Marek et al.'s code) on the Shakespeare corpus at two batch sizes "
        "with the same token budget, and draws their loss curves. It is the end-to-end check of the pipeline: "
        "params.yaml -> sweep -> store -> table and figure.\n\n"
        "**Scale.** On the `cpu` profile this is a one-minute demo: a 0.33 M non-embedding-parameter model (the `nano` "
        "preset: width 96, depth 3), a 2048-token BPE, sequences of 128 tokens and 250 k training tokens per run; the "
        "papers train 30 M-1.2 B parameter models on 0.6-25 B tokens of web text. The `smoke` profile is smaller still "
        "and only proves the plumbing. The cell below states the exact spec."
    ),
    code('profile = "cpu"  # smoke | cpu | gpu', metadata={"tags": ["parameters"]}),
    code(
        "from replication.config import experiment, load_params\n"
        "from replication.notebook import setup, show_spec\n"
        "from replication.sweep import run_experiment\n"
        "from replication import plots\n\n"
        "setup(profile)\n"
        'exp = experiment(load_params("params.yaml"), "quickstart", profile)\n'
        "show_spec(exp)"
    ),
    md("Train (or read back from `results/<profile>/quickstart/`) every run of the grid:"),
    code(
        "runs = run_experiment(exp, progress=False)\n"
        'runs[["optimizer.name", "batch_size", "optimizer.lr", "steps", "tokens", "status", "final_val_loss", "best_val_loss"]].round(4)'
    ),
    code(
        "# NBVAL_IGNORE_OUTPUT  (timings differ from machine to machine)\n"
        'runs.assign(tokens_per_s=runs.tokens / runs.wall_time_s)[["batch_size", "wall_time_s", "tokens_per_s", "peak_memory_mb"]].round(1)'
    ),
    code(
        "from replication.store import Store\n\n"
        "records = Store(\"results\", profile, exp.name).records()\n"
        "records = sorted((r for r in records if r['id'] in set(runs.id)), key=lambda r: r['spec']['batch_size'])\n"
        "ax = plots.loss_curves(records)\n"
        'ax.set_title(f"Reference GPT on Shakespeare, {exp.base.tokens:,} tokens")\n'
        'figure_path = plots.save(ax.figure, "figures/quickstart/loss_curves.png", plots.curves_frame(records))'
    ),
    md("## What this shows"),
    code(
        "from replication.notebook import quickstart_summary, write_metrics\n\n"
        'write_metrics("metrics/quickstart.json", {"profile": profile, "runs": runs[["batch_size", "steps", "tokens", "final_val_loss"]]})\n'
        "quickstart_summary(runs)"
    ),
]
nb = nbf.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
nbf.write(nb, "notebooks/quickstart.ipynb")
