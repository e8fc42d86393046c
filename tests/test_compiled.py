"""Compiled training steps: they agree with eager ones, repeat bit for bit, never recompile for
hyperparameters, and fall back to eager instead of failing a run."""

import json
import warnings

import numpy as np
import pytest
import torch

from replication.spec import ConfigError, run_spec_from_dict
from replication.step import COMPILE_MIN_TFLOP_CPU, should_compile
from replication.train import train, train_members
from tests.conftest import TINY

# 100 optimizer steps of a tiny model, two members per group (the ensemble path).
HUNDRED_STEPS = {**TINY, "batch_size": 2, "tokens": 2 * 16 * 100, "log_every_tokens": 2 * 16, "eval_every_tokens": 2 * 16 * 50}


def _spec(**dotted):
    return run_spec_from_dict(HUNDRED_STEPS).replace(**dotted)


def _losses(record: dict) -> np.ndarray:
    return np.array(record["train"]["loss"])


@pytest.fixture(scope="module")
def compiled_and_eager():
    specs = [_spec(seed=0), _spec(seed=1, **{"optimizer.lr": 1e-3})]
    compiled = train_members([s.replace(compile="true") for s in specs])
    eager = train_members([s.replace(compile="false") for s in specs])
    return compiled, eager


@pytest.mark.slow
def test_compiled_and_eager_runs_agree_over_the_first_100_steps(compiled_and_eager):
    compiled, eager = compiled_and_eager
    for c, e in zip(compiled, eager):
        assert c["environment"]["compiled"] is True and e["environment"]["compiled"] is False
        assert c["steps"] == e["steps"] == 100
        assert len(_losses(c)) == 100
        np.testing.assert_allclose(_losses(c), _losses(e), rtol=1e-4)  # fp32 round-off, measured ~4e-7
        np.testing.assert_allclose(c["val"]["loss"], e["val"]["loss"], rtol=1e-4)


def test_compiled_and_eager_runs_share_a_run_id(compiled_and_eager):
    compiled, eager = compiled_and_eager
    assert [c["id"] for c in compiled] == [e["id"] for e in eager]


def test_compiled_records_say_how_long_compilation_took(compiled_and_eager):
    compiled, eager = compiled_and_eager
    assert compiled[0]["timing"]["compile_s"] > 0
    assert compiled[0]["environment"]["compile_reason"] == "compile: true"
    assert eager[0]["timing"]["compile_s"] is None


def test_compiled_rerun_gives_a_bit_identical_record():
    # Without deterministic kernels, 2 of 8 reruns here differed in the last bits (the embedding's backward).
    spec = _spec(compile="true", tokens=2 * 16 * 30)
    first, *reruns = (train(spec) for _ in range(4))
    assert first["environment"]["compiled"] is True
    first.pop("timing")
    for rerun in reruns:
        rerun.pop("timing")
        assert json.dumps(rerun, sort_keys=True) == json.dumps(first, sort_keys=True)


@pytest.mark.slow
def test_compiled_gradient_accumulation_equals_the_full_batch():
    spec = _spec(compile="true", batch_size=4, tokens=4 * 16 * 30)
    full, accumulated = train(spec), train(spec.replace(micro_batch_size=2))
    assert accumulated["environment"]["compiled"] is True
    np.testing.assert_allclose(_losses(accumulated), _losses(full), rtol=1e-4)


def test_hyperparameters_and_schedules_never_recompile_after_warm_up():
    counters = torch._dynamo.utils.counters
    warm = [_spec(compile="true", seed=s, tokens=2 * 16 * 10) for s in (0, 1, 2)]
    train_members(warm)
    frames, graphs = counters["frames"]["total"], counters["stats"]["unique_graphs"]
    # a new group of the same shape: other seeds, LRs, betas, half-lives, weight decay and schedules
    changed = [
        warm[0].replace(seed=7, **{"optimizer.lr": 1e-2, "optimizer.beta2": 0.99, "schedule.name": "wsd"}),
        warm[1].replace(**{"optimizer.beta1_half_life_tokens": 500, "optimizer.weight_decay": 0.1, "schedule.name": "constant"}),
        warm[2].replace(**{"optimizer.lr": 3e-4, "schedule.name": "power"}),
    ]
    records = train_members(changed)
    assert all(r["environment"]["compiled"] for r in records)
    assert counters["frames"]["total"] == frames, "a new group of the same shape recompiled"
    assert counters["stats"]["unique_graphs"] == graphs


def test_a_failing_compilation_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken_compile(fn, **kwargs):
        def fails(*args):
            raise RuntimeError("no C++ compiler found")
        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    import replication.step as step

    monkeypatch.setattr(step, "_warned", set())
    spec = _spec(compile="true", tokens=2 * 16 * 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = train(spec), train(spec.replace(seed=3))
    messages = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    assert len(messages) == 1 and "no C++ compiler found" in messages[0]
    for record in (first, second):
        assert record["status"] == "ok" and record["environment"]["compiled"] is False
        assert "compilation failed" in record["environment"]["compile_reason"]
    eager = train(spec.replace(compile="false"))
    assert first["train"]["loss"] == eager["train"]["loss"]  # the fallback step starts clean


@pytest.mark.parametrize(
    "setting, device, tflop, lora, expected",
    [
        ("false", "cuda", 1e3, False, False),
        ("true", "cpu", 0.001, False, True),
        ("true", "cpu", 1e3, True, False),  # peft's adapters stay eager
        ("auto", "cuda", 0.001, False, True),
        ("auto", "cpu", COMPILE_MIN_TFLOP_CPU * 0.9, False, False),
        ("auto", "cpu", COMPILE_MIN_TFLOP_CPU * 1.1, False, True),
    ],
)
def test_auto_compiles_where_it_pays(setting, device, tflop, lora, expected):
    compile, reason = should_compile(setting, torch.device(device), tflop * 1e12, lora)
    assert compile is expected and reason


def test_compile_setting_is_validated_and_takes_yaml_booleans():
    assert run_spec_from_dict({**TINY, "compile": True}).compile == "true"
    assert run_spec_from_dict({**TINY, "compile": False}).compile == "false"
    with pytest.raises(ConfigError, match=r"run.compile: 'sometimes' is unknown; choose one of: auto, false, true"):
        run_spec_from_dict({**TINY, "compile": "sometimes"})
