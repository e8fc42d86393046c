"""Fine-tuning from a pretrained run: weights on disk, full fine-tuning, LoRA through peft."""

import dataclasses

import pytest
import torch

from replication.finetune import load_weights, lora_targets
from replication.store import weights_file
from replication.model import GPT
from replication.params import Experiment
from replication.spec import ConfigError, run_spec_from_dict
from replication.store import Store
from replication.experiments import finetuning, train_runs
from replication.train import train, train_members

from tests.conftest import TINY

PRETRAIN = {**TINY, "data": {**TINY["data"], "domain": "!histories/*"}}
FINETUNE = {**TINY, "data": {**TINY["data"], "domain": "histories/*"}, "schedule": {"name": "constant", "warmup_fraction": 0.0}}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A pretrained tiny model's spec, record and weights file."""
    spec = run_spec_from_dict(PRETRAIN)
    folder = tmp_path_factory.mktemp("weights")
    record = train_members([spec], weights_dir=folder)[0]
    return spec, record, folder / f"{spec.hash}.pt"


def test_pretraining_saves_the_final_weights(pretrained):
    spec, record, path = pretrained
    state = load_weights(path)
    assert record["status"] == "ok" and set(state) == set(GPT(spec.model, spec.data.vocab_size, spec.data.seq_len, [0]).names)


def test_full_finetuning_starts_every_member_at_the_pretrained_loss(pretrained):
    _, _, path = pretrained
    specs = [run_spec_from_dict({**FINETUNE, "init_from": str(path), "seed": s}) for s in (0, 1)]
    records = train_members(specs)
    start = [r["val"]["loss"][0] for r in records]
    assert records[0]["val"]["step"][0] == 0 and start[0] == pytest.approx(start[1], rel=1e-5)
    assert all(r["final_val_loss"] < r["val"]["loss"][0] for r in records)
    scratch = train(run_spec_from_dict(FINETUNE))
    assert scratch["val"]["step"][0] > 0  # no step-0 evaluation without init_from


def test_lora_trains_only_the_adapters_and_leaves_the_base_frozen(pretrained):
    _, _, path = pretrained
    lora = run_spec_from_dict({**FINETUNE, "init_from": str(path), "lora_rank": 4, "optimizer": {"name": "adamw", "lr": 1e-2}})
    full = run_spec_from_dict({**FINETUNE, "init_from": str(path), "optimizer": {"name": "adamw", "lr": 1e-2}})
    r_lora, r_full = train(lora), train(full)
    assert r_lora["status"] == "ok" and r_lora["final_val_loss"] < r_lora["val"]["loss"][0]
    assert r_lora["val"]["loss"][0] == pytest.approx(r_full["val"]["loss"][0], rel=1e-5)  # adapters start at zero
    d, depth, v = lora.model.width, lora.model.depth, lora.data.vocab_size
    adapter_numbers = 4 * (depth * (4 * (d + d) + (d + 4 * d) + (4 * d + d)) + (d + v))
    assert r_lora["memory"]["gradients"] == 4 * adapter_numbers  # fp32 bytes: only the adapters get gradients
    assert r_lora["memory"]["gradients"] < r_full["memory"]["gradients"] / 5
    assert len(lora_targets(depth)) == 6 * depth + 1


def test_lora_base_weights_do_not_move(pretrained):
    from replication.finetune import attach_lora

    spec, _, path = pretrained
    model = GPT(spec.model, spec.data.vocab_size, spec.data.seq_len, [0])
    model.load_member_state(load_weights(path))
    before = {k: v.clone() for k, v in model.member_state(0).items()}
    adapters = attach_lora(model, 4, None)
    opt = torch.optim.AdamW(adapters.parameters(), lr=1e-2)
    x = torch.randint(0, spec.data.vocab_size, (1, 2, spec.data.seq_len))
    for _ in range(3):
        model(x, x).sum().backward()
        opt.step()
        opt.zero_grad()
    assert all(torch.equal(before[k], v) for k, v in model.member_state(0).items())
    assert all(p.requires_grad for p in adapters.parameters()) and not any(p.requires_grad for p in model.weights.parameters())


def test_bad_finetuning_input_gets_a_clear_error(tmp_path, pretrained):
    with pytest.raises(FileNotFoundError, match="init_from: no pretrained weights"):
        train(run_spec_from_dict({**FINETUNE, "init_from": str(tmp_path / "missing.pt")}))
    with pytest.raises(ConfigError, match="lora_rank.*muon"):
        run_spec_from_dict({**FINETUNE, "lora_rank": 4, "optimizer": {"name": "muon"}})
    with pytest.raises(ConfigError, match="lora_rank: 0 must be > 0"):
        run_spec_from_dict({**FINETUNE, "lora_rank": 0})
    wider = run_spec_from_dict({**FINETUNE, "model": {"width": 64, "depth": 1, "head_dim": 16}, "init_from": str(pretrained[2])})
    with pytest.raises(ValueError, match="has shape"):
        train(wider)


def _experiment(tmp_path) -> Experiment:
    base = run_spec_from_dict(FINETUNE)
    grid = ({"optimizer.lr": (1e-3, 3e-3)},)
    settings = {"pretrain": {"data.domain": "!histories/*", "schedule.name": "cosine"}}
    return Experiment("ft", "smoke", base, grid, settings)


@pytest.mark.slow
def test_fine_tuning_needs_the_weights_only_while_a_run_is_missing(tmp_path):
    exp = _experiment(tmp_path)
    pretrain, ft = finetuning(exp, results_root=tmp_path)
    runs = train_runs(exp, ft.expand(), tmp_path, progress=False)
    store = Store(tmp_path, "smoke", "ft")
    weights = weights_file(store.root, pretrain.hash)
    assert store.read(pretrain.hash)["status"] == "ok" and len(runs) == 2 and weights.exists()
    weights.unlink()  # a fresh clone: records committed, weights (git-ignored) absent
    train_runs(exp, [s for s in ft.expand() if store.needs_run(s)], tmp_path, progress=False)
    assert not weights.exists()  # every record present: nothing retrained
    extra = [s.replace(seed=1) for s in ft.expand()]
    more = train_runs(exp, extra, tmp_path, progress=False)
    assert weights.exists() and len(more) == 2  # a missing run: the pretraining weights came back
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # a truncated cache (a full disk, a kill mid-copy)
    again = [s.replace(seed=2) for s in ft.expand()]
    with pytest.warns(UserWarning, match=f"{weights.name}.*cannot be read.*made again"):
        assert all(r["status"] == "ok" for r in train_runs(exp, again, tmp_path, progress=False))
    assert weights.read_bytes() == good and (weights.parent / "_quarantine" / weights.name).exists()  # remade, bit for bit
    with pytest.raises(ValueError, match="must start from"):
        train_runs(exp, exp.expand(), tmp_path, progress=False)


def test_pretrain_settings_errors_name_the_key(tmp_path):
    exp = dataclasses.replace(_experiment(tmp_path), settings={"pretrain": {"optimizer.lrr": 1e-3}})
    with pytest.raises(ConfigError, match=r"experiments\.ft\.settings\.pretrain\.optimizer\.lrr: unknown key"):
        finetuning(exp, results_root=tmp_path)
