"""`python -m replication.bench`: throughput against the machine's own measured matmul peak.

Everything is measured in one process, so the ratios (MFU, ensemble speed-up) compare like with like:
1. the fp32 matmul peak (GFLOP/s) from large square matmuls,
2. single-run throughput (tokens/s, model FLOP/s) at batch sizes 1, 4, 16, 64,
3. ensemble throughput at batch sizes 1 and 4 with M = 4, 8, 16, 32 members,
4. MFU for each against the best of the peaks measured before, between and after the sections (an MFU
   above 100 % is reported as a failed measurement), and the ensemble's speed-up over the same M runs one
   after another; every workload is timed several times round-robin and each ratio is the median over
   the repeats, with its range,
5. memory per member,
6. the other CPU lever: one single-threaded worker process per core.
Training steps use synthetic tokens (the data pipeline is not what is measured).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from replication.model import GPT
from replication.sizes import flops_per_token
from replication.optim import build_optimizer
from replication.spec import MODEL_PRESETS, ModelConfig, run_spec_from_dict
from replication.step import TrainStep
from replication.device import resolve_device
from replication.readme import ratio_text

MODELS = {"cpu": ("micro", 2048, 128), "larger": ("mini", 2048, 128)}  # preset, vocab, seq_len
GPU_MODELS = {"gpu": ("lm11m", 8192, 512)}  # on CUDA: the gpu profile's model and sequence length
# Compiled against eager: (preset, vocab, seq_len, [(batch size, members), ...]); the first pair is the
# single run every speed-up is measured against.
COMPILED = {
    "micro": ("micro", 2048, 128, [(1, 1), (1, 8)]),
    "nano": ("nano", 2048, 64, [(1, 1), (1, 8)]),
    "mini": ("mini", 2048, 128, [(16, 1)]),
}
GPU_COMPILED = {"lm11m": ("lm11m", 8192, 512, [(1, 1), (1, 32), (64, 1)])}


def matmul_peak_gflops(device: torch.device, n: int = 2048, dtype=torch.float32, seconds: float = 2.0) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(4):
            a @ b
        reps += 4
        _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Workload:
    """Full training steps (forward, backward, optimizer) of `members` runs side by side through the training
    loop's own `TrainStep` (compiled or eager), built and warmed once so that it can be timed repeatedly."""

    def __init__(self, preset: str, vocab: int, seq_len: int, batch_size: int, members: int, device: torch.device,
                 optimizer: str = "adamw", compile: bool = False):
        self.preset, self.vocab, self.seq_len, self.batch_size, self.members, self.device = preset, vocab, seq_len, batch_size, members, device
        cfg = ModelConfig(**MODEL_PRESETS[preset])
        spec = run_spec_from_dict({
            "model": MODEL_PRESETS[preset], "data": {"vocab_size": vocab, "seq_len": seq_len},
            "optimizer": {"name": optimizer}, "batch_size": batch_size, "tokens": batch_size * seq_len,
        })
        self.model = GPT(cfg, vocab, seq_len, list(range(members))).to(device)
        self.opt = build_optimizer(list(self.model.members), [spec] * members)
        gen = torch.Generator().manual_seed(0)
        idx = torch.randint(0, vocab, (members, batch_size, seq_len + 1), generator=gen).to(device)
        self.x, self.y = idx[..., :-1], idx[..., 1:]
        self.train_step = TrainStep(self.model, device, compile)
        self.flops_per_token = flops_per_token(cfg, vocab, seq_len)
        self.transient_bytes = 0  # on CUDA: the most a step allocated above what was resident before it
        first = time.perf_counter()
        self.step()
        _sync(device)
        self.first_step_s = time.perf_counter() - first  # with compilation, when compiled
        self.step()
        _sync(device)

    def step(self) -> None:
        self.train_step(self.x, self.y)
        self.opt.step()
        self.model.zero_grad(set_to_none=True)

    def tokens_per_s(self, seconds: float) -> float:
        """Throughput over one window of at least `seconds` (and 3 steps)."""
        if self.device.type == "cuda":  # every workload is resident: measure what this one's steps add to it
            resident = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or steps < 3:
            self.step()
            steps += 1
            _sync(self.device)
        elapsed = time.perf_counter() - start
        if self.device.type == "cuda":
            self.transient_bytes = max(self.transient_bytes, torch.cuda.max_memory_allocated(self.device) - resident)
        return steps * self.members * self.batch_size * self.seq_len / elapsed

    def describe(self) -> dict:
        param_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters()) / self.members
        state_bytes = sum(v.numel() * v.element_size() for s in self.opt.state.values() for v in s.values() if torch.is_tensor(v)) / self.members
        out = {"model": self.preset, "batch_size": self.batch_size, "members": self.members,
               "params_grads_state_mb_per_member": (2 * param_bytes + state_bytes) / 2**20,
               "compiled": self.train_step.compiled, "first_step_s": self.first_step_s}
        if self.device.type == "cuda":  # its weights and optimizer state, plus the most its steps allocated on top
            resident = sum(p.numel() * p.element_size() for p in self.model.parameters()) + state_bytes * self.members
            out["peak_memory_mb_per_member"] = (resident + self.transient_bytes) / 2**20 / self.members
        return out


