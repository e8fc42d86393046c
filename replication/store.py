"""The result store: one JSON record per run under results/<profile>/<experiment>/<spec hash>.json.

Records are written atomically (temp file + rename), so a kill never leaves a partial record. A
record that cannot be trusted (truncated, missing fields, wrong hash, older format) is reported,
moved to a `_quarantine/` side folder, and its run counts as missing so the sweep redoes it.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

RECORD_FORMAT = 1  # bump by hand when the record layout changes
REQUIRED_FIELDS = ("format", "id", "spec", "status", "train", "val", "final_val_loss", "best_val_loss", "steps", "tokens")


class CorruptRecordWarning(UserWarning):
    """A stored record was unreadable or inconsistent and was quarantined; its run will be redone."""


class Store:
    def __init__(self, root: str | Path, profile: str, experiment: str):
        self.root = Path(root) / profile / experiment
        self.quarantine = self.root / "_quarantine"

    def path(self, run_id: str) -> Path:
        return self.root / f"{run_id}.json"

    def write(self, record: dict) -> Path:
        """Atomically write a record (temp file in the same folder, fsync, rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(record["id"])
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{record['id']}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def read(self, run_id: str) -> dict | None:
        """The record of `run_id`, or None if absent or untrustworthy (then quarantined, with a warning)."""
        path = self.path(run_id)
        if not path.exists():
            return None
        problem = None
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            problem = f"is not valid JSON ({err})"
        else:
            if not isinstance(record, dict):
                problem = "is not a JSON object"
            elif record.get("format") != RECORD_FORMAT:
                problem = (
                    f"has record format {record.get('format')!r}, this code reads format {RECORD_FORMAT}; "
                    "it was written by another version of the workbook: the run will be redone"
                )
            elif missing := [k for k in REQUIRED_FIELDS if k not in record]:
                problem = f"lacks fields {', '.join(missing)}"
            elif record["id"] != run_id:
                problem = f"holds run {record['id']!r}, not {run_id!r} (its file name)"
        if problem is None:
            from replication.config import run_spec_from_dict

            try:
                if run_spec_from_dict(record["spec"]).hash != run_id:
                    problem = "has a spec whose hash does not match its name"
            except ValueError as err:
                problem = f"has an invalid spec ({err})"
        if problem:
            self._quarantine(path, problem)
            return None
        return record

    def _quarantine(self, path: Path, problem: str) -> None:
        self.quarantine.mkdir(parents=True, exist_ok=True)
        dest = self.quarantine / path.name
        os.replace(path, dest)
        warnings.warn(f"record {path} {problem}; moved to {dest}", CorruptRecordWarning, stacklevel=3)

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json"))

    def records(self) -> list[dict]:
        """Every trustworthy record in the store (untrustworthy ones are quarantined)."""
        return [r for r in (self.read(i) for i in self.ids()) if r is not None]
