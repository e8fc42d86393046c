"""The replication report: every claim of the ledgers with the paper's value, ours, and the verdict the
ledger's rule gives our stored measurement; built from `metrics/`, the ledgers and params.yaml only (it
never trains). `notebooks/report.ipynb` calls `build`, which writes REPORT.md, the verdict summary and the
side-by-side figures under figures/report/, metrics/report.json, the README's verdicts table and the figure
gallery in docs/figures.md (`replication.readme`).

A new paper plugs in by adding its ledger (replication/papers/<paper>/ledger.yaml) and stages that write
the metrics files it names: nothing here changes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication import ledger, plots, readme, verdicts
from replication.sizes import count_parameters
from replication.notebook import write_metrics
from replication.experiments import declared_runs, topic
from replication.params import experiment, load_params
from replication.data import DataError, offline
from replication.spec import ConfigError

VERDICT_COLOURS = {"confirmed": "#2e7d32", "partly": "#9ccc65", "not confirmed": "#c62828", "within noise": "#ffb300",
                   "not testable at this scale": "#90a4ae", "not run yet": "#e0e0e0"}


# ---------------------------------------------------------------------------------------------- the ledger
def ledger_rows(root: str | Path = ".") -> pd.DataFrame:
    """One row per ledger claim: the paper's side, ours as stored, and the verdict re-decided by the rule."""
    rows = []
    for paper in ledger.papers().values():
        for c in paper.claims:
            decision, stored = ledger.evaluate(c, root)
            if stored is not None and stored.get("verdict") not in (None, decision.verdict):
                raise ledger.LedgerError(f"claim {c.id}: {c.metrics} says {stored['verdict']!r} but its rule now gives "
                                         f"{decision.verdict!r}: re-run stage {c.experiment} (`dvc repro {c.experiment}`)")
            rows.append({"paper": paper.key, "id": c.id, "kind": c.kind, "source": c.source, "statement": c.statement,
                         "paper_value": c.paper_value, "measured": (stored or {}).get("measured", ""), "verdict": decision.verdict,
                         "reason": decision.reason, "share": decision.share, "rule": _rule_text(c), "requires": _requires_text(c),
                         "literature": c.literature, "scale": c.scale, "figure": c.figure, "notebook": c.notebook, "executed": f"notebooks/executed/{c.experiment}.ipynb",
                         "experiment": c.experiment, "metrics": c.metrics})
    return pd.DataFrame(rows)


def _requires_text(c: ledger.Claim) -> str:
    bound = lambda r: f"<= {r['at_most']:g}" if "at_most" in r else f">= {r['at_least']:g}"
    return "; ".join(f"{r['value']} {bound(r)}" for r in c.requires)


def _rule_text(c: ledger.Claim) -> str:
    params = {k: v for k, v in c.params.items() if k != "parts"}
    parts = c.params.get("parts")
    shown = lambda ps: ", ".join(f"{k}={v}" for k, v in ps.items() if k != "allowance_source")
    text = f"{c.rule}({shown(params)})"
    if parts:
        text += ": " + "; ".join(f"{name}{' (ours)' if p.get('ours') else ''} by {p['rule']}({shown(p.get('params') or {})})"
                                 for name, p in parts.items())
    return text


def _allowances(c: ledger.Claim) -> list[str]:
    """The paper's own sentence behind every allowance of an equivalence in the claim's rule."""
    specs = [c.params, *((p.get("params") or {}) for p in (c.params.get("parts") or {}).values())]
    return [f"allowance {ps['allowance']:g}: {ps['allowance_source']}" for ps in specs if ps.get("allowance")]


def verdict_counts(rows: pd.DataFrame) -> pd.DataFrame:
    """Claims per paper and verdict (every verdict a column, in the rules' order): pass the findings to count
    what replicates, the checks to count the machinery."""
    papers = [p for p in ledger.papers() if p in set(rows["paper"])] if len(rows) else []
    if rows.empty:
        return pd.DataFrame(0, index=pd.Index(papers, name="paper"), columns=[*verdicts.VERDICTS, "claims"])
    counts = rows.groupby(["paper", "verdict"]).size().unstack("verdict", fill_value=0)
    counts = counts.reindex(index=papers, columns=list(verdicts.VERDICTS), fill_value=0)
    counts["claims"] = counts.sum(axis=1)
    return counts


