import math

import pytest
import torch

from replication.model import GPT
from replication.half_life import beta_from_half_life, half_life_from_beta
from replication.optim import build_optimizer, lr_multiplier
from replication.spec import ScheduleConfig
from replication.train import train


@pytest.mark.parametrize(
    "half_life, tokens_per_step, beta",
    [
        (10_000_000, 512, 0.999965),  # spec: T=512, B=1, t2=10M
        (40_000, 512, 0.9912),  # spec: B=1, t1=40k
        (6_000_000, 4096 * 512, 0.785),  # spec: B=4096, t1=6M
    ],
)
def test_half_life_rule_worked_values(half_life, tokens_per_step, beta):
    assert beta_from_half_life(half_life, tokens_per_step) == pytest.approx(beta, abs=5e-4)


def test_half_life_round_trip_and_gpt2_anchor():
    # GPT-2 style: B=512, T=1024, beta2=0.95 <-> about 7.1 M tokens (Marek et al. section 0)
    assert half_life_from_beta(0.95, 512 * 1024) == pytest.approx(7.08e6, rel=0.01)
    for beta in (0.5, 0.9, 0.999):
        assert beta_from_half_life(half_life_from_beta(beta, 300), 300) == pytest.approx(beta)
    # the same half-life at batch 1 is beta2 ~ 0.9999
    assert beta_from_half_life(half_life_from_beta(0.95, 512 * 1024), 1024) == pytest.approx(0.9999, abs=2e-5)


def _lr(name, t, total=1000, **kw):
    return lr_multiplier(ScheduleConfig(name=name, **kw), t, total, batch_size=8, lr_peak=1e-2)


def test_schedules():
    assert _lr("constant", 25, warmup_fraction=0.1) == pytest.approx(0.25)
    assert _lr("constant", 900, warmup_fraction=0.1) == 1.0
    assert _lr("cosine", 100, warmup_fraction=0.1) == pytest.approx(1.0)
    assert _lr("cosine", 550, warmup_fraction=0.1) == pytest.approx(0.5)
    assert _lr("cosine", 1000, warmup_fraction=0.1) == pytest.approx(0.0, abs=1e-12)
    assert _lr("wsd", 750, warmup_fraction=0.1, decay_fraction=0.2) == 1.0
    assert _lr("wsd", 900, warmup_fraction=0.1, decay_fraction=0.2, decay_shape="linear") == pytest.approx(0.5)
    assert _lr("wsd", 900, warmup_fraction=0.1, decay_fraction=0.2, decay_shape="1-sqrt") == pytest.approx(1 - math.sqrt(0.5))
    assert _lr("wsd", 1000, warmup_fraction=0.1, decay_fraction=0.2, decay_shape="exponential") == pytest.approx(1e-3)


def test_power_schedule_follows_shen_et_al():
    sched = ScheduleConfig(name="power", warmup_fraction=0.0, decay_fraction=0.1, power_a=4.0, power_b=-0.5)
    total, batch, peak = 10**8, 16, 1e-2
    for tokens in (10**6, 10**7, 8 * 10**7):
        expected = min(peak, batch * 4.0 * tokens**-0.5)
        assert lr_multiplier(sched, tokens, total, batch, peak) * peak == pytest.approx(expected)
    assert lr_multiplier(sched, 10, total, batch, peak) == 1.0  # capped at lr_max early on


@pytest.mark.parametrize("name", ["sgd", "adamw", "adafactor", "muon"])
def test_every_optimizer_trains_from_torch_optim(tiny_spec, name):
    spec = tiny_spec.replace(**{"optimizer.name": name, "optimizer.lr": {"sgd": 0.3, "muon": 0.02}.get(name, 3e-3)})
    model = GPT(spec.model, 300, 16, [0])
    opt = build_optimizer(list(model.members), [spec])
    classes = {type(o).__name__ for o in getattr(opt, "optimizers", [opt])}
    assert classes == {"sgd": {"SGD"}, "adamw": {"AdamW"}, "adafactor": {"Adafactor"}, "muon": {"Muon", "AdamW"}}[name]
    record = train(spec)
    assert record["status"] == "ok"
    assert record["train"]["loss"][-1] < record["train"]["loss"][0]


def test_muon_takes_hidden_matrices_and_adamw_the_embeddings(tiny_spec):
    spec = tiny_spec.replace(**{"optimizer.name": "muon"})
    model = GPT(spec.model, 300, 16, [0])
    muon, adamw = build_optimizer(list(model.members), [spec]).optimizers
    member = model.members[0]
    assert {id(p) for g in adamw.param_groups for p in g["params"]} == {id(member.embed_in), id(member.embed_out)}
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])
    assert sum(len(g["params"]) for g in muon.param_groups) == 6 * spec.model.depth


def test_gradient_accumulation_gives_the_full_batch_update(tiny_spec):
    spec = tiny_spec.replace(batch_size=8, tokens=8 * 16 * 3, log_every_tokens=8 * 16, eval_every_tokens=8 * 16 * 3)
    full = train(spec)
    accumulated = train(spec.replace(micro_batch_size=2))
    assert accumulated["train"]["loss"] == pytest.approx(full["train"]["loss"], rel=1e-5)
    assert accumulated["final_val_loss"] == pytest.approx(full["final_val_loss"], rel=1e-5)
    assert accumulated["memory"]["activations"] < full["memory"]["activations"]


def test_betas_from_half_life_reach_the_param_group(tiny_spec):
    spec = tiny_spec.replace(**{"optimizer.beta2_half_life_tokens": 6400.0})
    model = GPT(spec.model, 300, 16, [0])
    opt = build_optimizer(list(model.members), [spec])
    assert opt.param_groups[0]["betas"][1] == pytest.approx(0.5 ** (64 / 6400))
    torch.testing.assert_close(torch.tensor(opt.param_groups[0]["betas"][0]), torch.tensor(0.9))
