"""Zhang et al.'s ablations at one model: a constant LR evaluated on an exponential weight average (EWA)
against tuned cosine and WSD at equal tokens, and the optimal EWA decay and beta2 against batch size
(notebook `zhang_ewa`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication import plots
from replication.claims import claim, grid_edges
from replication.fit import argmin_log_parabola, best_per_group, trained_steps
from replication.papers.zhang import protocol
from replication.sizes import count_parameters
from replication.spec import RunSpec
from replication.experiments import stored, table
from replication.verdicts import bootstrap, cell_losses, compare, seed_values

_KEYS = ("schedule_batch_sizes", "schedules", "lr_multipliers", "max_extension", "optimum_batch_sizes", "ewa_half_life_multipliers",
         "beta2_half_life_multipliers", "reference_batch_size", "base_lr", "lr_scaling", "ewa_half_life_tokens", "seeds")
GRID_KEYS = ["schedule.name", "ewa_decay", "optimizer.beta2_half_life_tokens"]
TABLE_KEYS = GRID_KEYS  # the run table shows what tells the EWA, beta2 and schedule sweeps apart


def _settings(exp) -> dict:
    return exp.checked_settings(_KEYS)


def lr(s: dict, batch_size: int, multiplier: float = 1.0) -> float:
    return protocol.scaled_lr(s["base_lr"], batch_size, s["reference_batch_size"], s["lr_scaling"], multiplier)


def ewa_decay(exp, batch_size: int, half_life_tokens: float) -> float:
    return protocol.ewa_decay(batch_size, exp.base.data.seq_len, half_life_tokens)


def _spec(exp, batch_size: int, lr_: float, schedule: str, seed: int, ewa_half_life: float | None, beta2_half_life: float) -> RunSpec:
    keys = {"batch_size": batch_size, "optimizer.lr": lr_, "schedule.name": schedule, "seed": seed,
            "ewa_decay": ewa_decay(exp, batch_size, ewa_half_life) if ewa_half_life else None,
            "optimizer.beta2_half_life_tokens": beta2_half_life}
    return exp.derived(keys, "settings")


def schedule_specs(exp, seed: int) -> list[RunSpec]:
    """Each schedule at each batch size over the configured LR grid (`tuned_grid` grows it past its edges); the
    constant LR evaluated on the EWA, cosine and WSD on the weights themselves (as Zhang et al. compare them)."""
    s = _settings(exp)
    return [schedule_spec(exp, b, name, k, seed) for b in s["schedule_batch_sizes"] for name in s["schedules"] for k in s["lr_multipliers"]]


def schedule_spec(exp, batch_size: int, schedule: str, multiplier: float, seed: int) -> RunSpec:
    """One cell of the schedule comparison: the rule's LR x `multiplier`, the default beta2, and (constant LR)
    the EWA at its default half-life."""
    s = _settings(exp)
    return _spec(exp, batch_size, lr(s, batch_size, multiplier), schedule, seed, s["ewa_half_life_tokens"] if schedule == "constant" else None,
                 exp.base.optimizer.beta2_half_life_tokens)


def optimum_specs(exp) -> list[RunSpec]:
    """The EWA half-life sweep and the beta2 half-life sweep at each batch size (constant LR, LR x sqrt(B)), every seed."""
    s = _settings(exp)
    beta2, h = exp.base.optimizer.beta2_half_life_tokens, s["ewa_half_life_tokens"]
    out = []
    for b in s["optimum_batch_sizes"]:
        for seed in s["seeds"]:
            out += [_spec(exp, b, lr(s, b), "constant", seed, h * k, beta2) for k in s["ewa_half_life_multipliers"]]
            out += [_spec(exp, b, lr(s, b), "constant", seed, h, beta2 * k) for k in s["beta2_half_life_multipliers"]]
    return out


def _multiplier(s: dict, row) -> float:
    return round(row["optimizer.lr"] / lr(s, row["batch_size"]), 4)


def schedule_runs(exp, runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of the schedule comparison: its batch sizes, the default beta2 and (constant LR) EWA half-life."""
    s = _settings(exp)
    beta2 = exp.base.optimizer.beta2_half_life_tokens
    ewa = runs["ewa_decay"].astype(float)
    h = np.where(ewa > 0, runs["batch_size"] * exp.base.data.seq_len * np.log(0.5) / np.log(ewa.where(ewa > 0, 0.5)), np.nan)
    keep = (runs["batch_size"].isin(s["schedule_batch_sizes"]) & np.isclose(runs["optimizer.beta2_half_life_tokens"], beta2)
            & ((runs["schedule.name"] != "constant") | np.isclose(h, s["ewa_half_life_tokens"], rtol=1e-3)))
    return runs[keep]