def summary_figure(counts: pd.DataFrame):
    """Verdict counts per paper as stacked horizontal bars."""
    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.55 * len(counts)))
    left = np.zeros(len(counts))
    names = [ledger.papers()[p].title.split(",")[0] for p in counts.index]
    for v in verdicts.VERDICTS:
        ax.barh(names, counts[v], left=left, color=VERDICT_COLOURS[v], label=v, edgecolor="white")
        for y, (x0, n) in enumerate(zip(left, counts[v])):
            if n:
                ax.text(x0 + n / 2, y, str(n), ha="center", va="center", fontsize=8)
        left += counts[v].to_numpy()
    ax.invert_yaxis()
    ax.set_xlabel("findings (checks of the machinery not counted)")
    ax.grid(axis="y", visible=False)
    ax.legend(ncol=3, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3 if len(counts) > 2 else -0.5))
    return fig


# ----------------------------------------------------------------------------------------------- the scale
def _ours(params: dict, name: str, profile: str, root: Path = Path(".")) -> dict | None:
    """Our setting of experiment `name` on `profile`, from every run its topic declares given the store
    (params.yaml's grid where it has no topic), and the other experiments' runs it reads as its own cells
    (a topic's `read_runs`, e.g. laws_compare's base width); None if params.yaml has no such experiment."""
    try:
        exp = experiment(params, name, profile)
    except ConfigError:
        return None
    try:
        # the store as the stages name it (relative to the workbook): a fine-tuning run's `init_from` path is part of its id
        results = os.path.relpath(root / "results") if Path.cwd().resolve() == Path(root).resolve() else root / "results"
        with offline():  # never downloads: a corpus-declared topic is a DataError at once
            module = topic(name)
            specs = module.read_runs(exp, params, results) if hasattr(module, "read_runs") else declared_runs(exp, params, results)
    except (RuntimeError, FileNotFoundError):  # its runs follow from another experiment's, not stored here yet
        return {"model": "its runs follow from runs not stored on this profile yet", "tokens": "", "batch_sizes": "", "seeds": ""}
    except DataError:  # its runs are declared from its corpus (a task set's continuation items), e.g. a hub dataset offline
        return {"model": f"its runs are declared from its corpus {exp.base.data.corpus!r}, not readable here", "tokens": "",
                "batch_sizes": "", "seeds": ""}
    if not specs:
        return {"model": exp.settings.get("scale", "no training: exact expectations"), "tokens": "", "batch_sizes": "", "seeds": ""}
    span = lambda values, fmt: fmt(min(values)) if min(values) == max(values) else f"{fmt(min(values))}-{fmt(max(values))}"
    sizes = [count_parameters(s.model, s.data.vocab_size)["non_embedding"] / 1e6 for s in specs]
    cells: dict = {}
    for s in specs:
        cells.setdefault(s.replace(seed=0).hash, set()).add(s.seed)
    seeds = sorted({len(v) for v in cells.values()})
    return {"model": f"{span(sizes, lambda v: f'{v:.2f}')}M non-embedding, seq {exp.base.data.seq_len}, {exp.base.data.corpus}",
            "tokens": span([s.tokens for s in specs], lambda v: f"{v:,}"),
            "batch_sizes": ", ".join(str(b) for b in sorted({s.batch_size for s in specs})),
            "seeds": f"{seeds[0]} per grid cell" + (f", {seeds[-1]} at best cells" if seeds[-1] != seeds[0] else "")}


def scales(params: dict, root: Path):
    """`_ours` for this build, each (experiment, profile) declared once: the scale table and the side-by-side
    captions read the same experiments, and declaring one walks its store."""
    seen: dict = {}

    def ours(name: str, profile: str) -> dict | None:
        if (name, profile) not in seen:
            seen[name, profile] = _ours(params, name, profile, root)
        return seen[name, profile]
    return ours


