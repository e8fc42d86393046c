"""`python -m replication advise`: what batch size and peak LR each published law recommends for a model of
N parameters trained on D tokens, side by side, with the range each was fitted on; then this workbook's own
fits, labelled with the far smaller scale they were measured at.

The laws disagree, often by several times, and most are fitted far from where a reader will use them: the
table is there to show the spread and the extrapolation, not to pick a winner.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from replication import plots
from replication.papers.laws.published import Advice, Request, advise, beta2_half_life, extrapolates, load_laws, select
from replication.validation import ConfigError
from replication.verdicts import MIN_STEPS

SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)


def parse_count(key: str, text: str) -> float:
    """A positive count written as people write them: 124M, 2.5B, 1.5T, 500k, 1e9, 4096 (M million, B or G
    billion, T trillion). Anything else is a ConfigError naming `key`."""
    match = _COUNT.match(str(text))
    if not match:
        raise ConfigError(f"{key}: {text!r} is not a count; write e.g. 124M, 2.5B, 1e9 (k = 1000, M, B or G, T suffixes)")
    value = float(match.group(1)) * SUFFIXES[match.group(2).lower()]
    if not math.isfinite(value):
        raise ConfigError(f"{key}: {text!r} must be a finite number")
    if value <= 0:
        raise ConfigError(f"{key}: {text!r} must be > 0")
    return value


def parse_lr(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a number; write e.g. 3e-4") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{key}: {text!r} must be > 0")
    return value


def request_from(args) -> Request:
    """The request of `python -m replication advise`'s arguments; a bad value is a ConfigError naming its flag."""
    from replication.spec import OPTIMIZERS
    from replication.validation import choice

    choice("--optimizer", args.optimizer, OPTIMIZERS)
    if not str(args.seq_len).isdigit() or int(args.seq_len) < 1:
        raise ConfigError(f"--seq-len: {args.seq_len!r} must be a whole number of tokens >= 1, e.g. 2048")
    seq_len = int(args.seq_len)

    def tokens(flag: str, sequences: str | None) -> float | None:
        return None if sequences is None else parse_count(flag, sequences) * seq_len

    return Request(params=parse_count("--params", args.model_params), tokens=parse_count("--tokens", args.tokens),
                   seq_len=seq_len, optimizer=args.optimizer,
                   flops_per_token=None if args.flops_per_token is None else parse_count("--flops-per-token", args.flops_per_token),
                   batch_tokens=tokens("--batch-size", args.batch_size),
                   lr=None if args.lr is None else parse_lr("--lr", args.lr),
                   beta2_half_life=None if args.beta2_half_life is None else parse_count("--beta2-half-life", args.beta2_half_life),
                   reference_batch_tokens=tokens("--reference-batch-size", args.reference_batch_size),
                   reference_lr=None if args.reference_lr is None else parse_lr("--reference-lr", args.reference_lr))


def _count(value: float) -> str:
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _marked(text: str, source: str | None) -> str:
    """A borrowed value in brackets: [x] from the median of the laws, (x) from the request."""
    return {"median": f"[{text}]", "yours": f"({text})"}.get(source, text)


def _range(law) -> str:
    def show(name, value):
        return f"{value:.0e}".replace("e+", "e") if name == "C" else _count(value)

    return ", ".join(f"{k} {show(k, lo)}-{show(k, hi)}" for k, (lo, hi) in law.fitted.items()) or "-"


def _spread(values: list[float], show, unit: str = "") -> str:
    low, high = min(values), max(values)
    return f"{show(low)}-{show(high)}{unit} ({high / low:.1f}x)"


