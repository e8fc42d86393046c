"""Supervised fine-tuning on a task set: completions-only loss, whole-example epochs, and scoring that agrees
with real greedy decoding and with likelihoods computed one sequence at a time."""

import json
import re

import numpy as np
import pytest
import torch

from replication.data import EOS, DataError, load_tokens
from replication.model import GPT
from replication.sft import IGNORE, ExampleSampler, encode_examples, greedy_outputs, task_accuracy
from replication.task_set import load_task_set, task_set_path, write_task_set
from replication.spec import ConfigError, DataConfig, ModelConfig, RunSpec
from replication.train import train_members

DATA = DataConfig(vocab_size=300, seq_len=24, val_tokens=2048)


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer

    path = load_tokens(DATA).tokenizer_path
    return path, Tokenizer.from_file(str(path))


def test_the_loss_falls_on_the_completion_and_end_of_text_only(tokenizer):
    path, tok = tokenizer
    x, y = encode_examples([{"prompt": "Q: 12+9= A:", "completion": " 21"}], path, DATA.seq_len)
    prompt, completion = tok.encode("Q: 12+9= A:").ids, tok.encode(" 21").ids + [tok.token_to_id(EOS)]
    scored = y[0][y[0] != IGNORE].tolist()
    assert scored == completion  # nothing of the prompt, nothing of the padding
    assert x[0, :len(prompt) + len(completion) - 1].tolist() == (prompt + completion)[:-1]
    with pytest.raises(DataError, match="longer than data.seq_len"):
        encode_examples([{"prompt": "word " * 40, "completion": " x"}], path, DATA.seq_len)


def test_every_epoch_visits_every_example_once_in_a_seeded_order():
    x = torch.arange(10).unsqueeze(1)
    sampler = ExampleSampler(x, x, batch_size=4, seed=3)
    seen = torch.cat([sampler.batch(s)[0] for s in range(5)]).flatten().tolist()  # 20 = two epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10)) and seen[:10] != seen[10:]
    assert ExampleSampler(x, x, 4, 3).batch(3)[0].tolist() == sampler.batch(3)[0].tolist()  # a function of (seed, step)
    assert ExampleSampler(x, x, 4, 4).batch(0)[0].tolist() != sampler.batch(0)[0].tolist()


@torch.no_grad()
def _greedy_ids(model, ids: list[int], n: int) -> list[int]:
    """Plain greedy decoding, one token at a time and one sequence alone."""
    ids = list(ids)
    for _ in range(n):
        logits = model.logits(torch.tensor([[ids]]))[0, 0, -1]
        ids.append(int(logits.argmax()))
    return ids[len(ids) - n:]


def _greedy(model, tok, prompt: str, n: int) -> list[int]:
    """What the exact-match scorer reads off one teacher-forced pass."""
    return _greedy_ids(model, tok.encode(prompt).ids, n)


@torch.no_grad()
def _loglik(model, tok, prompt: str, ending: str) -> float:
    p, e = tok.encode(prompt).ids, tok.encode(ending).ids
    ids = torch.tensor([[p + e]])
    logp = torch.log_softmax(model.logits(ids[..., :-1])[0, 0], -1)
    return float(sum(logp[len(p) - 1 + k, t] for k, t in enumerate(e)))


def test_ranking_agrees_with_per_sequence_likelihoods_and_a_wrong_answer_scores_zero(tokenizer):
    path, tok = tokenizer
    model = GPT(ModelConfig(width=32, depth=1, head_dim=16), tok.get_vocab_size(), DATA.seq_len, [0, 1])
    prompts = ["To be or not", "Q: 3+4= A:", "The king is dead", "x=1; y=x; y=?", "Good my lord", "What news"]
    choices = [" the", " a sword", " and", " my lord"]
    ranked = [{"prompt": p, "choices": choices, "correct": i % 4} for i, p in enumerate(prompts)]
    model.active = [1]
    expected = [np.argmax([_loglik(model, tok, r["prompt"], c) for c in choices]) == r["correct"] for r in ranked]
    wrong = [{"prompt": p, "answer": tok.decode(_greedy(model, tok, p, 1)) + "zz"} for p in prompts]  # greedy never says this
    model.active = [0, 1]
    scores = task_accuracy(model, {"eval": {"rank": ranked, "wrong": wrong}}, path, DATA.seq_len, torch.device("cpu"))
    assert len(scores) == 2 and scores[1]["rank"] == pytest.approx(np.mean(expected)) and scores[1]["wrong"] == 0.0