def best_schedule_cells(exp, runs: pd.DataFrame) -> pd.DataFrame:
    """Per (batch size, schedule): the LR multiplier with the lowest final loss at the first seed."""
    s = _settings(exp)
    runs = schedule_runs(exp, runs)
    first = runs[runs["seed"] == s["seeds"][0]].assign(multiplier=lambda t: t.apply(lambda r: _multiplier(s, r), axis=1))
    first = first.assign(loss=first["final_val_loss"].fillna(np.inf)).sort_values(["loss", "multiplier"])
    return first.groupby(["batch_size", "schedule.name"], as_index=False).first()[["batch_size", "schedule.name", "multiplier", "loss"]]


def tuned_grid(exp, store, seed: int) -> list[RunSpec]:
    """The schedule grid at `seed`, grown past its edges: where a (batch size, schedule)'s best LR multiplier is
    the largest (smallest) tried, the next factor of 2 above (below) is added, up to `max_extension` steps a
    side, so that each schedule is compared at an LR tuned inside its grid. Returns what to train next while a
    run of it is not stored."""
    s = _settings(exp)
    grid = schedule_specs(exp, seed)
    limit = (min(s["lr_multipliers"]) / 2 ** s["max_extension"], max(s["lr_multipliers"]) * 2 ** s["max_extension"])
    while store.has_all(grid):
        tried = table([store.read(x.hash) for x in grid], GRID_KEYS).assign(multiplier=lambda t: t.apply(lambda r: _multiplier(s, r), axis=1))
        more = []
        for _, row in best_schedule_cells(exp, tried).iterrows():
            b, name, k = row["batch_size"], row["schedule.name"], row["multiplier"]
            mine = tried[(tried["batch_size"] == b) & (tried["schedule.name"] == name)]["multiplier"]
            for edge, step, bound in ((mine.max(), 2.0, limit[1]), (mine.min(), 0.5, limit[0])):
                if np.isclose(k, edge) and (k * step <= bound if step > 1 else k * step >= bound):
                    more.append(schedule_spec(exp, b, name, k * step, seed))
        if not more:
            return grid
        grid = list(dict.fromkeys(grid + more))
    return grid


def runs(exp, params: dict, results_root="results") -> list[RunSpec]:
    """The schedule grid (first seed, grown past the edge where a schedule's best LR sits on it), then the other
    seeds at each (batch size, schedule)'s best LR; the optimum sweeps."""
    s = _settings(exp)
    store = stored(exp, results_root)
    grid = tuned_grid(exp, store, s["seeds"][0])
    specs = grid + optimum_specs(exp)
    if not store.has_all(grid):
        return specs
    best = best_schedule_cells(exp, table([store.read(x.hash) for x in grid], GRID_KEYS))
    cells = {(r["batch_size"], r["schedule.name"], r["multiplier"]) for _, r in best.iterrows()}
    for seed in s["seeds"][1:]:
        specs += [schedule_spec(exp, b, name, k, seed) for b, name, k in sorted(cells)]
    return list(dict.fromkeys(specs))


