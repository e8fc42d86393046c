"""params.yaml: profiles and experiments, resolved into validated `RunSpec`s (errors name the key)."""

from __future__ import annotations

import dataclasses
import itertools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from replication.spec import PROFILES, RunSpec, check_run_keys, run_spec_from_dict
from replication.validation import ConfigError, choice, coerce, did_you_mean, merge, undot


@dataclass(frozen=True)
class Experiment:
    """One experiment of params.yaml on one profile: a base spec and grids of dotted keys.

    `grids` is a union of Cartesian grids (params.yaml's `grid` may be one mapping or a list of them,
    e.g. one per optimizer with its own LR range). With `lr_batch_exponent` = a, a grid's
    `optimizer.lr` (and `adam_lr`) is the LR at batch size 1 and each run trains at lr * batch_size**a
    (Marek et al. lay their LR grids out this way, a = 0.3); records hold the LR actually used.
    """

    name: str
    profile: str
    base: RunSpec
    grids: tuple[dict[str, tuple], ...]
    settings: dict[str, Any]  # experiment-specific knobs for the notebook (plots, fits), unvalidated here
    lr_batch_exponent: float = 0.0

    @property
    def grid_keys(self) -> list[str]:
        return list(dict.fromkeys(k for g in self.grids for k in g))

    def derived(self, dotted: dict[str, Any], where: str) -> RunSpec:
        """The base run with dotted keys changed (e.g. the pretraining run named in `settings`); errors
        name `experiments.<name>.<where>`. The LR is used as given (no lr_batch_exponent)."""
        if not isinstance(dotted, dict):
            raise ConfigError(f"experiments.{self.name}.{where}: expected a mapping of dotted keys to values, got {dotted!r}")
        return run_spec_from_dict(merge(self.base.to_dict(), undot(dotted)), f"experiments.{self.name}.{where}")

    def checked_settings(self, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
        """`settings` with every key of `keys` present and none outside `keys + optional` (a topic's knobs:
        the error names the experiment, the key, and what is accepted, with a close match if there is one)."""
        where, accepted = f"experiments.{self.name}.settings", keys + optional
        unknown = [k for k in self.settings if k not in accepted]
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key{did_you_mean(unknown[0], accepted)}; accepted keys: {', '.join(accepted)}")
        missing = [k for k in keys if k not in self.settings]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}; accepted keys: {', '.join(accepted)}")
        return self.settings

    def expand(self) -> list[RunSpec]:
        specs = []
        for grid in self.grids:
            keys = list(grid)
            for values in itertools.product(*(grid[k] for k in keys)):
                dotted = dict(zip(keys, values))
                key = f"experiments.{self.name}[{', '.join(f'{k}={v}' for k, v in dotted.items())}]"
                raw = merge(self.base.to_dict(), undot(dotted))
                if self.lr_batch_exponent:
                    scale = raw["batch_size"] ** self.lr_batch_exponent
                    raw["optimizer"]["lr"] *= scale
                    if raw["optimizer"]["adam_lr"] is not None:
                        raw["optimizer"]["adam_lr"] *= scale
                specs.append(run_spec_from_dict(raw, key))
        if not specs:
            raise ConfigError(f"experiments.{self.name}: the grid expands to no runs (an empty list in {self.grid_keys})")
        return specs


_TOP_KEYS = ("profile", "run", "profiles", "experiments", "executor")
_EXPERIMENT_KEYS = ("run", "grid", "settings", "profiles", "lr_batch_exponent")


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read params.yaml and check its top-level shape (the specs are checked by `experiment`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} does not exist")
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for k in params:
        if k not in _TOP_KEYS:
            raise ConfigError(f"{k}: unknown key{did_you_mean(k, _TOP_KEYS)}; accepted keys: {', '.join(_TOP_KEYS)}")
    for name in params.get("profiles", {}):
        choice("profiles", name, PROFILES)
    for name, exp in params.get("experiments", {}).items():
        for k in exp or {}:
            if k not in _EXPERIMENT_KEYS:
                raise ConfigError(
                    f"experiments.{name}.{k}: unknown key{did_you_mean(k, _EXPERIMENT_KEYS)}; "
                    f"accepted keys: {', '.join(_EXPERIMENT_KEYS)}"
                )
    if "profile" in params:
        choice("profile", params["profile"], PROFILES)
    return params


