"""Training a list of runs into a store: the internals behind `replication.experiments.sweep`.

Runs that can share one batched computation (same architecture, data, batch size, budget and
optimizer) are grouped into ensembles (`replication.ensemble.plan`, at most `max_members`, sized to
fit memory); each finished run is written to the store as soon as its group ends, so a killed
sweep loses only the groups in flight. Which runs to train is the experiment layer's business
(`replication.experiments`); this module only trains them, on this machine or on Ray.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
import traceback
import warnings
from pathlib import Path

import torch
from tqdm import tqdm

from replication.data import load_tokens
from replication.deadline import deadline_or_stage, expired
from replication.ensemble import plan, recommended_workers
from replication.finetune import load_weights, usable_weights
from replication.lifetime import die_with_parent
from replication.executor import ExecutorConfig, executor_config, train_on_ray
from replication.record import new_record
from replication.spec import RunSpec
from replication.store import Store, weights_file
from replication.task_set import load_task_set
from replication.device import environment, resolve_device
from replication.train import remove_checkpoints, resumable_groups, train_members

DEFAULT_MAX_MEMBERS = 8
GPU_MAX_MEMBERS = 32  # small-batch steps are latency-bound on a GPU: 32 members ran 2.5x the tokens/s of 8 (bench_gpu.json)
_runs_trained = 0  # in this process (a notebook's kernel): what its timing block reports


def runs_trained() -> int:
    """Runs trained (not read back from a store) by this process so far."""
    return _runs_trained


def _is_out_of_memory(err: Exception) -> bool:
    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(err).lower()


def train_group(group: list[RunSpec], **train_kwargs) -> list[dict]:
    """Train one ensemble; on out-of-memory split it in halves and retry; other errors become failed records."""
    try:
        return train_members(group, **train_kwargs)
    except Exception as err:  # one bad group must not sink the sweep; its runs are retried next time
        if len(group) > 1 and _is_out_of_memory(err):
            half = len(group) // 2
            warnings.warn(f"ensemble of {len(group)} ran out of memory; retrying as {half} + {len(group) - half}", stacklevel=2)
            return train_group(group[:half], **train_kwargs) + train_group(group[half:], **train_kwargs)
        return [_failed_record(s, err) for s in group]


def _train_group_in_worker(args: tuple[list[RunSpec], int, dict]) -> list[dict]:
    group, threads, train_kwargs = args
    torch.set_num_threads(threads)
    return train_group(group, **train_kwargs)


def default_max_members() -> int:
    """The largest ensemble by default: more on a GPU, where a small batch leaves most of it idle."""
    return GPU_MAX_MEMBERS if torch.cuda.is_available() else DEFAULT_MAX_MEMBERS


def run_specs(
    specs: list[RunSpec],
    store: Store,
    max_members: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    poll_s: float = 1.0,
    checkpoint_every_tokens: int | None = None,
    save_weights: bool = False,
    deadline: float | None = None,
    executor: ExecutorConfig | None = None,
) -> list[dict]:
    """Ensure every spec has a record in `store`; return the records in spec order.

    Runs are claimed before training, so sweeps sharing a store split the work instead of repeating
    it; runs another live process holds are waited for. workers > 1 trains groups in that many
    processes with cores / workers threads each (the per-core lever on CPU); None takes what
    `replication.bench` measured faster on this machine. Each record is written the moment its group ends;
    with `checkpoint_every_tokens`, long runs also checkpoint to `<store>/_checkpoints/` and resume. With
    `save_weights`, each run's final weights go to `<store>/_weights/<run id>.pt` (what `init_from` reads).
    With a `deadline` (on `deadline._now`'s clock, see `deadline.deadline_in`; default `deadline.stage_deadline()`), no group starts after it: the groups in
    flight finish and are written, and the records stored so far are returned (a later sweep does the rest).
    `executor` (default: `REPLICATION_EXECUTOR`, else local) may send the groups to Ray instead, whose tasks
    write their records to the store themselves (see `replication.executor`).
    """
    executor = executor or executor_config()
    max_members = max_members or default_max_members()
    deadline = deadline_or_stage(deadline)
    if workers is None:
        workers = recommended_workers()
    train_kwargs = {}
    if checkpoint_every_tokens:  # absolute: a Ray worker's working directory may differ
        train_kwargs = {"checkpoint_dir": store.root.resolve() / "_checkpoints", "checkpoint_every_tokens": checkpoint_every_tokens,
                        "keep_checkpoint": True}  # removed once the records are stored (`remove_checkpoints`)
    if save_weights:
        train_kwargs["weights_dir"] = store.root / "_weights"
    pending = list({s.hash: s for s in specs}.values())
    pending = [s for s in pending if store.needs_run(s)]
    check_inputs(pending)
    with tqdm(total=len(pending), desc=f"sweep {store.root.parent.name}/{store.root.name}", disable=not progress or not pending) as bar:
        while pending:
            mine = [s for s in pending if store.claim(s.hash)]
            try:
                global _runs_trained
                groups = (_train_on_ray(mine, store, max_members, executor, train_kwargs, deadline) if executor.backend == "ray"
                          else _train_all(mine, max_members, workers, train_kwargs, deadline))
                for records in groups:
                    _runs_trained += len(records)
                    for record in records:
                        if executor.backend != "ray":  # a Ray task has written its own (and removed its checkpoints)
                            store.write(record)
                        store.release(record["id"])
                    if executor.backend != "ray":
                        remove_checkpoints(records, train_kwargs.get("checkpoint_dir"))
                    bar.update(len(records))
            finally:
                for s in mine:
                    store.release(s.hash)
            pending = [s for s in pending if store.needs_run(s)]
            if pending and expired(deadline):
                break
            pending = [s for s in pending if s not in mine]
            if pending:  # held by another sweep: wait for its records (or take over if it died)
                time.sleep(poll_s)
                bar.update(0)
    out = [store.read(s.hash) for s in specs]
    return [r for r in out if r is not None]


def check_inputs(specs: list[RunSpec]) -> None:
    """Find input errors before any training: a corpus that cannot be read, a tokenizer that cannot be
    built, a `data.domain` that matches nothing (DataError), a missing `init_from` file (FileNotFoundError) or
    one that cannot be loaded (UnreadableWeights).
    A task set that is missing or corrupt is a DataError too. Each names the problem, where it would otherwise
    turn every run of the sweep into a `failed` record."""
    for data in dict.fromkeys(s.data for s in specs):
        load_tokens(data)  # cached: the training that follows reads the same tokens
    for digest in dict.fromkeys(s.tasks for s in specs if s.tasks):
        load_task_set(digest)
    for path in dict.fromkeys(s.init_from for s in specs if s.init_from):
        if Path(path).is_file():
            load_weights(path)  # UnreadableWeights, naming the file, rather than a failed record for every run
        else:
            raise FileNotFoundError(f"init_from: weights file {path!r} does not exist (it is written by the pretraining run "
                                    "of a fine-tuning experiment; `python -m replication sweep <experiment>` makes it)")


def _train_on_ray(specs: list[RunSpec], store: Store, max_members: int, executor: ExecutorConfig, train_kwargs: dict,
                  deadline: float | None):
    """Yield the records of each group a Ray task trained (and stored) as it ends."""
    for ids in train_on_ray(_groups(specs, max_members, train_kwargs), store, executor, train_kwargs, lambda: expired(deadline), train_group):
        yield [r for r in (store.read(i) for i in ids) if r is not None]


def _train_all(specs: list[RunSpec], max_members: int, workers: int, train_kwargs: dict, deadline: float | None = None):
    """Yield the records of each trained group as it finishes; start no group after `deadline`."""
    if workers > 1 and specs:  # enough groups to keep every worker busy
        max_members = max(1, min(max_members, -(-len(specs) // workers)))
    groups = _groups(specs, max_members, train_kwargs)
    if workers > 1 and len(groups) > 1:
        threads = max(1, torch.get_num_threads() // workers)
        slots, stop = threading.Semaphore(workers), threading.Event()

        def feed():  # hands the pool a group only when a worker is free, so a deadline stops what has not started
            for group in groups:
                while not slots.acquire(timeout=0.2):
                    if stop.is_set():
                        return
                if stop.is_set() or expired(deadline):
                    return
                yield group, threads, train_kwargs

        with mp.get_context("spawn").Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            try:
                for records in pool.imap_unordered(_train_group_in_worker, feed()):
                    slots.release()
                    yield records
            finally:
                stop.set()
    else:
        for group in groups:
            if expired(deadline):
                return
            yield train_group(group, **train_kwargs)


def _groups(specs: list[RunSpec], max_members: int, train_kwargs: dict) -> list[list[RunSpec]]:
    """The ensembles to train: first each group a checkpoint can resume, as it was, then the rest planned afresh."""
    resumable, rest = resumable_groups(specs, train_kwargs.get("checkpoint_dir"))
    return resumable + plan(rest, max_members)


def _failed_record(spec: RunSpec, err: Exception) -> dict:
    error = "".join(traceback.format_exception_only(err)).strip()
    return new_record(spec, environment(resolve_device(spec.device)), status="failed", error=error)



def ensure_pretrained(pretrain: RunSpec, store: Store, weights_needed: bool, deadline: float | None = None,
                      progress: bool = True) -> dict:
    """The record of a fine-tuning experiment's pretraining run, trained (its weights saved) when missing.

    The weights file is a cache: it is remade only while some fine-tuning run still needs it
    (`weights_needed`), so a store with every record needs no weights at all. Once a bounded sweep's time
    is up nothing starts, not even the pretraining."""
    global _runs_trained
    record = store.read(pretrain.hash)
    if expired(deadline_or_stage(deadline)):
        if record is None:
            raise RuntimeError(f"{store.root.name}: nothing to analyse yet: the time limit passed before its pretraining run "
                               f"{pretrain.hash}. Run the same command again; finished runs are kept")
        return record
    weights = weights_file(store.root, pretrain.hash)
    if record is None:
        record = train_members([pretrain], progress=progress, weights_dir=weights.parent)[0]
        _runs_trained += 1
        if record["status"] != "ok":
            raise RuntimeError(f"the pretraining run {pretrain.hash} of {store.root.name} {record['status']}: {record['error']}")
        store.write(record)
    elif weights_needed and not usable_weights(weights):  # gone, or unreadable (then quarantined, with a warning)
        remake_weights([pretrain], store)
    return record


def remake_weights(specs: list[RunSpec], store: Store) -> None:
    """Write the final weights of runs whose records stand (a cache that is gone) by training them again:
    training is deterministic, so the weights are the ones the records describe. The records are not rewritten."""
    for spec in specs:
        train_members([spec], weights_dir=store.root / "_weights")
