"""The gpu profile's code path on a CPU: the training step under bf16 autocast, eager and compiled, on tiny
shapes (CUDA graphs aside, which need a GPU), and the GPU's larger default ensembles."""

import numpy as np
import pytest
import torch

from replication import runner
from replication.model import GPT
from replication.optim import build_optimizer
from replication.spec import ModelConfig, run_spec_from_dict
from replication.step import TrainStep

VOCAB, SEQ, B, M = 300, 16, 2, 2


def _losses(bf16: bool, compile: bool, steps: int = 5) -> np.ndarray:
    torch.manual_seed(0)
    cfg = ModelConfig(width=32, depth=1, head_dim=16)
    spec = run_spec_from_dict({"model": cfg.__dict__, "data": {"vocab_size": VOCAB, "seq_len": SEQ}, "batch_size": B, "tokens": B * SEQ})
    model = GPT(cfg, VOCAB, SEQ, list(range(M)))
    opt = build_optimizer(list(model.members), [spec] * M)
    step = TrainStep(model, torch.device("cpu"), compile, bf16=bf16)
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(steps):
        idx = torch.randint(0, VOCAB, (M, B, SEQ + 1), generator=gen)
        out.append(step(idx[..., :-1], idx[..., 1:]).numpy().copy())
        opt.step()
        model.zero_grad(set_to_none=True)
    assert step.compiled is compile, step.reason
    return np.array(out)


def test_bf16_autocast_is_off_on_cpu_unless_asked_and_on_for_cuda():
    model = GPT(ModelConfig(width=32, depth=1, head_dim=16), VOCAB, SEQ, [0])
    assert TrainStep(model, torch.device("cpu"), False).bf16 is False
    assert TrainStep(model, torch.device("cuda"), False).bf16 is True  # constructing needs no GPU


@pytest.fixture(scope="module")
def fp32_losses():
    return _losses(bf16=False, compile=False)


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_a_bf16_step_trains_close_to_fp32_but_not_in_fp32(fp32_losses, compile):
    bf16 = _losses(bf16=True, compile=compile)
    assert np.isfinite(bf16).all()
    np.testing.assert_allclose(bf16, fp32_losses, rtol=2e-2)  # bf16 matmuls: ~3 significant digits
    assert not np.allclose(bf16, fp32_losses, rtol=1e-6)  # autocast really ran the matmuls in bf16
    assert bf16[-1].mean() < bf16[0].mean()  # and it learns


def test_gpu_sweeps_default_to_larger_ensembles(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runner.default_max_members() == runner.GPU_MAX_MEMBERS
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runner.default_max_members() == runner.DEFAULT_MAX_MEMBERS
