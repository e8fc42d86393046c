"""Supervised fine-tuning on a task set: prompt -> completion examples, and held-out items scored by accuracy.

A task set is plain data, written once as `<cache>/tasks/<hash>.json` and named by the hash of its content
(`RunSpec.tasks`), so the examples a run trained on are part of its identity. It holds:
- `train`: examples {"prompt", "completion"}; a run trains on them with the loss on the completion tokens
  only (and the end-of-text token after them), one example per sequence padded to `seq_len`, in a fresh
  seeded order every epoch;
- `eval`: {task name: items}; an item is either {"prompt", "answer"}, correct when greedy decoding from the
  prompt yields exactly the answer and then stops (read off one teacher-forced pass: greedy decoding
  reproduces the answer exactly when every answer token, and the end-of-text token after it, is the
  model's most likely next token), or {"prompt", "choices", "correct"}, correct when the right choice's
  continuation has the highest log-likelihood (ties count against it), or {"prompt", "pattern"}, correct
  when the greedily decoded output (up to end-of-text, at most `PATTERN_MAX_TOKENS`, surrounding whitespace
  stripped) matches the regular expression in full: IFEval's kind of check, where any output in the
  asked format counts.
The engine knows no task; a paper's topic builds the set (e.g. `replication.papers.smoltulu.tasks`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from replication.data import EOS, DataError

IGNORE = -100  # a target the loss skips (F.cross_entropy's ignore_index): prompt tokens and padding
EVAL_CHUNK_ELEMENTS = 2**25  # logits elements per forward when scoring items
PATTERN_MAX_TOKENS = 24  # the longest output decoded for a pattern item (and never past data.seq_len)


def _tokenizer(path: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def _ids(tok, text: str) -> list[int]:
    return tok.encode(text).ids


def encode_examples(examples: list[dict], tokenizer_path: Path, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets [n, seq_len]: prompt + completion + end-of-text, the loss on the completion and
    the end-of-text token only, padded (inputs with end-of-text, targets ignored)."""
    tok = _tokenizer(tokenizer_path)
    eos = tok.token_to_id(EOS)
    x = torch.full((len(examples), seq_len), eos, dtype=torch.int64)
    y = torch.full((len(examples), seq_len), IGNORE, dtype=torch.int64)
    for i, ex in enumerate(examples):
        prompt, completion = _ids(tok, ex["prompt"]), _ids(tok, ex["completion"]) + [eos]
        ids = prompt + completion
        if len(ids) > seq_len + 1:
            raise DataError(f"tasks: example {i} ({ex['prompt'][:40]!r}...) is {len(ids)} tokens, longer than data.seq_len + 1 = {seq_len + 1}")
        x[i, :len(ids) - 1] = torch.tensor(ids[:-1])
        y[i, len(prompt) - 1:len(ids) - 1] = torch.tensor(completion)
    return x, y