def frame(exp, runs_: pd.DataFrame) -> pd.DataFrame:
    """The run table (`sweep`'s) with the half-lives (tokens) of the EWA and beta2 and the LR multiplier."""
    s = _settings(exp)
    rows = runs_[list(table([], GRID_KEYS).columns)]
    tokens_per_step = rows["batch_size"] * exp.base.data.seq_len
    ewa = rows["ewa_decay"].astype(float)
    return rows.assign(ewa_half_life_tokens=np.where(ewa > 0, tokens_per_step * np.log(0.5) / np.log(ewa), np.nan),
                       beta2_half_life_tokens=rows["optimizer.beta2_half_life_tokens"],
                       multiplier=rows.apply(lambda r: _multiplier(s, r), axis=1))


def schedule_table(exp, runs_: pd.DataFrame) -> pd.DataFrame:
    """Per (batch size, schedule): the best LR cell's loss over seeds (mean, SE, seeds, steps)."""
    best = best_schedule_cells(exp, runs_)
    rows = schedule_runs(exp, runs_).merge(best[["batch_size", "schedule.name", "multiplier"]], on=["batch_size", "schedule.name", "multiplier"])
    out = rows.groupby(["batch_size", "schedule.name"])["final_val_loss"].agg(["mean", "std", "count"]).reset_index()
    out["se"] = out["std"] / np.sqrt(out["count"])
    return out.merge(best[["batch_size", "schedule.name", "multiplier"]]).merge(
        rows.groupby(["batch_size", "schedule.name"])["steps"].min().reset_index())


def sweep_rows(exp, runs_: pd.DataFrame, which: str) -> pd.DataFrame:
    """The runs of the EWA or beta2 sweep (the other at its default), with `half_life`: the swept half-life
    (tokens) snapped to its grid value."""
    s = _settings(exp)
    beta2, h = exp.base.optimizer.beta2_half_life_tokens, s["ewa_half_life_tokens"]
    opt = runs_[runs_["batch_size"].isin(s["optimum_batch_sizes"]) & (runs_["schedule.name"] == "constant")
                & np.isclose(runs_["multiplier"], 1.0)]
    if which == "ewa":
        rows = opt[np.isclose(opt["beta2_half_life_tokens"], beta2)]
        key = "ewa_half_life_tokens"
        allowed = [h * k for k in s["ewa_half_life_multipliers"]]
    else:
        rows = opt[np.isclose(opt["ewa_half_life_tokens"], h, rtol=1e-3)]
        key = "beta2_half_life_tokens"
        allowed = [beta2 * k for k in s["beta2_half_life_multipliers"]]
    nearest = rows[key].map(lambda v: min(allowed, key=lambda a: abs(np.log(a / v))))
    on_grid = np.abs(np.log(nearest / rows[key])) < 1e-2
    return rows[on_grid].assign(half_life=nearest[on_grid].astype(float))


def sweep_cells(exp, runs_: pd.DataFrame, which: str) -> dict:
    """{(batch size, half-life): per-seed final losses} of the EWA or beta2 sweep (the other at its default)."""
    rows = sweep_rows(exp, runs_, which)
    return {(int(b), float(h)): g["final_val_loss"].tolist() for (b, h), g in rows.groupby(["batch_size", "half_life"])}


def sweep_best(exp, runs_: pd.DataFrame, which: str) -> pd.DataFrame:
    """Per batch size, the best half-life of the EWA or beta2 sweep (mean over seeds, a diverged seed infinitely
    bad, as the slope reads it), with `edge_on` where it is the shortest or longest swept."""
    rows = sweep_rows(exp, runs_, which)
    rows = rows.assign(loss=seed_values(rows["final_val_loss"], diverged="inf"))
    return best_per_group(rows, ["batch_size"], ["half_life"], loss="loss")


def sweep_edges(exp, runs_: pd.DataFrame, which: str) -> list[dict]:
    """The batch sizes whose best half-life is on the edge of the sweep: their optimum may lie outside the
    grid, so the slope through it is a bound."""
    return grid_edges(sweep_best(exp, runs_, which), ["batch_size"], {"half_life": f"{'EWA' if which == 'ewa' else 'beta2'} half-life"})


