"""The generated blocks of the README and docs/, built from metrics files so that no number in them is typed by hand.

Each block lives in one file (`FILES`) between the markers `<!-- NAME:start (python -m replication.readme) -->`
and `<!-- NAME:end -->`; `python -m replication.readme` rewrites every block in its file:
- `verdicts` (README.md): findings per paper and verdict, from `metrics/report.json`;
- `advise` (README.md): `python -m replication advise`'s table for one example (from laws.yaml alone);
- `gallery` (docs/figures.md): a thumbnail of every figure under figures/, grouped by paper, its paths
  relative to the file it lands in;
- `cost_gpu` and `cost_paper` (docs/scaling-out.md): each stage's estimated GPU time on the `gpu` and
  `paper` profiles (`replication.cost`, from params.yaml, `metrics/bench_gpu.json` and the committed cpu records);
- `ensembles`, `ensembles_gpu`, `compiled` and `timings` (docs/performance.md): eager single runs and
  ensembles (`metrics/bench.json`, `metrics/bench_gpu.json`), compiled against eager training steps
  (`metrics/bench.json`), and each stage's wall time, from the `timing` block its metrics file carries.
The report stage rewrites `gallery` and `verdicts`. A file missing from the root is skipped (the tests run
notebooks in temporary copies of the workbook). tests/test_readme.py fails when a block and the metrics disagree.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path

from replication import pipeline
from replication.ledger import PAPER_ORDER
from replication.verdicts import VERDICTS


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start (python -m replication.readme) -->", f"<!-- {name}:end -->"


def stage_timings(root: str | Path = ".") -> list[dict]:
    """One row per dvc.yaml stage whose metrics file (a JSON output under metrics/) carries a timing block,
    in dvc.yaml's order."""
    root = Path(root)
    rows = []
    for name, stage in pipeline.stages(root / "dvc.yaml").items():
        for entry in [o for o in pipeline.outputs(stage) if o.startswith("metrics/") and o.endswith(".json")]:
            path = root / entry
            timing = json.loads(path.read_text()).get("timing") if path.is_file() else None
            if timing:
                rows.append({"stage": name, **timing})
    return rows


def timings_table(root: str | Path = ".") -> str:
    rows = stage_timings(root)
    lines = ["| stage | wall time | runs trained | profile | machine |", "|---|---|---|---|---|"]
    for r in rows:
        trained = "" if r.get("runs_trained") is None else f"{r['runs_trained']}"
        lines.append(f"| `{r['stage']}` | {_minutes(r['wall_s'])} | {trained} | {r.get('profile', '')} | {r.get('machine', '')} |")
    total = sum(r["wall_s"] for r in rows)
    lines.append(f"| **all stages** | **{_minutes(total)}** | {sum(r.get('runs_trained') or 0 for r in rows)} | | |")
    return "\n".join(lines)