def interleaved(workloads: dict, seconds: float, repeats: int) -> dict:
    """tokens/s of every workload, `repeats` times, round-robin: the timings a ratio compares are taken moments
    apart, so a machine that speeds up or slows down in between moves both, and the spread of the repeats says
    how much noise there is."""
    rates = {key: [] for key in workloads}
    for _ in range(repeats):
        for key, workload in workloads.items():
            rates[key].append(workload.tokens_per_s(seconds))
    return rates


def median_and_range(values: list[float]) -> tuple[float, list[float]]:
    """Repeated measurements as their median and [min, max]."""
    return statistics.median(values), [min(values), max(values)]


def ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Two interleaved measurements divided repeat by repeat (each pair taken in the same round)."""
    return [a / b for a, b in zip(numerators, denominators)]


def step_throughput(preset: str, vocab: int, seq_len: int, batch_size: int, members: int, device: torch.device,
                    seconds: float = 3.0, optimizer: str = "adamw", compile: bool = False) -> dict:
    """One workload timed once (a per-core worker's measurement)."""
    workload = Workload(preset, vocab, seq_len, batch_size, members, device, optimizer, compile)
    return {**workload.describe(), "tokens_per_s": workload.tokens_per_s(seconds)}


def _worker(args) -> float:
    torch.set_num_threads(1)
    return step_throughput(*args)["tokens_per_s"]


def per_core_workers(preset, vocab, seq_len, batch_size, members, workers: int, seconds: float) -> float:
    """Aggregate tokens/s of `workers` single-threaded processes each training `members` runs."""
    with mp.get_context("spawn").Pool(workers) as pool:
        rates = pool.map(_worker, [(preset, vocab, seq_len, batch_size, members, torch.device("cpu"), seconds)] * workers)
    return sum(rates)


def run(device_name: str = "auto", seconds: float = 1.0, quick: bool = False, repeats: int = 3) -> dict:
    device = resolve_device(device_name)
    # Training runs in fp32 on CPU and under bf16 autocast on CUDA: measure the peak of that dtype, before, between
    # and after the sections, and divide by the best (a peak measured while the machine was slowed would inflate MFU).
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak_s = max(0.5, 2 * seconds)
    peaks = [matmul_peak_gflops(device, dtype=dtype, seconds=peak_s)]
    result = {
        "machine": {"device": str(device), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "platform": platform.platform(),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "matmul_dtype": "bfloat16" if device.type == "cuda" else "float32",
        "repeats": repeats, "seconds_per_window": seconds,
        "models": {},
    }
    batch_sizes = (1, 4) if quick else (1, 4, 16, 64)
    ensemble_sizes = (4, 8) if quick else (4, 8, 16, 32)
    for label, (preset, vocab, seq_len) in (GPU_MODELS if device.type == "cuda" else MODELS).items():
        if quick and label == "larger":
            continue
        single_sizes = sorted({*batch_sizes, *(b * m for b in (1, 4) for m in ensemble_sizes if b * m <= 128)})
        shapes = [(b, 1) for b in single_sizes] + [(b, m) for b in (1, 4) for m in ensemble_sizes]
        workloads = {shape: Workload(preset, vocab, seq_len, *shape, device) for shape in shapes}
        rates = interleaved(workloads, seconds, repeats)
        rows = []
        for (b, m), workload in workloads.items():
            if m == 1 and b not in batch_sizes:
                continue  # timed only as the B x M reference of an ensemble
            row = workload.describe()
            row["tokens_per_s"], row["tokens_per_s_range"] = median_and_range(rates[b, m])
            row["model_gflops"] = row["tokens_per_s"] * workload.flops_per_token / 1e9
            if m > 1:
                row["speedup_vs_sequential"], row["speedup_vs_sequential_range"] = median_and_range(ratios(rates[b, m], rates[b, 1]))
                if (b * m, 1) in rates:
                    row["fraction_of_single_run_at_batch_BxM"], row["fraction_of_single_run_at_batch_BxM_range"] = (
                        median_and_range(ratios(rates[b, m], rates[b * m, 1])))
            rows.append(row)
        del workloads
        result["models"][label] = rows
        peaks.append(matmul_peak_gflops(device, dtype=dtype, seconds=peak_s))
        if device.type == "cpu" and (os.cpu_count() or 1) > 1:
            workers = os.cpu_count()
            result.setdefault("per_core_workers", {})[label] = {
                "workers": workers,
                "batch_size": 1,
                "workers_x1_tokens_per_s": per_core_workers(preset, vocab, seq_len, 1, 1, workers, seconds),
                "workers_x8_ensembles_tokens_per_s": per_core_workers(preset, vocab, seq_len, 1, 8, workers, seconds),
                "ensemble_8_all_threads_tokens_per_s": next(r["tokens_per_s"] for r in rows if r["members"] == 8 and r["batch_size"] == 1),
                "single_run_all_threads_tokens_per_s": next(r["tokens_per_s"] for r in rows if r["members"] == 1 and r["batch_size"] == 1),
            }
    result["compiled"] = compiled_vs_eager(GPU_COMPILED if device.type == "cuda" else COMPILED, device, seconds, quick, repeats)
    peaks.append(matmul_peak_gflops(device, dtype=dtype, seconds=peak_s))
    result["matmul_peak_gflops"], result["matmul_peak_measurements"] = max(peaks), peaks
    result["failed_measurements"] = _utilisation(result)
    return result


def _utilisation(result: dict) -> list[str]:
    """Fill in every MFU against the best peak; an MFU above 100 % is impossible, so its row is marked as a failed
    measurement (`mfu_failed`) and named in the list returned."""
    peak, failed = result["matmul_peak_gflops"], []

    def check(row: dict, key: str, gflops: float, where: str) -> None:
        row[key] = gflops / peak
        if row[key] > 1:
            row[f"{key}_failed"] = True
            failed.append(f"{where}: {key} {row[key]:.0%} > 100 % of the measured peak: a failed measurement, not a result")

    for label, rows in result["models"].items():
        for r in rows:
            check(r, "mfu", r["model_gflops"], f"{label} B={r['batch_size']} M={r['members']}")
    for label, rows in result["compiled"].items():
        for r in rows:
            for mode in ("eager", "compiled"):
                check(r, f"{mode}_mfu", r[f"{mode}_tokens_per_s"] * r["flops_per_token"] / 1e9, f"{label} B={r['batch_size']} M={r['members']} {mode}")
    return failed


def compiled_vs_eager(models: dict, device: torch.device, seconds: float, quick: bool = False, repeats: int = 3) -> dict:
    """Each (batch size, members) eager and compiled, timed interleaved; speed-ups (median and range over the
    repeats) against the same shape eager, and against the first pair's eager run.

    `speedup_vs_eager_sequential` is a row's compiled tokens/s over the single eager run's: the same
    M runs trained compiled side by side against trained eagerly one after another.
    """
    out = {}
    for label, (preset, vocab, seq_len, shapes) in models.items():
        if quick and label != "micro":
            continue
        workloads = {}
        for batch_size, members in shapes:
            workloads[batch_size, members, False] = Workload(preset, vocab, seq_len, batch_size, members, device)
            workloads[batch_size, members, True] = Workload(preset, vocab, seq_len, batch_size, members, device, compile=True)
        rates = interleaved(workloads, seconds, repeats)
        first = shapes[0]
        rows = []
        for batch_size, members in shapes:
            eager, compiled = rates[batch_size, members, False], rates[batch_size, members, True]
            row = {
                "model": preset, "batch_size": batch_size, "members": members,
                "ran_compiled": workloads[batch_size, members, True].train_step.compiled,
                "compile_s": workloads[batch_size, members, True].first_step_s,
                "flops_per_token": workloads[batch_size, members, False].flops_per_token,
            }
            row["eager_tokens_per_s"], row["eager_tokens_per_s_range"] = median_and_range(eager)
            row["compiled_tokens_per_s"], row["compiled_tokens_per_s_range"] = median_and_range(compiled)
            row["speedup_vs_eager"], row["speedup_vs_eager_range"] = median_and_range(ratios(compiled, eager))
            if members > 1 and batch_size == first[0]:
                row["speedup_vs_eager_sequential"], row["speedup_vs_eager_sequential_range"] = (
                    median_and_range(ratios(compiled, rates[first[0], first[1], False])))
            rows.append(row)
        out[label] = rows
    return out


def format_table(result: dict) -> str:
    peaks = ", ".join(f"{p:.0f}" for p in result.get("matmul_peak_measurements", []))
    lines = [f"device {result['machine']['device']} ({result['machine']['gpu'] or platform.processor() or 'cpu'}), "
             f"{result['machine']['threads']} threads; {result['matmul_dtype']} matmul peak {result['matmul_peak_gflops']:.1f} GFLOP/s "
             f"(best of {peaks}); medians of {result.get('repeats', 1)} interleaved repeats, [min-max] where a ratio is shown", ""]
    header = f"{'model':<7}{'B':>4}{'M':>4}{'tokens/s':>11}{'GFLOP/s':>9}{'MFU':>7}{'vs seq':>21}{'vs B*M':>18}{'MB/member':>11}"
    for label, rows in result["models"].items():
        lines += [f"[{label}]", header]
        for r in rows:
            lines.append(
                f"{r['model']:<7}{r['batch_size']:>4}{r['members']:>4}{r['tokens_per_s']:>11.0f}{r['model_gflops']:>9.2f}"
                f"{_mfu(r, 'mfu'):>7}{ratio_text(r, 'speedup_vs_sequential', '{:.2f}x'):>21}"
                f"{ratio_text(r, 'fraction_of_single_run_at_batch_BxM', '{:.0%}'):>18}{r['params_grads_state_mb_per_member']:>11.2f}"
            )
        lines.append("")
    for label, w in result.get("per_core_workers", {}).items():
        lines.append(
            f"[{label}] {w['workers']} single-thread workers at B=1: {w['workers_x1_tokens_per_s']:.0f} tok/s (1 run each), "
            f"{w['workers_x8_ensembles_tokens_per_s']:.0f} tok/s (8-member ensembles each); one process, all threads: "
            f"{w['single_run_all_threads_tokens_per_s']:.0f} tok/s (1 run), {w['ensemble_8_all_threads_tokens_per_s']:.0f} tok/s (M=8)"
        )
    if result.get("compiled"):
        lines += ["", "compiled vs eager (TrainStep; the optimizer is the fused torch.optim kernel either way)",
                  f"{'model':<7}{'B':>4}{'M':>4}{'eager tok/s':>13}{'compiled':>10}{'MFU':>7}{'vs eager':>20}{'vs eager seq':>20}{'compile s':>11}"]
        for rows in result["compiled"].values():
            for r in rows:
                lines.append(
                    f"{r['model']:<7}{r['batch_size']:>4}{r['members']:>4}{r['eager_tokens_per_s']:>13.0f}"
                    f"{r['compiled_tokens_per_s']:>10.0f}{_mfu(r, 'compiled_mfu'):>7}{ratio_text(r, 'speedup_vs_eager', '{:.2f}x'):>20}"
                    f"{ratio_text(r, 'speedup_vs_eager_sequential', '{:.2f}x'):>20}{r['compile_s']:>11.1f}"
                    + ("" if r["ran_compiled"] else "  (compile failed: eager)")
                )
    for failure in result.get("failed_measurements", []):
        lines.append(f"FAILED MEASUREMENT {failure}")
    return "\n".join(lines)


def _mfu(row: dict, key: str) -> str:
    return "failed" if row.get(f"{key}_failed") else f"{row[key]:.1%}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m replication.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--seconds", type=float, default=1.0, help="timing window per measurement")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every measurement (median and range reported)")
    p.add_argument("--quick", action="store_true", help="a reduced grid (tests)")
    p.add_argument("--out", default="metrics/bench.json")
    args = p.parse_args(argv)
    start = time.perf_counter()
    if args.repeats < 1 or not args.seconds > 0:
        p.error(f"--repeats must be >= 1 and --seconds > 0 (got {args.repeats}, {args.seconds})")
    result = run(args.device, args.seconds, args.quick, args.repeats)
    result["timing"] = {"wall_s": round(time.perf_counter() - start, 1), "runs_trained": None, "profile": "(all)",
                        "machine": f"{os.cpu_count()} cores, {platform.machine()}"}
    print(format_table(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
