"""Scale-out, first piece: a sweep that stops at a time limit and resumes, and merging stores from several machines."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from replication import deadline as deadline_module
from replication import experiments
from replication.record import new_record
from replication.spec import DataConfig, ModelConfig, RunSpec
from replication.store import MergeConflict, Store, merge
from replication.runner import run_specs

ROOT = Path(__file__).resolve().parents[1]
TINY = RunSpec(model=ModelConfig(width=16, depth=1, head_dim=8), data=DataConfig(vocab_size=300, seq_len=16, val_tokens=512),
               tokens=512, log_every_tokens=128, eval_every_tokens=512, compile="false")


def _record(spec: RunSpec, loss: float = 3.0, status: str = "ok", wall: float = 1.0) -> dict:
    r = new_record(spec, {"device": "cpu"}, status=status)
    r.update(final_val_loss=loss, best_val_loss=loss, timing={"wall_time_s": wall})
    return r


def _stores(tmp_path):
    a, b = Store(tmp_path / "a", "cpu", "demo"), Store(tmp_path / "b", "cpu", "demo")
    return a, b, [TINY.replace(seed=s) for s in range(4)]


def test_merge_copies_what_is_missing_and_ignores_where_a_run_ran(tmp_path):
    a, b, specs = _stores(tmp_path)
    for s in specs[:3]:
        a.write(_record(s, wall=1.0))
    b.write(_record(specs[0], wall=9.0))  # the same result, trained elsewhere at another speed
    b.write(_record(specs[1], status="failed"))  # a failed attempt here, a result there
    b.write(_record(specs[3]))
    counts = merge(tmp_path / "a", tmp_path / "b")
    assert counts == {"copied": 1, "identical": 1, "replaced_failed": 1, "replaced_untrusted": 0, "kept_target": 0, "skipped_untrusted": 0}
    assert b.read(specs[1].hash)["status"] == "ok" and b.read(specs[2].hash) is not None and len(b.ids()) == 4
    assert merge(tmp_path / "a", tmp_path / "b")["identical"] == 3  # merging again changes nothing


def test_merge_refuses_different_results_under_one_run_and_writes_nothing(tmp_path):
    a, b, specs = _stores(tmp_path)
    a.write(_record(specs[0], loss=3.0))
    a.write(_record(specs[1]))
    b.write(_record(specs[0], loss=3.5))
    with pytest.raises(MergeConflict, match=f"cpu/demo/{specs[0].hash}.*nothing was merged"):
        merge(tmp_path / "a", tmp_path / "b")
    assert b.ids() == [specs[0].hash]  # specs[1] was not copied either
    out = subprocess.run([sys.executable, "-m", "replication", "store", "merge", str(tmp_path / "a"), str(tmp_path / "b")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "different results" in out.stderr and specs[0].hash in out.stderr


def test_a_refused_merge_moves_nothing_even_a_record_the_target_cannot_trust(tmp_path):
    a, b, specs = _stores(tmp_path)
    a.write(_record(specs[0], loss=3.0))
    a.write(_record(specs[1]))
    b.write(_record(specs[0], loss=3.5))
    b.path(specs[1].hash).write_text("{ truncated")
    with pytest.raises(MergeConflict):
        merge(tmp_path / "a", tmp_path / "b")
    assert b.path(specs[1].hash).read_text() == "{ truncated" and not b.quarantine.exists()
    b.write(_record(specs[0], loss=3.0))  # the conflict resolved: the untrusted record is quarantined, then replaced
    assert merge(tmp_path / "a", tmp_path / "b")["replaced_untrusted"] == 1
    assert b.read(specs[1].hash) is not None and (b.quarantine / f"{specs[1].hash}.json").read_text() == "{ truncated"


@pytest.mark.slow
def test_stores_trained_with_different_grouping_merge_without_conflict(tmp_path):
    """The same runs trained by one worker (one ensemble), two workers (two ensembles) and one at a time (as a
    restart or a time-limited chunk trains them): identical results, different ensemble-level memory measures."""
    specs = [TINY.replace(seed=s, tokens=1024) for s in range(4)]
    roots = {name: tmp_path / name for name in ("one_worker", "two_workers", "one_at_a_time")}
    run_specs(specs, Store(roots["one_worker"], "cpu", "demo"), workers=1, progress=False)
    run_specs(specs, Store(roots["two_workers"], "cpu", "demo"), workers=2, progress=False)
    run_specs(specs, Store(roots["one_at_a_time"], "cpu", "demo"), workers=1, max_members=1, progress=False)
    sizes = {name: {Store(root, "cpu", "demo").read(s.hash)["environment"]["ensemble_size"] for s in specs} for name, root in roots.items()}
    assert sizes == {"one_worker": {4}, "two_workers": {2}, "one_at_a_time": {1}}  # three different groupings
    for name in ("two_workers", "one_at_a_time"):
        assert merge(roots[name], roots["one_worker"])["identical"] == 4


def test_a_deadline_stops_before_the_next_group_and_the_next_sweep_finishes(tmp_path, monkeypatch):
    specs = [TINY.replace(batch_size=b) for b in (1, 2, 4)]  # three groups
    store = Store(tmp_path, "smoke", "demo")
    clock = iter([0.0] + [10.0] * 100)  # the first group starts at 0; every later look at the clock is past the deadline
    monkeypatch.setattr(deadline_module, "_now", lambda: next(clock))
    first = run_specs(specs, store, workers=1, progress=False, deadline=5.0)
    assert len(first) == 1 and len(store.ids()) == 1
    monkeypatch.setattr(deadline_module, "_now", lambda: 0.0)
    kept = json.loads(store.path(first[0]["id"]).read_text())
    done = run_specs(specs, store, workers=1, progress=False)
    assert len(done) == 3 and len(store.ids()) == 3
    assert json.loads(store.path(first[0]["id"]).read_text()) == kept  # not trained twice


def test_a_past_deadline_starts_nothing_in_worker_processes(tmp_path):
    store = Store(tmp_path, "smoke", "demo")
    specs = [TINY.replace(batch_size=b) for b in (1, 2, 4)]
    assert run_specs(specs, store, workers=2, progress=False, deadline=deadline_module.deadline_in(0)) == []
    assert store.ids() == []


@pytest.mark.slow
def test_the_cli_stops_at_max_minutes_and_the_same_command_continues(tmp_path):
    cmd = [sys.executable, "-m", "replication", "--results", str(tmp_path), "sweep", "quickstart", "--profile", "smoke"]
    stopped = subprocess.run([*cmd, "--max-minutes", "0"], capture_output=True, text=True, cwd=ROOT)
    assert stopped.returncode == 3 and "2 run(s) left" in stopped.stderr
    assert "no run of its own finished before the time limit" in stopped.stdout and "no runs of its own" not in stopped.stdout
    env = {**os.environ, "REPLICATION_MAX_MINUTES": "0"}  # the stage-wide limit counts the same
    stopped = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert stopped.returncode == 3 and "2 run(s) left" in stopped.stderr
    bad = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "REPLICATION_MAX_MINUTES": "-1"})
    assert bad.returncode == 2 and "REPLICATION_MAX_MINUTES='-1'" in bad.stderr
    finished = subprocess.run([*cmd, "--max-minutes", "60"], capture_output=True, text=True, cwd=ROOT)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert len(Store(tmp_path, "smoke", "quickstart").ids()) == 2


def test_the_executor_comes_from_params_or_the_environment(monkeypatch):
    from replication.executor import executor_config
    from replication.spec import ConfigError

    monkeypatch.delenv("REPLICATION_EXECUTOR", raising=False)
    assert executor_config({}).backend == "local"
    assert executor_config({"executor": {"backend": "ray", "num_gpus": 1}}).num_gpus == 1
    monkeypatch.setenv("REPLICATION_EXECUTOR", "ray")
    assert executor_config({"executor": {"backend": "local"}}).backend == "ray"
    monkeypatch.setenv("REPLICATION_EXECUTOR", "slurm")
    with pytest.raises(ConfigError, match="executor.backend: 'slurm' is unknown; choose one of: local, ray"):
        executor_config({})
    monkeypatch.delenv("REPLICATION_EXECUTOR")
    with pytest.raises(ConfigError, match="executor.num_cpu: unknown key \\(did you mean 'num_cpus'"):
        executor_config({"executor": {"num_cpu": 2}})


# ------------------------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray instance of 2 CPUs (Ray has no local mode any more), shared by the Ray tests."""
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as err:  # noqa: BLE001 (Ray's raylet has a fixed 30 s to register: a loaded machine can miss it once)
        if "timed out during startup" not in str(err):
            raise
        ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_records_the_local_backend_gives(tmp_path, local_ray):
    from replication.executor import ExecutorConfig
    from replication.store import same_result

    specs = [TINY.replace(batch_size=b, seed=s) for b in (1, 2) for s in (0, 1)]
    local = run_specs(specs, Store(tmp_path / "local", "smoke", "demo"), workers=1, progress=False)
    remote = run_specs(specs, Store(tmp_path / "ray", "smoke", "demo"), progress=False, executor=ExecutorConfig(backend="ray"))
    assert [r["id"] for r in remote] == [r["id"] for r in local]
    assert all(same_result(a, b) for a, b in zip(local, remote))


