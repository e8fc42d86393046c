import pytest

from replication.spec import run_spec_from_dict

TINY = {
    "data": {"corpus": "shakespeare", "vocab_size": 300, "seq_len": 16, "val_tokens": 1024},
    "model": {"width": 32, "depth": 1, "head_dim": 16},
    "optimizer": {"name": "adamw", "lr": 3e-3},
    "batch_size": 4,
    "tokens": 4 * 16 * 20,
    "log_every_tokens": 4 * 16 * 5,
    "eval_every_tokens": 4 * 16 * 10,
    "device": "cpu",
}


@pytest.fixture(scope="session", autouse=True)
def _token_cache(tmp_path_factory):
    """One tokenizer / token cache for the whole session, outside the repository."""
    mp = pytest.MonkeyPatch()
    mp.setenv("REPLICATION_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture
def tiny_spec():
    """A run that trains in well under a second on CPU."""
    return run_spec_from_dict(TINY)