def format_table(advice: list[Advice], request: Request) -> str:
    """A plain-text table, one law a row; then the spread between the laws, the laws that give nothing here,
    warnings, sources and the legend."""
    shown = [a for a in advice if a.reason is None]
    header = ("law", "batch (seqs)", "batch (tokens)", "peak LR", "beta2", "AdamW wd", "fitted on")
    rows = []
    for a in shown:
        seqs = a.batch_sequences(request.seq_len)
        rows.append((a.law.id,
                     _marked(f"{seqs:,.0f}" if seqs >= 100 else f"{seqs:.3g}", a.batch_from),
                     _marked(_count(a.batch_tokens), a.batch_from),
                     _marked(f"{a.lr:.3g}", a.lr_from) if a.lr else "-",
                     f"{a.beta2:.6f}" if a.beta2 is not None else "-",
                     _marked(f"{a.weight_decay:.3g}", a.weight_decay_from) if a.weight_decay else "-",
                     _range(a.law)))
    lines = []
    if rows:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
    batches = [a.batch_tokens for a in shown if a.batch_from == "law" and not a.law.critical_batch]
    lrs = [a.lr for a in shown if a.lr_from == "law" and a.batch_from == "law"]
    if len(batches) > 1 or len(lrs) > 1:
        spread = [f"batch {_spread(batches, _count, ' tokens')}" if len(batches) > 1 else "",
                  f"peak LR {_spread(lrs, lambda v: f'{v:.3g}')}" if len(lrs) > 1 else ""]
        lines += ["", "The laws that give their own disagree: " + ", ".join(x for x in spread if x) + ". None is singled out "
                  "here: read each with its units, caveats and fitted range below (docs/laws.md)."]
    idle = [a for a in advice if a.reason]
    if idle:
        lines += ["", "not evaluated here:", *(f"  {a.law.id}: {a.reason}" for a in idle)]
    notes = [f"  {a.law.id}: {w}" for a in shown for w in a.warnings]
    lines += ["", "warnings:", *notes] if notes else []
    lines += ["", "sources:"] + [f"  {a.law.id}: {a.law.name}, {a.law.source}" for a in advice]
    half_life = request.beta2_half_life or beta2_half_life()
    lines += ["", f"[x]: borrowed (the median of the laws that give it, for {request.optimizer}) or resting on a borrowed value; "
                  f"(x): yours (--batch-size, --lr). beta2 keeps a half-life of {_count(half_life)} tokens (Marek et al.); "
                  "AdamW wd = B / (LR x timescale x D) where a law gives the timescale. Units and definitions: docs/laws.md"]
    return "\n".join(lines).lstrip("\n")


def curves(request: Request, laws, decades: float = 2.0, points: int = 41) -> pd.DataFrame:
    """Each law's own batch size and peak LR (its own, or at your --batch-size) over token budgets from
    `decades` below to `decades` above the request's, the rest of the request held: one row per law and budget,
    `extrapolated` where the budget leaves the law's fitted range."""
    rows = []
    for tokens in np.logspace(np.log10(request.tokens) - decades, np.log10(request.tokens) + decades, points):
        at = dataclasses.replace(request, tokens=float(tokens))
        for a in advise(at, laws):
            if a.reason is not None:
                continue
            own_lr = a.lr if a.lr_from == "law" and a.batch_from in ("law", "yours") else None
            own_batch = a.batch_tokens if a.batch_from == "law" else None
            if own_lr is None and own_batch is None:
                continue
            rows.append({"law": a.law.id, "tokens": float(tokens), "batch_tokens": own_batch, "lr": own_lr,
                         "critical_batch": a.law.critical_batch, "extrapolated": extrapolates(a.law, at.values(a.batch_tokens))})
    return pd.DataFrame(rows)


