"""`python -m replication.bench`: throughput against the machine's own measured matmul peak.

Everything is measured in one process, so the ratios (MFU, ensemble speed-up) compare like with like:
1. the fp32 matmul peak (GFLOP/s) from large square matmuls,
2. single-run throughput (tokens/s, model FLOP/s) at batch sizes 1, 4, 16, 64,
3. ensemble throughput at batch sizes 1 and 4 with M = 4, 8, 16, 32 members,
4. MFU for each, and the ensemble's speed-up over the same M runs one after another,
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
import time
from pathlib import Path

import torch

from replication.model import GPT
from replication.sizes import flops_per_token
from replication.optim import build_optimizer
from replication.spec import MODEL_PRESETS, ModelConfig, run_spec_from_dict
from replication.step import TrainStep
from replication.device import resolve_device

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


def step_throughput(preset: str, vocab: int, seq_len: int, batch_size: int, members: int, device: torch.device,
                    seconds: float = 3.0, optimizer: str = "adamw", compile: bool = False) -> dict:
    """Tokens/s of full training steps (forward, backward, optimizer) for `members` runs side by side,
    through the training loop's own `TrainStep` (compiled or eager)."""
    cfg = ModelConfig(**MODEL_PRESETS[preset])
    spec = run_spec_from_dict({
        "model": MODEL_PRESETS[preset], "data": {"vocab_size": vocab, "seq_len": seq_len},
        "optimizer": {"name": optimizer}, "batch_size": batch_size, "tokens": batch_size * seq_len,
    })
    model = GPT(cfg, vocab, seq_len, list(range(members))).to(device)
    opt = build_optimizer(list(model.members), [spec] * members)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, vocab, (members, batch_size, seq_len + 1), generator=gen).to(device)
    x, y = idx[..., :-1], idx[..., 1:]
    train_step = TrainStep(model, device, compile)

    def step():
        train_step(x, y)
        opt.step()
        model.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first = time.perf_counter()
    step()
    _sync(device)
    first_step_s = time.perf_counter() - first
    step()
    _sync(device)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 3:
        step()
        steps += 1
        _sync(device)
    elapsed = time.perf_counter() - start
    tokens_per_s = steps * members * batch_size * seq_len / elapsed
    fpt = flops_per_token(cfg, vocab, seq_len)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters()) / members
    state_bytes = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)) / members
    out = {
        "model": preset, "batch_size": batch_size, "members": members,
        "tokens_per_s": tokens_per_s, "model_gflops": tokens_per_s * fpt / 1e9,
        "params_grads_state_mb_per_member": (2 * param_bytes + state_bytes) / 2**20,
        "compiled": train_step.compiled, "first_step_s": first_step_s,
    }
    if device.type == "cuda":
        out["peak_memory_mb_per_member"] = torch.cuda.max_memory_allocated(device) / 2**20 / members
    return out


def _worker(args) -> float:
    torch.set_num_threads(1)
    return step_throughput(*args)["tokens_per_s"]


def per_core_workers(preset, vocab, seq_len, batch_size, members, workers: int, seconds: float) -> float:
    """Aggregate tokens/s of `workers` single-threaded processes each training `members` runs."""
    with mp.get_context("spawn").Pool(workers) as pool:
        rates = pool.map(_worker, [(preset, vocab, seq_len, batch_size, members, torch.device("cpu"), seconds)] * workers)
    return sum(rates)


