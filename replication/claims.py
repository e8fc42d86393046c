"""Claims as notebooks carry them: a stable id (e.g. `marek.beta2.half_life_constant`), the paper's words
and number (from the ledger), what we measured in words and in numbers, and the verdict the ledger's rule
gives those numbers (`replication.verdicts`). Plus the caveats the code detects."""

from __future__ import annotations

import pandas as pd

from replication import ledger
from replication.verdicts import MIN_STEPS, decide, edge, share_words


def claim(claim_id: str, measured: str, measurement: dict) -> dict:
    """One claim decided by the rule its ledger entry names; `measurement` is what the rule reads and what
    the metrics file stores (so the report can decide it again), `measured` says it in words."""
    entry = ledger.entry(claim_id)
    decision = decide(entry.rule, entry.params, measurement, entry.requires)
    return {"id": claim_id, "claim": entry.statement, "paper": entry.paper_value, "measured": measured,
            "measurement": measurement, **decision.as_dict()}


def by_id(claims: list[dict]) -> dict[str, dict]:
    """Claims addressed by their stable ids (tests and the ledger never match on sentences)."""
    return {c["id"]: c for c in claims}


def claims_markdown(claims: list[dict], caveats: list[str] | None = None) -> str:
    lines = ["| claim | paper | this replication | verdict |", "|---|---|---|---|"]
    for c in claims:
        why = c.get("reason", "") + (f"; {share_words(c['verdict'], c['share'])}" if c.get("share") is not None else "")
        lines.append(f"| {c['claim']} <br>`{c['id']}` | {c['paper']} | {c['measured']} | **{c['verdict']}** <br>{why} |")
    lines += [""] + [f"*Caveat:* {c}" for c in caveats or [] if c]
    return "\n".join(lines)


def claims_markdown_display(claims: list[dict], caveats: list[str] | None = None):
    from IPython.display import Markdown

    return Markdown(claims_markdown(claims, caveats))


def grid_edges(best: pd.DataFrame, by: list[str], names: dict[str, str] | None = None) -> list[dict]:
    """The best cells of `best` (a `fit.best_per_group` table, already narrowed to the cells a claim
    decides on) that sit on the edge of their grid, one entry per hyperparameter on its edge, for a
    measurement's `edges`: the rules read them as "not testable at this scale" (the optimum may lie
    outside the grid). `names` says a hyperparameter in words (default: its last dotted part)."""
    if "edge_on" not in best:
        return []
    out = []
    for _, r in best[best["edge_on"].fillna("") != ""].iterrows():
        cell = ", ".join(_cell_label(k, r[k]) for k in by)
        out += [edge((names or {}).get(k, k.split(".")[-1]), cell) for k in r["edge_on"].split(",")]
    return out


def _cell_label(key: str, value) -> str:
    """A grid coordinate as a reader says it: B=16 for a batch size, the bare name for a categorical key
    (an optimizer, a schedule, an arm), key=value otherwise."""
    if key == "batch_size":
        return f"B={value}"
    if isinstance(value, str):
        return value
    return f"{key.split('.')[-1]}={value}"


def grid_edge_caveat(best: pd.DataFrame, by: list[str]) -> str | None:
    """A sentence naming the best cells that sit on the edge of their grid (their optimum may lie outside)."""
    if "best_on_edge" not in best or not best["best_on_edge"].any():
        return None
    edge = best[best["best_on_edge"]]
    cells = ", ".join("(" + ", ".join(f"{k.split('.')[-1]} {r[k]}" for k in by) + ")" for _, r in edge.iterrows())
    return (f"{len(edge)} of {len(best)} best cells lie on the edge of their grid, so their true optimum may be "
            f"outside it and their loss is an upper bound: {cells}.")


def few_steps_caveat(runs: pd.DataFrame, threshold: int = MIN_STEPS) -> str | None:
    """At a fixed token budget the largest batches take few optimizer steps; say so when it is under
    `threshold`, since then "small beats large per token" partly measures step starvation."""
    steps = runs.groupby("batch_size")["steps"].max()
    starved = steps[steps < threshold]
    if starved.empty:
        return None
    return ("at this token budget " + ", ".join(f"B={b} trains for {int(n)} optimizer steps" for b, n in starved.items())
            + f" (under {threshold}); a claim that rests on those cells is not testable at this scale, since they measure "
            "how few steps they get more than their batch size (the paper's largest competitive batches take hundreds to "
            "thousands of steps).")