def compiled_table(root: str | Path = ".", bench: str = "metrics/bench.json") -> str:
    """Compiled vs eager from the benchmark: tokens/s, MFU, and the speed-ups the Speed II issue targets."""
    result = json.loads((Path(root) / bench).read_text())
    lines = [f"Measured by `python -m replication.bench` on {result['machine']['cpu_count']} cores "
             f"({result['matmul_dtype']} matmul peak {result['matmul_peak_gflops']:.0f} GFLOP/s, torch {result['machine']['torch']}), "
             f"all rows in one run{_repeats(result)}.", "",
             "| model | batch | members | eager tokens/s | compiled tokens/s | compiled MFU | vs eager | vs eager runs one after another | first compiled step (compilation) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for rows in result.get("compiled", {}).values():
        for r in rows:
            lines.append(
                f"| {r['model']} | {r['batch_size']} | {r['members']} | {r['eager_tokens_per_s']:,.0f} | {r['compiled_tokens_per_s']:,.0f} "
                f"| {_percent(r['compiled_mfu'], r.get('compiled_mfu_failed'))} | {ratio_text(r, 'speedup_vs_eager')} "
                f"| {ratio_text(r, 'speedup_vs_eager_sequential')} | {r['compile_s']:.0f} s |"
            )
    return "\n".join(lines)


def ensembles_table(root: str | Path = ".", bench: str = "metrics/bench.json") -> str:
    """Eager throughput of single runs and ensembles, and what batching members buys."""
    result = json.loads((Path(root) / bench).read_text())
    peaks = ", ".join(f"{p:.0f}" for p in result.get("matmul_peak_measurements", []))
    lines = [f"Peak {result['matmul_peak_gflops']:.0f} GFLOP/s ({result['matmul_dtype']}{f'; the best of {peaks}' if peaks else ''}), "
             f"{result['machine']['threads']} threads{_repeats(result)}.", "",
             "| model | batch | members | tokens/s | MFU | vs the M runs one after another | vs one run at batch B x M |",
             "|---|---|---|---|---|---|---|"]
    for rows in result["models"].values():
        for r in rows:
            lines.append(f"| {r['model']} | {r['batch_size']} | {r['members']} | {r['tokens_per_s']:,.0f} | {_percent(r['mfu'], r.get('mfu_failed'))} "
                         f"| {ratio_text(r, 'speedup_vs_sequential')} | {ratio_text(r, 'fraction_of_single_run_at_batch_BxM', '{:.0%}')} |")
    return "\n".join(lines)


def gallery(root: str | Path = ".", at: str | None = None) -> str:
    """A grid of thumbnails linking every figure under figures/, grouped by folder (paper); paths are
    relative to the file `at` (relative to `root`; default: where `FILES` puts the gallery)."""
    root = Path(root)
    base = Path(at or FILES["gallery"]).parent
    groups: dict[str, list[str]] = {}
    for png in sorted((root / "figures").glob("*/*.png")):
        groups.setdefault(png.parent.name, []).append(Path(os.path.relpath(png.relative_to(root), base)).as_posix())
    out = []
    for group in sorted(groups, key=lambda g: (g != "report", PAPER_ORDER.index(g) if g in PAPER_ORDER else 9, g)):
        out += [f"**{group}**", "", "<p>"]
        out += [f'<a href="{p}"><img src="{p}" width="240" alt="{Path(p).stem}" title="{Path(p).stem}"></a>' for p in groups[group]]
        out += ["</p>", ""]
    return "\n".join(out).rstrip()


def verdicts_table(root: str | Path = ".", report: str = "metrics/report.json") -> str:
    """Findings per paper and verdict, as the last `report` stage counted them, and the checks of the
    machinery apart (how many of them pass)."""
    result = json.loads((Path(root) / report).read_text())
    columns = ["claims", *VERDICTS]
    checks = result.get("check_verdicts", {})
    lines = [f"| paper | findings | {' | '.join(columns[1:])} | checks passed |", "|---|" + "---|" * (len(columns) + 1)]
    for paper in sorted(result["verdicts"], key=lambda p: PAPER_ORDER.index(p) if p in PAPER_ORDER else 99):
        mine = checks.get(paper, {})
        lines.append(f"| {paper} | " + " | ".join(str(result["verdicts"][paper][c]) for c in columns)
                     + f" | {mine.get('confirmed', 0)} of {mine.get('claims', 0)} |")
    return "\n".join(lines) + (f"\n\n({result['findings']} findings and {result['checks']} sanity checks of the machinery, "
                               f"listed apart in REPORT.md; profile `{result['profile']}`.)")


def _percent(x: float, failed: bool = False) -> str:
    """A utilisation; one above 100 % is impossible and shown as the failed measurement it is."""
    if failed:
        return f"failed ({x:.0%} > 100 %)"
    return f"{x:.1%}" if x < 0.095 else f"{x:.0%}"


def _repeats(result: dict) -> str:
    """How a benchmark's rows were measured, where it says (runs before interleaved repeats measured each once)."""
    return f"; medians of {result['repeats']} interleaved repeats, [min-max] of each ratio over them" if "repeats" in result else ""


def ratio_text(row: dict, key: str, fmt: str = "{:.2f}x") -> str:
    """A benchmark ratio's median over its interleaved repeats, with their [min-max] when it has them (the
    README tables and the benchmark's own printout)."""
    if row.get(key) is None:
        return ""
    low, high = row.get(f"{key}_range") or (None, None)
    return fmt.format(row[key]) + ("" if low is None else f" [{fmt.format(low)}-{fmt.format(high)}]")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def cost_table(root: str | Path = ".", profile: str = "gpu") -> str:
    """Each stage's estimated GPU time on `profile`, priced from `metrics/bench_gpu.json` (replication.cost)."""
    from replication.cost import format_costs, stage_costs
    from replication.params import load_params

    with contextlib.chdir(root):  # run ids of runs started from stored weights name the store as "results/..."
        rows = stage_costs(load_params("params.yaml"), profile, "metrics/bench_gpu.json", "results")
    return format_costs(rows, hours=profile == "paper")


def advise_example(root: str | Path = ".") -> str:
    """`python -m replication advise` at GPT-2 small's size and budget: the command and its table of laws."""
    from replication.papers.laws.advise import EXAMPLE, example_table

    return ("```\n$ python -m replication advise " + " ".join(EXAMPLE) + "\n" + example_table(Path(root) / "metrics") + "\n```\n"
            "The output goes on with the spread between the laws, the laws not evaluated, warnings (extrapolations, what "
            "each law counts), sources and this workbook's own fit; [x] is borrowed from the other laws.")


BLOCKS = {"timings": timings_table, "advise": advise_example, "ensembles": ensembles_table,
          "ensembles_gpu": lambda root=".": ensembles_table(root, bench="metrics/bench_gpu.json"), "compiled": compiled_table, "gallery": gallery, "verdicts": verdicts_table,
          "cost_gpu": cost_table, "cost_paper": lambda root=".": cost_table(root, "paper")}

# The one file (relative to the workbook root) that holds each block.
FILES = {"verdicts": "README.md", "advise": "README.md", "gallery": "docs/figures.md",
         "cost_gpu": "docs/scaling-out.md", "cost_paper": "docs/scaling-out.md",
         "ensembles": "docs/performance.md", "ensembles_gpu": "docs/performance.md", "compiled": "docs/performance.md",
         "timings": "docs/performance.md"}


def block(name: str, root: str | Path = ".") -> str:
    start, end = _markers(name)
    return f"{start}\n{BLOCKS[name](root)}\n{end}"


def update_docs(root: str | Path = ".", only: tuple[str, ...] | None = None) -> list[str]:
    """Rewrite the generated blocks (all, or those named in `only`), each in its own file (`FILES`), from the
    metrics and figures; files missing from `root` are skipped. Returns the names of the blocks that changed."""
    changed = []
    names = list(only or BLOCKS)
    for file in dict.fromkeys(FILES[n] for n in names):
        path = Path(root) / file
        if not path.is_file():
            continue
        text = original = path.read_text()
        for name in (n for n in names if FILES[n] == file):
            start, end = _markers(name)
            pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
            if not pattern.search(text):
                raise ValueError(f"{path}: no {name} block ({start} ... {end})")
            new = pattern.sub(lambda _: block(name, root), text)
            if new != text:
                changed.append(name)
            text = new
        if text != original:
            path.write_text(text)
    return changed


update_readme = update_docs  # the name the report stage and older callers use


if __name__ == "__main__":
    changed = update_docs()
    if changed:
        print("updated " + ", ".join(f"{n} ({FILES[n]})" for n in changed))
    else:
        print("every generated block already current (" + ", ".join(dict.fromkeys(FILES.values())) + ")")
    sys.exit(0)
