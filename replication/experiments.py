"""Experiments: which runs each one declares, what the store holds of them, and `sweep`, the one way to train them.

Every experiment `<paper>_<topic>` in params.yaml may have a topic module `replication/papers/<paper>/<topic>.py`
that declares `runs(exp, params, results_root) -> list[RunSpec]`: every run its notebook reads, follow-ups
included (more seeds at a best cell, a sweep around an optimum). A follow-up that depends on earlier results
appears once those are stored (`staged`), so `sweep` repeats until the list stops growing; the CLI, the
notebook and any distributed backend train from this one list. `REQUIRES` names experiments whose runs a
topic reads (they are swept first); `TABLE_KEYS` adds spec keys to its run table beyond the grid's. An
experiment without a topic module (`quickstart`) runs its grid. A topic whose runs start from other runs'
weights (`zhang_local_cbs`) also defines `train(exp, missing, results_root, **kwargs)`, which makes those
weights (a cache, never committed) first.

This module reads the store and the topics without importing torch: training happens in
`replication.runner`, imported only when something is trained.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from types import ModuleType
from typing import Callable

import pandas as pd

from replication.deadline import deadline_or_stage, expired
from replication.executor import executor_config
from replication.params import Experiment, experiment
from replication.spec import RunSpec, get_dotted
from replication.store import Store, weights_file

_complete: dict[tuple, list[RunSpec]] = {}  # the declared runs of each sweep that ended complete (see `_key`)


# ---------------------------------------------------------------- topics and what they declare

def topic(name: str) -> ModuleType | None:
    """The module of experiment `name` (`marek_beta2` -> replication.papers.marek.beta2), if it has one."""
    paper, _, rest = name.partition("_")
    if not rest:
        return None
    module = f"replication.papers.{paper}.{rest}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name in (f"replication.papers.{paper}", module):
            return None
        raise


def requires(name: str) -> tuple[str, ...]:
    return getattr(topic(name), "REQUIRES", ())


def declared_runs(exp: Experiment, params: dict, results_root="results") -> list[RunSpec]:
    """Every run experiment `exp` declares given what the store holds now."""
    module = topic(exp.name)
    return list(dict.fromkeys(module.runs(exp, params, results_root) if module else exp.expand()))  # each run once


def _key(name: str, params: dict, profile: str, results_root) -> tuple:
    return name, profile, str(results_root), json.dumps(params, sort_keys=True, default=str)


def stored(exp: Experiment, results_root="results") -> Store:
    """The store of experiment `exp`'s runs (under results/<profile>/<name>/)."""
    return Store(results_root, exp.profile, exp.name)


def staged(exp: Experiment, results_root, follow_ups: list[Callable[[list[RunSpec], pd.DataFrame], list[RunSpec]]]) -> list[RunSpec]:
    """The grid, then each follow-up `f(specs, table)` in turn once every run before it is stored: the usual
    shape of a topic's `runs()` (`sweep` repeats until nothing new appears)."""
    specs = exp.expand()
    for follow_up in follow_ups:
        runs = stored_table(exp, specs, results_root)
        if runs is None:
            return specs
        specs = list(dict.fromkeys(specs + follow_up(specs, runs)))
    return specs


def reseeded(specs: list[RunSpec], ids: list[str], seeds: list[int]) -> list[RunSpec]:
    """The runs `ids` among `specs`, each also with every seed in `seeds` (e.g. the best cell of each group)."""
    chosen = [s for s in specs if s.hash in set(ids)]
    return chosen + [s.replace(seed=seed) for s in chosen for seed in seeds if seed != s.seed]


def finetuning(exp: Experiment, results_root="results") -> tuple[RunSpec, Experiment]:
    """The pretraining run that `settings.pretrain` makes of the experiment's base run, and the experiment
    with every run starting from that run's final weights (`init_from`)."""
    pretrain = exp.derived(exp.settings.get("pretrain") or {}, "settings.pretrain")
    weights = weights_file(stored(exp, results_root).root, pretrain.hash)
    return pretrain, dataclasses.replace(exp, base=exp.base.replace(init_from=str(weights)))


# ---------------------------------------------------------------- run tables

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


def table_keys(exp: Experiment) -> list[str]:
    """The spec keys of `exp`'s run table: its grid's, and those its topic adds (`TABLE_KEYS`)."""
    return [*exp.grid_keys, *getattr(topic(exp.name), "TABLE_KEYS", ())]


def stored_table(exp: Experiment, specs: list[RunSpec], results_root="results") -> pd.DataFrame | None:
    """The table of `specs` read from the store alone (nothing trains), or None while any is missing or
    failed: what a topic's `runs` reads to declare the follow-ups that depend on earlier results."""
    store = stored(exp, results_root)
    if not store.has_all(specs):
        return None
    return table([store.read(s.hash) for s in specs], grid_keys=table_keys(exp))


