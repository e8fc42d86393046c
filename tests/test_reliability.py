"""Crash safety with real processes and real kills, concurrent sweeps, checkpoints, determinism."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from replication.store import Store
from replication.runner import run_specs
from replication.train import train, train_members

SWEEP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from replication import runner
    from replication.spec import run_spec_from_dict
    from replication.store import Store

    root, log = sys.argv[1], sys.argv[2]
    specs = [run_spec_from_dict(json.loads(line)) for line in sys.stdin]
    real = runner.train_members

    def logged(group, **kw):
        records = real(group, **kw)
        with open(log, "a") as f:
            f.writelines(f"{os.getpid()} {r['id']}\\n" for r in records)
        return records

    runner.train_members = logged
    runner.run_specs(specs, Store(root, "smoke", "demo"), max_members=1, workers=1, progress=False, poll_s=0.2)
    """
)


def _specs(tiny_spec, n):
    return [tiny_spec.replace(seed=s, tokens=64 * 40) for s in range(n)]


def _start_sweep(specs, root, log, env):
    proc = subprocess.Popen(
        [sys.executable, "-c", SWEEP_SCRIPT, str(root), str(log)],
        stdin=subprocess.PIPE, env=env, text=True,
    )
    proc.stdin.write("".join(json.dumps(s.to_dict()) + "\n" for s in specs))
    proc.stdin.close()
    return proc


def _comparable(record):
    return {k: v for k, v in record.items() if k not in ("timing", "environment")}


@pytest.fixture
def env(tmp_path):
    return dict(os.environ)  # same threads as this process, so numbers match bit for bit


def test_killed_sweep_resumes_without_losing_runs(tmp_path, tiny_spec, env):
    specs = _specs(tiny_spec, 6)
    reference = {r["id"]: r for r in run_specs(specs, Store(tmp_path / "reference", "smoke", "demo"), max_members=1, progress=False)}
    root, log = tmp_path / "killed", tmp_path / "log"
    store = Store(root, "smoke", "demo")
    rng = random.Random(0)
    kept_before = set()
    for attempt in range(4):
        proc = _start_sweep(specs, root, log, env)
        time.sleep(rng.uniform(2.0, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        present = set(store.ids())
        for run_id in present:  # every record on disk is whole and trustworthy
            assert store.read(run_id) is not None
        assert kept_before <= present  # nothing finished is ever lost
        kept_before = present
    assert not store.quarantine.exists()
    trained = [line.split()[1] for line in log.read_text().splitlines()] if log.exists() else []
    finished = run_specs(specs, store, max_members=1, progress=False)
    assert sorted(store.ids()) == sorted(reference)
    for record in finished:
        assert _comparable(record) == _comparable(reference[record["id"]])
    # no run recorded before a kill was trained again afterwards
    assert len(trained) == len(set(trained))


def test_two_sweeps_share_a_store_without_repeating_runs(tmp_path, tiny_spec, env):
    specs = _specs(tiny_spec, 6)
    root, log = tmp_path / "shared", tmp_path / "log"
    procs = [_start_sweep(specs, root, log, env) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    trained = [line.split() for line in log.read_text().splitlines()]
    ids = [run_id for _, run_id in trained]
    assert sorted(ids) == sorted(s.hash for s in specs)  # every run trained exactly once
    store = Store(root, "smoke", "demo")
    assert all(store.read(s.hash)["status"] == "ok" for s in specs)
    assert not list(root.rglob("*.claim"))


def test_checkpointed_run_resumes_to_the_same_final_loss(tmp_path, tiny_spec, env):
    spec = tiny_spec.replace(tokens=64 * 400, eval_every_tokens=64 * 100)
    folder = tmp_path / "ckpt"
    script = textwrap.dedent(
        f"""
        import json, sys
        from replication.spec import run_spec_from_dict
        from replication.train import train_members
        spec = run_spec_from_dict(json.loads(sys.stdin.read()))
        train_members([spec], checkpoint_dir={str(folder)!r}, checkpoint_every_tokens=64 * 50)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, env=env, text=True)
    proc.stdin.write(json.dumps(spec.to_dict()))
    proc.stdin.close()
    deadline = time.time() + 120
    while not list(folder.glob("*.pt")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [checkpoint] = list(folder.glob("*.pt"))
    import torch

    assert 0 < torch.load(checkpoint, weights_only=True)["step"] < spec.steps  # tensors and plain types only
    [resumed] = train_members([spec], checkpoint_dir=folder, checkpoint_every_tokens=64 * 50)
    uninterrupted = train(spec)
    assert resumed["final_val_loss"] == uninterrupted["final_val_loss"]
    assert resumed["train"] == uninterrupted["train"] and resumed["val"] == uninterrupted["val"]
    assert not list(folder.glob("*.pt"))  # removed once the run is recorded


def test_same_spec_same_machine_gives_a_bit_identical_record(tiny_spec):
    a, b = train(tiny_spec), train(tiny_spec)
    a.pop("timing"), b.pop("timing")  # wall-clock measurements are the one part that cannot repeat
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert {"torch", "device", "threads", "git_commit"} <= set(a["environment"])


class _RunsCode:
    """What a crafted checkpoint would hold: unpickling it calls `Path.touch` on a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("content", ["pickle", "truncated"])
def test_a_checkpoint_that_cannot_be_trusted_is_quarantined_not_loaded(tmp_path, tiny_spec, content):
    import pickle
    import warnings

    import torch

    from replication.train import _Checkpoint

    folder, marker = tmp_path / "ckpt", tmp_path / "code-ran"
    path = _Checkpoint(folder, [tiny_spec]).path
    folder.mkdir()
    if content == "pickle":  # a file dropped into a shared store's checkpoint folder
        torch.save({"step": 1, "payload": _RunsCode(marker)}, path, pickle_module=pickle)
    else:  # a kill mid-write on a filesystem without atomic rename, or a disk error
        torch.save({"step": 1, "w": torch.ones(1000)}, path)
        path.write_bytes(path.read_bytes()[:200])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [record] = train_members([tiny_spec], checkpoint_dir=folder, checkpoint_every_tokens=tiny_spec.tokens_per_step * 5)
    assert not marker.exists()  # nothing in the file ran
    assert record["status"] == "ok" and record["final_val_loss"] == train(tiny_spec)["final_val_loss"]  # started from scratch
    assert (folder / "_quarantine" / path.name).is_file() and not path.exists()
    assert any(str(path) in str(w.message) and "quarantine" in str(w.message) for w in caught)
