"""Ensembles: many runs of one shape trained as one batched computation.

The batched model and loop live in `model.GPT` and `train.train_members` (a single run is M = 1);
this module decides which runs go together and how many fit in memory.
"""

from __future__ import annotations

import json
from collections import defaultdict

import torch

from replication.sizes import count_parameters
from replication.spec import RunSpec
from replication.device import resolve_device
from replication.train import SHARED_FIELDS, branch_schedule

MEMORY_FRACTION = 0.5  # of the free memory an ensemble may plan to use
OPTIMIZER_STATE_COPIES = {"sgd": 1, "adamw": 2, "adafactor": 1, "muon": 2}  # upper bounds, in parameter copies

__all__ = ["group_key", "member_memory_bytes", "members_that_fit", "plan"]


def group_key(spec: RunSpec) -> str:
    """Runs with equal keys can share one batched computation."""
    d = spec.to_dict()
    return json.dumps({k: d[k] for k in SHARED_FIELDS} | {"optimizer": d["optimizer"]["name"], "branches": branch_schedule(spec)},
                      sort_keys=True)


def member_memory_bytes(spec: RunSpec) -> int:
    """Upper estimate of one member's training memory (fp32): weights, gradients, optimizer state, activations.

    Activations: about 20 D floats per token per block saved for backward, plus logits and their
    softmax (2 V per token) for the micro-batch.
    """
    n = count_parameters(spec.model, spec.data.vocab_size)["total"]
    weights = 4 * n * (2 + OPTIMIZER_STATE_COPIES[spec.optimizer.name])
    tokens = (spec.micro_batch_size or spec.batch_size) * spec.data.seq_len
    activations = 4 * tokens * (20 * spec.model.width * spec.model.depth + 2 * spec.data.vocab_size)
    return weights + activations


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def members_that_fit(spec: RunSpec, max_members: int) -> int:
    budget = MEMORY_FRACTION * free_memory_bytes(resolve_device(spec.device))
    return max(1, min(max_members, int(budget // member_memory_bytes(spec))))


def plan(specs: list[RunSpec], max_members: int, fit=None) -> list[list[RunSpec]]:
    """Group specs into ensembles (same shape, batch size, budget and optimizer), each sized to fit memory:
    `fit(spec, max_members)`, by default `members_that_fit` on this machine."""
    groups: dict[str, list[RunSpec]] = defaultdict(list)
    for s in specs:
        groups[group_key(s)].append(s)
    out = []
    for group in groups.values():
        size = 1 if group[0].lora_rank else (fit or members_that_fit)(group[0], max_members)  # adapters: one model each
        out += [group[i:i + size] for i in range(0, len(group), size)]
    return out


def recommended_workers(bench_path: str = "metrics/bench.json") -> int:
    """Worker processes for a CPU sweep, chosen from the benchmark's measured throughput on this machine.

    Per-core workers (each running its own ensemble with one thread) win when the benchmark measured
    them faster than one process using every thread; without a benchmark of this machine, 1.
    """
    import os
    from pathlib import Path

    path = Path(bench_path)
    if not path.is_file() or torch.cuda.is_available():
        return 1
    try:
        bench = json.loads(path.read_text())
        measured = bench["per_core_workers"]["cpu"]
        if bench["machine"]["cpu_count"] != os.cpu_count():
            return 1
        faster = measured["workers_x8_ensembles_tokens_per_s"] > measured["ensemble_8_all_threads_tokens_per_s"]
    except (KeyError, ValueError, TypeError):
        return 1
    return measured["workers"] if faster else 1
