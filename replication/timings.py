"""The README's stage-time table, built from the `timing` block each stage writes into its metrics file.

`python -m replication.timings` rewrites the table in README.md (between the `timings` markers);
tests/test_timings.py fails when the README and the metrics disagree, so no stage time is typed by hand.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

START, END = "<!-- timings:start (python -m replication.timings) -->", "<!-- timings:end -->"


def stage_timings(root: str | Path = ".") -> list[dict]:
    """One row per dvc.yaml stage whose metrics file carries a timing block, in dvc.yaml's order."""
    root = Path(root)
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    rows = []
    for name, stage in stages.items():
        for entry in stage.get("metrics", []):
            path = root / (next(iter(entry)) if isinstance(entry, dict) else entry)
            timing = json.loads(path.read_text()).get("timing") if path.is_file() else None
            if timing:
                rows.append({"stage": name, **timing})
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| stage | wall time | runs trained | profile | machine |", "|---|---|---|---|---|"]
    for r in rows:
        trained = "" if r.get("runs_trained") is None else f"{r['runs_trained']}"
        lines.append(f"| `{r['stage']}` | {_minutes(r['wall_s'])} | {trained} | {r.get('profile', '')} | {r.get('machine', '')} |")
    total = sum(r["wall_s"] for r in rows)
    lines.append(f"| **all stages** | **{_minutes(total)}** | {sum(r.get('runs_trained') or 0 for r in rows)} | | |")
    return "\n".join(lines)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def readme_block(root: str | Path = ".") -> str:
    return f"{START}\n{markdown_table(stage_timings(root))}\n{END}"


def update_readme(root: str | Path = ".") -> bool:
    """Rewrite the README's table from the metrics; True when it changed."""
    path = Path(root) / "README.md"
    text = path.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path}: no timings block ({START} ... {END})")
    new = pattern.sub(lambda _: readme_block(root), text)
    path.write_text(new)
    return new != text


if __name__ == "__main__":
    changed = update_readme()
    print("README.md: stage times updated" if changed else "README.md: stage times already current")
    sys.exit(0)