def plot_curves(frame: pd.DataFrame, request: Request):
    """Two panels against the token budget, batch size and peak LR: each law a line (solid inside its fitted
    range, dashed outside), the spread between the laws shaded, the request's budget marked."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, column, label in ((axes[0], "batch_tokens", "batch size (tokens per step)"), (axes[1], "lr", "peak learning rate")):
        values = frame.dropna(subset=[column])
        values = values[~values["critical_batch"]] if column == "batch_tokens" else values
        for i, (law, g) in enumerate(values.groupby("law", sort=False)):
            colour = plots.series_colour(i)
            inside = g[column].where(~g["extrapolated"])
            ax.plot(g["tokens"], g[column], color=colour, lw=1.2, ls="--")
            ax.plot(g["tokens"], inside, color=colour, lw=2.0, label=law)
        if column == "batch_tokens":  # Zhang et al.'s critical batch size: an upper bound, drawn apart
            critical = frame[frame["critical_batch"]].dropna(subset=[column])
            for law, g in critical.groupby("law"):
                ax.plot(g["tokens"], g[column], color=plots.PAPER_COLOUR, lw=1.0, ls=":", label=f"{law} (critical, an upper bound)")
        spread = values.groupby("tokens")[column].agg(["min", "max"])
        ax.fill_between(spread.index, spread["min"], spread["max"], color="0.85", zorder=0, label="spread between the laws")
        ax.axvline(request.tokens, color="0.3", lw=0.8, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="training tokens D", ylabel=label)
        ax.legend(fontsize=7)
    fig.suptitle(f"What each law recommends for N = {_count(request.params)} parameters, sequences of {request.seq_len} "
                 "(solid: inside its fitted range; dashed: extrapolated; dotted line: your D)", fontsize=9)
    fig.tight_layout()
    return fig


METRICS = Path(__file__).resolve().parents[3] / "metrics"  # the checkout's committed metrics


def workbook_fits(metrics_root: str | Path = METRICS) -> list[dict]:
    """This workbook's own fits, with the scale each was measured at: Shen et al.'s law (`power_lr_surface`), then
    laws_compare's free forms; each left out before its stage has run."""
    return _shen_fit(Path(metrics_root)) + _compare_fits(Path(metrics_root))


def _shen_fit(metrics_root: Path) -> list[dict]:
    path = metrics_root / "power" / "lr_surface.json"
    if not path.is_file():
        return []
    m = json.loads(path.read_text())
    fit, optima = m.get("fit") or {}, m.get("optima") or []
    if not fit.get("a") or not optima:
        return []
    tokens = [o["tokens"] for o in optima]
    batches = [o["batch_size"] for o in optima]
    return [{"experiment": "power_lr_surface", "profile": m.get("profile"), "form": "eta_opt = B a T^b",
             "a": fit["a"], "b": fit["b"], "body": _body(metrics_root.parent, "power_lr_surface", m.get("profile")),
             "tokens": [min(tokens), max(tokens)], "batch_sequences": [min(batches), max(batches)]}]


COMPARE_FORMS = {"lr": ("eta_opt = c N^a B^b D^d", {"c": "c", "N": "a", "B": "b", "D": "d"}),
                 "batch": ("B_opt = c N^a D^d (sequences)", {"c": "c", "N": "a", "D": "d"})}


def _compare_fits(metrics_root: Path) -> list[dict]:
    """laws_compare's free forms (every variable's exponent fitted) for the LR and the batch size, with the range of
    widths, batch sizes and budgets they were fitted on: empty before that stage has run or where a form was not fitted."""
    path = metrics_root / "laws" / "compare.json"
    if not path.is_file():
        return []
    m = json.loads(path.read_text())
    out = []
    for row in m.get("fits") or []:
        if row.get("law") != "free" or row.get("quantity") not in COMPARE_FORMS or row.get("c") is None:
            continue
        form, names = COMPARE_FORMS[row["quantity"]]
        optima = [o for o in m.get("optima" if row["quantity"] == "lr" else "batch_optima") or []  # the optima the fit read
                  if not o.get("on_edge") and o.get("steps", MIN_STEPS) >= MIN_STEPS]
        if not optima:
            continue
        if any(row.get(k) is None for k in names):
            continue
        out.append({"experiment": "laws_compare", "profile": m.get("profile"), "form": form,
                    "constants": {names[k]: row[k] for k in names},
                    "params": [min(o["N"] for o in optima), max(o["N"] for o in optima)],
                    "tokens": [min(o["tokens"] for o in optima), max(o["tokens"] for o in optima)],
                    "batch_sequences": [min(o.get("batch_size", o.get("optimal_batch_size")) for o in optima),
                                        max(o.get("batch_size", o.get("optimal_batch_size")) for o in optima)],
                    "seq_len": _body(metrics_root.parent, "laws_compare", m.get("profile")).get("seq_len")})
    return out