class ExampleSampler:
    """Batches of whole examples, a pure function of (seed, step): each epoch visits every example once in a
    fresh seeded order (the same contract as `data.BatchSampler`, so checkpoints resume exactly)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.n = len(x)
        if self.n < 1:
            raise DataError("tasks: the task set has no training examples")
        self._perms: dict[int, np.ndarray] = {}

    def epochs_for(self, steps: int) -> float:
        return steps * self.batch_size / self.n

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = step * self.batch_size
        idx = np.empty(self.batch_size, dtype=np.int64)
        for j in range(self.batch_size):
            epoch, pos = divmod(first + j, self.n)
            if epoch not in self._perms:
                self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
            idx[j] = self._perms[epoch][pos]
        return self.x[idx], self.y[idx]


def _scored_sequences(items: list[dict], tok, seq_len: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int]]]:
    """Every sequence an item needs scored: (inputs, targets with IGNORE outside the scored part) and, per
    sequence, (item index, choice index or -1, scored length). Right-padded: causal attention never lets
    padding reach the scored positions."""
    eos = tok.token_to_id(EOS)
    rows, owners = [], []
    for i, item in enumerate(items):
        prompt = _ids(tok, item["prompt"])
        endings = [(-1, _ids(tok, item["answer"]) + [eos])] if "answer" in item else [(c, _ids(tok, t)) for c, t in enumerate(item["choices"])]
        for c, ending in endings:
            ids = (prompt + ending)[-(seq_len + 1):]  # an over-long prompt keeps its end
            rows.append((ids, len(ending)))
            owners.append((i, c, len(ending)))
    width = max(len(ids) for ids, _ in rows) - 1
    x = torch.full((len(rows), width), eos, dtype=torch.int64)
    y = torch.full((len(rows), width), IGNORE, dtype=torch.int64)
    for r, (ids, n_end) in enumerate(rows):
        x[r, :len(ids) - 1] = torch.tensor(ids[:-1])
        y[r, len(ids) - 1 - n_end:len(ids) - 1] = torch.tensor(ids[-n_end:])
    return x, y, owners


@torch.no_grad()
def task_accuracy(model, task_set: dict, tokenizer_path: Path, seq_len: int, device: torch.device) -> list[dict[str, float]]:
    """Accuracy of every member of `model` (its `active` ones) on every evaluation task: [{task: accuracy}]."""
    tok = _tokenizer(tokenizer_path)
    members = len(model.active)
    out = [{} for _ in range(members)]
    for task, items in sorted(task_set["eval"].items()):
        correct = np.zeros((members, len(items)), dtype=bool)
        decoded = [i for i, item in enumerate(items) if "pattern" in item]
        scored = [i for i, item in enumerate(items) if "pattern" not in item]
        if scored:
            correct[:, scored] = _scored_correct(model, [items[i] for i in scored], tok, seq_len, device)
        if decoded:
            texts = greedy_outputs(model, [items[i]["prompt"] for i in decoded], tok, seq_len, device)
            correct[:, decoded] = [[re.fullmatch(items[i]["pattern"], text.strip()) is not None for i, text in zip(decoded, row)]
                                   for row in texts]
        for m in range(members):
            out[m][task] = float(correct[m].mean())
    return out


def _scored_correct(model, items: list[dict], tok, seq_len: int, device: torch.device) -> np.ndarray:
    """[members, items]: exact greedy answers and top-ranked choices, read off one teacher-forced pass."""
    members = len(model.active)
    x, y, owners = _scored_sequences(items, tok, seq_len)
    chunk = max(1, EVAL_CHUNK_ELEMENTS // (members * x.shape[1] * model.vocab_size))
    loglik, greedy = [], []
    for start in range(0, len(x), chunk):
        xs = x[start:start + chunk].to(device).expand(members, -1, -1)
        ys = y[start:start + chunk].to(device)
        logp = torch.log_softmax(model.logits(xs).float(), dim=-1)  # [M, n, T, V]
        scored = ys != IGNORE
        picked = logp.gather(-1, ys.clamp(min=0).expand(members, -1, -1).unsqueeze(-1)).squeeze(-1)
        loglik.append((picked * scored).sum(-1).double().cpu())
        hits = (logp.argmax(-1) == ys) | ~scored
        greedy.append(hits.all(-1).cpu())
    loglik, greedy = torch.cat(loglik, dim=1), torch.cat(greedy, dim=1)
    rows_of: dict[int, list[int]] = {}
    for r, (owner, _, _) in enumerate(owners):
        rows_of.setdefault(owner, []).append(r)
    correct = np.zeros((members, len(items)), dtype=bool)
    for m in range(members):
        for i, item in enumerate(items):
            rows = rows_of[i]
            if "answer" in item:
                correct[m, i] = bool(greedy[m, rows[0]])
            else:
                ll = loglik[m, rows].numpy()
                right = item["correct"]
                correct[m, i] = bool(ll[right] > np.delete(ll, right).max())
    return correct


@torch.no_grad()
def greedy_outputs(model, prompts: list[str], tok, seq_len: int, device: torch.device,
                   max_tokens: int = PATTERN_MAX_TOKENS) -> list[list[str]]:
    """Each active member's greedy continuation of every prompt, up to end-of-text or `max_tokens` tokens
    (and never past `seq_len` positions; an over-long prompt keeps its end): [member][prompt] -> text.
    All prompts decode together, right-padded: causal attention keeps the padding out of every row's next token."""
    eos = tok.token_to_id(EOS)
    members = len(model.active)
    ids = [_ids(tok, p)[-(seq_len - 1):] for p in prompts]
    width = min(seq_len, max(map(len, ids)) + max_tokens)
    x = torch.full((len(ids), width), eos, dtype=torch.int64)
    for i, row in enumerate(ids):
        x[i, :len(row)] = torch.tensor(row)
    x = x.to(device).repeat(members, 1, 1)  # members decode apart
    start = torch.tensor([len(row) for row in ids], device=device).repeat(members, 1)
    stop = (start + max_tokens).clamp(max=width)
    end = start.clone()  # the next position each row writes
    done = torch.zeros_like(end, dtype=torch.bool)
    chunk = max(1, EVAL_CHUNK_ELEMENTS // (members * width * model.vocab_size))
    for first in range(0, len(ids), chunk):
        part = slice(first, first + chunk)
        for _ in range(max_tokens):
            live = ~done[:, part] & (end[:, part] < stop[:, part])
            if not live.any():
                break
            logits = model.logits(x[:, part])  # [M, n, width, V]
            last = (end[:, part] - 1)[..., None, None].expand(-1, -1, 1, logits.shape[-1])
            token = logits.gather(2, last).squeeze(2).argmax(-1)  # [M, n]
            at = end[:, part].clamp(max=width - 1).unsqueeze(-1)
            x[:, part].scatter_(2, at, torch.where(live, token, x[:, part].gather(2, at).squeeze(-1)).unsqueeze(-1))
            done[:, part] |= live & (token == eos)
            end[:, part] += live.long()
    out = []
    for m in range(members):
        row = []
        for i in range(len(ids)):
            tokens = x[m, i, start[m, i]:end[m, i]].tolist()
            row.append(tok.decode(tokens[:-1] if done[m, i] else tokens))
        out.append(row)
    return out
