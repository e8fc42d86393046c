"""The paper layer, apart from the engine: `replication/papers/<paper>/<topic>.py` belongs to experiment,
stage and notebook `<paper>_<topic>` and holds its run list, tables, claims and plots.

Every topic declares `runs(exp, params, results_root) -> list[RunSpec]`: every run its notebook reads,
follow-ups included (more seeds at a best cell, a sweep around an optimum). A follow-up that depends on
earlier results appears once those are stored, so `sweep` repeats until the list stops growing; the
CLI, the notebook and any distributed backend train from this one list. `REQUIRES` names experiments
whose runs a topic reads (they are swept first). An experiment without a topic module (`quickstart`)
runs its grid. A topic whose runs start from other runs' weights (`zhang_local_cbs`) also defines
`train(exp, missing, results_root, **kwargs)`, which makes those weights (a cache, never committed) first.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pandas as pd

from replication.executor import executor_config
from replication.params import experiment
from replication.spec import RunSpec
from replication.store import Store
from replication.sweep import deadline_or_stage, expired, finetuning, needs_run, run_finetuning, run_more, table


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


def declared_runs(exp, params: dict, results_root="results") -> list[RunSpec]:
    """Every run experiment `exp` declares given what the store holds now."""
    module = topic(exp.name)
    return list(dict.fromkeys(module.runs(exp, params, results_root) if module else exp.expand()))  # each run once


def sweep(name: str, params: dict, profile: str, results_root="results", **kwargs) -> pd.DataFrame:
    """Train every run experiment `name` declares, its requirements first, until nothing is missing; return
    the table of its runs. A run that fails is tried once per call (its record says why). With
    `deadline=` (`sweep.deadline_in(minutes)`), no group starts after it and the table holds what is stored
    (`missing_runs` says what is left for the next call)."""
    kwargs.setdefault("executor", executor_config(params))  # params.yaml's `executor:` (local or Ray)
    for other in requires(name):
        sweep(other, params, profile, results_root, **kwargs)
    if name not in params.get("experiments", {}) and topic(name) is not None:
        return pd.DataFrame()  # trains nothing of its own (marek_curves)
    exp = experiment(params, name, profile)
    pretrain = ft = None
    if "pretrain" in exp.settings:
        pretrain, ft = finetuning(exp, results_root)
    store, tried = Store(results_root, profile, name), set()
    deadline = kwargs["deadline"] = deadline_or_stage(kwargs.get("deadline"))
    while True:
        try:
            specs = declared_runs(exp, params, results_root)
        except (RuntimeError, FileNotFoundError) as err:
            if not expired(deadline):
                raise
            raise RuntimeError(f"{name}: nothing to analyse yet: its runs follow from runs the time limit left untrained "
                               f"({err}). Run the same command again; finished runs are kept") from err
        missing = [s for s in specs if s.hash not in tried and needs_run(store, s)]
        if not missing or expired(deadline):
            break
        tried |= {s.hash for s in missing}
        if ft is not None:
            run_finetuning(ft, pretrain, missing, results_root, **kwargs)
        elif hasattr(module := topic(name), "train"):  # a topic whose runs start from others' weights trains them itself
            module.train(exp, missing, results_root, **kwargs)
        else:
            run_more(exp, missing, results_root=results_root, **kwargs)
    records = [r for r in (store.read(s.hash) for s in specs) if r is not None]
    return table(records, grid_keys=exp.grid_keys)


def missing_specs(name: str, params: dict, profile: str, results_root="results") -> tuple[list[tuple[str, RunSpec]], list[str]]:
    """The runs experiment `name` and the experiments it requires declare, given what is stored, and lack,
    as (experiment, spec) pairs; and the experiments whose follow-ups cannot be declared yet (their runs
    follow from runs not stored). A lower bound: follow-ups appear once the runs they follow are stored."""
    missing, waiting = [], []
    for other in requires(name):
        m, w = missing_specs(other, params, profile, results_root)
        missing, waiting = missing + m, waiting + w
    if name not in params.get("experiments", {}):
        return missing, waiting
    exp = experiment(params, name, profile)
    try:
        specs = declared_runs(exp, params, results_root)
    except (RuntimeError, FileNotFoundError):  # its runs follow from runs not stored yet
        return missing, waiting + [name]
    store = Store(results_root, profile, name)
    return missing + [(name, s) for s in specs if needs_run(store, s)], waiting


def missing_runs(name: str, params: dict, profile: str, results_root="results") -> int:
    """How many runs `missing_specs` finds (at least 1 while some experiment's runs cannot be declared yet)."""
    missing, waiting = missing_specs(name, params, profile, results_root)
    return max(len(missing), 1) if waiting else len(missing)
