"""Time limits on a sweep: a deadline on one clock, set by `--max-minutes` or `REPLICATION_MAX_MINUTES`.

A deadline stops new groups from starting; the groups in flight finish and are stored, so a bounded
sweep loses nothing and the same command continues it. Kept apart from the training code so the
experiment layer can read deadlines without importing torch.
"""

from __future__ import annotations

import math
import os
import time

from replication.validation import ConfigError

MAX_MINUTES_ENV = "REPLICATION_MAX_MINUTES"
_now = time.monotonic  # the clock deadlines are read on (a test replaces it)
_stage_deadline: dict[str, float] = {}


def minutes(value, where: str) -> float:
    """A time limit in minutes, checked the same way wherever it is given: a finite number >= 0."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not (math.isfinite(out) and out >= 0):
        raise ConfigError(f"{where}={value!r}: expected a finite number of minutes >= 0")
    return out


def deadline_in(limit: float | None) -> float | None:
    """The deadline `limit` minutes from now (None: no limit)."""
    return None if limit is None else _now() + 60 * limit


def stage_deadline() -> float | None:
    """The deadline `REPLICATION_MAX_MINUTES` sets, counted from this process's first sweep (in a notebook
    kernel: the stage's); None without it. `REPLICATION_MAX_MINUTES=25 dvc repro -S profile=gpu` then runs
    each stage in bounded chunks: its notebook analyses what is stored, and the stage fails while runs are left."""
    raw = os.environ.get(MAX_MINUTES_ENV, "").strip()
    if not raw:
        return None
    if raw not in _stage_deadline:
        _stage_deadline[raw] = deadline_in(minutes(raw, MAX_MINUTES_ENV))
    return _stage_deadline[raw]


def deadline_or_stage(deadline: float | None) -> float | None:
    """An explicit deadline, else the one `REPLICATION_MAX_MINUTES` sets (`stage_deadline`)."""
    return deadline if deadline is not None else stage_deadline()


def expired(deadline: float | None) -> bool:
    return deadline is not None and _now() >= deadline
