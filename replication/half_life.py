"""Marek et al.'s rule: an EMA decay given as a half-life in tokens, so its memory is the same number of
tokens at every batch size. Plain arithmetic, shared by the optimizer (which resolves betas per batch
size) and the analyses (which read half-lives off runs) without importing torch."""

from __future__ import annotations

import math


def beta_from_half_life(half_life_tokens: float, tokens_per_step: int) -> float:
    """beta = 0.5 ** (tokens_per_step / half_life_tokens): a decay whose memory halves every half_life_tokens."""
    return 0.5 ** (tokens_per_step / half_life_tokens)


def half_life_from_beta(beta: float, tokens_per_step: int) -> float:
    """Inverse of `beta_from_half_life`: tokens_per_step * ln(0.5) / ln(beta) (0 for beta = 0)."""
    if beta == 0:
        return 0.0
    return tokens_per_step * math.log(0.5) / math.log(beta)
