"""A task set on disk: plain data named by the hash of its content, so what a run trained on is part of its
identity. The format (train examples, evaluation items of three kinds) is described in `replication.sft`,
which trains and scores on it; this module only writes, checks and reads it, without importing torch, so a
paper's topic can build its task set while declaring runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from functools import lru_cache
from pathlib import Path

from replication.data import DataError, cache_dir

ITEM_KEYS = ({"prompt", "answer"}, {"prompt", "choices", "correct"}, {"prompt", "pattern"})


def task_set_path(digest: str) -> Path:
    return cache_dir() / "tasks" / f"{digest}.json"


def write_task_set(train: list[dict], evaluation: dict[str, list[dict]]) -> str:
    """Write a task set (if not there yet) and return its hash, the value of `RunSpec.tasks`."""
    for i, ex in enumerate(train):
        if set(ex) != {"prompt", "completion"}:
            raise ValueError(f"task set: train example {i} has keys {sorted(ex)}; expected prompt, completion")
    for task, items in evaluation.items():
        for i, item in enumerate(items):
            if set(item) not in ITEM_KEYS:
                raise ValueError(f"task set: item {i} of {task!r} has keys {sorted(item)}; expected prompt + answer, "
                                 "prompt + choices + correct, or prompt + pattern")
            if "pattern" in item:
                try:
                    re.compile(item["pattern"])
                except re.error as e:
                    raise ValueError(f"task set: item {i} of {task!r} has a pattern that is not a regular expression: {e}") from None
    text = json.dumps({"train": train, "eval": evaluation}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = task_set_path(digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    return digest


@lru_cache(maxsize=4)
def load_task_set(digest: str) -> dict:
    path = task_set_path(digest)
    if not path.is_file():
        raise DataError(f"tasks: no task set {digest!r} at {str(path)!r}; it is written by the topic that declares the runs "
                        "(`python -m replication sweep <experiment>` writes it)")
    data = json.loads(path.read_text())
    if hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16] != digest:
        raise DataError(f"tasks: {str(path)!r} does not hash to {digest!r} (edited or corrupt); delete it and sweep again")
    return data
