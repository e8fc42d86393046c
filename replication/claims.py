"""Claims, verdicts and caveats shared by every paper: a claim is a dict with a stable id (e.g.
`marek.beta2.half_life_constant`), the paper's words and number, ours, and a verdict computed from them."""

from __future__ import annotations

import pandas as pd

VERDICTS = ("confirmed", "partly", "not confirmed", "not tested at this scale")


def claim(claim_id: str, text: str, paper: str, measured: str, verdict: str) -> dict:
    """One claim as notebooks, metrics files and (soon) the ledger carry it."""
    return {"id": claim_id, "claim": text, "paper": paper, "measured": measured, "verdict": verdict}


def by_id(claims: list[dict]) -> dict[str, dict]:
    """Claims addressed by their stable ids (tests and the ledger never match on sentences)."""
    return {c["id"]: c for c in claims}


def verdict(confirmed: bool | None, partly: bool = False) -> str:
    if confirmed is None:
        return "not tested at this scale"
    return "confirmed" if confirmed else ("partly" if partly else "not confirmed")

def claims_markdown(claims: list[dict], caveats: list[str] | None = None) -> str:
    lines = ["| claim | paper | this replication | verdict |", "|---|---|---|---|"]
    lines += [f"| {c['claim']} <br>`{c['id']}` | {c['paper']} | {c['measured']} | **{c['verdict']}** |" for c in claims]
    lines += [""] + [f"*Caveat:* {c}" for c in caveats or [] if c]
    return "\n".join(lines)

def claims_markdown_display(claims: list[dict], caveats: list[str] | None = None):
    from IPython.display import Markdown

    return Markdown(claims_markdown(claims, caveats))

def grid_edge_caveat(best: pd.DataFrame, by: list[str]) -> str | None:
    """A sentence naming the best cells that sit on the edge of their grid (their optimum may lie outside)."""
    if "best_on_edge" not in best or not best["best_on_edge"].any():
        return None
    edge = best[best["best_on_edge"]]
    cells = ", ".join("(" + ", ".join(f"{k.split('.')[-1]} {r[k]}" for k in by) + ")" for _, r in edge.iterrows())
    return (f"{len(edge)} of {len(best)} best cells lie on the edge of their grid, so their true optimum may be "
            f"outside it and their loss is an upper bound: {cells}.")

def few_steps_caveat(runs: pd.DataFrame, threshold: int = 100) -> str | None:
    """At a fixed token budget the largest batches take few optimizer steps; say so when it is under
    `threshold`, since then "small beats large per token" partly measures step starvation."""
    steps = runs.groupby("batch_size")["steps"].max()
    starved = steps[steps < threshold]
    if starved.empty:
        return None
    return ("at this token budget " + ", ".join(f"B={b} trains for {int(n)} optimizer steps" for b, n in starved.items())
            + f" (under {threshold}); comparisons against those batch sizes are dominated by how few steps they get, "
            "more than in the paper, where the largest batches it calls competitive take hundreds to thousands of steps.")
