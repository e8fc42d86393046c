"""Where a sweep's ensembles train: on this machine (in-process, or in per-core worker processes), or as
tasks on a Ray cluster (`ray.init(address=...)`; a local Ray instance when no address is given).

The backend comes from params.yaml's `executor:` block, overridden by the environment variable
`REPLICATION_EXECUTOR` (`local` or `ray`); `RAY_ADDRESS` is Ray's own. On Ray each task trains one group
and writes its records to the store itself, so the store must be a filesystem every node sees (NFS, a
mounted bucket). A task first skips the runs already recorded, so a task that Ray retries after its
worker died trains only what the dead attempt had not stored, and no record is written twice.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from replication.validation import ConfigError, choice, from_dict

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorConfig:
    backend: str = "local"
    address: str | None = None  # ray: None = RAY_ADDRESS or a local instance; "auto" = the running cluster
    num_cpus: float = 1.0  # per task (one ensemble)
    num_gpus: float = 0.0
    memory_gb: float | None = None  # per task, for Ray's scheduler
    max_retries: int = 3  # Ray's retries of a task whose worker died

    def validate(self, key: str = "executor") -> "ExecutorConfig":
        choice(f"{key}.backend", self.backend, BACKENDS)
        if self.num_cpus <= 0 or self.num_gpus < 0 or (self.memory_gb is not None and self.memory_gb <= 0) or self.max_retries < 0:
            raise ConfigError(f"{key}: num_cpus must be > 0, num_gpus >= 0, memory_gb > 0 and max_retries >= 0")
        return self


def executor_config(params: dict | None = None) -> ExecutorConfig:
    """params.yaml's `executor:` block (all keys optional), with `REPLICATION_EXECUTOR` overriding the backend."""
    raw = dict((params or {}).get("executor") or {})
    if os.environ.get("REPLICATION_EXECUTOR"):
        raw["backend"] = os.environ["REPLICATION_EXECUTOR"]
    return from_dict(ExecutorConfig, raw, "executor").validate()


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("executor.backend: 'ray' needs Ray (pip install ray); or use the local backend") from None
    return ray


def ensure_ray(cfg: ExecutorConfig):
    """Ray, connected: to `cfg.address` (or RAY_ADDRESS), else a local instance on this machine's cores."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=cfg.address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    return ray


def _run_group(group, store_where: tuple, train_kwargs: dict, threads: int, train) -> list[str]:
    """One Ray task: train (with `train`, the runner's `train_group`) the runs of `group` the store still
    lacks, write their records, return their ids."""
    import torch

    from replication.store import Store

    store = Store(*store_where)
    todo = [s for s in group if store.needs_run(s)]
    if not todo:
        return [s.hash for s in group]
    from replication.train import remove_checkpoints

    torch.set_num_threads(threads)
    records = train(todo, **train_kwargs)
    for record in records:
        if store.needs_run(next(s for s in todo if s.hash == record["id"])):
            store.write(record)
    remove_checkpoints(records, train_kwargs.get("checkpoint_dir"))  # only now that the records are stored
    return [s.hash for s in group]


def train_on_ray(groups: list, store, cfg: ExecutorConfig, train_kwargs: dict, expired, train):
    """Yield the ids of each group's runs as its task ends; submit no group once `expired()` is true. At most
    as many tasks are in flight as the cluster has room for, so a deadline stops what has not started."""
    ray = ensure_ray(cfg)
    options = {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus, "max_retries": cfg.max_retries}
    if cfg.memory_gb:
        options["memory"] = int(cfg.memory_gb * 2**30)
    task = ray.remote(_run_group).options(**options)
    where = (str(store.root.parent.parent.resolve()), store.root.parent.name, store.root.name)  # workers' cwd may differ
    slots = max(1, int(ray.cluster_resources().get("CPU", 1) // cfg.num_cpus))
    if cfg.num_gpus:
        slots = min(slots, max(1, int(ray.cluster_resources().get("GPU", 0) // cfg.num_gpus)))
    queue, running = list(groups), {}
    while queue or running:
        while queue and len(running) < slots and not expired():
            group = queue.pop(0)
            running[task.remote(group, where, train_kwargs, max(1, int(cfg.num_cpus)), train)] = group
        if not running:
            return
        (done,), _ = ray.wait(list(running), num_returns=1)
        group = running.pop(done)
        try:
            yield ray.get(done)
        except ray.exceptions.RayError as err:  # its runs stay missing, and the next sweep trains them
            cause = getattr(err, "cause", None) or err  # a task's own exception, or Ray's (a lost worker)
            how = ("raised an error (not retried)" if isinstance(err, ray.exceptions.RayTaskError)
                   else f"lost its worker {cfg.max_retries + 1} times")
            warnings.warn(f"a Ray task of {len(group)} run(s) {how}: {type(cause).__name__}: {str(cause).strip()[:200]}; "
                          "the next sweep trains them", stacklevel=2)
            yield [s.hash for s in group]