def records(exp: Experiment, ids: list[str], results_root="results") -> list[dict]:
    """The stored records of runs `ids` of an experiment (for loss curves), in the order given."""
    store = stored(exp, results_root)
    out = [store.read(i) for i in ids]
    missing = [i for i, r in zip(ids, out) if r is None]
    if missing:
        raise FileNotFoundError(f"{store.root}: no record for run(s) {', '.join(missing)}; run the experiment's stage first")
    return out


# ---------------------------------------------------------------- sweeping

def sweep(name: str, params: dict, profile: str, results_root="results", **kwargs) -> pd.DataFrame:
    """Train every run experiment `name` declares, its requirements first, until nothing is missing; return
    the table of its runs. A run that fails is tried once per call (its record says why). With
    `deadline=` (`deadline.deadline_in(minutes)`), no group starts after it and the table holds what is stored
    (`missing_runs` says what is left for the next call). Other keywords go to `runner.run_specs`
    (`max_members`, `workers`, `checkpoint_every_tokens`, `progress`, `executor`)."""
    kwargs.setdefault("executor", executor_config(params))  # params.yaml's `executor:` block (local or Ray)
    for other in requires(name):
        sweep(other, params, profile, results_root, **kwargs)
    if name not in params.get("experiments", {}) and topic(name) is not None:
        return pd.DataFrame()  # trains nothing of its own (marek_curves)
    exp = experiment(params, name, profile)
    store, tried = stored(exp, results_root), set()
    deadline = kwargs["deadline"] = deadline_or_stage(kwargs.get("deadline"))
    while True:
        try:
            specs = declared_runs(exp, params, results_root)
        except (RuntimeError, FileNotFoundError) as err:
            if not expired(deadline):
                raise
            raise RuntimeError(f"{name}: nothing to analyse yet: its runs follow from runs the time limit left untrained "
                               f"({err}). Run the same command again; finished runs are kept") from err
        missing = [s for s in specs if s.hash not in tried and store.needs_run(s)]
        if not missing or expired(deadline):
            break
        tried |= {s.hash for s in missing}
        train_runs(exp, missing, results_root, **kwargs)
    if store.has_all(specs):
        _complete[_key(name, params, profile, results_root)] = specs
    return table([r for r in (store.read(s.hash) for s in specs) if r is not None], grid_keys=table_keys(exp))


def train_runs(exp: Experiment, specs: list[RunSpec], results_root="results", **kwargs) -> list[dict]:
    """Train `specs` of experiment `exp` into its store (what `sweep` does with the runs it lacks; the CLI's
    `run` with one): a fine-tuning experiment's pretraining run first, a topic's own `train` where its runs
    start from other runs' weights. Returns the records of `specs` that are stored."""
    from replication import runner  # training imports torch; declaring and reading runs does not

    module = topic(exp.name)
    if hasattr(module, "train"):
        module.train(exp, specs, results_root, **kwargs)
        store = stored(exp, results_root)
        return [r for r in (store.read(s.hash) for s in specs) if r is not None]
    if "pretrain" in exp.settings:
        pretrain, ft = finetuning(exp, results_root)
        if any(s.init_from != ft.base.init_from for s in specs):
            raise ValueError(f"fine-tuning runs of {exp.name} must start from {ft.base.init_from} (declare them from "
                             "`finetuning(exp)[1]`)")
        runner.ensure_pretrained(pretrain, stored(exp, results_root), weights_needed=bool(specs),
                                 deadline=kwargs.get("deadline"), progress=kwargs.get("progress", True))
    return runner.run_specs(specs, stored(exp, results_root), **kwargs)


def missing_specs(name: str, params: dict, profile: str, results_root="results") -> tuple[list[tuple[str, RunSpec]], list[str]]:
    """The runs experiment `name` and the experiments it requires declare, given what is stored, and lack,
    as (experiment, spec) pairs; and the experiments whose follow-ups cannot be declared yet (their runs
    follow from runs not stored). A lower bound: follow-ups appear once the runs they follow are stored.
    After a `sweep` of `name` in this process ended complete, its declared runs are reused, not declared again."""
    missing, waiting = [], []
    for other in requires(name):
        m, w = missing_specs(other, params, profile, results_root)
        missing, waiting = missing + m, waiting + w
    if name not in params.get("experiments", {}):
        return missing, waiting
    exp = experiment(params, name, profile)
    known = _complete.get(_key(name, params, profile, results_root))
    try:
        specs = known if known is not None else declared_runs(exp, params, results_root)
    except (RuntimeError, FileNotFoundError):  # its runs follow from runs not stored yet
        return missing, waiting + [name]
    store = stored(exp, results_root)
    return missing + [(name, s) for s in specs if store.needs_run(s)], waiting


def missing_runs(name: str, params: dict, profile: str, results_root="results") -> int:
    """How many runs `missing_specs` finds (at least 1 while some experiment's runs cannot be declared yet)."""
    missing, waiting = missing_specs(name, params, profile, results_root)
    return max(len(missing), 1) if waiting else len(missing)