def test_a_ray_worker_that_dies_loses_only_its_own_runs_and_none_is_written_twice(tmp_path, local_ray):
    from replication.executor import ExecutorConfig, train_on_ray
    from replication.ensemble import plan

    marker = tmp_path / "die-once"
    marker.touch()
    writes = tmp_path / "writes"

    def dies_once(group, **kwargs):  # pickled by value into the Ray worker
        import os

        from replication.runner import train_group

        try:
            os.unlink(marker)  # atomic: of the tasks in flight together, exactly one claims the death
        except FileNotFoundError:
            pass
        else:
            os._exit(1)  # the worker process dies mid-task; Ray retries the task
        records = train_group(group, **kwargs)
        with open(writes, "a") as f:
            f.writelines(f"{r['id']}\n" for r in records)
        return records

    store = Store(tmp_path, "smoke", "demo")
    specs = [TINY.replace(batch_size=b) for b in (1, 2, 4)]
    done = list(train_on_ray(plan(specs, 8), store, ExecutorConfig(backend="ray", max_retries=2), {}, lambda: False, train=dies_once))
    assert sorted(i for ids in done for i in ids) == sorted(s.hash for s in specs)
    assert sorted(store.ids()) == sorted(s.hash for s in specs)
    assert not marker.exists()  # a worker did die
    assert sorted(writes.read_text().split()) == sorted(s.hash for s in specs)  # each run trained (and written) once


