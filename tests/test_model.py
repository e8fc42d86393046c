import torch

from replication.model import GPT
from replication.sizes import count_parameters, flops_per_token
from replication.spec import ModelConfig


def test_parameter_count_matches_the_tensors_and_a_hand_count():
    cfg = ModelConfig(width=64, depth=3, head_dim=16)
    model = GPT(cfg, vocab_size=500, seq_len=32, seeds=[0])
    counts = count_parameters(cfg, 500)
    # by hand: per block q,k,v,o 4*64*64 + MLP 2*64*256 = 49152; embeddings 2*500*64
    assert counts == {"non_embedding": 3 * 49152, "embedding": 64000, "total": 3 * 49152 + 64000}
    assert sum(p.numel() for p in model.parameters()) == counts["total"]


def test_flops_per_token_hand_count():
    cfg = ModelConfig(width=64, depth=2, head_dim=16)
    # 6 * (12 * 2 * 64^2 + 500 * 64) + 12 * 2 * 32 * 64
    assert flops_per_token(cfg, 500, 32) == 6 * (98304 + 32000) + 49152


def test_no_biases_no_norm_scales_untied_embeddings():
    model = GPT(ModelConfig(width=32, depth=2, head_dim=16), 100, 8, [0])
    member = model.members[0]
    assert all(p.ndim == 2 for p in member.parameters())
    assert len(list(member.parameters())) == 2 + 6 * 2
    assert member.embed_in.data_ptr() != member.embed_out.data_ptr()


def test_causal_future_tokens_do_not_change_the_past():
    model = GPT(ModelConfig(width=32, depth=2, head_dim=16), 100, 8, [0])
    idx = torch.randint(0, 100, (1, 2, 8), generator=torch.Generator().manual_seed(0))
    changed = idx.clone()
    changed[..., -1] = (changed[..., -1] + 1) % 100
    with torch.no_grad():
        a, b = model.hidden(model.embed(idx)), model.hidden(model.embed(changed))
    assert torch.allclose(a.view(1, 2, 8, -1)[..., :-1, :], b.view(1, 2, 8, -1)[..., :-1, :], atol=1e-6)
    assert not torch.allclose(a.view(1, 2, 8, -1)[..., -1, :], b.view(1, 2, 8, -1)[..., -1, :])


def test_members_compute_what_separate_models_compute():
    cfg = ModelConfig(width=32, depth=2, head_dim=16)
    pair = GPT(cfg, 100, 8, [3, 7])
    idx = torch.randint(0, 100, (2, 4, 8), generator=torch.Generator().manual_seed(1))
    tgt = torch.randint(0, 100, (2, 4, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        together = pair(idx, tgt)
        alone = [GPT(cfg, 100, 8, [s])(idx[i:i + 1], tgt[i:i + 1])[0] for i, s in enumerate([3, 7])]
    torch.testing.assert_close(together, torch.stack(alone), rtol=1e-5, atol=1e-6)


def test_member_parameters_are_views_of_the_stacked_weights_and_receive_their_gradients():
    cfg = ModelConfig(width=32, depth=1, head_dim=16)
    model = GPT(cfg, 100, 8, [3, 7])
    idx = torch.randint(0, 100, (2, 2, 8), generator=torch.Generator().manual_seed(0))
    model(idx, idx).sum().backward()
    for i, member in enumerate(model.members):
        for name, p in member.named_parameters():
            stacked = model.weights[name.replace(".", "_")]
            assert p.data_ptr() == stacked[i].data_ptr() and p.shape == stacked[i].shape
            torch.testing.assert_close(p.grad, stacked.grad[i])
    with torch.no_grad():
        model.members[1].blocks[0].fc1.add_(1.0)  # an optimizer's in-place update reaches the stacked weights
    assert torch.equal(model.weights["blocks_0_fc1"][1], model.members[1].blocks[0].fc1)
    assert model.members[1].blocks[0].fc1.shape == (4 * 32, 32)  # members keep nn.Linear's [out, in]
    model.zero_grad()
    assert all(p.grad is None for m in model.members for p in m.parameters())
