"""Sweeps: expand an experiment's grid, skip what the store has, train the rest, return a tidy table.

Runs that can share one batched computation (same architecture, data, batch size, budget and
optimizer) are grouped into ensembles (`replication.ensemble.plan`, at most `max_members`, sized to
fit memory); each finished run is written to the store as soon as its group ends, so a killed
sweep loses only the groups in flight.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import threading
import time
import traceback
import warnings
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from replication.data import load_tokens
from replication.ensemble import plan, recommended_workers
from replication.executor import ExecutorConfig, executor_config, train_on_ray
from replication.finetune import weights_file
from replication.params import Experiment
from replication.record import new_record
from replication.sft import load_task_set
from replication.spec import ConfigError, RunSpec, get_dotted
from replication.store import Store
from replication.train import environment, resolve_device, train_members

DEFAULT_MAX_MEMBERS = 8
GPU_MAX_MEMBERS = 32  # small-batch steps are latency-bound on a GPU: 32 members ran 2.5x the tokens/s of 8 (bench_gpu.json)
_now = time.monotonic  # the clock deadlines are read on (a test replaces it)
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
    With a `deadline` (on `sweep._now`'s clock, see `deadline_in`; default `stage_deadline()`), no group starts after it: the groups in
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
    if checkpoint_every_tokens:
        train_kwargs = {"checkpoint_dir": store.root / "_checkpoints", "checkpoint_every_tokens": checkpoint_every_tokens}
    if save_weights:
        train_kwargs["weights_dir"] = store.root / "_weights"
    pending = list({s.hash: s for s in specs}.values())
    pending = [s for s in pending if needs_run(store, s)]
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
                        if executor.backend != "ray":  # a Ray task has written its own
                            store.write(record)
                        store.release(record["id"])
                    bar.update(len(records))
            finally:
                for s in mine:
                    store.release(s.hash)
            pending = [s for s in pending if needs_run(store, s)]
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
    built, a `data.domain` that matches nothing (DataError), a missing `init_from` file (FileNotFoundError).
    A task set that is missing or corrupt is a DataError too. Each names the problem, where it would otherwise
    turn every run of the sweep into a `failed` record."""
    for data in dict.fromkeys(s.data for s in specs):
        load_tokens(data)  # cached: the training that follows reads the same tokens
    for digest in dict.fromkeys(s.tasks for s in specs if s.tasks):
        load_task_set(digest)
    for path in dict.fromkeys(s.init_from for s in specs if s.init_from):
        if not Path(path).is_file():
            raise FileNotFoundError(f"init_from: weights file {path!r} does not exist (it is written by the pretraining run "
                                    "of a fine-tuning experiment; `python -m replication sweep <experiment>` makes it)")


def needs_run(store: Store, spec: RunSpec) -> bool:
    record = store.read(spec.hash)
    return record is None or record["status"] == "failed"  # failed runs (not diverged ones) are retried


def _train_on_ray(specs: list[RunSpec], store: Store, max_members: int, executor: ExecutorConfig, train_kwargs: dict,
                  deadline: float | None):
    """Yield the records of each group a Ray task trained (and stored) as it ends."""
    for ids in train_on_ray(plan(specs, max_members), store, executor, train_kwargs, lambda: expired(deadline)):
        yield [r for r in (store.read(i) for i in ids) if r is not None]


def deadline_in(minutes: float | None) -> float | None:
    """The deadline `minutes` from now (None: no limit), for `run_specs` and `papers.sweep`."""
    return None if minutes is None else _now() + 60 * minutes


MAX_MINUTES_ENV = "REPLICATION_MAX_MINUTES"
_stage_deadline: dict[str, float] = {}