def test_a_ray_task_that_raises_leaves_its_runs_missing_and_says_so(tmp_path, local_ray):
    from replication.executor import ExecutorConfig, train_on_ray
    from replication.ensemble import plan

    def raises(group, **kwargs):
        raise ValueError("bad group")

    store = Store(tmp_path, "smoke", "demo")
    specs = [TINY.replace(batch_size=b) for b in (1, 2)]
    with pytest.warns(UserWarning, match=r"raised an error \(not retried\).*bad group.*the next sweep trains them"):
        list(train_on_ray(plan(specs, 1), store, ExecutorConfig(backend="ray", max_retries=2), {}, lambda: False, train=raises))
    assert store.ids() == []


def test_replication_max_minutes_bounds_every_sweep_of_the_process_and_bad_values_are_named(tmp_path, monkeypatch):
    from replication.spec import ConfigError

    monkeypatch.setattr(deadline_module, "_stage_deadline", {})
    monkeypatch.setenv("REPLICATION_MAX_MINUTES", "soon")
    with pytest.raises(ConfigError, match="REPLICATION_MAX_MINUTES='soon'"):
        deadline_module.stage_deadline()
    monkeypatch.setenv("REPLICATION_MAX_MINUTES", "0")
    store = Store(tmp_path, "smoke", "demo")
    assert run_specs([TINY], store, progress=False) == [] and store.ids() == []  # the limit is already past: nothing starts
    monkeypatch.delenv("REPLICATION_MAX_MINUTES")
    assert deadline_module.stage_deadline() is None
    assert [r["id"] for r in run_specs([TINY], store, progress=False)] == [TINY.hash]


