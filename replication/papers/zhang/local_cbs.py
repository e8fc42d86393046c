"""Beyond the paper, Merrill et al. 2025 ("Critical Batch Size Revisited"): the local critical batch size
over training, measured by branching, and a batch-size warmup that follows it (notebook `zhang_local_cbs`).

The reference run trains at a small batch size. At each branch point t (tokens), branches restart from its
weights at several batch sizes (LR x sqrt(B / B_ref), Adam's rule) for a fixed window of tokens; the local
CBS at t is the largest batch size whose branch loss stays within `tolerance` of the B_ref branch. Every
branch restarts the optimizer (our runs share weights, not optimizer state, through `init_from`), the
B_ref branch included, so each comparison is like for like. The warmup arm then trains in stages between
branch points at the measured local CBS; the constant arm in the same stages at B_ref; the large arm, the
control, at `control_batch_size` from the first stage on, the batch size a practitioner would pick to save
steps (every arm restarts the optimizer at every stage). Reported: optimizer steps and final loss of each arm.

The tolerance the local CBS reads is at least two standard errors of the gap it thresholds (a branch's mean
loss minus the reference batch size's; the configured `tolerance` is its floor): a finer one would move the
local CBS with the seeds. Every branch trains
for at least 250 optimizer steps (the window is sized for the largest batch size), so no cell under the
project's minimum decides; a local CBS at the largest batch size of the grid is only a lower bound.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication import plots
from replication.claims import claim
from replication.papers.zhang import protocol
from replication.spec import ConfigError, RunSpec
from replication.deadline import deadline_or_stage, expired
from replication.experiments import stored
from replication.store import weights_file
from replication.verdicts import DRAWS, compare

_KEYS = ("reference_batch_size", "base_lr", "lr_scaling", "warmup_tokens", "branch_points", "window_tokens",
         "branch_batch_sizes", "branch_warmup_tokens", "tolerance", "seeds", "total_tokens", "control_batch_size")
ARMS = ("constant", "warmup", "large")  # B_ref throughout; the local CBS of each stage; control_batch_size throughout


def _settings(exp) -> dict:
    s = exp.checked_settings(_KEYS)
    if sorted(s["branch_points"]) != list(s["branch_points"]) or s["branch_points"][-1] >= s["total_tokens"]:
        raise ConfigError(f"experiments.{exp.name}.settings.branch_points: must increase and end before total_tokens")
    return s


def lr(s: dict, batch_size: int) -> float:
    return protocol.scaled_lr(s["base_lr"], batch_size, s["reference_batch_size"], s["lr_scaling"])


def _root(exp, results_root) -> str:
    return str(stored(exp, results_root).root)


def prefix_specs(exp) -> list[RunSpec]:
    """The reference run up to each branch point (seed 0): its final weights are the branch's start."""
    s = _settings(exp)
    b = s["reference_batch_size"]
    return [exp.derived({"batch_size": b, "optimizer.lr": lr(s, b), "tokens": t, "seed": s["seeds"][0],
                         "schedule.warmup_fraction": min(s["warmup_tokens"] / t, 0.5)}, "settings.branch_points") for t in s["branch_points"]]