def scale_markdown(paper: ledger.Paper, ours_of, profiles: list[str], root: Path) -> str:
    lines = ["| experiment | | model | tokens per run | batch sizes | seeds |", "|---|---|---|---|---|---|"]
    for name, theirs in paper.scale.items():
        lines.append(f"| `{name}` | paper | {theirs.get('model', '')} | {theirs.get('tokens', '')} | {theirs.get('batch_sizes', '')} | {theirs.get('seeds', '')} |")
        for profile in profiles:
            ours = ours_of(name, profile)
            if ours is None:
                landed = (root / "notebooks" / f"{name}.ipynb").is_file()
                lines.append(f"| | ours, `{profile}` | {'reads the runs of other experiments' if landed else 'not run yet'} | | | |")
            else:
                lines.append(f"| | ours, `{profile}` | {ours['model']} | {ours['tokens']} | {ours['batch_sizes']} | {ours['seeds']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- side by side
NORMALISATIONS = ("subtract_min", "divide_first", "subtract_shared_first", "divide_fit_first", "divide_given")
# How a side-by-side panel puts both sides on one scale. A reference (a ledger's `references` entry) has:
# title, source, x_label, y_label, normalise (one of NORMALISATIONS), log_x, log_y, shared_x (one x axis for both
# panels, our range shaded on it), legend (matplotlib's loc for the legends; default best); the paper's `series`
# ({name: {x, y}}) and/or `power_laws` ({x, laws: {name: [a, b]}}); `x_over` / `y_over` ({series: divisor}: the
# paper's x or y divided per series, e.g. by each model's B* and S_min); relative_x (each panel's x over its
# smallest, e.g. T / T_min); and `ours`: {metrics, key, x, y, series} naming a table of a metrics file, with
# optional columns: `reached` (False = never reached its target: a triangle at its budget), `kind` (a marker
# kind of plots.MARKERS per row, where the metrics decide it), `se` and `n` (standard error and seeds: 95 %
# Student-t bars), `y_over` (our divisor per row, for divide_given), `label` (a series' legend text), `grid`
# (the column on whose values neighbours are joined, where x is not on a grid), `halves` ("low" / "high": a line
# where the verdicts split the grid); and `fit` ({key, a, b, claim, variable}: our power law a x^b from the
# metrics, drawn with the 95 % band of the claim's bootstrap exponents; divide_fit_first divides by it at our
# smallest x) and `verdict` (a claim id whose verdict the panel's title states).


def _normalise(x: np.ndarray, y: np.ndarray, how: str, shared=None) -> np.ndarray:
    """One of the paper's series on a normalised axis: minus its own minimum, divided by its value at the
    smallest x, minus `shared` (the best value at the smallest x over all series of the panel, so that series
    keep their distances), or divided by `shared` (a divisor given per series, e.g. its fitted minimum steps).
    Ours are normalised by `_our_points`, which also knows our fit and which cells reached their target."""
    if how == "subtract_min":
        return y - np.nanmin(y)
    if how == "divide_first":
        return y / y[np.argmin(x)]
    if how == "subtract_shared_first":
        return y - shared
    if how == "divide_given":
        return y / shared
    raise ledger.LedgerError(f"normalise: {how!r} is unknown; use one of {', '.join(NORMALISATIONS)}")


def _shared_baseline(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> float | None:
    """The best (lowest) value at the smallest x any series of a panel has."""
    if not series:
        return None
    first = min(np.nanmin(x) for x, _ in series.values())
    at_first = [y[x == first] for x, y in series.values() if (x == first).any()]
    return float(np.nanmin(np.concatenate(at_first))) if at_first else None


def _relative(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every series' x over the smallest x of the panel."""
    low = min(np.nanmin(x) for x, _ in series.values()) if series else 1.0
    return {k: (x / low, y) for k, (x, y) in series.items()}


def _per_series(ref: dict, key: str) -> dict:
    over = ref.get(key) or {}
    unknown = set(over) - set(ref.get("series") or {})
    if unknown:
        raise ledger.LedgerError(f"{key} names series the reference lacks: {', '.join(sorted(unknown))}")
    return over


def _paper_x_min(ref: dict) -> float:
    """The smallest x of the paper's numbers, before `relative_x` divides by it."""
    xs = [v["x"] for v in (ref.get("series") or {}).values()] + ([ref["power_laws"]["x"]] if ref.get("power_laws") else [])
    return float(min(np.min(x) for x in xs)) if xs else np.nan


def _paper_divisors(ref: dict) -> dict[str, float]:
    """The paper's y divisor per series (`y_over`) where the panel divides by given values; every series needs one."""
    y_over = _per_series(ref, "y_over")
    missing = set(ref.get("series") or {}) - set(y_over)
    if ref["normalise"] == "divide_given" and missing:
        raise ledger.LedgerError(f"normalise: divide_given needs y_over for every series; missing {', '.join(sorted(missing))}")
    return {k: float(v) for k, v in y_over.items()}


def _paper_series(ref: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x_over = _per_series(ref, "x_over")
    series = {k: (np.asarray(v["x"], float) / float(x_over.get(k, 1.0)), np.asarray(v["y"], float))
              for k, v in (ref.get("series") or {}).items()}
    laws = ref.get("power_laws")
    if laws:
        x = np.asarray(laws["x"], float)
        series.update({k: (x, a * x ** b) for k, (a, b) in laws["laws"].items()})
    return _relative(series) if ref.get("relative_x") else series


def _stored_metrics(ref: dict, root: Path) -> dict | None:
    """The metrics file our side of a reference reads, or None where it is not written yet."""
    path = root / (ref.get("ours") or {}).get("metrics", "")
    return json.loads(path.read_text()) if ref.get("ours") and path.is_file() else None


def _our_series(ref: dict, root: Path, stored: dict | None = None) -> tuple[dict[str, pd.DataFrame], str | None]:
    """Our rows for a side-by-side figure, by series (sorted by x; x over the panel's smallest x under
    `relative_x`, kept as `x_raw` for the fit); and why there are none, if so. `stored`: the metrics file,
    where the caller has read it."""
    ours = ref.get("ours") or {}
    stored = stored if stored is not None else _stored_metrics(ref, root)
    if stored is None:
        return {}, f"not run yet ({ours.get('metrics', 'no metrics named')})"
    if ours["key"] not in stored:
        raise ledger.LedgerError(f"{ours['metrics']} has no key {ours['key']!r} for a side-by-side figure")
    frame = pd.DataFrame(stored[ours["key"]])
    if frame.empty:  # the experiment ran, but no cell of it could stand beside the paper (e.g. all too short)
        return {}, f"no points at this scale ({ours['metrics']}: {ours['key']} is empty)"
    frame = frame.dropna(subset=[ours["y"], ours["x"]]).assign(x_raw=lambda f: f[ours["x"]].astype(float))
    if ref.get("relative_x"):
        frame[ours["x"]] = frame["x_raw"] / frame["x_raw"].min()
    return {str(k): g.sort_values(ours["x"]) for k, g in frame.groupby(ours["series"])}, None


def _stored_claim(stored: dict, claim_id: str) -> dict:
    return next((c for c in stored.get("claims", []) if c.get("id") == claim_id), {})


def _our_fit(ref: dict, stored: dict | None) -> dict | None:
    """Our fitted law a x^b named by the reference (`ours.fit`), with the claim's bootstrap exponents."""
    spec = (ref.get("ours") or {}).get("fit")
    if not spec or stored is None:
        return None
    fit = stored.get(spec["key"]) or {}
    if not all(isinstance(fit.get(k), (int, float)) and np.isfinite(fit[k]) for k in (spec["a"], spec["b"])):
        return None  # not fitted at this scale (too few cells): stored as null
    draws = _stored_claim(stored, spec["claim"]).get("measurement", {}).get("draws") or []
    return {"a": float(fit[spec["a"]]), "b": float(fit[spec["b"]]), "draws": draws, "variable": spec.get("variable", "x")}


def _draw_fit(ax, fit: dict, raw: np.ndarray, low: float, scale: float) -> None:
    """Our law over our range (x over `low`, y over `scale`), and the 95 % band of its bootstrap exponents,
    pivoting on our budgets' mean log x (where the fit is pinned by the data)."""
    grid = np.geomspace(raw.min(), raw.max(), 50)
    law = lambda e: fit["a"] * np.exp(np.log(raw).mean() * (fit["b"] - e)) * grid ** e  # noqa: E731
    ax.plot(grid / low, law(fit["b"]) / scale, "--", color=plots.FIT_COLOUR, lw=1.2, label=f"our fit: {fit['variable']}^{fit['b']:.2f}")
    if fit["draws"]:
        lo, hi = np.percentile(fit["draws"], [2.5, 97.5])
        ax.fill_between(grid / low, law(lo) / scale, law(hi) / scale, color=plots.FIT_COLOUR, alpha=0.2, lw=0,
                        label=f"95 % interval of the exponent ({lo:.2f} to {hi:.2f})")


def _our_points(ref: dict, ours: dict[str, pd.DataFrame], fit: dict | None) -> pd.DataFrame:
    """Our points as drawn: per row its series, x, normalised y, the half-width of its 95 % seed interval on
    the same scale (0: none), its marker kind and whether a line may join it (a reached cell)."""
    spec, how = ref["ours"], ref["normalise"]
    frames = []
    for name, g in ours.items():
        x, y = g[spec["x"]].to_numpy(float), g[spec["y"]].to_numpy(float)
        ok = g[spec["reached"]].fillna(False).to_numpy(bool) if spec.get("reached") else np.ones(len(g), bool)
        frames.append(pd.DataFrame({"series": name, "x": x, "y": y, "x_raw": g["x_raw"].to_numpy(float), "reached": ok,
                                    "grid": g[spec.get("grid", spec["x"])].to_numpy(float),
                                    "half": plots.t_interval(g[spec["se"]], g[spec["n"]]) if spec.get("se") else 0.0,
                                    "divisor": g[spec["y_over"]].to_numpy(float) if spec.get("y_over") else np.nan,
                                    "steps": g["steps"].to_numpy(float) if "steps" in g else np.nan,
                                    "edge": g["best_on_edge"].fillna(False).to_numpy(bool) if "best_on_edge" in g else False,
                                    "kind": g[spec["kind"]].to_numpy(str) if spec.get("kind") else "",
                                    "label": g[spec["label"]].to_numpy(str) if spec.get("label") else plots.optimizer_label(name)}))
    points = pd.concat(frames, ignore_index=True)
    reached = points[points["reached"]].sort_values("x")
    if how == "divide_fit_first" and not spec.get("fit"):
        raise ledger.LedgerError("normalise: divide_fit_first needs `ours.fit` naming our fitted law")
    if how == "divide_fit_first" and fit is None:  # named but not fitted at this scale: each series by its first cell
        how = "divide_first"
    if how == "divide_fit_first":
        shared = fit["a"] * points["x_raw"].min() ** fit["b"]
    elif how == "divide_given":
        if not spec.get("y_over"):
            raise ledger.LedgerError("normalise: divide_given needs `ours.y_over` naming our divisor column")
        shared = points["divisor"].to_numpy()
    elif how in ("divide_first", "subtract_min"):  # per series: its first reached cell, or its lowest
        per_series = reached.groupby("series")["y"].first() if how == "divide_first" else reached.groupby("series")["y"].min()
        shared = points["series"].map(per_series).to_numpy()
    elif how == "subtract_shared_first":
        shared = _shared_baseline({n: (g["x"].to_numpy(), g["y"].to_numpy()) for n, g in reached.groupby("series")})
    else:
        raise ledger.LedgerError(f"normalise: {how!r} is unknown; use one of {', '.join(NORMALISATIONS)}")
    divide = how.startswith("divide")
    points["y_norm"] = points["y"] / shared if divide else points["y"] - shared
    points["half_norm"] = points["half"] / shared if divide else points["half"]
    points["kind"] = [k if k else (plots.cell_kind(s, bool(e)) if r else "unreached")
                      for k, s, e, r in zip(points["kind"], points["steps"], points["edge"], points["reached"])]
    return points


def side_by_side(ref: dict, root: str | Path = ".", scale: str | None = None):
    """The paper's numbers (left, small dots; a published law as a line) and ours (right) on the same normalised
    axes, ours in the workbook's markers: hollow under MIN_STEPS optimizer steps, a diamond for a best cell on
    the edge of its grid, a triangle at its budget for a cell that never reached its target (none decides a
    verdict), with 95 % seed intervals where the metrics have them; our fitted law with its interval where the
    reference names one. `scale`: our setting in words, printed under the source. Returns the figure and the
    points drawn on both sides (the CSV beside the PNG)."""
    root = Path(root)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.9), sharey=True, sharex=bool(ref.get("shared_x")))
    how, spec = ref["normalise"], ref.get("ours") or {}
    paper, divisors = _paper_series(ref), _paper_divisors(ref)
    stored = _stored_metrics(ref, root)
    ours, missing = _our_series(ref, root, stored)
    fit = _our_fit(ref, stored)
    points = _our_points(ref, ours, fit) if ours else pd.DataFrame(columns=["series", "x", "y_norm", "half_norm", "kind", "reached"])
    # an optimizer or task family keeps its colour in both panels; other series (model sizes) are ordered within
    # each panel by the size they name, smallest darkest, so the same shade means the same rank on both sides
    paper_names, our_names = sorted(paper, key=plots.size_order), sorted(ours, key=plots.size_order)
    colour = {**{n: plots.named_colour(n, plots.ordinal_colour(i, len(paper))) for i, n in enumerate(paper_names)},
              **{n: plots.named_colour(n, plots.ordinal_colour(i, len(ours))) for i, n in enumerate(our_names)}}
    paper_how = "divide_first" if how == "divide_fit_first" else how  # the paper's laws start at 1 by themselves
    paper_base = _shared_baseline(paper) if paper_how == "subtract_shared_first" else None
    laws = set((ref.get("power_laws") or {}).get("laws") or {})
    sharing: dict = {}  # how many series drawn so far share each colour: a task family's tasks differ by line style
    drawn = []
    for name in paper_names:  # a published law is a line; the paper's own points are small dots, not our cells
        x, y = paper[name]
        yn = _normalise(x, y, paper_how, divisors.get(name, 1.0) if paper_how == "divide_given" else paper_base)
        ls = ("-", "--", ":", "-.")[sharing.get(colour[name], 0) % 4]
        sharing[colour[name]] = sharing.get(colour[name], 0) + 1
        axes[0].plot(x, yn, ls, marker=None if name in laws else ".", ms=6, color=colour[name], label=plots.optimizer_label(name))
        drawn.append(pd.DataFrame({"side": "paper", "series": name, "x": x, "y": yn}))
    reached = points[points["reached"]]
    if ref.get("shared_x") and len(reached):  # where our measured cells lie on the paper's axis
        for ax in axes:
            ax.axvspan(reached["x"].min(), reached["x"].max(), color="0.85", alpha=0.6, lw=0, zorder=0,
                       label="our range" if ax is axes[0] else None)
    every_x = set(reached["grid"]) if len(reached) else set()
    for name in our_names:
        g = points[points["series"] == name]
        ok = g[g["reached"]]
        if not len(ok):
            continue
        plots.connect_neighbours(axes[1], every_x, ok["x"], ok["y_norm"], at=ok["grid"], color=colour[name])
        axes[1].plot([], [], "-", color=colour[name], label=g["label"].iloc[0])
        bars = g[g["half_norm"] > 0]
        if len(bars):
            axes[1].errorbar(bars["x"], bars["y_norm"], yerr=bars["half_norm"], fmt="none", color=colour[name], lw=1, capsize=2)
        for xi, yi, kind in zip(g["x"], g["y_norm"], g["kind"]):  # the markers of the paper's own figure for the same cells
            plots.mark(axes[1], xi, yi, colour[name], kind, **({"ms": 4} if kind == "cell" else {}))
    if len(points):
        drawn.append(points[["series", "x", "y_norm", "half_norm", "kind"]].rename(columns={"y_norm": "y", "half_norm": "interval"})
                     .assign(side="ours"))
    if spec.get("halves") and ours:  # where the verdicts split the grid into the halves they compare
        rows = pd.concat(ours.values())
        low, high = rows.loc[rows[spec["halves"]] == "low", spec["x"]].max(), rows.loc[rows[spec["halves"]] == "high", spec["x"]].min()
        axes[1].axvline(np.sqrt(low * high) if ref.get("log_x") else (low + high) / 2, color="0.4", ls=":", lw=1,
                        label="the verdicts' low | high halves")
    if fit is not None and len(points):
        raw = points["x_raw"].to_numpy()
        _draw_fit(axes[1], fit, raw, raw.min() if ref.get("relative_x") else 1.0,
                  fit["a"] * raw.min() ** fit["b"] if how == "divide_fit_first" else 1.0)
    if missing:
        axes[1].text(0.5, 0.5, f"ours: {missing}", transform=axes[1].transAxes, ha="center", va="center", fontsize=9, wrap=True)
    verdict = _stored_claim(stored, spec["verdict"]).get("verdict") if spec.get("verdict") and not missing else None
    for ax, title in zip(axes, ("paper", "this replication" + (f" (verdict: {verdict})" if verdict else ""))):
        ax.set_title(title, fontsize=10)
        label = spec.get("x_label", ref["x_label"]) if ax is axes[1] else ref["x_label"]
        if ref.get("relative_x"):  # the smallest x each side is relative to
            low = (points["x_raw"].min() if len(points) else np.nan) if ax is axes[1] else _paper_x_min(ref)
            label += (f" (T_min = {low / 1e9:g}B)" if low >= 1e9 else f" (T_min = {low:,.0f})") if np.isfinite(low) else ""
        ax.set_xlabel(label)
        if ref.get("log_x"):
            ax.set_xscale("log", base=2)
        if ref.get("log_y"):
            ax.set_yscale("log", base=2)
        if ax.get_legend_handles_labels()[0]:
            kinds = sorted(set(points["kind"]) - {"cell"}) if ax is axes[1] and len(points) else []
            plots.marker_legend(ax, kinds, loc=ref.get("legend", "best"), fontsize=7)
    axes[0].set_ylabel(ref["y_label"])
    fig.suptitle(ref["title"], fontsize=10)
    bars = f" Bars: {plots.ERROR_BARS.removeprefix('bars: ')}." if len(points) and (points["half_norm"] > 0).any() else ""
    fig.text(0.01, -0.02, f"Source: {ref['source']}" + (f"\nThis replication: {scale}." if scale else "") + bars, fontsize=7,
             ha="left", va="top", wrap=True)
    return fig, pd.concat(drawn, ignore_index=True) if drawn else pd.DataFrame()


def our_scale(ours_of, ref: dict, profile: str) -> str | None:
    """Our setting of the experiment whose metrics a side-by-side reference reads, in one line (`ours_of`: `scales`)."""
    metrics = Path((ref.get("ours") or {}).get("metrics", ""))
    ours = ours_of(f"{metrics.parent.name}_{metrics.stem}", profile) if metrics.name else None
    if not ours or not ours["tokens"]:
        return None
    return (f"{profile} profile, {ours['model']}; {ours['tokens']} tokens per run; batch sizes {ours['batch_sizes']}; "
            f"{ours['seeds']}")


# ------------------------------------------------------------------------------------------------ REPORT.md
def _link(path: str, root: Path) -> str:
    return f"[{Path(path).name}]({path})" if (root / path).exists() else f"{Path(path).name} (not yet)"


def _caveats(metrics: str, root: Path) -> list[str]:
    path = root / metrics
    return [c for c in json.loads(path.read_text()).get("caveats", []) if c] if path.is_file() else []


HOW_DECIDED = (
    "**How a verdict is decided** (`replication/verdicts.py`, one set of rules for every paper). A comparison needs at least "
    f"{verdicts.MIN_SEEDS} seeds at every compared cell (fewer: *not testable at this scale*) and a difference beyond the "
    f"two-sided {verdicts.CONFIDENCE:.0%} Student-t critical value for its Welch-Satterthwaite degrees of freedom times its "
    "standard error (with 3 seeds per cell that is 2.8 to 4.3 SE, written t(dof) = value in each reason), otherwise it reads "
    "*within noise*. \"A matches B\" is read as \"A is no worse than B\": *confirmed* when the whole t interval of A - B lies "
    f"under a tolerance of {verdicts.SEED_SDS:g} measured seed standard deviations plus the gap the paper itself calls \"as good\" "
    "(quoted beside the rule), *not confirmed* when it lies wholly above; with 3 seeds and no such gap, equal means cannot be "
    f"confirmed. A fitted slope or exponent carries {verdicts.DRAWS} bootstrap draws over seeds and is judged against an accepted "
    "range around the paper's number (the ledger's): *confirmed* only when its whole 95 % bootstrap interval lies inside the range "
    f"(so at least {verdicts.SHARE_TO_CONFIRM:.0%} of the draws), *not confirmed* when the interval lies wholly outside, otherwise "
    "*within noise*, as it is when the optimum a fit rests on is not resolved (its grid neighbours within the noise). A claim of "
    "several parts is *not confirmed* when any part the paper makes is contradicted, *partly* when some parts are confirmed and "
    "the rest within noise; a part we added is shown but does not count. A claim is *not testable at this scale* when a deciding "
    f"cell trains for fewer than {verdicts.MIN_STEPS} optimizer steps, is a best cell on the edge of its hyperparameter grid, or "
    "when the measurement lies outside the regime the paper's claim is about (the claim's `requires`: our value, the limit, and "
    "what would reach it); one whose experiment has not landed is *not run yet*. Findings are results that could have failed; "
    "*checks* (identities, memory accounting, closed-form numerics, outcomes the design fixes) test the machinery and are listed "
    "apart, never counted as replications."
)


def _claim_row(r, root: Path, with_value: bool = True) -> str:
    share = f"; {verdicts.share_words(r.verdict, r.share)}" if r.share is not None and r.share == r.share else ""
    ours = (r.measured or "—") + (f" <br>*Other work:* {r.literature}" if r.literature else "")
    needs = f"needs: {r.scale}" + (f"; regime: {r.requires}" if r.requires else "")
    allowances = "".join(f" <br>{a}" for a in _allowances(ledger.entry(r.id)))
    return (f"| {r.statement} <br>`{r.id}` ({r.source}) | {r.paper_value} | {ours} | **{r.verdict}** <br>{r.reason}{share} "
            f"| `{r.rule}`{allowances} <br>{needs} | {_link(r.figure, root)} <br>{_link(r.executed, root)} |")


def report_markdown(rows: pd.DataFrame, counts: pd.DataFrame, ours_of, profile: str, figures: dict[str, list[str]],
                    root: Path) -> str:
    """REPORT.md: the findings per paper (counted in the summary), then the checks of the machinery apart."""
    profiles = list(dict.fromkeys([profile, "gpu"]))
    findings, checks = rows[rows["kind"] == "finding"], rows[rows["kind"] == "check"]
    header = "| claim | paper | ours | verdict | rule | figure, notebook |\n|---|---|---|---|---|---|"
    out = [
        "# Replication report",
        "",
        f"Generated by the `report` stage of `dvc repro` (notebooks/report.ipynb) from `metrics/`, the claims ledgers "
        f"(`replication/papers/*/ledger.yaml`) and params.yaml, on the `{profile}` profile. Do not edit: change a ledger or "
        "a notebook and run `dvc repro`.",
        "",
        f"{len(findings)} findings (claims that could have failed) and {len(checks)} sanity checks of the machinery "
        "(listed apart, at the end).",
        "",
        "![verdicts per paper](figures/report/summary.png)",
        "",
        "| paper | findings | " + " | ".join(verdicts.VERDICTS) + " |",
        "|---|" + "---|" * (len(verdicts.VERDICTS) + 1),
        *(f"| {ledger.papers()[p].title} | " + " | ".join(str(int(counts.loc[p, c])) for c in ("claims", *verdicts.VERDICTS)) + " |"
          for p in counts.index),
        "",
        HOW_DECIDED,
    ]
    for key, paper in ledger.papers().items():
        mine = findings[findings["paper"] == key]
        links = ", ".join(f"[{a}](https://arxiv.org/abs/{a})" for a in (x.strip() for x in paper.arxiv.split(",")))  # a ledger may cite several
        out += ["", f"## {paper.title} (arXiv {links})", "",
                f"Spec: `{paper.spec}`. Findings: {len(mine)}; " + ", ".join(f"{v} {n}" for v, n in counts.loc[key].items() if n and v != "claims")
                + f". Checks: {int((checks['paper'] == key).sum())} (below).",
                "", "### Scale", "", scale_markdown(paper, ours_of, profiles, root), "", "### Findings", "", header]
        out += [_claim_row(r, root) for r in mine.itertuples()]
        everyone = rows[rows["paper"] == key]
        caveats = [(e, c) for e in dict.fromkeys(everyone["experiment"]) for c in _caveats(everyone.loc[everyone["experiment"] == e, "metrics"].iloc[0], root)]
        if caveats:
            out += ["", "Caveats the code detected:", ""] + [f"- `{e}`: {c}" for e, c in caveats]
        for path in figures.get(key, []):
            out += ["", f"![{Path(path).stem}]({path})"]
    out += ["", "## Sanity checks of the machinery", "",
            "True by construction or by the design of the experiment (a mathematical identity, memory accounting, a numerical "
            "check of a closed-form result, an outcome the protocol fixes): they show the code does what it says, not that a "
            "paper replicates, and are not counted above.", "", header]
    out += [_claim_row(r, root) for r in checks.itertuples()]
    return "\n".join(out) + "\n"


VERDICT_KEYS = {"confirmed": "confirmed", "partly": "partly", "not confirmed": "not_confirmed", "within noise": "within_noise",
                "not testable at this scale": "not_testable", "not run yet": "not_run_yet"}


def write_verdict_summaries(counts: pd.DataFrame, checks: pd.DataFrame, folder: Path) -> list[Path]:
    """metrics/verdicts/<paper>.json: the same few numbers per paper (its findings by verdict, its checks and how
    many passed), the files `dvc metrics show` prints as one small table (each stage's own metrics file has
    its measurements and is read with `dvc metrics show metrics/<paper>/<topic>.json`)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for paper in counts.index:
        row = {"findings": int(counts.loc[paper, "claims"]),
               **{short: int(counts.loc[paper].get(verdict, 0)) for verdict, short in VERDICT_KEYS.items()},
               "checks": int(checks.loc[paper, "claims"]) if paper in checks.index else 0,
               "checks_passed": int(checks.loc[paper].get("confirmed", 0)) if paper in checks.index else 0}
        path = folder / f"{paper}.json"
        path.write_text(json.dumps(row, indent=1) + "\n")
        written.append(path)
    return written


def build(profile: str, root: str | Path = ".") -> dict:
    """Write REPORT.md, figures/report/*.png, metrics/report.json (with the notebook's timing) and the
    generated gallery (docs/figures.md) and verdicts (README.md) blocks; return the rows, the counts and the figure paths to show."""
    root = Path(root)
    ours_of = scales(load_params(root / "params.yaml"), root)
    rows = ledger_rows(root)
    counts = verdict_counts(rows[rows["kind"] == "finding"])
    checks = verdict_counts(rows[rows["kind"] == "check"])
    written = {"summary": plots.save(summary_figure(counts), root / "figures/report/summary.png", counts.reset_index())}
    figures: dict[str, list[str]] = {}
    for key, paper in ledger.papers().items():
        for name, ref in paper.references.items():
            path = f"figures/report/{key}_{name}.png"
            fig, drawn = side_by_side(ref, root, our_scale(ours_of, ref, profile))
            written[f"{key}_{name}"] = plots.save(fig, root / path, drawn)
            plt.close(fig)
            figures.setdefault(key, []).append(path)
    (root / "REPORT.md").write_text(report_markdown(rows, counts, ours_of, profile, figures, root))
    metrics = {"profile": profile, "claims": int(len(rows)), "findings": int((rows["kind"] == "finding").sum()),
               "checks": int((rows["kind"] == "check").sum()),
               "verdicts": {p: {v: int(n) for v, n in counts.loc[p].items()} for p in counts.index},
               "check_verdicts": {p: {v: int(n) for v, n in checks.loc[p].items()} for p in checks.index},
               "by_id": dict(zip(rows["id"], rows["verdict"]))}
    write_metrics(root / "metrics/report.json", metrics)  # before the README's verdicts block reads it
    write_verdict_summaries(counts, checks, root / "metrics" / "verdicts")
    readme.update_docs(root, only=("gallery", "verdicts"))  # skips files the root lacks
    return {"rows": rows, "counts": counts, "figures": written, "metrics": metrics}
