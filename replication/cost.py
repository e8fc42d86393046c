"""What each stage of a profile costs on one GPU, estimated from the measured GPU benchmark.

The benchmark (`metrics/bench_gpu.json`, `python -m replication.bench --device cuda`) measures training
throughput of the gpu profile's model at several batch sizes and ensemble sizes. A group of runs then
costs its FLOPs (`model.flops_per_token`, evaluations at a third of a training token's) divided by the
peak the benchmark measured times the utilisation it measured at that many tokens per step, interpolated
in log space. Below the smallest step it measured, a step takes the same time (it is latency-bound), so the
utilisation falls in proportion. Beyond the largest, it is held at its last value: for models larger than
the benchmarked one, which use a GPU better, the estimate is an upper bound.

A stage's runs are declared on an empty store ("the first round"): follow-ups (more seeds at a best
cell, a refined LR) appear only once earlier runs are stored. The estimate scales the first round by the
ratio of the whole stage to its first round as measured on the cpu profile's committed records, both
priced the same way. A stage whose first round needs another experiment's stored runs falls back to its
grid; one whose runs are sized from a hub corpus that is not read here is not priced.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from replication.bench import GPU_MODELS
from replication.ensemble import plan
from replication.experiments import declared_runs
from replication.sizes import flops_per_token
from replication.params import experiment
from replication.spec import ConfigError, RunSpec
from replication.runner import GPU_MAX_MEMBERS

GPU_BENCH = "metrics/bench_gpu.json"
EVAL_FLOPS_SHARE = 1 / 3  # a forward pass of a validation token against a forward + backward of a training one


@dataclass(frozen=True)
class Throughput:
    """Utilisation measured per tokens-per-step, for single runs and for ensembles (by batch size)."""

    gpu: str
    peak_gflops: float
    single: tuple[tuple[float, float], ...]  # (tokens per step, MFU), sorted
    ensemble: dict  # batch size -> ((members, fraction of a single run's MFU at batch x members), ...)

    def mfu(self, batch_size: int, members: int, seq_len: int) -> float:
        """The utilisation of `members` runs side by side at `batch_size` sequences of `seq_len` tokens."""
        tokens = batch_size * members * seq_len
        smallest, its_mfu = self.single[0]
        mfu = its_mfu * tokens / smallest if tokens < smallest else _interp(self.single, tokens)  # latency-bound below
        if members > 1 and self.ensemble:
            near = min(self.ensemble, key=lambda b: abs(np.log(b) - np.log(batch_size)))
            mfu *= min(1.0, _interp(self.ensemble[near], members))
        return mfu


def _interp(points: tuple[tuple[float, float], ...], x: float) -> float:
    """Log-log interpolation, held flat outside the measured points."""
    xs, ys = zip(*points)
    return float(np.exp(np.interp(np.log(x), np.log(xs), np.log(ys))))


def load_throughput(path: str | Path = GPU_BENCH) -> Throughput:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no GPU benchmark; run `python -m replication.bench --device cuda --out {path}` on a GPU")
    bench = json.loads(path.read_text())
    try:
        rows = bench["models"]["gpu"]
        seq_len = GPU_MODELS["gpu"][2]  # the sequence length the benchmark trains at
        single = sorted({(r["batch_size"] * seq_len, r["mfu"]) for r in rows if r["members"] == 1 and not r.get("mfu_failed")})
        if not single:
            raise ConfigError(f"{path}: every single-run row is a failed measurement (MFU above 100 %); run the benchmark again")
        ensemble: dict[int, list] = {}
        for r in rows:
            if r["members"] > 1 and r.get("fraction_of_single_run_at_batch_BxM"):
                ensemble.setdefault(r["batch_size"], []).append((r["members"], r["fraction_of_single_run_at_batch_BxM"]))
        return Throughput(bench["machine"]["gpu"], bench["matmul_peak_gflops"], tuple(single),
                          {b: tuple(sorted(v)) for b, v in ensemble.items()})
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a GPU benchmark of this workbook (missing {err})") from err


def groups(specs: list[RunSpec], max_members: int = GPU_MAX_MEMBERS) -> list[list[RunSpec]]:
    """The ensembles a GPU sweep trains (`ensemble.plan` without the memory check of this machine)."""
    return plan(specs, max_members, fit=lambda spec, most: most)


def group_seconds(group: list[RunSpec], tp: Throughput) -> float:
    """GPU seconds of one ensemble: training plus evaluation FLOPs at the measured utilisation."""
    s, members = group[0], len(group)
    fpt = flops_per_token(s.model, s.data.vocab_size, s.data.seq_len)
    evals = s.tokens // s.eval_every_tokens + 1
    flops = members * fpt * (s.tokens + EVAL_FLOPS_SHARE * evals * s.data.val_tokens)
    micro = s.micro_batch_size or s.batch_size
    return flops / (tp.peak_gflops * 1e9 * tp.mfu(micro, members, s.data.seq_len))


def seconds(specs: list[RunSpec], tp: Throughput) -> float:
    return sum(group_seconds(g, tp) for g in groups(specs))


def first_round(name: str, params: dict, profile: str) -> tuple[list[RunSpec], str]:
    """The runs stage `name` declares on an empty store, offline; else its grid. Returns (runs, which).

    A stage whose runs are sized from a hub corpus (a fine-tuning mixture) is not priced, since declaring
    them would read the corpus: it returns no runs and says so."""
    from replication.data import DataError, offline
    exp = experiment(params, name, profile)
    with tempfile.TemporaryDirectory() as empty:
        try:
            with offline():
                return declared_runs(exp, params, empty), "declared"
        except (RuntimeError, FileNotFoundError):  # its runs follow from another experiment's stored runs
            return exp.expand(), "grid"
        except (DataError, OSError):  # its runs are sized from a hub corpus: the grid would mislead
            return [], "needs the corpus"


def follow_up_factor(name: str, params: dict, tp: Throughput, which: str, results_root="results") -> float | None:
    """The whole stage over its first round (`which`: declared or grid) on the cpu profile's stored records,
    priced alike; None where the cpu records are not there."""
    exp = experiment(params, name, "cpu")
    try:
        whole = seconds(declared_runs(exp, params, results_root), tp)
    except (RuntimeError, FileNotFoundError):
        return None
    specs, cpu_which = first_round(name, params, "cpu")
    first = seconds(specs if cpu_which == which else exp.expand(), tp)
    return whole / first if first else None


def stage_costs(params: dict, profile: str, bench: str | Path = GPU_BENCH, results_root="results") -> list[dict]:
    """Per experiment: first-round runs and GPU minutes, the cpu-measured follow-up factor, the estimate."""
    tp = load_throughput(bench)
    rows = []
    for name in params.get("experiments", {}):
        if profile == "paper" and "paper" not in (params["experiments"][name] or {}).get("profiles", {}):
            continue  # no paper configuration recorded: the cpu grid at paper scale would mislead
        specs, which = first_round(name, params, profile)
        first = None if which == "needs the corpus" else seconds(specs, tp) / 60  # declared, no runs: trains nothing on a GPU
        factor = follow_up_factor(name, params, tp, which, results_root) if specs else None
        rows.append({"stage": name, "first_round_runs": len(specs), "first_round_from": which,
                     "first_round_gpu_min": first, "follow_up_factor": factor,
                     "estimate_gpu_min": None if first is None else first * (factor or 1.0), "gpu": tp.gpu})
    return rows


def format_costs(rows: list[dict], hours: bool = False) -> str:
    """A Markdown table of `stage_costs`, in GPU-minutes (or hours) on the benchmarked GPU."""
    unit, div = ("GPU-h", 60) if hours else ("GPU-min", 1)
    lines = [f"| stage | first-round runs | first round ({unit}) | x follow-ups (cpu) | estimate ({unit}) |",
             "|---|---:|---:|---:|---:|"]
    num = lambda x, fmt: "n/a" if x is None else format(x, fmt)  # noqa: E731
    for r in rows:
        src = {"declared": "", "grid": " (grid)"}.get(r["first_round_from"], f" ({r['first_round_from']})")
        first, estimate = (None if r[k] is None else r[k] / div for k in ("first_round_gpu_min", "estimate_gpu_min"))
        lines.append(f"| {r['stage']} | {r['first_round_runs']}{src} | {num(first, ',.1f')} | "
                     f"{num(r['follow_up_factor'], '.2f')} | {num(estimate, ',.1f')} |")
    total = sum(r["estimate_gpu_min"] or 0 for r in rows) / div
    unpriced = sum(r["estimate_gpu_min"] is None for r in rows)
    lines.append(f"| **all** | | | | **{total:,.1f}**{f' + {unpriced} not priced' if unpriced else ''} |")
    return "\n".join(lines)