@pytest.mark.slow
def test_a_notebook_on_a_partial_store_lists_what_is_missing_and_fails_its_stage_until_complete(tmp_path, monkeypatch):
    from replication.notebook import PartialStore, coverage, require_complete
    from replication.params import load_params

    params = load_params(ROOT / "params.yaml")
    monkeypatch.setattr(deadline_module, "_stage_deadline", {})
    monkeypatch.setenv("REPLICATION_MAX_MINUTES", "0")
    assert experiments.sweep("quickstart", params, "smoke", tmp_path, progress=False).empty  # stopped before any run
    banner = coverage("quickstart", params, "smoke", tmp_path).data
    assert "Partial store: 2 run(s)" in banner and "| quickstart | adamw | 4 | 1 |" in banner
    with pytest.raises(PartialStore, match="2 run\\(s\\) this notebook reads are not stored yet"):
        require_complete("quickstart", params, "smoke", tmp_path)
    monkeypatch.delenv("REPLICATION_MAX_MINUTES")
    assert len(experiments.sweep("quickstart", params, "smoke", tmp_path, progress=False)) == 2
    assert coverage("quickstart", params, "smoke", tmp_path).data.startswith("Store complete")
    require_complete("quickstart", params, "smoke", tmp_path)


def test_an_empty_run_table_keeps_its_columns():
    assert {"batch_size", "optimizer.lr", "final_val_loss", "status", "id"} <= set(experiments.table([], ["batch_size"]).columns)


def test_after_the_time_limit_a_fine_tuning_sweep_starts_not_even_its_pretraining(tmp_path, monkeypatch):
    from replication.params import experiment, load_params
    exp = experiment(load_params(ROOT / "params.yaml"), "marek_finetune", "smoke")
    _, ft = experiments.finetuning(exp, tmp_path)
    monkeypatch.setattr(deadline_module, "_stage_deadline", {})
    monkeypatch.setenv("REPLICATION_MAX_MINUTES", "0")
    with pytest.raises(RuntimeError, match="nothing to analyse yet: the time limit passed before its pretraining run"):
        experiments.train_runs(exp, ft.expand(), tmp_path, progress=False)
    assert not any(tmp_path.rglob("*.json"))


@pytest.mark.slow
def test_a_notebook_run_in_a_bounded_chunk_shows_what_is_missing_and_fails_its_stage(tmp_path, monkeypatch):
    import shutil

    import nbformat
    import papermill

    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", tmp_path / "notebooks")
    done = subprocess.run([sys.executable, "-m", "replication", "sweep", "quickstart", "--profile", "smoke"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    stored = sorted((tmp_path / "results" / "smoke" / "quickstart").glob("*.json"))
    stored[0].unlink()  # one of the two runs is not trained yet
    monkeypatch.setenv("REPLICATION_MAX_MINUTES", "0")  # and this chunk's time is up
    out = tmp_path / "executed.ipynb"
    with pytest.raises(papermill.PapermillExecutionError, match="PartialStore"):
        papermill.execute_notebook(str(tmp_path / "notebooks" / "quickstart.ipynb"), str(out), parameters={"profile": "smoke"},
                                   kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    text = json.dumps(nbformat.read(out, 4).cells)
    assert "Partial store: 1 run(s)" in text and "loss_curves" in text  # the analysis ran on the stored run
    assert json.loads((tmp_path / "metrics" / "quickstart.json").read_text())["missing_runs"] == 1
    assert len(list((tmp_path / "results" / "smoke" / "quickstart").glob("*.json"))) == 1  # nothing trained after the limit


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_max_minutes_is_checked_the_same_way_on_the_command_line_and_in_the_environment(tmp_path, monkeypatch, capsys, value):
    from replication.cli import main
    from replication.spec import ConfigError

    assert main(["--results", str(tmp_path), "sweep", "quickstart", "--profile", "smoke", "--max-minutes", value]) == 2
    assert f"--max-minutes={value!r}: expected a finite number of minutes >= 0" in capsys.readouterr().err
    monkeypatch.setattr(deadline_module, "_stage_deadline", {})
    monkeypatch.setenv("REPLICATION_MAX_MINUTES", value)
    with pytest.raises(ConfigError, match=f"REPLICATION_MAX_MINUTES={value!r}: expected a finite number of minutes >= 0"):
        deadline_module.stage_deadline()
    assert not any(tmp_path.rglob("*.json"))


def test_the_run_command_trains_where_the_params_executor_block_says(tmp_path, monkeypatch):
    import yaml

    from replication import runner
    from replication.cli import main

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["executor"] = {"backend": "local", "num_cpus": 3}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    seen = []
    monkeypatch.setattr(runner, "run_specs", lambda specs, store, **kw: seen.append(kw["executor"]) or [])
    main(["--params", str(tmp_path / "params.yaml"), "--results", str(tmp_path), "run", "quickstart", "--profile", "smoke"])
    assert [e.num_cpus for e in seen] == [3.0]
