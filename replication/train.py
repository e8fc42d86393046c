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
import json
import math
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from replication.data import BatchSampler, load_tokens, validation_windows
from replication.device import environment, resolve_device
from replication.finetune import attach_lora, load_weights, save_weights
from replication.model import GPT
from replication.sizes import count_parameters, flops_per_token
from replication.optim import build_optimizer, set_learning_rates
from replication.record import new_record
from replication.sft import ExampleSampler, encode_examples, task_accuracy
from replication.task_set import load_task_set
from replication.spec import RunSpec
from replication.step import TrainStep, should_compile
from replication.store import quarantine, save_torch, short_error, write_json

# Fields that members of one batched computation must share (everything else may differ).
SHARED_FIELDS = ("model", "data", "batch_size", "micro_batch_size", "tokens", "log_every_tokens", "eval_every_tokens", "device",
                 "init_from", "lora_rank", "lora_alpha", "compile", "eval_spacing", "noise_scale_batches", "decay_branches", "tasks")
EVAL_CHUNK_ELEMENTS = 2**25  # logits elements per validation forward (bounds eval memory)


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

    def state_dict(self) -> dict:
        return {"avg": self.avg, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.avg, self.steps = state["avg"], state["steps"]

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
    keep_checkpoint: bool = False,
) -> list[dict]:
    """Train runs that share architecture, data, batch size and budget as one batched computation.

    With `checkpoint_dir` and `checkpoint_every_tokens`, the whole training state (weights, optimizer,
    data position, logs, RNG) is saved atomically at that interval, and a call for the same runs
    resumes from the last checkpoint and ends exactly as an uninterrupted call would (its records say at
    which step, `timing.resumed_at_step`). The checkpoint is deleted at the end unless `keep_checkpoint`
    (a sweep deletes it itself once the records are stored). With `weights_dir`, each finished run's
    final weights are saved there as `<run id>.pt` (to fine-tune from).
    """
    _check_shared(specs)
    group = _GroupRun(specs)
    checkpoint = _Checkpoint(checkpoint_dir, specs) if checkpoint_dir and checkpoint_every_tokens else None
    if checkpoint and (saved := checkpoint.load()):
        group.load_state(saved)
    bar = tqdm(range(group.first_step, group.steps), desc=f"train x{len(specs)} B={specs[0].batch_size}",
               disable=not progress, leave=False)
    group.add_hook(lambda done: bar.set_postfix(loss=f"{group.latest_train_loss():.3f}"), every=group.log_every, at={group.steps})
    if checkpoint:  # last: the state it saves includes what every other hook logged at this step
        every = max(1, checkpoint_every_tokens // specs[0].tokens_per_step)
        group.add_hook(lambda done: done < group.steps and checkpoint.save(group.state_dict(done)), every=every)
    group.start()
    step = group.first_step - 1
    for step in bar:
        if not group.train_step(step):  # every member diverged at this step
            break
        group.run_hooks(step + 1)
        if not group.active:
            break
    records = group.finish(step, weights_dir)
    if checkpoint and not keep_checkpoint:
        checkpoint.remove()
    return records


@dataclasses.dataclass(frozen=True)
class _Hook:
    """`run(done)` after every `every`-th optimizer step and at the steps in `at` (levanter's `add_hook(cb, every=N)`)."""
    run: Callable[[int], object]
    every: int
    at: frozenset[int] = frozenset()

    def due(self, done: int) -> bool:
        return done % self.every == 0 or done in self.at


class _GroupRun:
    """One group of runs in training: the model of all members, the optimizer, the samplers, the records,
    and what happens at a step (train, log, evaluate, branch a decay, measure the noise scale, drop a
    diverged member). `train_members` drives it: a step, then the hooks due after it (logging, the noise
    scale, evaluation and its checks, progress, checkpoints); a checkpoint is `state_dict()`, read back by
    `load_state()`."""

    def __init__(self, specs: list[RunSpec]):
        self.specs, spec0 = specs, specs[0]
        self.spec0 = spec0
        self.device = resolve_device(spec0.device)
        self.data = load_tokens(spec0.data)
        M, B, T = len(specs), spec0.batch_size, spec0.data.seq_len
        self.M, self.B, self.T = M, B, T
        self.micro = spec0.micro_batch_size or B
        self.n_micro = B // self.micro
        self.steps = spec0.steps
        self.model = GPT(spec0.model, spec0.data.vocab_size, T, [s.seed for s in specs]).to(self.device)
        if spec0.init_from:
            self.model.load_member_state(load_weights(spec0.init_from))
        trainable = [attach_lora(self.model, spec0.lora_rank, spec0.lora_alpha)] if spec0.lora_rank else list(self.model.members)
        self.optimizer = build_optimizer(trainable, specs)
        if spec0.tasks:  # supervised fine-tuning: whole examples, the loss on their completions
            self.task_set = load_task_set(spec0.tasks)
            examples = encode_examples(self.task_set["train"], self.data.tokenizer_path, T)
            self.samplers = [ExampleSampler(*examples, B, s.seed) for s in specs]
        else:
            self.samplers = [BatchSampler(self.data.train, B, T, s.seed) for s in specs]
        self.val = validation_windows(self.data.val, T, spec0.data.val_tokens).to(self.device)
        self.ewa = _WeightAverage(self.model, [s.ewa_decay for s in specs])
        group_flops = M * spec0.tokens * flops_per_token(spec0.model, spec0.data.vocab_size, T)
        self.train_step_ = TrainStep(self.model, self.device, *should_compile(spec0.compile, self.device, group_flops, bool(spec0.lora_rank)))
        self.records = [_new_record(s, self.device, M) for s in specs]
        self.active = list(range(M))
        self.initial_loss: list[float | None] = [None] * M
        self.interval_sum, self.interval_n = [0.0] * M, 0
        self.log_every = max(1, spec0.log_every_tokens // spec0.tokens_per_step)
        self.eval_every = max(1, spec0.eval_every_tokens // spec0.tokens_per_step)
        self.eval_extra = log_spaced_steps(spec0.eval_spacing, self.steps) if spec0.eval_spacing else set()
        self.noise_k = spec0.noise_scale_batches
        self.noise_samplers = [BatchSampler(self.data.train, B, T, 1_000_003 + s.seed) for s in specs] if self.noise_k else []
        self.first_step, self.elapsed_before, self.activation_bytes = 0, 0.0, 0
        self.forks = {branch_fork_step(spec0, t): t for t in spec0.decay_branches}
        self.hooks: list[_Hook] = []  # what happens at evaluation points, in order
        self.add_hook(self.log_train, every=self.log_every, at={self.steps})
        if self.noise_k:
            self.add_hook(self.measure_noise, every=self.eval_every)
        self.add_hook(self.run_eval, every=self.eval_every, at={self.steps} | self.eval_extra)
        self.eval_checks = [self.note_targets, self.stop_at_goal]  # run on each member's loss at every evaluation

    def add_hook(self, run: Callable[[int], object], every: int, at: set[int] = frozenset()) -> None:
        self.hooks.append(_Hook(run, max(1, every), frozenset(at)))

    def run_hooks(self, done: int) -> None:
        """After optimizer step `done`: each hook that is due, in the order added, while a member trains."""
        for hook in self.hooks:
            if self.active and hook.due(done):
                hook.run(done)

    # ------------------------------------------------------------------------------ checkpoint state
    # What a checkpoint holds besides the stateful objects below (each saved and loaded through its own
    # state_dict): the records so far, who still trains, the train-loss accumulators, the activation size.
    PROGRESS = ("records", "active", "initial_loss", "interval_sum", "interval_n", "activation_bytes")

    def _stateful(self) -> dict:
        return {"model": self.model, "optimizer": self.optimizer, "ewa": self.ewa}

    def state_dict(self, done: int) -> dict:
        """Everything needed to go on from step `done` exactly as if never stopped (tensors and plain types only)."""
        return {"step": done, "elapsed": self.elapsed_before + time.perf_counter() - self.started, "rng": torch.get_rng_state(),
                **{k: getattr(self, k) for k in self.PROGRESS}, **{k: obj.state_dict() for k, obj in self._stateful().items()}}

    def load_state(self, saved: dict) -> None:
        self.first_step, self.elapsed_before = saved["step"], saved["elapsed"]
        torch.set_rng_state(saved["rng"])
        for k in self.PROGRESS:
            setattr(self, k, saved[k])
        for k, obj in self._stateful().items():
            obj.load_state_dict(saved[k])

    # ------------------------------------------------------------------------------------- the loop
    def start(self) -> None:
        """Reset the peak-memory counter and the clock; a fine-tuning run scores the pretrained model first."""
        self.branched = {t for r in self.records for t in r.get("decay_branches", {}).get("tokens", [])}  # after a resume
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.started = time.perf_counter()
        if self.spec0.init_from and self.first_step == 0:
            self.run_eval(0)  # a fine-tuning curve starts at the pretrained model's loss
            if self.spec0.tasks:  # every member starts from the same weights: score one, once
                before = self.task_eval([0])[0]
                for r in self.records:
                    r["task_accuracy_before"] = before

    def train_step(self, step: int) -> bool:
        """One optimizer step of every active member (branching a decay first where one forks here);
        False when every member diverged at this step (nothing left to step)."""
        if step in self.forks and self.forks[step] not in self.branched and self.active:
            self.run_branch(self.forks[step], step)
            self.branched.add(self.forks[step])
        self.model.active = self.active
        set_learning_rates(self.optimizer, self.specs, step * self.spec0.tokens_per_step)
        x, y = self.batches(step)
        if step == 0:
            self.activation_bytes = _activation_bytes(self.model, x[:, :self.micro], y[:, :self.micro]) // self.M
        step_loss = self.train_step_(x, y, self.n_micro)
        for m, loss in zip(list(self.active), step_loss.tolist()):
            if not math.isfinite(loss):
                self.diverge(m, step, f"loss {loss} at step {step}")
            else:
                if self.initial_loss[m] is None:
                    self.initial_loss[m] = loss
                self.interval_sum[m] += loss
        if not self.active:
            return False
        self.optimizer.step()
        self.model.zero_grad(set_to_none=True)  # the stacked gradients and the members' views of them
        self.ewa.update(self.model, self.active)
        self.interval_n += 1
        return True

    def latest_train_loss(self) -> float:
        return min(self.records[m]["train"]["loss"][-1] for m in self.active)

    def log_train(self, done: int) -> None:
        """The mean train loss since the last log, per member; a member far above its first loss has diverged."""
        for m in list(self.active):
            mean = self.interval_sum[m] / self.interval_n
            r = self.records[m]
            r["train"]["step"].append(done)
            r["train"]["tokens"].append(done * self.spec0.tokens_per_step)
            r["train"]["loss"].append(mean)
            if mean > self.specs[m].divergence_factor * self.initial_loss[m]:
                self.diverge(m, done, f"train loss {mean:.3f} above {self.specs[m].divergence_factor} x initial {self.initial_loss[m]:.3f}")
            self.interval_sum[m] = 0.0
        self.interval_n = 0

    # ------------------------------------------------------------------------------ what a step uses
    def batches(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(self.samplers[m].batch(step) for m in self.active))
        return torch.stack(xs).to(self.device), torch.stack(ys).to(self.device)

    def run_eval(self, step: int) -> None:
        """Validation loss of every active member, on its weight average where it keeps one (EWA), then the checks."""
        with self.ewa.applied(self.model):
            losses = evaluate(self.model, self.val, self.active)
        for m, loss in zip(list(self.active), losses):
            r = self.records[m]
            r["val"]["step"].append(step)
            r["val"]["tokens"].append(step * self.spec0.tokens_per_step)
            r["val"]["loss"].append(loss)
            for check in self.eval_checks:
                check(m, step, loss)

    def note_targets(self, m: int, step: int, loss: float) -> None:
        """The first evaluation at which member `m` reaches each of its target losses."""
        targets = self.records[m]["targets"]
        for target in self.specs[m].target_losses:
            key = repr(float(target))
            if targets[key] is None and loss <= target:
                targets[key] = {"step": step, "tokens": step * self.spec0.tokens_per_step}

    def stop_at_goal(self, m: int, step: int, loss: float) -> None:
        """Member `m` stops once it reaches the loss it trains towards (`stop_below`): the rest would be wasted."""
        goal = self.specs[m].stop_below
        if goal is not None and loss <= goal and step > 0:
            self.records[m]["stopped_at_step"] = step
            self.leave(m)

    def measure_noise(self, step: int) -> None:
        """Gradient norms of k fresh batches at the live weights (not the average), per active member."""
        self.model.active = self.active
        k, active = self.noise_k, self.active
        draws = [[self.noise_samplers[m].batch(step * k + j) for m in active] for j in range(k)]
        batches = [(torch.stack([x for x, _ in d]).to(self.device), torch.stack([y for _, y in d]).to(self.device)) for d in draws]
        small, big = gradient_sq_norms(self.model, batches, active)
        for m, s2, b2 in zip(active, small, big):
            log = self.records[m].setdefault("noise_scale", {"small_batch": self.B, "big_batch": self.B * k, "step": [], "small_sq": [], "big_sq": []})
            log["step"].append(step)
            log["small_sq"].append(s2)
            log["big_sq"].append(b2)

    def run_branch(self, budget: int, fork: int) -> None:
        """Train the decay of budget `budget` from this run's state at step `fork`, exactly as a run with
        tokens = budget would (same data, same LR at every step), evaluate it, then restore the state."""
        model, optimizer = self.model, self.optimizer
        saved_weights = {k: w.detach().clone() for k, w in model.weights.items()}
        saved_optimizer = copy.deepcopy(optimizer.state_dict())
        branch_specs = [dataclasses.replace(s, tokens=budget) for s in self.specs]
        steps_k = budget // self.spec0.tokens_per_step
        for s in range(fork, steps_k):
            model.active = self.active
            set_learning_rates(optimizer, branch_specs, s * self.spec0.tokens_per_step)
            self.train_step_(*self.batches(s), self.n_micro)
            optimizer.step()
            model.zero_grad(set_to_none=True)
        losses = evaluate(model, self.val, self.active)
        for m, loss in zip(self.active, losses):
            log = self.records[m].setdefault("decay_branches", {"tokens": [], "steps": [], "val_loss": []})
            log["tokens"].append(budget)
            log["steps"].append(steps_k)
            log["val_loss"].append(loss if math.isfinite(loss) else None)
        with torch.no_grad():
            for k, w in model.weights.items():
                w.copy_(saved_weights[k])
        optimizer.load_state_dict(saved_optimizer)

    def leave(self, m: int) -> None:
        self.active.remove(m)
        for p in self.model.members[m].parameters():
            p.grad = None

    def diverge(self, m: int, step: int, why: str) -> None:
        self.records[m].update(status="diverged", diverged_at_step=step, error=why)
        self.leave(m)

    def task_eval(self, members: list[int]) -> list[dict[str, float]]:
        self.model.active = members
        try:
            return task_accuracy(self.model, self.task_set, self.data.tokenizer_path, self.T, self.device)
        finally:
            self.model.active = self.active

    # ----------------------------------------------------------------------------------- the records
    def finish(self, step: int, weights_dir: str | Path | None) -> list[dict]:
        """Score the tasks, then complete every record: memory, steps, tokens, timing, final losses; save
        each finished run's weights to `weights_dir` when given."""
        if self.spec0.tasks and self.active:
            for m, accuracy in zip(list(self.active), self.task_eval(list(self.active))):
                self.records[m]["task_accuracy"] = accuracy
        wall = self.elapsed_before + time.perf_counter() - self.started
        memory_peak = torch.cuda.max_memory_allocated(self.device) // self.M if self.device.type == "cuda" else None
        for m, r in enumerate(self.records):
            execution = self.train_step_.describe()
            mem = self.memory(m)
            r["memory"] = mem
            r["peak_memory_bytes"] = memory_peak or sum(mem.values())
            r["peak_memory_source"] = "cuda.max_memory_allocated / members" if memory_peak else "sum of live tensors"
            done_steps = r["diverged_at_step"] if r["status"] == "diverged" else r.get("stopped_at_step") or step + 1
            r["steps"] = done_steps
            r["tokens"] = done_steps * self.spec0.tokens_per_step
            r["flops"] = r["flops_per_token"] * r["tokens"]
            r["epochs"] = self.samplers[m].epochs_for(done_steps)
            r["timing"] = {"wall_time_s": wall, "tokens_per_s": r["tokens"] / wall if wall > 0 else None,  # per run; the group trained together
                           "compile_s": execution.pop("compile_s"), "resumed_at_step": self.first_step or None}
            r["environment"].update(execution)
            vals = r["val"]["loss"]
            r["final_val_loss"] = vals[-1] if vals and r["status"] == "ok" else None
            r["best_val_loss"] = min(vals) if vals else None
            if weights_dir and r["status"] == "ok":
                save_weights(self.model.member_state(m), Path(weights_dir) / f"{r['id']}.pt")
        return self.records

    def memory(self, m: int) -> dict:
        """Bytes member `m` holds: parameters, gradients and optimizer state of what it trains (LoRA: the
        adapters), and the activations of one micro-batch."""
        trained = [p for g in self.optimizer.param_groups if g["member"] == m for p in g["params"]]
        member_params = list({id(p): p for p in [*self.model.members[m].parameters(), *trained]}.values())
        state = self.optimizer.state
        return {
            "parameters": sum(p.numel() * p.element_size() for p in member_params),
            "gradients": sum(p.numel() * p.element_size() for p in trained),
            "optimizer_state": sum(v.numel() * v.element_size() for p in trained for v in state.get(p, {}).values() if torch.is_tensor(v)),
            "activations": self.activation_bytes,
        }


def checkpoint_file(folder: str | Path, run_ids: list[str]) -> Path:
    """Where the checkpoint of the group of these runs (in training order) lives; `.runs` beside it lists them."""
    return Path(folder) / f"{hashlib.sha256(''.join(run_ids).encode()).hexdigest()[:16]}.pt"


def resumable_groups(specs: list[RunSpec], folder: str | Path | None) -> tuple[list[list[RunSpec]], list[RunSpec]]:
    """The groups of `specs` that a checkpoint in `folder` can resume (its runs, in its order, all among `specs`),
    and the specs left to group afresh: a restart regroups what is pending (fewer runs, other ensembles), which
    would otherwise leave an interrupted group's checkpoint unused."""
    if folder is None or not Path(folder).is_dir():
        return [], list(specs)
    by_id, groups = {s.hash: s for s in specs}, []
    for listing in sorted(Path(folder).glob("*.runs")):
        try:
            ids = json.loads(listing.read_text())
        except (OSError, ValueError):
            continue
        if (isinstance(ids, list) and ids and all(i in by_id for i in ids)
                and listing.with_suffix(".pt").is_file() and checkpoint_file(folder, ids) == listing.with_suffix(".pt")):
            groups.append([by_id.pop(i) for i in ids])
    return groups, [s for s in specs if s.hash in by_id]


def _split_tree(ids: list[str]) -> list[list[str]]:
    """Every group `runner.train_group` may train for these runs: the group, then its halves on out-of-memory, ..."""
    if len(ids) <= 1:
        return [ids]
    half = len(ids) // 2
    return [ids, *_split_tree(ids[:half]), *_split_tree(ids[half:])]


def remove_checkpoints(records: list[dict], folder: str | Path | None) -> None:
    """Delete the checkpoints of the group that trained `records` once they are stored, not before (a sweep killed
    in between resumes the group instead of starting it again); kept when a run failed, so its retry resumes."""
    if folder is None or any(r["status"] == "failed" for r in records):
        return
    for ids in _split_tree([r["id"] for r in records]):
        path = checkpoint_file(folder, ids)
        path.unlink(missing_ok=True)
        path.with_suffix(".runs").unlink(missing_ok=True)


class _Checkpoint:
    """The training state of one group of runs, saved atomically (temp file + rename)."""

    def __init__(self, folder: str | Path, specs: list[RunSpec]):
        self.ids = [s.hash for s in specs]
        self.path = checkpoint_file(folder, self.ids)

    def load(self) -> dict | None:
        """The saved state, or None (start from scratch) when there is none or it cannot be trusted: a file
        that is truncated or holds anything but tensors and plain types (a pickle that would run code) is
        moved to `_quarantine/` beside it, with a warning naming it, and never loaded again."""
        if not self.path.exists():
            return None
        try:
            return torch.load(self.path, weights_only=True)  # tensors and plain types only: loading cannot run code
        except Exception as err:  # noqa: BLE001 (torch raises many types for a bad file)
            moved = quarantine(self.path)
            warnings.warn(f"checkpoint {self.path} cannot be read safely ({short_error(err)}); "
                          f"moved to {moved}, and the runs start from scratch", stacklevel=2)
            return None

    def save(self, state: dict) -> None:
        save_torch(state, self.path)
        listing = self.path.with_suffix(".runs")
        if not listing.exists():  # which runs, in which order: what a restart needs to resume this group as it was
            write_json(listing, self.ids)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.path.with_suffix(".runs").unlink(missing_ok=True)


def _new_record(spec: RunSpec, device: torch.device, ensemble_size: int) -> dict:
    return {
        **new_record(spec, {**environment(device), "ensemble_size": ensemble_size}),
        "n_params": count_parameters(spec.model, spec.data.vocab_size),
        "flops_per_token": flops_per_token(spec.model, spec.data.vocab_size, spec.data.seq_len),
    }
