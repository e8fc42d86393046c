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

import psutil
import pytest

from replication.store import Store, result_of
from replication.runner import run_specs
from replication.train import train, train_members

SWEEP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from replication import runner
    from replication.spec import run_spec_from_dict
    from replication.store import Store, result_of

    root, log, workers, checkpoint = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) or None
    specs = [run_spec_from_dict(json.loads(line)) for line in sys.stdin]
    real = runner.train_members

    def logged(group, **kw):
        records = real(group, **kw)
        with open(log, "a") as f:
            f.writelines(f"{os.getpid()} {r['id']}\\n" for r in records)
        return records

    runner.train_members = logged  # seen in this process only: with workers > 1 groups train in spawned processes
    runner.run_specs(specs, Store(root, "smoke", "demo"), max_members=None if workers > 1 else 1, workers=workers,
                     checkpoint_every_tokens=checkpoint, progress=False, poll_s=0.2)
    """
)


def _specs(tiny_spec, n):
    return [tiny_spec.replace(seed=s, tokens=64 * 40) for s in range(n)]


def _start_sweep(specs, root, log, env, workers=1, checkpoint_every_tokens=0):
    proc = subprocess.Popen(
        [sys.executable, "-c", SWEEP_SCRIPT, str(root), str(log), str(workers), str(checkpoint_every_tokens)],
        stdin=subprocess.PIPE, env=env, text=True,
    )
    proc.stdin.write("".join(json.dumps(s.to_dict()) + "\n" for s in specs))
    proc.stdin.close()
    return proc


def _running(process: psutil.Process) -> bool:
    """Alive and not a zombie (an exited orphan that the container's init has not reaped yet)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def env(tmp_path):
    return dict(os.environ)  # same threads as this process, so numbers match bit for bit


@pytest.mark.slow
def test_killed_sweep_resumes_without_losing_runs(tmp_path, tiny_spec, env):
    """Two workers, checkpointing: SIGKILL the sweep (the first time just after a checkpoint is written, then at
    random moments). Its workers die with it, every stored record stays whole and is never trained again, the
    restart resumes from the checkpoint, and the records end as an uninterrupted sweep's."""
    specs = [tiny_spec.replace(seed=s, tokens=64 * 300) for s in range(6)]
    every = 64 * 20
    reference = {r["id"]: r for r in run_specs(specs, Store(tmp_path / "reference", "smoke", "demo"), workers=2,
                                                checkpoint_every_tokens=every, progress=False)}
    root, log = tmp_path / "killed", tmp_path / "log"
    store = Store(root, "smoke", "demo")
    rng = random.Random(0)
    seen: dict[str, str] = {}  # each record's bytes when first seen
    for attempt in range(3):
        proc = _start_sweep(specs, root, log, env, workers=2, checkpoint_every_tokens=every)
        started = time.time()
        if attempt == 0:
            while not list((root / "smoke" / "demo" / "_checkpoints").glob("*.pt")) and time.time() - started < 120:
                time.sleep(0.02)
        else:
            time.sleep(rng.uniform(1.0, 4.0))
        workers = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _, alive = psutil.wait_procs(workers, timeout=3)  # a worker polls for its parent every 0.2 s
        alive = [p for p in alive if _running(p)]
        assert not alive, f"workers outlived the killed sweep: {[p.pid for p in alive]}"
        for run_id in store.ids():  # every record on disk is whole and trustworthy, and none was trained twice
            assert store.read(run_id) is not None
            assert seen.setdefault(run_id, store.path(run_id).read_text()) == store.path(run_id).read_text()
    assert not store.quarantine.exists()
    finished = run_specs(specs, store, workers=2, checkpoint_every_tokens=every, progress=False)
    assert sorted(store.ids()) == sorted(reference)
    for record in finished:
        assert result_of(record) == result_of(reference[record["id"]])  # a regrouped run differs only in ensemble measures
    assert any(r["timing"]["resumed_at_step"] for r in finished), "no run resumed from a checkpoint"
    assert all(store.path(i).read_text() == text for i, text in seen.items())
    assert not list((store.root / "_checkpoints").glob("*.pt"))  # each removed once its records were stored


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_a_restart_resumes_an_interrupted_group_as_it_was_grouped(tmp_path, tiny_spec):
    """A restart plans its ensembles from what is pending, which may group runs differently (here 2 + 2 where 3
    were interrupted together): the checkpointed group is resumed as it was, then removed with its listing."""
    specs = [tiny_spec.replace(seed=s, tokens=64 * 40) for s in range(4)]
    store = Store(tmp_path, "smoke", "demo")
    folder = store.root.resolve() / "_checkpoints"
    train_members(specs[:3], checkpoint_dir=folder, checkpoint_every_tokens=64 * 10, keep_checkpoint=True)  # as if killed late
    assert len(list(folder.glob("*.pt"))) == len(list(folder.glob("*.runs"))) == 1
    records = run_specs(specs, store, workers=1, max_members=2, checkpoint_every_tokens=64 * 10, progress=False)
    resumed = {r["id"]: r["timing"]["resumed_at_step"] for r in records}
    assert [resumed[s.hash] for s in specs] == [30, 30, 30, None]
    assert [r["environment"]["ensemble_size"] for r in records] == [3, 3, 3, 1]
    assert not list(folder.iterdir())


def test_a_checkpoint_is_kept_while_a_run_of_its_group_failed(tmp_path):
    from replication.train import checkpoint_file, remove_checkpoints

    ids = ["a" * 16, "b" * 16]
    for path in (checkpoint_file(tmp_path, ids), checkpoint_file(tmp_path, ids[:1])):  # the group and a half of it
        path.write_bytes(b"state")
        path.with_suffix(".runs").write_text("[]")
    remove_checkpoints([{"id": ids[0], "status": "ok"}, {"id": ids[1], "status": "failed"}], tmp_path)
    assert len(list(tmp_path.iterdir())) == 4  # its retry resumes
    remove_checkpoints([{"id": ids[0], "status": "ok"}, {"id": ids[1], "status": "diverged"}], tmp_path)
    assert not list(tmp_path.iterdir())