def _continuation(exp, start: RunSpec, batch_size: int, tokens: int, seed: int, results_root) -> RunSpec:
    s = _settings(exp)
    tokens = max(tokens // (batch_size * exp.base.data.seq_len), 1) * batch_size * exp.base.data.seq_len
    return exp.derived({"batch_size": batch_size, "optimizer.lr": lr(s, batch_size), "tokens": tokens, "seed": seed,
                        "schedule.warmup_fraction": min(s["branch_warmup_tokens"] / tokens, 0.5),
                        "init_from": str(weights_file(_root(exp, results_root), start.hash))}, "settings")


def branch_specs(exp, results_root) -> list[RunSpec]:
    s = _settings(exp)
    return [_continuation(exp, p, b, s["window_tokens"], seed, results_root)
            for p in prefix_specs(exp) for b in s["branch_batch_sizes"] for seed in s["seeds"]]


def branch_table(exp, results_root="results") -> pd.DataFrame | None:
    """Per branch: the branch point, batch size, seed, final loss and steps (None while a branch is missing)."""
    s = _settings(exp)
    store = stored(exp, results_root)
    rows = []
    points = {str(weights_file(_root(exp, results_root), p.hash)): t for p, t in zip(prefix_specs(exp), s["branch_points"])}
    for spec in branch_specs(exp, results_root):
        r = store.read(spec.hash)
        if r is None:
            return None
        rows.append({"branch_tokens": points[spec.init_from], "batch_size": spec.batch_size, "seed": spec.seed,
                     "final_val_loss": r["final_val_loss"], "steps": r["steps"], "status": r["status"]})
    return pd.DataFrame(rows)


def local_cbs(branches: pd.DataFrame, tolerance: float, reference_batch_size: int) -> pd.DataFrame:
    """Per branch point: the largest batch size whose mean branch loss is within `tolerance` of the
    reference batch size's (a diverged branch is beyond it), with the gap of every batch size."""
    if branches is None:  # branch_table's answer while a branch is missing
        raise FileNotFoundError("zhang_local_cbs: some branch runs are not stored yet, and the local CBS compares every "
                                "batch size at every branch point; run the stage again to train them (finished runs are kept)")
    rows = []
    for t, g in branches.groupby("branch_tokens"):
        means = g.groupby("batch_size")["final_val_loss"].mean()
        ref = means.loc[reference_batch_size]
        ok = [b for b, v in means.items() if np.isfinite(v) and v <= ref + tolerance]
        rows.append({"branch_tokens": t, "local_cbs": max(ok), "censored": max(ok) == means.index.max(), "reference_loss": ref,
                     "tolerance": tolerance, **{f"gap_B{b}": v - ref for b, v in means.items()}})
    return pd.DataFrame(rows)


def two_standard_errors(branches: pd.DataFrame, reference_batch_size: int) -> float:
    """Two standard errors of a gap the local CBS thresholds (a branch's mean loss minus the reference batch
    size's at the same branch point), the median over branches."""
    cells = branches.groupby(["branch_tokens", "batch_size"])["final_val_loss"]
    u = (cells.var() / cells.count()).rename("u").reset_index()
    ref = u[u["batch_size"] == reference_batch_size].set_index("branch_tokens")["u"]
    others = u[u["batch_size"] != reference_batch_size]
    gaps = 2 * np.sqrt(others["u"].to_numpy() + ref.loc[others["branch_tokens"]].to_numpy())
    return float(np.median(gaps)) if len(gaps) else float("nan")


def tolerance(branches: pd.DataFrame, floor: float, reference_batch_size: int) -> float:
    """The tolerance the local CBS reads: `two_standard_errors`, or `floor` where that is larger. A finer
    tolerance would let a reseed move the local CBS."""
    two_se = two_standard_errors(branches, reference_batch_size)
    return max(floor, two_se) if np.isfinite(two_se) else floor


def measured_cbs(exp, branches: pd.DataFrame) -> pd.DataFrame:
    """`local_cbs` at the tolerance `tolerance` gives these branches (what the warmup arm follows), with the
    two standard errors it was set from."""
    s = _settings(exp)
    ref = s["reference_batch_size"]
    return local_cbs(branches, tolerance(branches, s["tolerance"], ref), ref).assign(two_se=two_standard_errors(branches, ref))


def tolerance_words(cbs: pd.DataFrame, floor: float) -> str:
    """How the tolerance was set: 2 SE of a gap, or the floor where that is larger."""
    tol, two_se = float(cbs["tolerance"].iloc[0]), float(cbs["two_se"].iloc[0])
    return f"{tol:.3f} = max(2 SE of a gap {two_se:.3f}, floor {floor})"


def arm_specs(exp, cbs: pd.DataFrame, results_root) -> dict[str, list[list[RunSpec]]]:
    """Per arm and seed, the chain of stages from the first branch point to total_tokens: each stage starts
    from the previous stage's weights; its batch size is B_ref (constant), the local CBS at its start (warmup)
    or control_batch_size (large)."""
    s = _settings(exp)
    points = list(s["branch_points"])
    ends = points[1:] + [s["total_tokens"]]
    first = prefix_specs(exp)[0]
    by_point = dict(zip(cbs["branch_tokens"], cbs["local_cbs"]))
    arms = {}
    for arm in ARMS:
        chains = []
        for seed in s["seeds"]:
            chain, start = [], first
            for t0, t1 in zip(points, ends):
                b = {"constant": s["reference_batch_size"], "warmup": int(by_point[t0]), "large": s["control_batch_size"]}[arm]
                spec = _continuation(exp, start, b, t1 - t0, seed, results_root)
                chain.append(spec)
                start = spec
            chains.append(chain)
        arms[arm] = chains
    return arms


def runs(exp, params: dict, results_root="results") -> list[RunSpec]:
    """Prefixes, branches, then each arm's chain stage by stage (a stage appears once the one before it is stored)."""
    s = _settings(exp)
    store = stored(exp, results_root)
    specs = prefix_specs(exp)
    if not store.has_all(specs):
        return specs
    specs += branch_specs(exp, results_root)
    branches = branch_table(exp, results_root)
    if branches is None:
        return specs
    for chains in arm_specs(exp, measured_cbs(exp, branches), results_root).values():
        for chain in chains:
            for stage in chain:
                specs.append(stage)
                if store.needs_run(stage):
                    break
    return list(dict.fromkeys(specs))


def train(exp, missing: list[RunSpec], results_root="results", **kwargs) -> None:
    """Train `missing`, making each weights file a run starts from first: a prefix or an earlier stage whose
    record exists but whose weights (a cache, not committed) do not is retrained with its weights saved."""
    from replication import runner  # training imports torch; declaring this topic's runs does not

    store = stored(exp, results_root)
    producers = {str(weights_file(store.root, x.hash)): x for x in runs(exp, {}, results_root) + missing}
    deadline = deadline_or_stage(kwargs.get("deadline"))

    def ensure(path: str) -> None:
        if expired(deadline):  # a bounded sweep's time is up: remake no weights either
            return
        producer = producers.get(path)
        if producer is None:
            raise FileNotFoundError(f"{exp.name}: no run of this experiment writes {path}")
        if not weights_file(store.root, producer.hash).is_file():
            if producer.init_from:
                ensure(producer.init_from)
            if store.needs_run(producer):
                runner.run_specs([producer], store, save_weights=True, **kwargs)
            else:  # its record stands; only the weights are remade (training is deterministic)
                runner.remake_weights([producer], store)

    for path in dict.fromkeys(x.init_from for x in missing if x.init_from):
        ensure(path)
    runner.run_specs(missing, store, save_weights=True, **kwargs)


def arm_table(exp, results_root="results") -> pd.DataFrame | None:
    """Per arm and seed: the batch size of each stage, total optimizer steps and final loss (None while incomplete)."""
    s = _settings(exp)
    store = stored(exp, results_root)
    branches = branch_table(exp, results_root)
    if branches is None:
        return None
    rows = []
    for arm, chains in arm_specs(exp, measured_cbs(exp, branches), results_root).items():
        for seed, chain in zip(s["seeds"], chains):
            records = [store.read(x.hash) for x in chain]
            if any(r is None for r in records):
                return None
            rows.append({"arm": arm, "seed": seed, "batch_sizes": "-".join(str(x.batch_size) for x in chain),
                         "steps": sum(r["steps"] for r in records), "final_val_loss": records[-1]["final_val_loss"],
                         "status": "ok" if all(r["status"] == "ok" for r in records) else "diverged"})
    return pd.DataFrame(rows)


def rise_draws(branches: pd.DataFrame, s: dict, tolerance_: float, draws: int = DRAWS, seed: int = 0) -> list[float]:
    """log2(local CBS at the last branch point / at the first) with the seeds of every (branch point, batch size)
    resampled, at the tolerance of the measurement: a local CBS read from means that a reseed can move by a grid
    step does not count as a rise. On arrays: one draw is a table of cell means, not a frame."""
    rng = np.random.default_rng(seed)
    keys, cells = zip(*((key, g["final_val_loss"].to_numpy(float)) for key, g in branches.groupby(["branch_tokens", "batch_size"])))
    points, sizes = sorted({t for t, _ in keys}), sorted({b for _, b in keys})
    at = [(points.index(t), sizes.index(b)) for t, b in keys]
    ref = sizes.index(s["reference_batch_size"])
    out = []
    for _ in range(draws):
        means = np.full((len(points), len(sizes)), np.nan)
        for (i, j), v in zip(at, cells):
            means[i, j] = v[rng.integers(0, len(v), len(v))].mean()
        within = np.isfinite(means) & (means <= means[:, [ref]] + tolerance_)
        cbs = [max(b for b, ok in zip(sizes, row) if ok) for row in within]
        out.append(float(np.log2(cbs[-1] / cbs[0])))
    return out


def claims(exp, cbs: pd.DataFrame, arms: pd.DataFrame, branches: pd.DataFrame) -> list[dict]:
    s = _settings(exp)
    first, last = cbs.iloc[0], cbs.iloc[-1]
    tol = float(cbs["tolerance"].iloc[0])
    seeds = int(branches.groupby(["branch_tokens", "batch_size"])["seed"].nunique().min())
    top = max(s["branch_batch_sizes"])
    if first["censored"]:  # the starting CBS is a lower bound: no rise can be read from it
        rises = {"untestable": f"the local CBS at the first branch point is the largest batch size of the grid ({top}), so only a lower "
                               f"bound; branches at batch sizes above {top} (window of at least 250 steps each: "
                               f"{250 * 2 * top * exp.base.data.seq_len:,} tokens at B = {2 * top}) would bound it"}
    else:
        rises = {"estimate": float(np.log2(last["local_cbs"] / first["local_cbs"])), "draws": rise_draws(branches, s, tol),
                 "min_steps": int(branches["steps"].min()), "n_seeds": seeds,
                 # a local CBS describes the training around its branch point only while the window is short against it
                 "regime": {"window_over_branch_point": s["window_tokens"] / min(s["branch_points"])}}
    arm = {name: arms[arms["arm"] == name] for name in ARMS}
    saved = 1 - arm["warmup"]["steps"].mean() / arm["constant"]["steps"].mean()
    loss = compare(arm["warmup"]["final_val_loss"], arm["constant"]["final_val_loss"], list(arm["constant"]["steps"]))
    control = compare(arm["warmup"]["final_val_loss"], arm["large"]["final_val_loss"], list(arm["warmup"]["steps"]) + list(arm["large"]["steps"]))
    start = int(first["local_cbs"])
    if start >= s["control_batch_size"]:  # the warmup starts at the control's batch size: the arms differ only later on
        control = {**control, "untestable": f"the warmup arm's first stage runs at the local CBS of the first branch point ({start}), already the "
                                 f"control's batch size ({s['control_batch_size']}): the two arms share their early stages, so following "
                                 "a small early CBS is never tested; a first branch point where the local CBS is below the control's "
                                 "batch size (earlier in training, or a larger control) would test it"}
    bound = lambda row: " (a lower bound: the grid's largest)" if row["censored"] else ""  # noqa: E731
    return [
        claim("zhang.local_cbs.rises_over_training",
              f"local CBS {int(first['local_cbs'])}{bound(first)} at {int(first['branch_tokens']):,} tokens -> {int(last['local_cbs'])}"
              f"{bound(last)} at {int(last['branch_tokens']):,} (largest B within {tolerance_words(cbs, s['tolerance'])} nats of "
              f"B={s['reference_batch_size']}, {seeds} seeds a branch)", rises),
        claim("zhang.local_cbs.batch_size_warmup_saves_steps",
              f"warmup arm: {saved:.0%} fewer optimizer steps, final loss {loss['difference']:+.3f} vs the constant batch",
              {"parts": {"fewer_steps": {"value": float(saved), "min_steps": int(min(arm["warmup"]["steps"].min(), arm["constant"]["steps"].min()))},
                         "same_loss": loss}}),
        claim("zhang.local_cbs.warmup_beats_constant_large",
              f"final loss, warmup arm ({arm['warmup']['batch_sizes'].iloc[0]}, {arm['warmup']['steps'].mean():.0f} steps) minus the "
              f"constant B={s['control_batch_size']} arm ({arm['large']['steps'].mean():.0f} steps) at equal tokens: "
              + (f"{control['difference']:+.3f}" if control.get("difference") is not None else "no comparison (both arms diverged)"), control),
    ]


def figure(exp, cbs: pd.DataFrame, branches: pd.DataFrame, arms: pd.DataFrame):
    s = _settings(exp)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for i, (t, g) in enumerate(branches.groupby("branch_tokens")):
        stats = g.groupby("batch_size")["final_val_loss"].agg(["mean", "std", "count"])
        ref = stats.loc[s["reference_batch_size"], "mean"]
        ax.errorbar(stats.index, stats["mean"] - ref, yerr=plots.t_interval(stats["std"] / np.sqrt(stats["count"]), stats["count"]), fmt="o-",
                    ms=3, capsize=2, color=plots.ordinal_colour(i, len(cbs)), label=f"branch at {int(t):,} tokens")
    tol = float(cbs["tolerance"].iloc[0])
    ax.axhline(tol, color=plots.PAPER_COLOUR, ls="--", lw=0.8, label=f"tolerance {tolerance_words(cbs, s['tolerance'])}")
    ax.set(xscale="log", xlabel="branch batch size", ylabel=f"branch loss - loss at B={s['reference_batch_size']}")
    plots.log_ticks(ax, s["branch_batch_sizes"])
    ax.set_title(f"Branches of {s['window_tokens']:,} tokens ({plots.ERROR_BARS})", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot(cbs["branch_tokens"], cbs["local_cbs"], "-", color=plots.FIT_COLOUR)
    for censored, g in cbs.groupby("censored"):
        ax.plot(g["branch_tokens"], g["local_cbs"], color=plots.FIT_COLOUR, ls="none", **plots.MARKERS["edge" if censored else "cell"],
                label=plots.MARKER_WORDS["edge"] + " (a lower bound)" if censored else None)
    if cbs["censored"].any():
        ax.legend(fontsize=7)
    ax.set(xscale="log", yscale="log", xlabel="tokens of the reference run", ylabel="local critical batch size")
    plots.log_ticks(ax, cbs["branch_tokens"])
    plots.log_ticks(ax, s["branch_batch_sizes"], axis="y")
    ax.set_title("Local CBS over training", fontsize=9)
    ax = axes[2]
    for i, arm in enumerate(ARMS):
        g = arms[arms["arm"] == arm]
        ax.plot(g["steps"], g["final_val_loss"], "o", color=plots.series_colour(i), label=f"{arm}: B = {g['batch_sizes'].iloc[0]}")
    ax.set(xscale="log", xlabel="optimizer steps (all stages)", ylabel="final validation loss")
    plots.log_ticks(ax, arms["steps"])
    ax.set_title("Batch-size warmup against a constant small and a constant large batch, equal tokens (per seed)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def caveats(branches: pd.DataFrame, cbs: pd.DataFrame) -> list[str]:
    """Branches whose window is fewer than 250 optimizer steps (they set the local CBS but decide no verdict),
    and local CBS at the largest batch size of the grid (a lower bound)."""
    out = []
    short = sorted(int(b) for b, s in branches.groupby("batch_size")["steps"].min().items() if s < 250)
    if short:
        out.append(f"Branches at batch size(s) {', '.join(map(str, short))} train for fewer than 250 steps in their window: "
                   "they set the local CBS but decide no verdict on their own.")
    censored = [f"{int(t):,}" for t in cbs.loc[cbs["censored"], "branch_tokens"]]
    if censored:
        out.append(f"At branch point(s) {', '.join(censored)} tokens every batch size of the grid keeps up: the local CBS there is the "
                   f"grid's largest ({int(branches['batch_size'].max())}), a lower bound.")
    return out