def stage_deadline() -> float | None:
    """The deadline `REPLICATION_MAX_MINUTES` sets, counted from this process's first sweep (in a notebook
    kernel: the stage's); None without it. `REPLICATION_MAX_MINUTES=25 dvc repro -S profile=gpu` then runs
    each stage in bounded chunks: its notebook analyses what is stored, and the stage fails while runs are left."""
    raw = os.environ.get(MAX_MINUTES_ENV, "").strip()
    if not raw:
        return None
    if raw not in _stage_deadline:
        try:
            minutes = float(raw)
        except ValueError:
            minutes = -1.0
        if not minutes >= 0:
            raise ConfigError(f"{MAX_MINUTES_ENV}={raw!r}: expected a number of minutes >= 0")
        _stage_deadline[raw] = deadline_in(minutes)
    return _stage_deadline[raw]


def deadline_or_stage(deadline: float | None) -> float | None:
    """An explicit deadline, else the one `REPLICATION_MAX_MINUTES` sets (`stage_deadline`)."""
    return deadline if deadline is not None else stage_deadline()


def expired(deadline: float | None) -> bool:
    return deadline is not None and _now() >= deadline


def _train_all(specs: list[RunSpec], max_members: int, workers: int, train_kwargs: dict, deadline: float | None = None):
    """Yield the records of each trained group as it finishes; start no group after `deadline`."""
    if workers > 1 and specs:  # enough groups to keep every worker busy
        max_members = max(1, min(max_members, -(-len(specs) // workers)))
    groups = plan(specs, max_members)
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

        with mp.get_context("spawn").Pool(workers) as pool:
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


def run_experiment(exp: Experiment, results_root: str | Path = "results", **kwargs) -> pd.DataFrame:
    """Run (or load) every run of an experiment and return its table."""
    return run_more(exp, exp.expand(), results_root=results_root, **kwargs)


def _failed_record(spec: RunSpec, err: Exception) -> dict:
    error = "".join(traceback.format_exception_only(err)).strip()
    return new_record(spec, environment(resolve_device(spec.device)), status="failed", error=error)


# The run table's columns after the grid keys, each read off a record.
_OUTCOME = {
    "status": lambda r: r["status"],
    "error": lambda r: r.get("error"),
    "final_val_loss": lambda r: r["final_val_loss"],
    "best_val_loss": lambda r: r["best_val_loss"],
    "steps": lambda r: r["steps"],
    "tokens": lambda r: r["tokens"],
    "wall_time_s": lambda r: (r.get("timing") or {}).get("wall_time_s"),
    "peak_memory_mb": lambda r: (r.get("peak_memory_bytes") or 0) / 2**20,
    "id": lambda r: r["id"],
}


def table(records: list[dict], grid_keys: list[str] | None = None) -> pd.DataFrame:
    """One row per run: the grid's keys, the optimizer, batch size, outcome and cost (the columns even with
    no run stored yet, as after a bounded sweep's first chunk)."""
    keys = list(dict.fromkeys(["optimizer.name", "batch_size", "optimizer.lr", "seed", *(grid_keys or [])]))
    rows = [{**{k: get_dotted(r["spec"], k) for k in keys}, **{c: read(r) for c, read in _OUTCOME.items()}} for r in records]
    return pd.DataFrame(rows, columns=[*keys, *_OUTCOME])


def combine(*tables: pd.DataFrame) -> pd.DataFrame:
    """Run tables stacked, each run once (a re-run table repeats the original seed)."""
    return pd.concat(tables, ignore_index=True).drop_duplicates(subset="id").reset_index(drop=True)


def stored_table(exp: Experiment, specs: list[RunSpec], results_root: str | Path = "results") -> pd.DataFrame | None:
    """The table of `specs` read from the store alone (nothing trains), or None while any is missing or
    failed: what a topic's `runs` reads to declare the follow-ups that depend on earlier results."""
    store = Store(results_root, exp.profile, exp.name)
    if any(needs_run(store, s) for s in specs):
        return None
    return table([store.read(s.hash) for s in specs], grid_keys=exp.grid_keys)


def run_more(exp: Experiment, specs: list[RunSpec], extra_keys: tuple[str, ...] = (), results_root: str | Path = "results",
             **kwargs) -> pd.DataFrame:
    """Runs derived from an experiment's grid in a later cell (more seeds at a best cell, a sweep around
    an optimum), stored beside the experiment's own runs; the table also shows `extra_keys`."""
    store = Store(results_root, exp.profile, exp.name)
    return table(run_specs(specs, store, **kwargs), grid_keys=[*exp.grid_keys, *extra_keys])


def finetuning(exp: Experiment, results_root: str | Path = "results") -> tuple[RunSpec, Experiment]:
    """The pretraining run that `settings.pretrain` makes of the experiment's base run, and the experiment
    with every run starting from that run's final weights (`init_from`)."""
    pretrain = exp.derived(exp.settings.get("pretrain") or {}, "settings.pretrain")
    weights = weights_file(Store(results_root, exp.profile, exp.name).root, pretrain.hash)
    return pretrain, dataclasses.replace(exp, base=exp.base.replace(init_from=str(weights)))


def run_finetuning(exp: Experiment, pretrain: RunSpec, specs: list[RunSpec] | None = None, results_root: str | Path = "results",
                   progress: bool = True, **kwargs) -> tuple[dict, pd.DataFrame]:
    """Ensure the pretraining run's record, then fine-tune `specs` (default: the grid of `exp`, as made by
    `finetuning`); return the pretraining record and the fine-tuning table.

    The weights file is a cache: it is (re)trained only while the pretraining record or some
    fine-tuning record is missing, so a store with every record needs no weights at all.
    """
    store = Store(results_root, exp.profile, exp.name)
    specs = exp.expand() if specs is None else specs
    weights = weights_file(store.root, pretrain.hash)
    if any(s.init_from != str(weights) for s in specs):
        raise ValueError(f"fine-tuning runs of {exp.name} must start from {weights} (make them with sweep.finetuning)")
    record = store.read(pretrain.hash)
    if expired(deadline_or_stage(kwargs.get("deadline"))):  # a bounded sweep's time is up: start nothing, not even the pretraining
        if record is None:
            raise RuntimeError(f"{exp.name}: nothing to analyse yet: the time limit passed before its pretraining run "
                               f"{pretrain.hash}. Run the same command again; finished runs are kept")
    elif record is None or (not weights.exists() and any(needs_run(store, s) for s in specs)):
        global _runs_trained
        record = train_members([pretrain], progress=progress, weights_dir=weights.parent)[0]
        _runs_trained += 1
        if record["status"] != "ok":
            raise RuntimeError(f"the pretraining run {pretrain.hash} of {exp.name} {record['status']}: {record['error']}")
        store.write(record)
    return record, run_more(exp, specs, results_root=results_root, progress=progress, **kwargs)


def reseeded(specs: list[RunSpec], ids: list[str], seeds: list[int]) -> list[RunSpec]:
    """The runs `ids` among `specs`, each also with every seed in `seeds` (e.g. the best cell of each group)."""
    chosen = [s for s in specs if s.hash in set(ids)]
    return chosen + [s.replace(seed=seed) for s in chosen for seed in seeds if seed != s.seed]


def with_seeds(exp: Experiment, ids: list[str], seeds: list[int], results_root: str | Path = "results", **kwargs) -> pd.DataFrame:
    """Re-run the runs `ids` of an experiment with more seeds (e.g. the best cell of each group) and
    return the table of all their seeds, the original ones included."""
    return run_more(exp, reseeded(exp.expand(), ids, seeds), results_root=results_root, **kwargs)


def records(exp: Experiment, ids: list[str], results_root: str | Path = "results") -> list[dict]:
    """The stored records of runs `ids` of an experiment (for loss curves), in the order given."""
    store = Store(results_root, exp.profile, exp.name)
    out = [store.read(i) for i in ids]
    missing = [i for i, r in zip(ids, out) if r is None]
    if missing:
        raise FileNotFoundError(f"{store.root}: no record for run(s) {', '.join(missing)}; run the experiment's stage first")
    return out
