import json

import numpy as np
import pytest

from replication.spec import DataConfig
from replication.data import (
    BatchSampler,
    DataError,
    load_documents,
    load_tokens,
    shakespeare_plays,
    split_documents,
    strip_markdown,
    validation_windows,
)


def test_markdown_markup_is_stripped():
    text = "# Macbeth\n\n## ACT I\n\n_Thunder. Enter Witches_\n\n**First Witch**  \nWhen shall we three meet again  \n"
    assert strip_markdown(text) == "Macbeth\n\nACT I\n\nThunder. Enter Witches\n\nFirst Witch\nWhen shall we three meet again\n"


def test_shakespeare_splits_by_whole_plays_without_leakage():
    plays = shakespeare_plays()
    assert len(plays) == 38 and "tragedies/macbeth" in plays
    train, val = split_documents(plays, 0.1)
    assert len(val) == 4 and len(train) == 34
    assert not set(train) & set(val)
    assert split_documents(plays, 0.1) == (train, val)  # deterministic


def test_local_file_and_folder(tmp_path):
    (tmp_path / "a.txt").write_text("alpha beta\n" * 50)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("gamma delta\n" * 50)
    assert list(load_documents(DataConfig(corpus=str(tmp_path)))) == ["a.txt", "sub/b.md"]
    parts = load_documents(DataConfig(corpus=str(tmp_path / "a.txt")))
    assert len(parts) == 20 and "".join(parts.values()) == "alpha beta\n" * 50


def test_a_single_line_text_file_is_split_by_position(tmp_path):
    text = " ".join(f"word{i}" for i in range(2000))  # one line, no line breaks at all
    (tmp_path / "one_line.txt").write_text(text)
    parts = load_documents(DataConfig(corpus=str(tmp_path / "one_line.txt")))
    assert len(parts) == 20 and "".join(parts.values()) == text
    assert all(p.endswith(" ") for p in list(parts.values())[:-1])  # cut between words
    train, val = split_documents(parts, 0.1)
    assert len(val) == 2 and len(train) == 18


def test_missing_and_empty_corpora_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="corpus path '.*nowhere' does not exist"):
        load_documents(DataConfig(corpus=str(tmp_path / "nowhere")))
    (tmp_path / "empty.txt").write_text("   \n")
    with pytest.raises(DataError, match="is empty"):
        load_documents(DataConfig(corpus=str(tmp_path / "empty.txt")))
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="holds no text files"):
        load_documents(DataConfig(corpus=str(tmp_path / "folder")))


def test_hub_datasets_go_through_datasets(tmp_path):
    folder = tmp_path / "tiny_ds"
    folder.mkdir()
    rows = [{"text": f"document number {i} " * 20, "id": i} for i in range(30)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    docs = load_documents(DataConfig(corpus=f"hf:{folder}", max_documents=25))
    assert len(docs) == 25 and next(iter(docs.values())).startswith("document number 0")
    with pytest.raises(DataError, match="no column 'body'"):
        load_documents(DataConfig(corpus=f"hf:{folder}", text_column="body"))


def test_unloadable_dataset_says_the_network_is_needed():
    with pytest.raises(DataError, match="need a network connection.*local text file"):
        load_documents(DataConfig(corpus="hf:no-such-user/no-such-dataset-xyz"))


def test_a_hub_corpus_fails_at_once_when_offline_is_declared(monkeypatch):
    import socket

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("probed the network although offline is declared"))
    with pytest.raises(DataError, match="HF_HUB_OFFLINE is set.*need a network connection"):
        load_documents(DataConfig(corpus="hf:some-user/some-dataset"))


