"""Training: one run is `train(spec)`; `train_members(specs)` trains runs of one shape side by side.

The loop is plain: sample each member's batch, forward all members at once, backward the summed
loss (each member's gradient is its own), step, log. A member whose loss turns NaN/inf or climbs
far above its start is recorded as diverged at that step and drops out of the computation; it
never raises. Records are plain dicts (see DESIGN.md "Records").
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import platform
import subprocess
import time
from pathlib import Path

import torch
from tqdm import tqdm

from replication.data import BatchSampler, load_tokens, validation_windows
from replication.finetune import attach_lora, load_weights, save_weights
from replication.model import GPT, count_parameters, flops_per_token
from replication.optim import build_optimizer, set_learning_rates
from replication.record import new_record
from replication.sft import ExampleSampler, encode_examples, load_task_set, task_accuracy
from replication.spec import RunSpec
from replication.step import TrainStep, should_compile
from replication.store import save_torch

# Fields that members of one batched computation must share (everything else may differ).
SHARED_FIELDS = ("model", "data", "batch_size", "micro_batch_size", "tokens", "log_every_tokens", "eval_every_tokens", "device",
                 "init_from", "lora_rank", "lora_alpha", "compile", "eval_spacing", "noise_scale_batches", "decay_branches", "tasks")
EVAL_CHUNK_ELEMENTS = 2**25  # logits elements per validation forward (bounds eval memory)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(name)


def environment(device: torch.device) -> dict:
    """What produced a record, for audit (never part of its identity)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "git_commit": commit or None,
    }


def train(spec: RunSpec, progress: bool = False) -> dict:
    """Train one run and return its record."""
    return train_members([spec], progress=progress)[0]


def _check_shared(specs: list[RunSpec]) -> None:
    first = specs[0].to_dict()
    for spec in specs[1:]:
        d = spec.to_dict()
        for key in SHARED_FIELDS:
            if d[key] != first[key]:
                raise ValueError(f"members trained together must share {key!r}: {first[key]!r} != {d[key]!r}")
        if d["optimizer"]["name"] != first["optimizer"]["name"]:
            raise ValueError("members trained together must share optimizer.name")
        if d["decay_branches"] and branch_schedule(spec) != branch_schedule(specs[0]):
            raise ValueError("members with decay branches must share schedule.warmup_tokens and decay_fraction (their branches fork together)")


def branch_schedule(spec: RunSpec) -> tuple:
    """What fixes where a run's decay branches fork: members that share it can branch together."""
    return (spec.schedule.warmup_tokens, spec.schedule.decay_fraction) if spec.decay_branches else ()


