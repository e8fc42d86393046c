"""Decoder-only GPT after Marek et al.'s reference code, written once for M members trained side by side.

Architecture (spec section 3): pre-norm blocks, RMSNorm without a learned scale, QK-norm, RoPE, a GELU
MLP of width 4D, no biases, untied input and output embeddings; xavier-uniform matrices and
N(0, 1/D) embeddings.

Every member keeps its own parameters as separate leaves (so each can be its own optimizer param
group with its own LR and betas); they are views into stacked [M, ...] weights that the forward pass
uses directly for batched matmuls, folding the member dimension into the batch for attention. A
single run is M = 1 of the same code.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from replication.spec import ModelConfig

HIDDEN_MATRICES = ("wq", "wk", "wv", "wo", "fc1", "fc2")  # per block; Muon's share of the parameters


def mup_width_multiplier(cfg: ModelConfig) -> float | None:
    """m_width = width / base width under muP (Shen et al. Table 1), None under the standard parameterization.

    muP here, for Adam: hidden matrices keep their 1/sqrt(fan-in) init and train at LR / m_width; the input
    embedding's init is fixed at the base width's; the logits are multiplied by 1 / m_width. At the base width
    it is the standard model exactly. Attention needs no change: QK-norm and a fixed head size keep its logits
    the same size at every width (Shen et al. divide by d_head instead because their head size is fixed too).
    """
    return cfg.width / cfg.mup_base_width if cfg.mup_base_width else None


def _key(name: str) -> str:
    return name.replace(".", "_")


def _rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), eps=1e-6)


def _rope_tables(seq_len: int, head_dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return angles.cos(), angles.sin()  # [T, head_dim / 2]


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class _BatchedLinear(torch.autograd.Function):
    """y = x @ W^T per member, with the weight gradient computed directly in W's [out, in] layout.

    Autograd's own bmm backward yields the transpose of what the weight needs, which AccumulateGrad
    then copies to make contiguous; this saves that copy (about 10% of a small-batch step on CPU).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        return torch.bmm(x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, w = ctx.saved_tensors  # under autocast the forward ran in bf16: match grad_y's dtype
        grad_x = torch.bmm(grad_y, w.to(grad_y.dtype)) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(grad_y.transpose(1, 2), x.to(grad_y.dtype)) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w


class Member(nn.Module):
    """One model's parameters. Matrices use nn.Linear's [out, in] layout (what torch.optim.Muon expects)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, seed: int):
        super().__init__()
        D, L = cfg.width, cfg.depth
        gen = torch.Generator().manual_seed(seed)
        embed_scale = math.sqrt(cfg.mup_base_width or D)  # muP: the input embedding's scale does not shrink with width
        self.embed_in = nn.Parameter(torch.randn(vocab_size, D, generator=gen) / embed_scale)
        self.embed_out = nn.Parameter(torch.randn(vocab_size, D, generator=gen) / math.sqrt(D))
        shapes = {"wq": (D, D), "wk": (D, D), "wv": (D, D), "wo": (D, D), "fc1": (4 * D, D), "fc2": (D, 4 * D)}
        self.blocks = nn.ModuleList()
        for _ in range(L):
            block = nn.Module()
            for name, shape in shapes.items():
                w = torch.empty(shape)
                nn.init.xavier_uniform_(w, generator=gen)
                setattr(block, name, nn.Parameter(w))
            self.blocks.append(block)


class GPT(nn.Module):
    """M independent GPTs of one architecture; ``forward`` returns each active member's mean loss, [M].

    The weights autograd sees are stacked, [M, ...] per tensor (``self.weights``); each member's
    parameters (``self.members[i]``, what the optimizer updates) are views of row i of that storage.
    So the forward pass needs no copy to batch the members, and after backward each member's
    ``.grad`` is set to a view of its row of the stacked gradient (a post-accumulate-grad hook).
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, seeds: list[int]):
        super().__init__()
        self.cfg, self.vocab_size, self.seq_len = cfg, vocab_size, seq_len
        self.n_heads = cfg.width // cfg.head_dim
        members = [Member(cfg, vocab_size, s) for s in seeds]
        self.names = [name for name, _ in members[0].named_parameters()]
        self.weights = nn.ParameterDict(
            {_key(n): nn.Parameter(torch.stack([m.get_parameter(n).detach() for m in members])) for n in self.names}
        )
        self.members = members  # a plain list: their tensors are views of self.weights, not extra parameters
        self.linears: nn.ModuleDict | None = None  # see use_linear_modules
        self.active = list(range(len(seeds)))  # members still training (diverged ones drop out)
        for name in self.names:
            self.weights[_key(name)].register_post_accumulate_grad_hook(self._grad_sharer(name))
        self._bind_members()
        cos, sin = _rope_tables(seq_len, cfg.head_dim)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def _bind_members(self) -> None:
        """(Re)make each member's parameters views of its row of the stacked storage."""
        for name in self.names:
            stacked = self.weights[_key(name)]
            *path, leaf = name.split(".")
            for i, member in enumerate(self.members):
                setattr(member.get_submodule(".".join(path)), leaf, nn.Parameter(stacked.data[i]))
        self._member_params = {name: [m.get_parameter(name) for m in self.members] for name in self.names}

    def _grad_sharer(self, name: str):
        def share(stacked: torch.Tensor) -> None:
            params = self._member_params[name]
            for j in self.active:
                params[j].grad = stacked.grad[j]
        return share

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)  # .to(device) etc. may give the stacked weights new storage
        self._bind_members()
        return out

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for member in self.members:
            member.zero_grad(set_to_none)

    @property
    def n_members(self) -> int:
        return len(self.active)

    def member_state(self, m: int) -> dict[str, torch.Tensor]:
        """Member m's weights as {parameter name: tensor}, detached copies (what a pretrained file holds)."""
        return {name: self.weights[_key(name)].detach()[m].clone() for name in self.names}

    @torch.no_grad()
    def load_member_state(self, state: dict[str, torch.Tensor]) -> None:
        """Start every member from the same weights (fine-tuning from a pretrained model)."""
        missing, unexpected = set(self.names) - set(state), set(state) - set(self.names)
        if missing or unexpected:
            raise ValueError(f"pretrained weights do not fit this model: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for name in self.names:
            stacked = self.weights[_key(name)]
            if state[name].shape != stacked.shape[1:]:
                raise ValueError(f"pretrained weight {name!r} has shape {tuple(state[name].shape)}, this model needs {tuple(stacked.shape[1:])}")
            stacked.copy_(state[name].to(stacked.device, stacked.dtype).expand_as(stacked))

    def use_linear_modules(self, names: tuple[str, ...]) -> None:
        """Route the matrices `names` through nn.Linear modules sharing their weights (M = 1 only), so that
        adapters which wrap nn.Linear (peft's LoRA) can be attached; the matrices themselves stay as they are.
        Call it after moving the model to its device (a later move would give the modules copies)."""
        if len(self.members) != 1:
            raise ValueError(f"linear modules need a single member, this model has {len(self.members)}")
        self.linears = nn.ModuleDict()
        for name in names:
            weight = self.weights[_key(name)]
            linear = nn.Linear(weight.shape[2], weight.shape[1], bias=False, device=weight.device)
            linear.weight = nn.Parameter(weight.data[0], requires_grad=weight.requires_grad)  # shares storage
            self.linears[_key(name)] = linear

    def _weight(self, name: str) -> torch.Tensor:
        """The active members' stacked weight [M, ...] (a free view while no member has dropped out)."""
        stacked = self.weights[_key(name)]
        return stacked if len(self.active) == len(self.members) else stacked[self.active]

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """x [M, N, in] @ W^T for each member's W [out, in] -> [M, N, out]."""
        if self.linears is not None and _key(name) in self.linears:
            return self.linears[_key(name)](x)
        return _BatchedLinear.apply(x, self._weight(name))

    def _attention(self, x: torch.Tensor, i: int, B: int, T: int) -> torch.Tensor:
        M, H, hd = self.n_members, self.n_heads, self.cfg.head_dim

        def heads(t: torch.Tensor) -> torch.Tensor:  # [M, B*T, D] -> [M*B, H, T, hd], members folded into batch
            return t.view(M * B, T, H, hd).transpose(1, 2)

        q = heads(self._linear(x, f"blocks.{i}.wq"))
        k = heads(self._linear(x, f"blocks.{i}.wk"))
        v = heads(self._linear(x, f"blocks.{i}.wv"))
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        q, k = _apply_rope(_rms_norm(q), cos, sin), _apply_rope(_rms_norm(k), cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(M, B * T, H * hd)
        return self._linear(y, f"blocks.{i}.wo")

    def _mlp(self, x: torch.Tensor, i: int) -> torch.Tensor:
        h = F.gelu(self._linear(x, f"blocks.{i}.fc1"), approximate="tanh")
        return self._linear(h, f"blocks.{i}.fc2")

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Input embeddings [M, B, T, D] of token ids idx [M, B, T]."""
        M, B, T = idx.shape
        table = self._weight("embed_in")  # [M, V, D]: one lookup for all members via offset ids
        offsets = torch.arange(M, device=idx.device).view(M, 1, 1) * self.vocab_size
        return F.embedding(idx + offsets, table.reshape(M * self.vocab_size, -1)).view(M, B, T, self.cfg.width)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Final normalised hidden states [M, B*T, D] from input embeddings x [M, B, T, D]."""
        M, B, T, D = x.shape
        x = x.reshape(M, B * T, D)
        for i in range(self.cfg.depth):
            x = x + self._attention(_rms_norm(x), i, B, T)
            x = x + self._mlp(_rms_norm(x), i)
        return _rms_norm(x)

    def losses(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy per member from input embeddings x [M, B, T, D]: [M].

        Everything after the embedding lookup: what `replication.step` compiles. The lookup's backward
        (a scatter-add where tokens repeat) stays eager, where it is deterministic on CPU; compiled, it
        summed in a varying order and reruns of one spec drifted apart in the last bits.
        """
        M, B, T, _ = x.shape
        logits = self._output(x)  # [M, B*T, V]
        losses = F.cross_entropy(logits.view(M * B * T, -1), targets.reshape(-1), reduction="none")
        return losses.view(M, B * T).mean(dim=1)  # a target of -100 (ignored) adds 0 and still counts in the mean

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        logits = self._linear(self.hidden(x), "embed_out").float()
        if self.cfg.mup_base_width:  # muP's output multiplier 1 / m_width keeps logit updates width-independent
            logits = logits * (self.cfg.mup_base_width / self.cfg.width)
        return logits

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits per member: idx [M, B, T] -> [M, B, T, V] (scoring answers and choices)."""
        M, B, T = idx.shape
        return self._output(self.embed(idx)).view(M, B, T, -1)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy per member: idx, targets [M, B, T] -> [M]."""
        return self.losses(self.embed(idx), targets)