def test_tokens_are_cached_by_corpus_and_vocab(tmp_path):
    (tmp_path / "a.txt").write_text("to be or not to be, that is the question\n" * 200)
    cfg = DataConfig(corpus=str(tmp_path / "a.txt"), vocab_size=300)
    first = load_tokens(cfg)
    assert first.vocab_size <= 300 and first.tokenizer_path.exists()  # a tiny corpus cannot fill the vocabulary
    mtime = first.tokenizer_path.stat().st_mtime_ns
    from replication import data

    data._load_tokens_cached.cache_clear()
    again = load_tokens(cfg)
    assert again.tokenizer_path.stat().st_mtime_ns == mtime
    assert np.array_equal(first.train, again.train)
    assert load_tokens(DataConfig(corpus=cfg.corpus, vocab_size=320)).tokenizer_path != first.tokenizer_path


def test_batches_are_deterministic_contiguous_windows():
    tokens = np.arange(1000, dtype=np.uint16)
    sampler = BatchSampler(tokens, batch_size=4, seq_len=10, seed=0)
    x, y = sampler.batch(3)
    assert x.shape == y.shape == (4, 10)
    assert (y[:, :-1] == x[:, 1:]).all() and ((x[:, 1:] - x[:, :-1]) == 1).all()
    assert (BatchSampler(tokens, 4, 10, 0).batch(3)[0] == x).all()
    assert not (BatchSampler(tokens, 4, 10, 1).batch(3)[0] == x).all()
    # one epoch visits every window exactly once
    seen = np.concatenate([sampler.window_indices(s) for s in range(sampler.n_windows // 4)])
    assert len(set(seen.tolist())) == len(seen)


def test_validation_set_is_fixed():
    tokens = np.arange(500, dtype=np.uint16)
    v = validation_windows(tokens, 10, 100)
    assert v.shape == (10, 11) and v[1, 0] == 10
    with pytest.raises(DataError, match="fewer than one sequence"):
        validation_windows(tokens[:5], 10, 100)


@pytest.mark.slow
def test_a_domain_selects_whole_documents_and_shares_the_tokenizer():
    from replication.data import in_domain

    names = ["comedies/a", "histories/b", "histories/c", "tragedies/d"]
    assert in_domain(names, "histories/*") == ["histories/b", "histories/c"]
    assert in_domain(names, "!histories/*") == ["comedies/a", "tragedies/d"]
    assert in_domain(names, None) == names
    cfg = DataConfig(vocab_size=300, seq_len=16, val_tokens=1024)
    whole = load_tokens(cfg)
    histories = load_tokens(DataConfig(vocab_size=300, seq_len=16, val_tokens=1024, domain="histories/*"))
    rest = load_tokens(DataConfig(vocab_size=300, seq_len=16, val_tokens=1024, domain="!histories/*"))
    assert histories.tokenizer_path == whole.tokenizer_path == rest.tokenizer_path
    assert len(histories.train) + len(rest.train) == len(whole.train)
    assert len(histories.val) + len(rest.val) == len(whole.val)


def test_a_domain_matching_nothing_is_a_clear_error():
    with pytest.raises(DataError, match="data.domain: 'poems/\\*' matches none of the 34 training documents"):
        load_tokens(DataConfig(vocab_size=300, seq_len=16, val_tokens=1024, domain="poems/*"))


def test_a_hub_corpus_is_read_once_then_loads_from_its_token_arrays_offline(tmp_path):
    from replication import data

    folder = tmp_path / "tiny_ds"
    folder.mkdir()
    rows = [{"text": f"document number {i} of a streamed corpus " * 20} for i in range(30)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = DataConfig(corpus=f"hf:{folder}", vocab_size=300, max_documents=30)
    first = load_tokens(cfg)
    data._load_tokens_cached.cache_clear()
    (folder / "train.jsonl").unlink()  # the dataset is gone (offline): the arrays built from it still load
    with data.offline():
        again = load_tokens(cfg)
    assert isinstance(again.train, np.memmap) and np.array_equal(first.train, again.train)
    with data.offline(), pytest.raises(DataError, match="does not touch the network"):
        load_tokens(DataConfig(corpus=f"hf:{folder}", vocab_size=320))  # never built: it would have to be read