def experiment(params: dict[str, Any], name: str, profile: str) -> Experiment:
    """Resolve experiment `name` on `profile`: global run < profile run < experiment run < experiment profile run."""
    choice("profile", profile, PROFILES)
    experiments = params.get("experiments", {})
    choice("experiment", name, experiments)
    exp = experiments[name] or {}
    profile_block = params.get("profiles", {}).get(profile) or {}
    for k in profile_block:
        if k != "run":
            raise ConfigError(f"profiles.{profile}.{k}: unknown key; accepted keys: run")
    exp_profile = (exp.get("profiles") or {}).get(profile) or {}
    for k in exp_profile:
        if k not in ("run", "grid", "settings"):
            raise ConfigError(
                f"experiments.{name}.profiles.{profile}.{k}: unknown key{did_you_mean(k, ('grid', 'run', 'settings'))}; "
                "accepted keys: grid, run, settings"
            )
    raw = {}
    layers = ((params.get("run"), "run"), (profile_block.get("run"), f"profiles.{profile}.run"),
              (exp.get("run"), f"experiments.{name}.run"), (exp_profile.get("run"), f"experiments.{name}.profiles.{profile}.run"))
    for layer, where in layers:
        if isinstance(layer, dict):
            check_run_keys(undot(layer), where)  # a typo is named where it was written, not where layers meet
        raw = merge(raw, layer or {})
    base = run_spec_from_dict(raw, f"experiments.{name}.run")
    base_grid, profile_grid = exp.get("grid"), exp_profile.get("grid")
    if isinstance(base_grid, dict) and isinstance(profile_grid, dict):
        raw_grid = {**base_grid, **profile_grid}  # a profile overrides single keys of a single grid
    else:
        raw_grid = profile_grid if profile_grid is not None else base_grid  # ... or replaces a list of grids
    grids = _grids(name, raw_grid)
    settings = {**(exp.get("settings") or {}), **(exp_profile.get("settings") or {})}
    exponent = coerce(f"experiments.{name}.lr_batch_exponent", exp.get("lr_batch_exponent", 0.0), float)
    return Experiment(name, profile, base, grids, settings, exponent)


def _grids(name: str, raw) -> tuple[dict[str, tuple], ...]:
    """params.yaml's `grid`: a mapping of dotted key -> list, or a list of such mappings."""
    if raw is None:
        return ({},)
    grids = raw if isinstance(raw, list) else [raw]
    out = []
    for i, grid in enumerate(grids):
        where = f"experiments.{name}.grid" + (f"[{i}]" if isinstance(raw, list) else "")
        if not isinstance(grid, dict):
            raise ConfigError(f"{where}: expected a mapping of dotted keys to lists, got {grid!r}")
        for k, values in grid.items():
            if not isinstance(values, list):
                raise ConfigError(f"{where}.{k}: expected a list of values, got {values!r}")
            _check_dotted_key(where, k)
        out.append({k: tuple(v) for k, v in grid.items()})
    return tuple(out)


def _check_dotted_key(where: str, dotted: str) -> None:
    cls = RunSpec
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(cls)] if cls else []
        if part not in names:
            raise ConfigError(
                f"{where}.{dotted}: unknown key '{part}'{did_you_mean(part, names)}; accepted: {', '.join(names) or 'nothing below ' + parts[i - 1]}"
            )
        hint = typing.get_type_hints(cls)[part]
        cls = hint if dataclasses.is_dataclass(hint) else None
