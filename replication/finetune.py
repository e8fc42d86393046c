"""Fine-tuning from a pretrained run: its weights on disk, and LoRA adapters through `peft`.

A pretraining run's final weights are saved as `<store>/_weights/<run id>.pt`; a fine-tuning RunSpec
names that file in `init_from`, so the pretraining spec's hash is part of every fine-tuning run's
identity. Weight files are a cache, not a result: they are git-ignored and retrained on demand
(`runner.ensure_pretrained`), while the records of both stages are kept.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn

from replication.model import GPT, HIDDEN_MATRICES
from replication.store import UnreadableWeights, quarantine, save_torch, short_error

# LoRA adapts every matrix the forward pass multiplies by: the block matrices and the output head
# (Marek et al. adapt all non-norm layers; the input embedding, a lookup, stays frozen here).
LORA_OUTPUT_HEAD = "embed_out"


def save_weights(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a member's weights (on the CPU, so any device can load them), atomically."""
    return save_torch({name: t.cpu() for name, t in state.items()}, path)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"init_from: no pretrained weights at {str(path)!r}; they are written by the pretraining run "
            "(a sweep of its experiment trains it when the file is missing)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # tensors only: loading cannot run code
    except Exception as err:  # noqa: BLE001 (torch raises many types for a bad file)
        raise UnreadableWeights(f"init_from: the weights file {str(path)!r} cannot be read ({short_error(err)})") from None


def usable_weights(path: str | Path) -> bool:
    """Whether a cached weights file exists and loads. One that does not load is moved to `_quarantine/` beside
    it with a warning naming it, so the caller remakes it instead of failing on it at every later sweep."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        load_weights(path)
    except UnreadableWeights as err:
        moved = quarantine(path)
        warnings.warn(f"{err}; moved to {moved}, and the weights are made again", stacklevel=2)
        return False
    return True


def lora_targets(depth: int) -> tuple[str, ...]:
    return (*(f"blocks.{i}.{m}" for i in range(depth) for m in HIDDEN_MATRICES), LORA_OUTPUT_HEAD)


def attach_lora(model: GPT, rank: int, alpha: float | None) -> nn.Module:
    """Freeze the (single-member) model and inject peft LoRA adapters into its matrices; return a module
    whose parameters are exactly the adapters' (what the optimizer trains)."""
    from peft import LoraConfig, inject_adapter_in_model  # imported here: peft takes seconds to import

    model.use_linear_modules(lora_targets(model.cfg.depth))
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, lora_dropout=0.0, target_modules=list(model.linears.keys()))
    inject_adapter_in_model(config, model.linears)  # freezes the base weights of the wrapped modules
    for p in model.parameters():
        p.requires_grad_(False)
    adapters = nn.ParameterList()
    for name, p in model.linears.named_parameters():
        if ".lora_" in name:
            p.requires_grad_(True)
            adapters.append(p)
    return adapters