def schedule_best(exp, runs_: pd.DataFrame) -> pd.DataFrame:
    """Per (batch size, schedule), the best LR cell (chosen on the first seed, as the re-seeded cells are),
    with `edge_on` where its LR multiplier is the largest or smallest tried."""
    table_ = schedule_runs(exp, runs_).rename(columns={"schedule.name": "schedule"})
    return best_per_group(table_, ["batch_size", "schedule"], ["multiplier"], select_seed=_settings(exp)["seeds"][0])


def schedule_edges(exp, runs_: pd.DataFrame, batch_size: int, schedules=("constant", "cosine")) -> list[dict]:
    """The compared schedules' best LR cells at `batch_size` that sit on the edge of the LR grid: a schedule
    whose best LR is the largest tried may do better above it, so the comparison cannot be read from this grid."""
    best = schedule_best(exp, runs_)
    best = best[(best["batch_size"] == batch_size) & best["schedule"].isin(schedules)]
    return grid_edges(best, ["batch_size", "schedule"], {"multiplier": "LR multiplier"})


def _edged(best: pd.DataFrame, keys: list[str]) -> set:
    """The keys of the cells of a `best_per_group` table that sit on the edge of their grid (`best_on_edge`)."""
    return {tuple(r) for r in best.loc[best["best_on_edge"].astype(bool), keys].itertuples(index=False)}


def half_life_share(exp, runs_: pd.DataFrame) -> float:
    """The longest optimal beta2 half-life of any batch size as a share of its run's tokens (the beta2
    regime gate: a half-life near the run length turns the second moment into a running mean of the whole
    run, where no batch size can show its optimum; Marek et al.'s is under 2 % of the run)."""
    rows = sweep_rows(exp, runs_, "beta2")
    shares = []
    for _, g in rows.groupby("batch_size"):
        means = g.groupby("half_life")["final_val_loss"].mean()
        if np.isfinite(means.to_numpy()).any():
            shares.append(argmin_log_parabola(list(means.index), list(means.to_numpy())) / exp.base.tokens)
    return float(max(shares)) if shares else float("nan")


def optimal_one_minus(cells: dict, means: dict, tokens_per_step: int) -> dict[int, float]:
    """Per batch size: 1 - the optimal per-step decay, from the optimal half-life in tokens (a parabola in log)."""
    out = {}
    for b in sorted({k[0] for k in cells}):
        hs = sorted(k[1] for k in cells if k[0] == b)
        losses = [means[(b, h)] for h in hs]
        if not np.isfinite(losses).any():  # every half-life diverged in this (resampled) draw
            out[b] = np.nan
            continue
        out[b] = 1 - 0.5 ** (b * tokens_per_step / argmin_log_parabola(hs, losses))
    return out


def slope_measurement(cells: dict, tokens_per_step: int, steps: list[int]) -> dict:
    """Slope of log(1 - optimal decay) against log B, with bootstrap draws over seeds (1: the optimum fixed in
    tokens). A diverged seed is an infinitely bad loss: it rules its half-life out, it does not drop out."""
    values = {k: seed_values(v, diverged="inf") for k, v in cells.items()}
    if not values:
        return {"untestable": "no sweep cells"}
    dead = sorted({b for b, _ in values if all(not np.isfinite(values[k]).any() for k in values if k[0] == b)})
    if dead:
        return {"untestable": f"every half-life diverged at batch size {dead[0]}"}

    def slope(means: dict) -> float:
        opt = optimal_one_minus(cells, means, tokens_per_step)
        if not np.isfinite(list(opt.values())).all():
            return np.nan
        return float(np.polyfit(np.log(list(opt)), np.log(list(opt.values())), 1)[0])

    return {"estimate": slope({k: v.mean() for k, v in values.items()}), "draws": bootstrap(values, slope, diverged="inf").tolist(),
            "n_seeds": min(len(v) for v in values.values()), "min_steps": min(steps) if steps else None}