def test_decoding_all_prompts_together_matches_decoding_each_alone_and_patterns_score_the_text(tokenizer):
    path, tok = tokenizer
    model = GPT(ModelConfig(width=32, depth=1, head_dim=16), tok.get_vocab_size(), DATA.seq_len, [0, 1, 2])
    prompts = ["To be", "Q: 3+4= A:", "The king is dead, long live the", "x=1; y=x; y=?", "word " * 30]
    model.active = [1, 2]  # members differ, so each decodes its own continuation
    texts = greedy_outputs(model, prompts, tok, DATA.seq_len, torch.device("cpu"), max_tokens=6)
    eos = tok.token_to_id(EOS)
    for m, member in enumerate((1, 2)):
        model.active = [member]
        for p, text in zip(prompts, texts[m]):
            ids = tok.encode(p).ids[-(DATA.seq_len - 1):]  # an over-long prompt keeps its end
            alone = _greedy_ids(model, ids, min(6, DATA.seq_len - len(ids)))
            alone = alone[:alone.index(eos)] if eos in alone else alone
            assert text == tok.decode(alone), (member, p)
    assert len(tok.encode(prompts[-1]).ids) > DATA.seq_len
    assert texts[0] != texts[1]
    model.active = [1, 2]
    texts = greedy_outputs(model, prompts[:4], tok, DATA.seq_len, torch.device("cpu"))  # as long as the scorer decodes
    items = [{"prompt": p, "pattern": re.escape(t.strip())} for p, t in zip(prompts, texts[0])]
    wrong = [{"prompt": p, "pattern": re.escape(t.strip()) + "zz"} for p, t in zip(prompts, texts[0])]
    scores = task_accuracy(model, {"eval": {"format": items, "wrong": wrong}}, path, DATA.seq_len, torch.device("cpu"))
    assert scores[0] == {"format": 1.0, "wrong": 0.0}
    assert scores[1]["format"] == np.mean([a.strip() == b.strip() for a, b in zip(*texts)])


def test_a_task_set_is_named_by_its_content_and_checked_when_read(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATION_CACHE", str(tmp_path))
    load_task_set.cache_clear()
    train = [{"prompt": "a", "completion": " b"}]
    digest = write_task_set(train, {"t": [{"prompt": "a", "answer": " b"}]})
    assert digest == write_task_set(train, {"t": [{"prompt": "a", "answer": " b"}]})
    assert digest != write_task_set(train, {"t": [{"prompt": "a", "answer": " c"}]})
    assert load_task_set(digest)["train"] == train
    with pytest.raises(ValueError, match="expected prompt, completion"):
        write_task_set([{"prompt": "a", "answer": "b"}], {})
    with pytest.raises(ValueError, match="prompt \\+ choices \\+ correct"):
        write_task_set(train, {"t": [{"prompt": "a", "choices": [" b"]}]})
    with pytest.raises(ValueError, match="item 0 of 't' has a pattern that is not a regular expression"):
        write_task_set(train, {"t": [{"prompt": "a", "pattern": "[b"}]})
    path = task_set_path(digest)
    path.write_text(json.dumps({"train": [], "eval": {}}))
    load_task_set.cache_clear()
    with pytest.raises(DataError, match="does not hash to"):
        load_task_set(digest)
    with pytest.raises(DataError, match="no task set"):
        load_task_set("0" * 16)
    load_task_set.cache_clear()


def test_bad_task_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="tasks: 'gsm8k' is not a task set's hash"):
        RunSpec(tasks="gsm8k").validate()
    with pytest.raises(ConfigError, match="noise_scale_batches with supervised fine-tuning"):
        RunSpec(tasks="0123456789abcdef", noise_scale_batches=4).validate()


@pytest.mark.slow
def test_fine_tuning_on_a_task_set_learns_it_and_greedy_decoding_agrees(tmp_path, monkeypatch, tokenizer):
    _, tok = tokenizer
    monkeypatch.setenv("REPLICATION_CACHE", str(tmp_path / "cache"))
    load_task_set.cache_clear()
    examples = [{"prompt": "x=3; y=x; y=?", "completion": " 3"}] * 8
    digest = write_task_set(examples, {"binding": [{"prompt": "x=3; y=x; y=?", "answer": " 3"}],
                                       "choice": [{"prompt": "x=3; y=x; y=?", "choices": [" 4", " 3"], "correct": 1}],
                                       "digit": [{"prompt": "x=3; y=x; y=?", "pattern": "[0-9]"}]})
    base = RunSpec(model=ModelConfig(width=16, depth=1, head_dim=8), data=DATA, batch_size=2, tokens=2 * 24 * 10,
                   log_every_tokens=48, eval_every_tokens=10**6, compile="false")
    (pre,) = train_members([base], weights_dir=tmp_path)
    specs = [base.replace(init_from=str(tmp_path / f"{pre['id']}.pt"), tasks=digest, tokens=2 * 24 * 40, seed=s,
                          **{"optimizer.lr": 1e-2, "schedule.name": "constant"}) for s in (0, 1)]
    records = train_members(specs, weights_dir=tmp_path)
    for r in records:
        assert r["task_accuracy_before"]["binding"] == 0.0 and set(r["task_accuracy_before"]) == {"binding", "choice", "digit"}
        assert r["task_accuracy"] == {"binding": 1.0, "choice": 1.0, "digit": 1.0}  # one example, memorised
        assert r["val"]["step"][0] == 0 and r["steps"] == 40 and r["epochs"] == pytest.approx(10.0)
    assert records[0]["task_accuracy_before"] == records[1]["task_accuracy_before"]  # one pretrained model, scored once
    model = GPT(base.model, tok.get_vocab_size(), DATA.seq_len, [0])
    model.load_member_state(torch.load(tmp_path / f"{records[0]['id']}.pt"))
    answer = [*tok.encode(" 3").ids, tok.token_to_id(EOS)]
    assert _greedy(model, tok, "x=3; y=x; y=?", len(answer)) == answer
    load_task_set.cache_clear()
