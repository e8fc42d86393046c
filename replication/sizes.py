"""Model size arithmetic from a ModelConfig alone: parameter counts and training FLOPs per token.

Read by cost estimates, captions and the paper layer, which must not build a model (or import torch) to
know how big one is; `replication.model` builds the model these numbers describe.
"""

from __future__ import annotations

from replication.spec import ModelConfig


def count_parameters(cfg: ModelConfig, vocab_size: int) -> dict[str, int]:
    """Parameter counts: 12 D^2 per block (4 D^2 attention + 8 D^2 MLP) plus two V x D embeddings."""
    non_embedding = 12 * cfg.depth * cfg.width**2
    embedding = 2 * vocab_size * cfg.width
    return {"non_embedding": non_embedding, "embedding": embedding, "total": non_embedding + embedding}


def flops_per_token(cfg: ModelConfig, vocab_size: int, seq_len: int) -> int:
    """Training FLOPs per token: 6 N (N = non-embedding params + the output projection) + attention.

    Attention scores and the weighted sum cost 2 * 2 * T * D per layer forward, times 3 for forward
    + backward: 12 L T D (the PaLM convention, causal masking not discounted).
    """
    n_matmul = 12 * cfg.depth * cfg.width**2 + vocab_size * cfg.width
    return 6 * n_matmul + 12 * cfg.depth * seq_len * cfg.width
