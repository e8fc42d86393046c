"""The result store: one JSON record per run under results/<profile>/<experiment>/<spec hash>.json.

Records are written atomically (temp file + rename), so a kill never leaves a partial record, readable
by others (mode 0644 under the usual umask, as committed files are), and sealed with a checksum of their
content (a record written before checksums existed reads as it is, and is sealed when written again). A record that cannot be trusted (truncated, edited or corrupted so that its checksum fails,
missing fields, wrong hash, older format) is reported, moved to a `_quarantine/` side folder, and its run
counts as missing so the sweep redoes it.
Sweeps sharing a store claim runs (`_claims/<id>.claim`, taken under a file lock) so that two processes never
train the same spec; the claim of a process that died is taken over.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
import warnings
from pathlib import Path

from replication.record import RECORD_FORMAT, REQUIRED_FIELDS, is_run_id
from replication.spec import run_spec_from_dict


def save_torch(obj, path: str | Path) -> Path:
    """torch.save, atomically (temp file + rename): a kill never leaves half a checkpoint or weights file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def quarantine(path: Path) -> Path:
    """Move a file that cannot be trusted to `_quarantine/` beside it (never over an earlier one); return where it
    went. Another process quarantining the same file first is no error."""
    folder = path.parent / "_quarantine"
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / path.name
    if dest.exists():
        dest = folder / f"{path.stem}.{time.time_ns()}{path.suffix}"
    try:
        os.replace(path, dest)
    except FileNotFoundError:
        pass
    return dest


def short_error(err: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message (if it has one)."""
    first = (str(err).splitlines() or [""])[0][:160]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def weights_file(store_root: str | Path, run_id: str) -> Path:
    """Where a run's final weights are cached (`init_from` of the runs that start from it): never committed."""
    return Path(store_root) / "_weights" / f"{run_id}.pt"


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux); else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_VERIFIED: "OrderedDict[str, tuple[bytes, dict]]" = OrderedDict()  # path -> (digest of its bytes, the record verified from them)
_VERIFIED_MAX = 8192  # records kept (a few hundred MB at most); the least recently read go first


def write_json(path: Path, obj, **dump) -> None:
    """Write `obj` as JSON to `path` atomically (temp file in the same folder, fsync, rename), readable as
    open() would make it: a kill never leaves half a file, and a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, **dump)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_mode() -> int:
    """What open() would give a new file (0644 under the usual umask): mkstemp's 0600 would hide a shared store."""
    return 0o666 & ~_umask()


def checksum(record: dict) -> str:
    """sha256 of a record's content (every field but the checksum itself, as canonical JSON): a record whose
    result was edited or silently corrupted no longer matches it."""
    content = {k: v for k, v in record.items() if k != "checksum"}
    return "sha256:" + hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class UnreadableWeights(ValueError):
    """A weights file (`init_from`) that exists but cannot be loaded: truncated, not a torch file, or holding
    more than tensors."""


class CorruptRecordWarning(UserWarning):
    """A stored record was unreadable or inconsistent and was quarantined; its run will be redone."""