def branch_fork_step(spec: RunSpec, budget: int) -> int:
    """The first step at which the run of budget `budget` leaves this one's schedule: its decay starts
    once more than (1 - decay_fraction) x budget tokens are seen (or at its last step, if the decay is shorter)."""
    decay_start = budget * (1 - spec.schedule.decay_fraction)
    return min(math.floor(decay_start / spec.tokens_per_step) + 1, budget // spec.tokens_per_step)


def _activation_bytes(model: GPT, idx: torch.Tensor, targets: torch.Tensor) -> int:
    """Bytes autograd saves for backward in one forward pass (the activation memory).

    Each storage counts once; the parameters themselves (saved by reference) are not activations.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(idx, targets).sum()
    return sum(seen.values())


@torch.no_grad()
def evaluate(model: GPT, val: torch.Tensor, active: list[int]) -> list[float]:
    """Mean validation loss of each active member over the fixed validation windows."""
    M, (n, T1) = len(active), val.shape
    chunk = max(1, EVAL_CHUNK_ELEMENTS // (M * (T1 - 1) * model.vocab_size))
    totals = torch.zeros(M, dtype=torch.float64, device=val.device)
    for start in range(0, n, chunk):
        w = val[start:start + chunk]
        w = w.unsqueeze(0).expand(M, *w.shape)
        totals += model(w[..., :-1], w[..., 1:]).double() * w.shape[1]
    return (totals / n).tolist()


def log_spaced_steps(spacing: float, steps: int) -> set[int]:
    """The steps ceil(spacing^k) up to `steps`: every step at first, then a constant ratio apart (Zhang et al.
    evaluate this densely so that the step at which a run first reaches a target is known to a few %)."""
    out, k = set(), 0
    while (s := math.ceil(spacing**k)) <= steps:
        out.add(s)
        k += 1
    return out


def gradient_sq_norms(model: GPT, batches: list[tuple[torch.Tensor, torch.Tensor]], active: list[int]) -> tuple[list[float], list[float]]:
    """Per active member: the mean squared norm of the gradients of `batches` (each [M, b, T]) and the squared
    norm of their mean (a k x larger batch). What McCandlish et al.'s unbiased noise-scale estimate needs."""
    total = None
    small = torch.zeros(len(active), dtype=torch.float64)
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        model.losses(model.embed(x), y).sum().backward()
        grads = [model.weights[k].grad[active] if len(active) < len(model.members) else model.weights[k].grad for k in model.weights]
        small += sum(g.double().pow(2).flatten(1).sum(1) for g in grads).cpu()
        total = [g.clone() for g in grads] if total is None else [t + g for t, g in zip(total, grads)]
    model.zero_grad(set_to_none=True)
    big = sum((t.double() / len(batches)).pow(2).flatten(1).sum(1) for t in total).cpu()
    return (small / len(batches)).tolist(), big.tolist()


class _WeightAverage:
    """Bias-corrected exponential weight average per member (Zhang et al. evaluate on it)."""

    def __init__(self, model: GPT, decays: list[float | None]):
        self.decays = decays
        self.avg = {m: [torch.zeros_like(p) for p in model.members[m].parameters()] for m, d in enumerate(decays) if d}
        self.steps = 0

    def update(self, model: GPT, active: list[int]) -> None:
        self.steps += 1
        for m in active:
            if m in self.avg:
                torch._foreach_lerp_(self.avg[m], [p.detach() for p in model.members[m].parameters()], 1 - self.decays[m])

    @contextlib.contextmanager
    def applied(self, model: GPT):
        """Evaluate with the (bias-corrected) averages in place of the live weights, then restore them exactly."""
        live = {m: [p.detach().clone() for p in model.members[m].parameters()] for m in self.avg}
        for m, avg in self.avg.items():
            correction = 1 - self.decays[m] ** max(self.steps, 1)
            for p, a in zip(model.members[m].parameters(), avg):
                p.data.copy_(a / correction)
        try:
            yield
        finally:
            for m, saved in live.items():
                for p, w in zip(model.members[m].parameters(), saved):
                    p.data.copy_(w)


def train_members(
    specs: list[RunSpec],
    progress: bool = False,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every_tokens: int | None = None,
    weights_dir: str | Path | None = None,
) -> list[dict]:
    """Train runs that share architecture, data, batch size and budget as one batched computation.

    With `checkpoint_dir` and `checkpoint_every_tokens`, the whole training state (weights, optimizer,
    data position, logs, RNG) is saved atomically at that interval, and a call for the same runs
    resumes from the last checkpoint and ends exactly as an uninterrupted call would. With
    `weights_dir`, each finished run's final weights are saved there as `<run id>.pt` (to fine-tune from).
    """
    _check_shared(specs)
    spec0 = specs[0]
    device = resolve_device(spec0.device)
    data = load_tokens(spec0.data)
    M, B, T = len(specs), spec0.batch_size, spec0.data.seq_len
    micro = spec0.micro_batch_size or B
    n_micro = B // micro
    steps = spec0.steps

    model = GPT(spec0.model, spec0.data.vocab_size, T, [s.seed for s in specs]).to(device)
    if spec0.init_from:
        model.load_member_state(load_weights(spec0.init_from))
    trainable = [attach_lora(model, spec0.lora_rank, spec0.lora_alpha)] if spec0.lora_rank else list(model.members)
    optimizer = build_optimizer(trainable, specs)
    if spec0.tasks:  # supervised fine-tuning: whole examples, the loss on their completions
        task_set = load_task_set(spec0.tasks)
        examples = encode_examples(task_set["train"], data.tokenizer_path, T)
        samplers = [ExampleSampler(*examples, B, s.seed) for s in specs]
    else:
        samplers = [BatchSampler(data.train, B, T, s.seed) for s in specs]
    val = validation_windows(data.val, T, spec0.data.val_tokens).to(device)
    ewa = _WeightAverage(model, [s.ewa_decay for s in specs])
    group_flops = M * spec0.tokens * flops_per_token(spec0.model, spec0.data.vocab_size, T)
    train_step = TrainStep(model, device, *should_compile(spec0.compile, device, group_flops, bool(spec0.lora_rank)))

    records = [_new_record(s, device, M) for s in specs]
    active = list(range(M))
    initial_loss: list[float | None] = [None] * M
    interval_sum, interval_n = [0.0] * M, 0
    log_every = max(1, spec0.log_every_tokens // spec0.tokens_per_step)
    eval_every = max(1, spec0.eval_every_tokens // spec0.tokens_per_step)
    eval_extra = log_spaced_steps(spec0.eval_spacing, steps) if spec0.eval_spacing else set()
    noise_k = spec0.noise_scale_batches
    noise_samplers = [BatchSampler(data.train, B, T, 1_000_003 + s.seed) for s in specs] if noise_k else []
    checkpoint = _Checkpoint(checkpoint_dir, specs) if checkpoint_dir and checkpoint_every_tokens else None
    checkpoint_every = max(1, (checkpoint_every_tokens or 1) // spec0.tokens_per_step)
    first_step, elapsed_before, activation_bytes = 0, 0.0, 0
    if checkpoint and (saved := checkpoint.load()):
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        records, active[:], initial_loss = saved["records"], saved["active"], saved["initial_loss"]
        interval_sum, interval_n = saved["interval_sum"], saved["interval_n"]
        ewa.avg, ewa.steps = saved["ewa_avg"], saved["ewa_steps"]
        first_step, elapsed_before, activation_bytes = saved["step"], saved["elapsed"], saved["activation_bytes"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()

    def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(samplers[m].batch(step) for m in active))
        return torch.stack(xs).to(device), torch.stack(ys).to(device)

    def run_eval(step: int) -> None:
        with ewa.applied(model):
            losses = evaluate(model, val, active)
        for m, loss in zip(list(active), losses):
            r = records[m]
            r["val"]["step"].append(step)
            r["val"]["tokens"].append(step * spec0.tokens_per_step)
            r["val"]["loss"].append(loss)
            for target in specs[m].target_losses:
                key = repr(float(target))
                if r["targets"][key] is None and loss <= target:
                    r["targets"][key] = {"step": step, "tokens": step * spec0.tokens_per_step}
            if specs[m].stop_below is not None and loss <= specs[m].stop_below and step > 0:
                r["stopped_at_step"] = step  # reached the loss it trains towards: the rest would be wasted
                leave(m)

    def measure_noise(step: int) -> None:
        """Gradient norms of k fresh batches at the live weights (not the average), per active member."""
        model.active = active
        draws = [[noise_samplers[m].batch(step * noise_k + j) for m in active] for j in range(noise_k)]
        batches = [(torch.stack([x for x, _ in d]).to(device), torch.stack([y for _, y in d]).to(device)) for d in draws]
        small, big = gradient_sq_norms(model, batches, active)
        for m, s2, b2 in zip(active, small, big):
            log = records[m].setdefault("noise_scale", {"small_batch": B, "big_batch": B * noise_k, "step": [], "small_sq": [], "big_sq": []})
            log["step"].append(step)
            log["small_sq"].append(s2)
            log["big_sq"].append(b2)

    def run_branch(budget: int, fork: int) -> None:
        """Train the decay of budget `budget` from this run's state at step `fork`, exactly as a run with
        tokens = budget would (same data, same LR at every step), evaluate it, then restore the state."""
        saved_weights = {k: w.detach().clone() for k, w in model.weights.items()}
        saved_optimizer = copy.deepcopy(optimizer.state_dict())
        branch_specs = [dataclasses.replace(s, tokens=budget) for s in specs]
        steps_k = budget // spec0.tokens_per_step
        for s in range(fork, steps_k):
            model.active = active
            set_learning_rates(optimizer, branch_specs, s * spec0.tokens_per_step)
            train_step(*batches(s), n_micro)
            optimizer.step()
            model.zero_grad(set_to_none=True)
        losses = evaluate(model, val, active)
        for m, loss in zip(active, losses):
            log = records[m].setdefault("decay_branches", {"tokens": [], "steps": [], "val_loss": []})
            log["tokens"].append(budget)
            log["steps"].append(steps_k)
            log["val_loss"].append(loss if math.isfinite(loss) else None)
        with torch.no_grad():
            for k, w in model.weights.items():
                w.copy_(saved_weights[k])
        optimizer.load_state_dict(saved_optimizer)

    forks = {branch_fork_step(spec0, t): t for t in spec0.decay_branches}
    branched = {t for r in records for t in r.get("decay_branches", {}).get("tokens", [])}  # after a resume

    def leave(m: int) -> None:
        active.remove(m)
        for p in model.members[m].parameters():
            p.grad = None

    def diverge(m: int, step: int, why: str) -> None:
        records[m].update(status="diverged", diverged_at_step=step, error=why)
        leave(m)

    def run_task_eval(members: list[int]) -> list[dict[str, float]]:
        model.active = members
        try:
            return task_accuracy(model, task_set, data.tokenizer_path, T, device)
        finally:
            model.active = active

    if spec0.init_from and first_step == 0:
        run_eval(0)  # a fine-tuning curve starts at the pretrained model's loss
        if spec0.tasks:  # every member starts from the same weights: score one, once
            before = run_task_eval([0])[0]
            for r in records:
                r["task_accuracy_before"] = before
    bar = tqdm(range(first_step, steps), desc=f"train x{M} B={B}", disable=not progress, leave=False)
    step = first_step - 1
    for step in bar:
        if step in forks and forks[step] not in branched and active:
            run_branch(forks[step], step)
            branched.add(forks[step])
        model.active = active
        set_learning_rates(optimizer, specs, step * spec0.tokens_per_step)
        x, y = batches(step)
        if step == 0:
            activation_bytes = _activation_bytes(model, x[:, :micro], y[:, :micro]) // M
        step_loss = train_step(x, y, n_micro)
        for m, loss in zip(list(active), step_loss.tolist()):
            if not math.isfinite(loss):
                diverge(m, step, f"loss {loss} at step {step}")
            else:
                if initial_loss[m] is None:
                    initial_loss[m] = loss
                interval_sum[m] += loss
        if not active:
            break
        optimizer.step()
        model.zero_grad(set_to_none=True)  # the stacked gradients and the members' views of them
        ewa.update(model, active)
        interval_n += 1
        done = step + 1
        if done % log_every == 0 or done == steps:
            for m in list(active):
                mean = interval_sum[m] / interval_n
                r = records[m]
                r["train"]["step"].append(done)
                r["train"]["tokens"].append(done * spec0.tokens_per_step)
                r["train"]["loss"].append(mean)
                if mean > specs[m].divergence_factor * initial_loss[m]:
                    diverge(m, done, f"train loss {mean:.3f} above {specs[m].divergence_factor} x initial {initial_loss[m]:.3f}")
                interval_sum[m] = 0.0
            interval_n = 0
            if active:
                bar.set_postfix(loss=f"{min(records[m]['train']['loss'][-1] for m in active):.3f}")
        if active and noise_k and done % eval_every == 0:
            measure_noise(done)
        if active and (done % eval_every == 0 or done == steps or done in eval_extra):
            run_eval(done)
        if not active:
            break
        if checkpoint and done % checkpoint_every == 0 and done < steps:
            checkpoint.save({
                "step": done, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                "records": records, "active": list(active), "initial_loss": initial_loss,
                "interval_sum": interval_sum, "interval_n": interval_n, "ewa_avg": ewa.avg, "ewa_steps": ewa.steps,
                "elapsed": elapsed_before + time.perf_counter() - start, "activation_bytes": activation_bytes,
            })

    if spec0.tasks and active:
        for m, accuracy in zip(list(active), run_task_eval(list(active))):
            records[m]["task_accuracy"] = accuracy
    wall = elapsed_before + time.perf_counter() - start
    memory_peak = torch.cuda.max_memory_allocated(device) // M if device.type == "cuda" else None
    for m, r in enumerate(records):
        execution = train_step.describe()
        trained = [p for g in optimizer.param_groups if g["member"] == m for p in g["params"]]  # LoRA: the adapters
        member_params = list({id(p): p for p in [*model.members[m].parameters(), *trained]}.values())
        state = optimizer.state
        mem = {
            "parameters": sum(p.numel() * p.element_size() for p in member_params),
            "gradients": sum(p.numel() * p.element_size() for p in trained),
            "optimizer_state": sum(
                v.numel() * v.element_size() for p in trained for v in state.get(p, {}).values() if torch.is_tensor(v)
            ),
            "activations": activation_bytes,
        }
        r["memory"] = mem
        r["peak_memory_bytes"] = memory_peak or sum(mem.values())
        r["peak_memory_source"] = "cuda.max_memory_allocated / members" if memory_peak else "sum of live tensors"
        done_steps = r["diverged_at_step"] if r["status"] == "diverged" else r.get("stopped_at_step") or step + 1
        r["steps"] = done_steps
        r["tokens"] = done_steps * spec0.tokens_per_step
        r["flops"] = r["flops_per_token"] * r["tokens"]
        r["epochs"] = samplers[m].epochs_for(done_steps)
        r["timing"] = {"wall_time_s": wall, "tokens_per_s": r["tokens"] / wall if wall > 0 else None,  # per run; the group trained together
                       "compile_s": execution.pop("compile_s")}
        r["environment"].update(execution)
        vals = r["val"]["loss"]
        r["final_val_loss"] = vals[-1] if vals and r["status"] == "ok" else None
        r["best_val_loss"] = min(vals) if vals else None
        if weights_dir and r["status"] == "ok":
            save_weights(model.member_state(m), Path(weights_dir) / f"{r['id']}.pt")
    if checkpoint:
        checkpoint.remove()
    return records


class _Checkpoint:
    """The training state of one group of runs, saved atomically (temp file + rename)."""

    def __init__(self, folder: str | Path, specs: list[RunSpec]):
        group = hashlib.sha256("".join(s.hash for s in specs).encode()).hexdigest()[:16]
        self.path = Path(folder) / f"{group}.pt"

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        return torch.load(self.path, weights_only=False)

    def save(self, state: dict) -> None:
        save_torch(state, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _new_record(spec: RunSpec, device: torch.device, ensemble_size: int) -> dict:
    return {
        **new_record(spec, {**environment(device), "ensemble_size": ensemble_size}),
        "n_params": count_parameters(spec.model, spec.data.vocab_size),
        "flops_per_token": flops_per_token(spec.model, spec.data.vocab_size, spec.data.seq_len),
    }
