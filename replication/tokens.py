"""The `tokens` stage: build every token array a profile's experiments read, once, before any training.

Each corpus is tokenized into `data.cache_dir()` (memory-mapped `.npy` files that every worker process
shares). Building them up front means parallel workers or Ray tasks never race to tokenize the same
corpus, and a GPU session spends its time training. The manifest it writes (one entry per corpus,
vocabulary and domain, with the arrays' sizes and content hashes) is what the training stages depend on,
so a change in tokenization shows up in `dvc status`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from replication.data import load_tokens
from replication.params import experiment
from replication.spec import ConfigError, DataConfig


def data_configs(params: dict, profile: str) -> list[DataConfig]:
    """The distinct corpora (corpus, vocabulary, domain, ...) of every experiment's runs on `profile`,
    including the pretraining run a fine-tuning experiment names in its settings."""
    seen: dict[DataConfig, DataConfig] = {}
    for name in params.get("experiments", {}):
        exp = experiment(params, name, profile)
        specs = exp.expand()
        if isinstance(exp.settings.get("pretrain"), dict):
            specs.append(exp.derived(exp.settings["pretrain"], "settings.pretrain"))
        for s in specs:
            seen.setdefault(dataclasses.replace(s.data, seq_len=1, val_tokens=1), s.data)  # neither changes the arrays
    return list(seen.values())


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def build(params: dict, profile: str, progress: bool = True) -> dict:
    """Tokenize (or find cached) every corpus of `profile`; return the manifest."""
    from tqdm.auto import tqdm

    entries = []
    for cfg in tqdm(data_configs(params, profile), desc=f"tokens ({profile})", disable=not progress):
        data = load_tokens(cfg)
        entries.append({"corpus": cfg.corpus, "hf_config": cfg.hf_config, "vocab_size": cfg.vocab_size, "domain": cfg.domain,
                        "max_documents": cfg.max_documents, "val_fraction": cfg.val_fraction,
                        "train_tokens": int(data.train.size), "val_tokens": int(data.val.size),
                        "train_sha256": _digest(data.train), "val_sha256": _digest(data.val)})
    if not entries:
        raise ConfigError(f"profile {profile!r}: no experiment declares a corpus")
    return {"profile": profile, "corpora": sorted(entries, key=lambda e: json.dumps(e, sort_keys=True))}


def write_manifest(params: dict, profile: str, out: str | Path, progress: bool = True) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(build(params, profile, progress), indent=1, sort_keys=True) + "\n")
    return out
