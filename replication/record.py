"""The run record's one home: its format version, required fields, skeleton, and the hash that names it.

A record is named by a hash of its run's full spec plus `RECORD_FORMAT`, never of the code: editing code
keeps results. A change that alters training numerics (or the record layout) must bump `RECORD_FORMAT`,
so that old records are redone instead of reused.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from replication.spec import RunSpec

RECORD_FORMAT = 2  # bump by hand when training numerics or the record layout change (2: timings moved under "timing")
REQUIRED_FIELDS = ("format", "id", "spec", "status", "train", "val", "final_val_loss", "best_val_loss", "steps", "tokens")


# Fields added after records existed: left out of the hash while at their default, so that adding them
# kept every earlier run's name (and its record) valid.
_LATER_FIELDS = {("data", "domain"): None, ("init_from",): None, ("lora_rank",): None, ("lora_alpha",): None,
                 ("eval_spacing",): None, ("stop_below",): None, ("noise_scale_batches",): None,
                 ("model", "mup_base_width"): None, ("schedule", "warmup_tokens"): None, ("decay_branches",): (), ("tasks",): None}
# How a run executes, not what it computes: never part of its name. Compiled and eager steps agree to
# fp32 round-off (tests/test_compiled.py), like runs on different thread counts, so they share records.
_EXECUTION_FIELDS = ("compile",)


def spec_hash(spec: RunSpec) -> str:
    """Names a run by its full spec plus the record format (not the git commit: editing code keeps results)."""
    d = spec.to_dict()
    for name in _EXECUTION_FIELDS:
        del d[name]
    for (*parents, leaf), default in _LATER_FIELDS.items():
        node = d
        for part in parents:
            node = node[part]
        if node[leaf] == default:
            del node[leaf]
    canonical = json.dumps({"format": RECORD_FORMAT, "spec": d}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:RUN_ID_LENGTH]


RUN_ID_LENGTH = 16  # hex digits of a run id


def is_run_id(name: str) -> bool:
    """Whether `name` has the shape of a run id (what `spec_hash` gives)."""
    return len(name) == RUN_ID_LENGTH and all(c in "0123456789abcdef" for c in name)


def new_record(spec: RunSpec, environment: dict, status: str = "ok", error: str | None = None) -> dict:
    """The skeleton every record starts from (trained, diverged or failed): identity, spec, empty curves."""
    return {
        "format": RECORD_FORMAT,
        "id": spec.hash,
        "spec": spec.to_dict(),
        "environment": environment,
        "status": status,
        "diverged_at_step": None,
        "error": error,
        "train": {"step": [], "tokens": [], "loss": []},
        "val": {"step": [], "tokens": [], "loss": []},
        "targets": {repr(float(t)): None for t in spec.target_losses},
        "final_val_loss": None,
        "best_val_loss": None,
        "steps": 0,
        "tokens": 0,
    }