def run(device_name: str = "auto", seconds: float = 3.0, quick: bool = False) -> dict:
    device = resolve_device(device_name)
    # Training runs in fp32 on CPU and under bf16 autocast on CUDA: measure the peak of that dtype.
    peak = matmul_peak_gflops(device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    result = {
        "machine": {"device": str(device), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "platform": platform.platform(),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "matmul_peak_gflops": peak,
        "matmul_dtype": "bfloat16" if device.type == "cuda" else "float32",
        "models": {},
    }
    batch_sizes = (1, 4) if quick else (1, 4, 16, 64)
    ensemble_sizes = (4, 8) if quick else (4, 8, 16, 32)
    for label, (preset, vocab, seq_len) in (GPU_MODELS if device.type == "cuda" else MODELS).items():
        if quick and label == "larger":
            continue
        single = {b: step_throughput(preset, vocab, seq_len, b, 1, device, seconds) for b in sorted({*batch_sizes, *(b * m for b in (1, 4) for m in ensemble_sizes if b * m <= 128)})}
        rows = []
        for b, r in single.items():
            if b in batch_sizes:
                rows.append({**r, "mfu": r["model_gflops"] / peak})
        for b in (1, 4):
            for m in ensemble_sizes:
                r = step_throughput(preset, vocab, seq_len, b, m, device, seconds)
                r["mfu"] = r["model_gflops"] / peak
                r["speedup_vs_sequential"] = r["tokens_per_s"] / single[b]["tokens_per_s"]
                if b * m in single:
                    r["fraction_of_single_run_at_batch_BxM"] = r["tokens_per_s"] / single[b * m]["tokens_per_s"]
                rows.append(r)
        result["models"][label] = rows
        if device.type == "cpu" and (os.cpu_count() or 1) > 1:
            workers = os.cpu_count()
            seq = step_throughput(preset, vocab, seq_len, 1, 1, device, seconds)["tokens_per_s"]
            result.setdefault("per_core_workers", {})[label] = {
                "workers": workers,
                "batch_size": 1,
                "workers_x1_tokens_per_s": per_core_workers(preset, vocab, seq_len, 1, 1, workers, seconds),
                "workers_x8_ensembles_tokens_per_s": per_core_workers(preset, vocab, seq_len, 1, 8, workers, seconds),
                "ensemble_8_all_threads_tokens_per_s": next(r["tokens_per_s"] for r in rows if r["members"] == 8 and r["batch_size"] == 1),
                "single_run_all_threads_tokens_per_s": seq,
            }
    result["compiled"] = compiled_vs_eager(GPU_COMPILED if device.type == "cuda" else COMPILED, device, peak,
                                           seconds, quick)
    return result


def compiled_vs_eager(models: dict, device: torch.device, peak: float, seconds: float, quick: bool = False) -> dict:
    """Each (batch size, members) eager and compiled; speed-ups against the first pair's eager run.

    `speedup_vs_eager_sequential` is a row's compiled tokens/s over the single eager run's: the same
    M runs trained compiled side by side against trained eagerly one after another.
    """
    out = {}
    for label, (preset, vocab, seq_len, shapes) in models.items():
        if quick and label != "micro":
            continue
        rows, single_eager = [], None
        for batch_size, members in shapes:
            eager = step_throughput(preset, vocab, seq_len, batch_size, members, device, seconds)
            compiled = step_throughput(preset, vocab, seq_len, batch_size, members, device, seconds, compile=True)
            single_eager = single_eager or eager
            row = {
                "model": preset, "batch_size": batch_size, "members": members,
                "eager_tokens_per_s": eager["tokens_per_s"], "compiled_tokens_per_s": compiled["tokens_per_s"],
                "ran_compiled": compiled["compiled"], "compile_s": compiled["first_step_s"],
                "eager_mfu": eager["model_gflops"] / peak, "compiled_mfu": compiled["model_gflops"] / peak,
                "speedup_vs_eager": compiled["tokens_per_s"] / eager["tokens_per_s"],
            }
            if members > 1 and batch_size == single_eager["batch_size"]:
                row["speedup_vs_eager_sequential"] = compiled["tokens_per_s"] / single_eager["tokens_per_s"]
            rows.append(row)
        out[label] = rows
    return out


def format_table(result: dict) -> str:
    lines = [f"device {result['machine']['device']} ({result['machine']['gpu'] or platform.processor() or 'cpu'}), "
             f"{result['machine']['threads']} threads; {result['matmul_dtype']} matmul peak {result['matmul_peak_gflops']:.1f} GFLOP/s", ""]
    header = f"{'model':<7}{'B':>4}{'M':>4}{'tokens/s':>11}{'GFLOP/s':>9}{'MFU':>7}{'vs seq':>8}{'vs B*M':>8}{'MB/member':>11}"
    for label, rows in result["models"].items():
        lines += [f"[{label}]", header]
        for r in rows:
            lines.append(
                f"{r['model']:<7}{r['batch_size']:>4}{r['members']:>4}{r['tokens_per_s']:>11.0f}{r['model_gflops']:>9.2f}"
                f"{r['mfu']:>7.1%}{_opt(r.get('speedup_vs_sequential'), '{:.2f}x'):>8}"
                f"{_opt(r.get('fraction_of_single_run_at_batch_BxM'), '{:.0%}'):>8}{r['params_grads_state_mb_per_member']:>11.2f}"
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
                  f"{'model':<7}{'B':>4}{'M':>4}{'eager tok/s':>13}{'compiled':>10}{'MFU':>7}{'vs eager':>10}{'vs eager seq':>14}{'compile s':>11}"]
        for rows in result["compiled"].values():
            for r in rows:
                lines.append(
                    f"{r['model']:<7}{r['batch_size']:>4}{r['members']:>4}{r['eager_tokens_per_s']:>13.0f}"
                    f"{r['compiled_tokens_per_s']:>10.0f}{r['compiled_mfu']:>7.1%}{r['speedup_vs_eager']:>9.2f}x"
                    f"{_opt(r.get('speedup_vs_eager_sequential'), '{:.2f}x'):>14}{r['compile_s']:>11.1f}"
                    + ("" if r["ran_compiled"] else "  (compile failed: eager)")
                )
    return "\n".join(lines)


def _opt(value, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m replication.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--seconds", type=float, default=3.0, help="timing window per measurement")
    p.add_argument("--quick", action="store_true", help="a reduced grid (tests)")
    p.add_argument("--out", default="metrics/bench.json")
    args = p.parse_args(argv)
    start = time.perf_counter()
    result = run(args.device, args.seconds, args.quick)
    result["timing"] = {"wall_s": round(time.perf_counter() - start, 1), "runs_trained": None, "profile": "(all)",
                        "machine": f"{os.cpu_count()} cores, {platform.machine()}"}
    print(format_table(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
