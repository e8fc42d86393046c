"""muP (Shen et al. Table 1, for Adam): the coordinate check, and the base width being the standard model."""

import pytest
import torch

from replication.model import GPT
from replication.optim import build_optimizer
from replication.spec import ConfigError, ModelConfig, RunSpec, run_spec_from_dict


def _logit_change(width: int, mup: bool, steps: int = 4, lr: float = 1e-2) -> float:
    """RMS change of the logits after a few Adam steps on one fixed batch: muP keeps it the same at every width."""
    cfg = ModelConfig(width=width, depth=2, head_dim=16, mup_base_width=32 if mup else None)
    spec = RunSpec(model=cfg).replace(**{"optimizer.lr": lr, "optimizer.weight_decay": 0.0})
    torch.manual_seed(0)
    x = torch.randint(0, 256, (1, 8, 16))
    model = GPT(cfg, 256, 16, [0])
    opt = build_optimizer(model.members, [spec])

    def logits():
        with torch.no_grad():
            h = model.hidden(model.embed(x))
            out = model._linear(h, "embed_out")
            return out * (32 / width) if mup else out

    before = logits()
    for _ in range(steps):
        model(x, x).sum().backward()
        opt.step()
        model.zero_grad()
    return float((logits() - before).pow(2).mean().sqrt())


@pytest.mark.slow
def test_coordinate_check_logit_updates_stay_put_under_mup_and_grow_without():
    widths = (128, 256, 512, 1024)  # 4 to 32 x the base width (below 4x, finite-width terms still show)
    mup = [_logit_change(w, True) for w in widths]
    sp = [_logit_change(w, False) for w in widths]
    assert max(mup) / min(mup) < 1.25, mup  # measured 0.38-0.43
    assert sp[-1] / sp[0] > 1.8, sp  # measured 1.5 -> 3.2: the standard parameterization's updates grow with width


def test_at_the_base_width_mup_is_the_standard_model():
    sp = run_spec_from_dict({"model": {"width": 32, "depth": 1, "head_dim": 16}})
    mup = sp.replace(**{"model.mup_base_width": 32})
    a, b = GPT(sp.model, 256, 8, [3]), GPT(mup.model, 256, 8, [3])
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    x = torch.randint(0, 256, (1, 2, 8))
    assert torch.equal(a(x, x), b(x, x))
    lrs = sorted(g["lr"] for g in build_optimizer(b.members, [mup]).param_groups)
    assert lrs == [mup.optimizer.lr, mup.optimizer.lr]


def test_mup_hidden_matrices_train_at_lr_over_m_width():
    spec = run_spec_from_dict({"model": {"width": 128, "depth": 1, "head_dim": 16, "mup_base_width": 32}, "optimizer": {"lr": 0.02}})
    model = GPT(spec.model, 256, 8, [0])
    groups = build_optimizer(model.members, [spec]).param_groups
    by_lr = {g["lr"]: len(g["params"]) for g in groups}
    assert by_lr == {0.02: 2, 0.005: 6}  # embeddings at the LR; the block's six matrices at LR / 4


def test_mup_with_another_optimizer_is_a_clear_error():
    with pytest.raises(ConfigError, match="mup_base_width.*adamw"):
        run_spec_from_dict({"model": {"mup_base_width": 32}, "optimizer": {"name": "sgd"}})
