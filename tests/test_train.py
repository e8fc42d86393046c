import math

from replication.train import train, train_members


def test_same_spec_gives_the_identical_loss_curve(tiny_spec):
    a, b = train(tiny_spec), train(tiny_spec)
    assert a["train"]["loss"] == b["train"]["loss"]
    assert a["val"]["loss"] == b["val"]["loss"]


def test_record_holds_what_design_md_promises(tiny_spec):
    r = train(tiny_spec.replace(target_losses=[100.0, 0.1]))
    assert r["status"] == "ok" and r["steps"] == tiny_spec.steps and r["tokens"] == tiny_spec.steps * 64
    assert r["train"]["step"] == [5, 10, 15, 20] and r["val"]["step"] == [10, 20]
    assert r["final_val_loss"] == r["val"]["loss"][-1] and r["best_val_loss"] == min(r["val"]["loss"])
    assert r["targets"] == {"100.0": {"step": 10, "tokens": 640}, "0.1": None}
    assert r["flops"] == r["flops_per_token"] * r["tokens"]
    assert set(r["memory"]) == {"parameters", "gradients", "optimizer_state", "activations"}
    assert r["memory"]["optimizer_state"] >= 2 * r["memory"]["parameters"]  # AdamW: two moments
    assert r["environment"]["torch"].startswith("2.13")
    assert r["timing"]["wall_time_s"] > 0 and r["peak_memory_bytes"] > 0


def test_divergence_is_recorded_not_raised(tiny_spec):
    r = train(tiny_spec.replace(**{"optimizer.name": "sgd", "optimizer.lr": 1e6, "optimizer.beta1": 0.0}))
    assert r["status"] == "diverged"
    assert 0 <= r["diverged_at_step"] < tiny_spec.steps
    assert r["final_val_loss"] is None and "loss" in r["error"]


def test_a_diverging_member_stops_and_the_others_go_on(tiny_spec):
    good = tiny_spec.replace(**{"optimizer.name": "sgd", "optimizer.lr": 0.3, "optimizer.beta1": 0.0})
    bad = good.replace(**{"optimizer.lr": 1e6})
    r_good, r_bad = train_members([good, bad])
    assert r_bad["status"] == "diverged" and r_good["status"] == "ok"
    assert r_good["steps"] == tiny_spec.steps
    assert math.isfinite(r_good["final_val_loss"])
    assert r_good["train"]["loss"] == train(good)["train"]["loss"]


def test_weight_averaging_changes_what_is_evaluated(tiny_spec):
    plain = train(tiny_spec)
    averaged = train(tiny_spec.replace(ewa_decay=0.9))
    assert averaged["train"]["loss"] == plain["train"]["loss"]  # training is untouched
    assert averaged["val"]["loss"] != plain["val"]["loss"]


def test_log_spaced_evaluations_come_on_top_of_the_regular_ones(tiny_spec):
    from replication.train import log_spaced_steps

    assert sorted(log_spaced_steps(1.5, 20)) == [1, 2, 3, 4, 6, 8, 12, 18]
    spec = tiny_spec.replace(eval_spacing=1.5)
    steps = train(spec)["val"]["step"]
    assert {1, 2, 3, 4, 6, 8, 12} <= set(steps) and spec.steps in steps and steps == sorted(set(steps))


def test_a_run_stops_at_its_target_and_the_others_go_on(tiny_spec):
    base = tiny_spec.replace(eval_spacing=1.2)
    free = train(base)
    target = free["val"]["loss"][len(free["val"]["loss"]) // 2]
    stopped, other = train_members([base.replace(stop_below=target), base.replace(seed=1)])
    assert stopped["status"] == "ok" and stopped["steps"] == stopped["stopped_at_step"] < base.steps
    assert stopped["val"]["loss"][-1] <= target < min(stopped["val"]["loss"][:-1])
    assert stopped["val"]["loss"] == free["val"]["loss"][:len(stopped["val"]["loss"])]  # stopping changes nothing before it
    assert other["steps"] == base.steps and "stopped_at_step" not in other


def test_the_gradient_noise_measurement_leaves_training_unchanged(tiny_spec):
    plain = train(tiny_spec)
    measured = train(tiny_spec.replace(noise_scale_batches=3))
    assert measured["val"]["loss"] == plain["val"]["loss"]
    log = measured["noise_scale"]
    assert log["big_batch"] == 3 * log["small_batch"] and len(log["step"]) == len(log["small_sq"]) > 0
    assert all(s > b > 0 for s, b in zip(log["small_sq"], log["big_sq"]))  # the mean of 3 gradients is less noisy



def _wsd(tiny_spec, **dotted):
    return tiny_spec.replace(**{"schedule.name": "wsd", "schedule.warmup_tokens": 128, "schedule.decay_fraction": 0.2,
                                "tokens": 1280, **dotted})


def test_a_decay_branch_is_the_run_of_its_budget(tiny_spec):
    """A budget branched off a longer run (one stable phase, its own decay) ends where its own run ends."""
    long = _wsd(tiny_spec, decay_branches=[640, 960])
    r = train(long)
    assert r["decay_branches"]["tokens"] == [640, 960] and r["decay_branches"]["steps"] == [10, 15]
    for budget, loss in zip((640, 960), r["decay_branches"]["val_loss"]):
        alone = train(_wsd(tiny_spec, tokens=budget))
        assert math.isclose(loss, alone["final_val_loss"], rel_tol=1e-5)
    assert r["final_val_loss"] == train(_wsd(tiny_spec))["final_val_loss"]  # branching leaves the main run untouched
    assert long.hash != _wsd(tiny_spec).hash and _wsd(tiny_spec).hash == _wsd(tiny_spec, decay_branches=[]).hash


def test_decay_branches_of_a_power_schedule_in_an_ensemble(tiny_spec):
    power = _wsd(tiny_spec, **{"schedule.name": "power", "schedule.power_a": 0.02, "decay_branches": [640]})
    runs = train_members([power, power.replace(seed=1)])
    for spec, r in zip((power, power.replace(seed=1)), runs):
        alone = train(spec.replace(tokens=640, decay_branches=[]))
        assert math.isclose(r["decay_branches"]["val_loss"][0], alone["final_val_loss"], rel_tol=1e-5)


def test_decay_branches_need_a_decaying_schedule_and_a_warmup_in_tokens(tiny_spec):
    import pytest

    from replication.spec import ConfigError
    with pytest.raises(ConfigError, match="wsd or power"):
        tiny_spec.replace(decay_branches=[640])
    with pytest.raises(ConfigError, match="warmup_tokens"):
        tiny_spec.replace(**{"schedule.name": "wsd", "decay_branches": [640]})
    with pytest.raises(ConfigError, match="must lie in"):
        _wsd(tiny_spec, decay_branches=[5000])