def claims(exp, runs_: pd.DataFrame) -> list[dict]:
    s = _settings(exp)
    sched = schedule_table(exp, runs_)
    best = best_schedule_cells(exp, runs_)
    parts, words = {}, {}
    for other in ("cosine", "wsd"):
        for where, b in (("small", min(s["schedule_batch_sizes"])), ("large", max(s["schedule_batch_sizes"]))):
            cell = lambda name: schedule_runs(exp, runs_).merge(best[(best["batch_size"] == b) & (best["schedule.name"] == name)][["batch_size", "schedule.name", "multiplier"]])  # noqa: E731
            constant, tuned = cell("constant"), cell(other)
            part = parts[f"{other}_at_{where}_batch"] = compare(constant["final_val_loss"], tuned["final_val_loss"], list(constant["steps"]) + list(tuned["steps"]))
            part["edges"] = schedule_edges(exp, runs_, b, ("constant", other))
            if part["difference"] is not None:
                words.setdefault(other, []).append(f"B={b}: {part['difference']:+.3f}")
    tokens_per_step = exp.base.data.seq_len
    steps = trained_steps(runs_[runs_["batch_size"].isin(s["optimum_batch_sizes"])])
    decays = {name: {**slope_measurement(sweep_cells(exp, runs_, name), tokens_per_step, steps), "edges": sweep_edges(exp, runs_, name)}
              for name in ("ewa", "beta2")}
    return [
        claim("zhang.ewa.constant_lr_with_ewa_matches_cosine",
              "final loss, constant + EWA minus the tuned schedule (best LR of each): "
              + ("; ".join(f"{other} {', '.join(w)}" for other, w in words.items()) or "no comparison"),
              {"parts": parts, "regime": {"tokens_per_parameter": tokens_per_parameter(exp)}}),
        claim("zhang.ewa.decay_and_beta2_fall_with_batch_size",
              "slope of log(1 - optimum) on log B: " + ", ".join(f"{n} {m['estimate']:.2f}" if "estimate" in m else f"{n}: {m['untestable']}"
                                                               for n, m in (("EWA decay", decays["ewa"]), ("beta2", decays["beta2"]))),
              {"parts": {"ewa_decay": decays["ewa"], "beta2": {**decays["beta2"], "regime": {"half_life_share": half_life_share(exp, runs_)}}}}),
    ], sched


def tokens_per_parameter(exp) -> float:
    """Training tokens per parameter (embeddings included, as Chinchilla's 20 counts them)."""
    return exp.base.tokens / count_parameters(exp.base.model, exp.base.data.vocab_size)["total"]


def regime_caveat(exp, sched: pd.DataFrame) -> str:
    """How far from the paper's regime the schedule comparison runs: tokens per parameter (the paper trains
    151M parameters at Chinchilla's 20 tokens each) and how much cosine loses to WSD at this budget (a schedule
    that decays early pays for it most in a run that is still far from converged)."""
    n = count_parameters(exp.base.model, exp.base.data.vocab_size)
    gaps = [f"B={b}: {g.loc['cosine', 'mean'] - g.loc['wsd', 'mean']:+.3f}" for b, g in sched.set_index("schedule.name").groupby("batch_size")
            if {"cosine", "wsd"} <= set(g.index)]
    return (f"Each run trains {exp.base.tokens:,} tokens: {tokens_per_parameter(exp):.2f} tokens per parameter "
            f"({exp.base.tokens / n['non_embedding']:.1f} per non-embedding parameter), against the paper's 20 (Chinchilla) at 151M. "
            f"The loss is still falling at the end, and tuned cosine loses to tuned WSD here ({', '.join(gaps)} nats, cosine minus WSD): "
            "a margin over cosine is largely the cost of decaying early in an under-trained run, so read the comparison with WSD beside it.")