class Store:
    def __init__(self, root: str | Path, profile: str, experiment: str):
        self.root = Path(root) / profile / experiment
        self.quarantine = self.root / "_quarantine"
        self.claims = self.root / "_claims"  # transient: claim files and the lock (git- and dvc-ignored)

    def path(self, run_id: str) -> Path:
        return self.root / f"{run_id}.json"

    def write(self, record: dict) -> Path:
        """Atomically write a record, sealed with its checksum (temp file in the same folder, fsync, rename)."""
        target = self.path(record["id"])
        sealed = json.loads(json.dumps(record))  # as a reader will parse it (e.g. every key a string), then sealed
        sealed["checksum"] = checksum(sealed)
        write_json(target, sealed, indent=1, sort_keys=True)
        return target

    def read(self, run_id: str) -> dict | None:
        """The record of `run_id`, or None if absent or untrustworthy (then quarantined, with a warning)."""
        record, problem = self.check(run_id)
        if problem:
            self._quarantine(self.path(run_id), problem)
        return record

    def check(self, run_id: str) -> tuple[dict | None, str | None]:
        """(the record, None), (None, None) when absent, or (None, what is wrong with it); moves nothing.
        A file whose bytes were verified before is not parsed and verified again (a sweep and its notebook read
        the same records many times); the caller gets its own top-level dict."""
        path = self.path(run_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None, None
        key, version = str(path.resolve()), hashlib.blake2b(data, digest_size=16).digest()
        cached = _VERIFIED.get(key)
        if cached is not None and cached[0] == version:
            _VERIFIED.move_to_end(key)
            return dict(cached[1]), None
        record, problem = self._verify(data, run_id)
        if record is not None:
            _VERIFIED[key] = (version, record)
            if len(_VERIFIED) > _VERIFIED_MAX:
                _VERIFIED.popitem(last=False)
            record = dict(record)
        return record, problem

    @staticmethod
    def _verify(data: bytes, run_id: str) -> tuple[dict | None, str | None]:
        problem = None
        try:
            record = json.loads(data.decode())
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
            elif "checksum" in record and record["checksum"] != checksum(record):  # unsealed: written before checksums
                problem = "does not match its checksum: its content was changed after it was written"
            elif record["id"] != run_id:
                problem = f"holds run {record['id']!r}, not {run_id!r} (its file name)"
        if problem is None:
            try:
                spec = run_spec_from_dict(record["spec"])
                if spec.hash != run_id:
                    problem = "has a spec whose hash does not match its name"
            except ValueError as err:
                problem = f"has an invalid spec ({err})"
        if problem:
            return None, problem
        record.pop("checksum", None)
        record["spec"] = spec.to_dict()  # with every field, those added after it was written at their defaults
        return record, None

    def needs_run(self, spec) -> bool:
        """Whether `spec` still has to be trained: no record, or a failed one (a diverged run is a result)."""
        record = self.read(spec.hash)
        return record is None or record["status"] == "failed"

    def has_all(self, specs) -> bool:
        """Whether every run of `specs` is stored (none missing or failed)."""
        return not any(self.needs_run(s) for s in specs)

    def _quarantine(self, path: Path, problem: str) -> None:
        dest = quarantine(path)  # self.quarantine: records lie in the store's root
        warnings.warn(f"record {path} {problem}; moved to {dest}", CorruptRecordWarning, stacklevel=3)

    def ids(self) -> list[str]:
        """The run ids the store holds: files named by a run id (16 hex digits), not other results an
        experiment keeps beside its runs (`computed`'s files, e.g. exact_risks.json)."""
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json") if is_run_id(p.stem))

    def records(self) -> list[dict]:
        """Every trustworthy record in the store (untrustworthy ones are quarantined)."""
        return [r for r in (self.read(i) for i in self.ids()) if r is not None]

    # ------------------------------------------------------------ claims: one trainer per run

    @contextlib.contextmanager
    def _locked(self):
        self.claims.mkdir(parents=True, exist_ok=True)
        with open(self.claims / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _claim_path(self, run_id: str) -> Path:
        return self.claims / f"{run_id}.claim"

    def claim(self, run_id: str) -> bool:
        """Take run `run_id` for this process: False if it is recorded or a live process holds it."""
        with self._locked():
            record = self.read(run_id)
            if record is not None and record["status"] != "failed":
                return False
            path = self._claim_path(run_id)
            if path.exists() and not self._claim_is_stale(path):
                return False
            path.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
            return True

    def release(self, run_id: str) -> None:
        with self._locked():
            path = self._claim_path(run_id)
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                return
            if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                path.unlink(missing_ok=True)

    def claimed_elsewhere(self, run_id: str) -> bool:
        path = self._claim_path(run_id)
        return path.exists() and not self._claim_is_stale(path)

    @staticmethod
    def _claim_is_stale(path: Path) -> bool:
        """A claim is stale when its process (on this host) no longer runs; other hosts' claims are trusted."""
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):
            return True
        if holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, TypeError):
            return not isinstance(pid, int)
        return False


