"""Results of exact computations (nothing trains), kept beside the run records as one JSON file.

A stage that computes rather than trains (Zhang et al.'s linear-regression theory: a minute and a half of
recursion on 2 cores) writes its result once under `results/<profile>/<experiment>/`, keyed by everything
that decides it (the experiment's settings and the computation's version); a re-execution with the same key
reads the file, so re-running the notebook (nbval, a fresh clone's `dvc repro`) takes seconds. A changed
key, or a file that cannot be read, is computed again and overwritten: deleting the file regenerates it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from replication.store import write_json

FORMAT = 1


def computed(path: str | Path, key: dict, compute: Callable[[], dict]) -> dict:
    """The stored result of `compute()` for `key` at `path`, computing and storing it when the file is
    missing, unreadable or was computed for another key. `key` and the result must be JSON-serialisable;
    floats round-trip exactly (json writes their shortest repr)."""
    path = Path(path)
    key = json.loads(json.dumps({"format": FORMAT, **key}))  # as it reads back (tuples become lists)
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return stored["result"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass  # missing, truncated or foreign: computed again below
    result = compute()
    write_json(path, {"key": key, "result": result})
    return json.loads(json.dumps(result))
