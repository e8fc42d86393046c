"""Shared claim helpers."""

import pandas as pd

from replication.claims import few_steps_caveat


def test_few_steps_caveat_names_the_starved_batch_sizes():
    runs = pd.DataFrame({"batch_size": [1, 64, 256], "steps": [1562, 24, 6]})
    text = few_steps_caveat(runs)
    assert "B=64 trains for 24" in text and "B=256 trains for 6" in text and "B=1 " not in text
    assert few_steps_caveat(runs.assign(steps=[5000, 500, 200])) is None
