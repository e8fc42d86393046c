"""Records that no declared run names: left in a store by a grid or design that has since changed, or by an
ad-hoc `python -m replication run`. Nothing reads them; `python -m replication store prune` lists them and,
with --delete, deletes them."""

from __future__ import annotations

from replication.experiments import declared_runs, finetuning, missing_specs, stored
from replication.params import experiment
from replication.spec import ConfigError


def stale_ids(name: str, params: dict, profile: str, results_root="results") -> list[str]:
    """The records in experiment `name`'s store that none of its declared runs names: left by a grid or design
    that has since changed, read by nothing. Only known once every declared run is stored (a follow-up is
    declared only after the runs it follows), so an experiment with runs missing is a ConfigError naming them."""
    exp = experiment(params, name, profile)
    missing, waiting = missing_specs(name, params, profile, results_root)
    if missing or waiting:
        raise ConfigError(f"{name}: {max(len(missing), 1)} declared run(s) not stored yet, so which records are stale "
                          f"is not known: sweep it first (python -m replication sweep {name} --profile {profile})")
    declared = {s.hash for s in declared_runs(exp, params, results_root)}
    if "pretrain" in exp.settings:  # the run a fine-tuning experiment starts every run from
        declared.add(finetuning(exp, results_root)[0].hash)
    return [i for i in stored(exp, results_root).ids() if i not in declared]


def prune(name: str, params: dict, profile: str, results_root="results") -> list[str]:
    """Delete experiment `name`'s stale records (`stale_ids`); returns their ids."""
    store = stored(experiment(params, name, profile), results_root)
    ids = stale_ids(name, params, profile, results_root)
    for run_id in ids:
        store.path(run_id).unlink()
    return ids