def _body(root: Path, name: str, profile: str | None) -> dict:
    """The model and sequence length experiment `name` trains on `profile` (read from params.yaml)."""
    from replication.params import experiment, load_params
    from replication.sizes import count_parameters

    try:
        base = experiment(load_params(root / "params.yaml"), name, profile or "cpu").base
    except (ConfigError, FileNotFoundError):
        return {}
    return {"non_embedding_params": count_parameters(base.model, base.data.vocab_size)["non_embedding"], "seq_len": base.data.seq_len}


def plot(request: Request, path: str | Path, law_ids: list[str] | None = None) -> Path:
    """`advise --plot PATH`: the figure of `plot_curves`, with its data beside it as CSV."""
    if Path(path).suffix.lower() != ".png":
        raise ConfigError(f"--plot: {str(path)!r} must name a .png file (its data is written beside it as .csv)")
    frame = curves(request, select(load_laws(), law_ids))
    if not len(frame):
        raise ConfigError("--plot: none of the chosen laws gives a batch size or an LR of its own to draw")
    fig = plot_curves(frame, request)
    out = plots.save(fig, path, frame)
    plt.close(fig)
    return out


def report(request: Request, law_ids: list[str] | None = None, as_json: bool = False, metrics_root=METRICS) -> str:
    advice = advise(request, select(load_laws(), law_ids))
    ours = workbook_fits(metrics_root)
    if as_json:
        return json.dumps({"request": {"params": request.params, "tokens": request.tokens, "seq_len": request.seq_len,
                                       "optimizer": request.optimizer, "compute": request.compute,
                                       "beta2_half_life_tokens": request.beta2_half_life or beta2_half_life()},
                           "laws": [a.as_dict(request.seq_len) for a in advice], "workbook": ours}, indent=1)
    head = (f"N = {_count(request.params)} parameters, D = {_count(request.tokens)} tokens, sequences of {request.seq_len}, "
            f"{request.optimizer}; C = {request.compute:.3g} FLOPs")
    yours = f"; your batch {_count(request.batch_tokens / request.seq_len)} sequences = {_count(request.batch_tokens)} tokens" if request.batch_tokens else ""
    text = [head + yours, "", format_table(advice, request)]
    for fit in ours:
        if "constants" in fit:  # laws_compare's free forms
            constants = ", ".join(f"{k} = {v:.3g}" for k, v in fit["constants"].items())
            text += ["", f"This workbook's own fit ({fit['experiment']}, profile {fit['profile']}): {fit['form']} with {constants} (N "
                         f"non-embedding parameters, B in sequences of {fit['seq_len']}, D in tokens), fitted on every readable optimum. Measured on N = "
                         f"{_count(fit['params'][0])}-{_count(fit['params'][1])}, D = {_count(fit['tokens'][0])}-{_count(fit['tokens'][1])} "
                         f"tokens, B = {fit['batch_sequences'][0]:.3g}-{fit['batch_sequences'][1]:.3g} sequences: it describes that scale, not "
                         "yours (docs/laws.md)."]
            continue
        body = fit["body"]
        scale = (f"a {_count(body['non_embedding_params'])}-parameter body (non-embedding), sequences of {body['seq_len']}, "
                 if body else "")
        text += ["", f"This workbook's own fit ({fit['experiment']}, profile {fit['profile']}): {fit['form']} with "
                     f"a = {fit['a']:.3g}, b = {fit['b']:.3g} (B in sequences, T in tokens; Shen et al.: 4.6, -0.51). Measured on "
                     f"{scale}T = {_count(fit['tokens'][0])}-{_count(fit['tokens'][1])} tokens, B = {fit['batch_sequences'][0]}-"
                     f"{fit['batch_sequences'][1]} sequences: it describes that scale, not yours (docs/laws.md)."]
    return "\n".join(text)


EXAMPLE = ("--params", "124M", "--tokens", "2.5B")  # GPT-2 small's size on 2.5 B tokens: the README's example


def example_table(metrics_root: str | Path = METRICS) -> str:
    """The README's example: what `python -m replication advise` prints at EXAMPLE, up to the end of its table."""
    text = report(Request(params=parse_count("--params", EXAMPLE[1]), tokens=parse_count("--tokens", EXAMPLE[3])),
                  metrics_root=metrics_root)
    return "\n\n".join(text.split("\n\n")[:2])