# ------------------------------------------------------------ merging stores from several machines

AUDIT_FIELDS = ("timing", "environment")  # how and where a run executed: may differ between two copies of one result
# Measured over the ensemble a run trained in, divided by its size (environment.ensemble_size), so they depend on
# how runs were grouped (workers, a time-limited chunk, a restart), not on the run: `memory.activations` (what
# autograd saved for the group's micro-batch / members) and the peak memory that includes it.
GROUP_MEASURES = ("peak_memory_bytes", "peak_memory_source")
GROUP_MEMORY_PARTS = ("activations",)


class MergeConflict(ValueError):
    """Two stores hold different results under one run id; nothing was merged."""


def result_of(record: dict) -> dict:
    """What a record says about its run alone: without where and how fast it ran, and without the measurements
    shared with the other runs of its ensemble."""
    out = {k: v for k, v in record.items() if k not in AUDIT_FIELDS + GROUP_MEASURES}
    if isinstance(out.get("memory"), dict):
        out["memory"] = {k: v for k, v in out["memory"].items() if k not in GROUP_MEMORY_PARTS}
    return out


def same_result(a: dict, b: dict) -> bool:
    """Whether two records of one run hold the same result (see `result_of`)."""
    return result_of(a) == result_of(b)


def merge(source: str | Path, target: str | Path) -> dict[str, int]:
    """Copy every record of the store tree `source` (`<profile>/<experiment>/<run id>.json`) that `target` lacks.

    A run in both with the same result (see `result_of`) is left alone; a `failed` record in `target` is
    replaced by a finished one from `source`, and so is one `target` cannot trust (quarantined first). A run
    with different results in the two stores is a conflict: every conflict is named and nothing is written
    or moved, in either store, so a merge never mixes results. `source` is only read (a record it cannot
    trust is skipped and counted); records are written atomically.
    """
    source, target = Path(source), Path(target)
    if not source.is_dir():
        raise FileNotFoundError(f"store merge: no store at {str(source)!r}")
    plan, conflicts = [], []
    counts = {"copied": 0, "identical": 0, "replaced_failed": 0, "replaced_untrusted": 0, "kept_target": 0, "skipped_untrusted": 0}
    for folder in sorted(p for p in source.glob("*/*") if p.is_dir() and not p.name.startswith("_")):
        profile, experiment = folder.parent.name, folder.name
        theirs, ours = Store(source, profile, experiment), Store(target, profile, experiment)
        for run_id in theirs.ids():
            record, problem = theirs.check(run_id)
            if record is None:
                counts["skipped_untrusted"] += problem is not None
                continue
            present, untrusted = ours.check(run_id)
            if untrusted:
                plan.append((ours, record, untrusted))
                counts["replaced_untrusted"] += 1
            elif present is None:
                plan.append((ours, record, None))
                counts["copied"] += 1
            elif same_result(present, record):
                counts["identical"] += 1
            elif present["status"] == "failed" and record["status"] != "failed":
                plan.append((ours, record, None))
                counts["replaced_failed"] += 1
            elif record["status"] == "failed":
                counts["kept_target"] += 1  # a failed attempt never replaces a result
            else:
                conflicts.append(f"{profile}/{experiment}/{run_id}")
    if conflicts:
        raise MergeConflict(f"store merge: {len(conflicts)} run(s) hold different results in {source} and {target}: "
                            f"{', '.join(conflicts[:10])}{' ...' if len(conflicts) > 10 else ''}; nothing was merged")
    for store, record, untrusted in plan:
        if untrusted:
            store._quarantine(store.path(record["id"]), untrusted)
        store.write(record)
    return counts
