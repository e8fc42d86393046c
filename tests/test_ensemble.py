import pytest

from replication.ensemble import member_memory_bytes, members_that_fit, plan
from replication.train import train, train_members

LR = {"sgd": 0.3, "adamw": 3e-3, "adafactor": 1e-2, "muon": 0.02}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sgd", "adamw", "adafactor", "muon"])
def test_a_member_matches_its_standalone_run_over_50_steps(tiny_spec, name):
    base = tiny_spec.replace(
        **{"optimizer.name": name, "optimizer.lr": LR[name], "optimizer.beta1": 0.0 if name == "sgd" else 0.9},
        tokens=64 * 50, log_every_tokens=64, eval_every_tokens=64 * 25,
    )
    members = [
        base,
        base.replace(seed=1, **{"optimizer.lr": LR[name] / 2}),
        base.replace(seed=2, **{"schedule.name": "constant", "optimizer.weight_decay": 0.1}),
    ]
    together = train_members(members)
    for spec, record in zip(members, together):
        alone = train(spec)
        assert len(alone["train"]["loss"]) == 50
        assert record["train"]["loss"] == pytest.approx(alone["train"]["loss"], rel=2e-5, abs=1e-6)
        assert record["val"]["loss"] == pytest.approx(alone["val"]["loss"], rel=2e-5)
        assert {k: v for k, v in record.items() if k not in ("train", "val", "final_val_loss", "best_val_loss", "timing", "environment", "peak_memory_bytes", "memory")} == {
            k: v for k, v in alone.items() if k not in ("train", "val", "final_val_loss", "best_val_loss", "timing", "environment", "peak_memory_bytes", "memory")
        }


def test_plan_groups_by_shape_and_optimizer(tiny_spec):
    specs = [tiny_spec.replace(seed=s) for s in range(5)] + [tiny_spec.replace(batch_size=8)] + [tiny_spec.replace(**{"optimizer.name": "sgd"})]
    groups = plan(specs, max_members=2)
    assert sorted(len(g) for g in groups) == [1, 1, 1, 2, 2]
    assert all(len({(s.batch_size, s.optimizer.name) for s in g}) == 1 for g in groups)


def test_memory_estimate_bounds_the_measured_memory(tiny_spec):
    record = train(tiny_spec)
    measured = sum(record["memory"].values())
    assert measured <= member_memory_bytes(tiny_spec) <= 4 * measured
    assert members_that_fit(tiny_spec, 64) == 64  # tiny runs: the cap binds, not memory


def test_out_of_memory_splits_the_ensemble_and_retries(tiny_spec, monkeypatch):
    from replication import runner

    sizes = []
    real = runner.train_members

    def tight(specs):
        sizes.append(len(specs))
        if len(specs) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(specs)

    monkeypatch.setattr(runner, "train_members", tight)
    with pytest.warns(UserWarning) as caught:
        records = runner.train_group([tiny_spec.replace(seed=s) for s in range(3)])
    assert [str(w.message) for w in caught] == [
        "ensemble of 3 ran out of memory; retrying as 1 + 2",
        "ensemble of 2 ran out of memory; retrying as 1 + 1",
    ]
    assert [r["status"] for r in records] == ["ok"] * 3
    assert sizes == [3, 1, 2, 1, 1]


@pytest.mark.slow
def test_per_core_workers_write_the_same_records(tmp_path, tiny_spec):
    from replication.store import Store
    from replication.runner import run_specs

    specs = [tiny_spec.replace(seed=s) for s in range(4)]
    serial = run_specs(specs, Store(tmp_path / "a", "smoke", "x"), progress=False)
    parallel = run_specs(specs, Store(tmp_path / "b", "smoke", "x"), workers=2, progress=False)
    for p, s in zip(parallel, serial):
        assert p["train"]["loss"] == pytest.approx(s["train"]["loss"], rel=2e-5)
    assert [r["id"] for r in parallel] == [r["id"] for r in serial]