def figure(exp, runs_: pd.DataFrame, sched: pd.DataFrame):
    s = _settings(exp)
    fig, grid = plt.subplots(2, 2, figsize=(11.5, 8.6))
    axes = grid.ravel()
    ax = axes[0]
    names = list(s["schedules"])
    edged, kinds = _edged(schedule_best(exp, runs_), ["batch_size", "schedule"]), set()
    for i, b in enumerate(s["schedule_batch_sizes"]):
        rows = sched[sched["batch_size"] == b].set_index("schedule.name").reindex(names)
        x = np.arange(len(names)) + 0.3 * (i - (len(s["schedule_batch_sizes"]) - 1) / 2)
        ax.errorbar(x, rows["mean"], yerr=plots.t_interval(rows["se"], rows["count"]), fmt="none", capsize=3, color=plots.batch_colour(b))
        for xi, name, (_, row) in zip(x, names, rows.iterrows()):  # an LR optimum on the edge of its grid is a diamond
            kind = plots.cell_kind(row["steps"], (b, name) in edged)
            kinds.add(kind)
            plots.mark(ax, xi, row["mean"], plots.batch_colour(b), kind)
        ax.plot([], [], "o", color=plots.batch_colour(b), label=f"B={b} ({int(rows['steps'].min())} steps)")
    ax.set_xticks(range(len(names)), [("constant + EWA" if n == "constant" else n) for n in names])
    ax.set(ylabel="final validation loss (best LR, nats / token)")
    ax.set_title(f"Schedules at equal tokens ({plots.ERROR_BARS})", fontsize=9)
    plots.marker_legend(ax, sorted(kinds - {"cell"}), fontsize=7)
    tokens_per_step = exp.base.data.seq_len
    for ax, which, label in ((axes[1], "ewa", "EWA half-life (tokens)"), (axes[2], "beta2", "beta2 half-life (tokens)")):
        cells = sweep_cells(exp, runs_, which)
        for b in sorted({k[0] for k in cells}):
            hs = sorted(k[1] for k in cells if k[0] == b)
            means = [cell_losses(cells[(b, h)]).mean() if len(cell_losses(cells[(b, h)])) else np.nan for h in hs]
            ax.errorbar(hs, means, yerr=[plots.seed_interval(cell_losses(cells[(b, h)])) for h in hs], marker="o", ms=3, capsize=2,
                        color=plots.batch_colour(b), label=f"B={b}")
        ax.set(xscale="log", xlabel=label, ylabel="final validation loss (mean over seeds)")
        ax.set_title(f"Loss against the {label.split(' half')[0]} half-life", fontsize=9)
        ax.legend(fontsize=7)
    ax, kinds = axes[3], set()
    for which, colour in (("ewa", plots.series_colour(0)), ("beta2", plots.series_colour(1))):
        cells = sweep_cells(exp, runs_, which)
        if not cells:
            continue
        means = {k: seed_values(v, diverged="inf").mean() for k, v in cells.items()}
        opt = optimal_one_minus(cells, means, tokens_per_step)
        ax.plot(list(opt), list(opt.values()), "-", color=colour, label=f"1 - optimal {'EWA decay' if which == 'ewa' else 'beta2'}")
        edged = {b for (b,) in _edged(sweep_best(exp, runs_, which), ["batch_size"])}
        for b, value in opt.items():  # an optimum on the edge of its sweep is a diamond: only a bound
            kind = "edge" if b in edged else "cell"
            kinds.add(kind)
            plots.mark(ax, b, value, colour, kind)
    bs = np.array(sorted(s["optimum_batch_sizes"]), dtype=float)
    ax.plot(bs, 0.05 * bs / bs[0], "--", color=plots.PAPER_COLOUR, lw=0.8, label="slope 1 (fixed in tokens)")
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="1 - optimal decay per step")
    plots.log_ticks(ax, bs)
    ax.set_title("Optima against batch size", fontsize=9)
    plots.marker_legend(ax, sorted(kinds - {"cell"}), fontsize=7)
    fig.tight_layout()
    return fig
