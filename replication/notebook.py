"""Helpers that keep notebooks thin: parameter checks, spec summaries, and prose built from numbers."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import pandas as pd
from IPython.display import Markdown

from replication.sizes import count_parameters
from replication.experiments import missing_specs
from replication.runner import runs_trained
from replication.params import Experiment
from replication.spec import PROFILES, ConfigError

_clock: dict = {}  # set by setup(): when this notebook started, and how many runs had been trained by then


def setup(profile: str) -> Path:
    """Check the papermill parameter and move to the repository root, so repo-relative paths work
    whether papermill (``--cwd .``), nbval (the notebook's folder) or JupyterLab started the kernel; to
    the workbook named by `REPLICATION_WORKBOOK` when set (the test session's copy)."""
    if profile not in PROFILES:  # papermill only warns on a misspelled parameter; fail loudly instead
        raise ConfigError(f"profile: {profile!r} is unknown; choose one of: {', '.join(PROFILES)}")
    _clock.update(start=time.perf_counter(), trained=runs_trained(), profile=profile, missing=0)
    elsewhere = os.environ.get("REPLICATION_WORKBOOK")  # the tests run notebooks in a copy, never the checkout
    here = Path(elsewhere).resolve() if elsewhere else Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "params.yaml").is_file():
            os.chdir(folder)
            return folder
    raise FileNotFoundError(f"no workbook root (a folder with dvc.yaml and params.yaml) above {here}")


def show_spec(exp: Experiment) -> Markdown:
    s = exp.base
    n = count_parameters(s.model, s.data.vocab_size)
    grid = " + ".join(", ".join(f"`{k}` in {list(v)}" for k, v in g.items()) for g in exp.grids if g) or "none"
    return Markdown(
        f"**{exp.name}** on profile `{exp.profile}`: model width {s.model.width}, depth {s.model.depth}, "
        f"head dim {s.model.head_dim} ({n['non_embedding'] / 1e6:.2f} M non-embedding parameters, "
        f"{n['embedding'] / 1e6:.2f} M in embeddings); corpus `{s.data.corpus}`, vocab {s.data.vocab_size}, "
        f"sequences of {s.data.seq_len} tokens; {s.tokens:,} training tokens per run; optimizer "
        f"`{s.optimizer.name}`, schedule `{s.schedule.name}`. Grid: {grid}"
        + (f"; LR scaled as batch_size^{exp.lr_batch_exponent}." if exp.lr_batch_exponent else ".")
    )


def quickstart_summary(runs: pd.DataFrame) -> Markdown:
    ok = runs[runs.status == "ok"].sort_values("batch_size")
    if len(ok) < 2:
        return Markdown(f"Only {len(ok)} run(s) finished without diverging; nothing to compare.")
    small, large = ok.iloc[0], ok.iloc[-1]
    better = small if small.final_val_loss < large.final_val_loss else large
    gap = abs(small.final_val_loss - large.final_val_loss)
    return Markdown(
        f"At an equal budget of {int(small.tokens):,} tokens, batch size {int(small.batch_size)} took "
        f"{int(small.steps):,} steps and reached a validation loss of {small.final_val_loss:.3f}; batch size "
        f"{int(large.batch_size)} took {int(large.steps):,} steps and reached {large.final_val_loss:.3f}. "
        f"The {'smaller' if better is small else 'larger'} batch is ahead by {gap:.3f} nats at equal tokens. "
        "Marek et al. report that, per token, small batches match or beat large ones once the Adam beta2 "
        "half-life is held fixed in tokens (as this experiment does); this two-point check "
        f"{'agrees' if better is small else 'does not agree'} with that direction. It is not a test of the claim: "
        "the learning rate is not tuned per batch size here."
    )


class PartialStore(RuntimeError):
    """A stage ran with runs missing (a bounded sweep stopped): its analysis is shown, but it is not done."""


def coverage(name: str, params: dict, profile: str, results_root="results") -> Markdown:
    """What the store holds of the runs this notebook reads. Complete: one line. Partial (a sweep stopped by
    `REPLICATION_MAX_MINUTES` or `--max-minutes`): what is missing, by experiment and batch size, so the
    tables and figures below are read as drawn from the stored runs only; `require_complete` then fails the stage."""
    missing, waiting = missing_specs(name, params, profile, results_root)
    _clock["missing"] = len(missing) + len(waiting)
    if not _clock["missing"]:
        return Markdown("Store complete: every run this notebook reads is stored.")
    counts: dict[tuple, int] = {}
    for exp_name, spec in missing:
        key = (exp_name, spec.optimizer.name, spec.batch_size)
        counts[key] = counts.get(key, 0) + 1
    rows = "\n".join(f"| {e} | {o} | {b} | {n} |" for (e, o, b), n in sorted(counts.items()))
    later = (f" The follow-up runs of {', '.join(waiting)} cannot be listed until the runs they follow are stored." if waiting else "")
    return Markdown(
        f"**Partial store: {len(missing)} run(s) this notebook reads are not stored yet.**{later} Every table, figure and "
        "verdict below is computed from the stored runs only (a verdict short of its seeds or cells says so), and the "
        "stage fails at its end until the same command has trained the rest.\n\n"
        "| experiment | optimizer | batch size | missing runs |\n|---|---|---|---|\n" + rows
    )


def require_complete(name: str, params: dict, profile: str, results_root="results") -> None:
    """The notebook's last cell: fail the stage (so `dvc repro` runs it again) while runs it reads are missing."""
    missing, waiting = missing_specs(name, params, profile, results_root)
    if missing or waiting:
        raise PartialStore(f"{len(missing)} run(s) this notebook reads are not stored yet"
                           + (f" (and the follow-ups of {', '.join(waiting)})" if waiting else "")
                           + "; the analysis above used the stored ones. Run the same command again to train the rest "
                           "(finished runs are kept).")


def timing(previous: dict | None) -> dict | None:
    """The notebook's wall time since `setup`, for its metrics file.

    It describes the last execution that trained runs: one that only read committed records back (a
    re-execution, nbval) keeps the timing of the execution that made them, so the README's stage
    times stay those of training, and re-running a notebook leaves its metrics unchanged.
    """
    if not _clock:
        return previous
    trained = runs_trained() - _clock["trained"]
    if trained == 0 and previous:
        return previous
    return {
        "wall_s": round(time.perf_counter() - _clock["start"], 1),
        "runs_trained": trained,
        "profile": _clock["profile"],
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
    }


def write_metrics(path: str | Path, metrics: dict) -> Path:
    """Write a notebook's key numbers as JSON (DataFrames become lists of rows; NaN becomes null), with
    its `timing` (see `timing`)."""
    def plain(value):
        if isinstance(value, pd.DataFrame):
            return [plain(r) for r in value.to_dict(orient="records")]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if hasattr(value, "item"):  # numpy scalars
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    path = Path(path)
    previous = json.loads(path.read_text()).get("timing") if path.is_file() else None
    metrics = {**metrics, "timing": timing(previous)}
    if _clock.get("missing"):  # drawn from a partial store: say so beside the numbers
        metrics["missing_runs"] = _clock["missing"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain(metrics), indent=1, sort_keys=True) + "\n")
    return path
