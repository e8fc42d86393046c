"""zhang_local_cbs: the local CBS rule, and chains of runs that start from other runs' weights, resumed
after the weights (a cache, never committed) are gone."""

import json
import shutil

import pandas as pd
import pytest

from replication.params import experiment, load_params
from replication.experiments import declared_runs, sweep
from replication.papers.zhang import local_cbs
from replication.store import Store


def test_the_local_cbs_is_the_largest_batch_size_within_the_tolerance():
    branches = pd.DataFrame({"branch_tokens": [1] * 6 + [2] * 6, "batch_size": [2, 2, 4, 4, 8, 8] * 2, "seed": [0, 1] * 6,
                             "final_val_loss": [5.0, 5.02, 5.01, 5.03, 5.2, 5.3, 4.0, 4.0, 4.01, 4.0, 4.015, 4.02]})
    cbs = local_cbs.local_cbs(branches, 0.02, 2)
    assert list(cbs["local_cbs"]) == [4, 8]


@pytest.mark.slow
def test_a_chain_resumes_without_its_weights_and_gives_the_same_record(tmp_path):
    params = load_params("params.yaml")
    exp = experiment(params, "zhang_local_cbs", "smoke")
    sweep("zhang_local_cbs", params, "smoke", results_root=tmp_path, progress=False, workers=1)
    store = Store(tmp_path, "smoke", "zhang_local_cbs")
    specs = declared_runs(exp, params, tmp_path)
    assert all(store.read(s.hash) for s in specs)
    last = [s for s in specs if s.init_from][-1]  # the last stage of a chain
    before = store.read(last.hash)["val"]["loss"]
    shutil.rmtree(store.root / "_weights")
    store.path(last.hash).unlink()
    sweep("zhang_local_cbs", params, "smoke", results_root=tmp_path, progress=False, workers=1)
    assert store.read(last.hash)["val"]["loss"] == before
    arms = local_cbs.arm_table(exp, tmp_path)
    assert set(arms["arm"]) == {"constant", "warmup"} and len(arms) == 2 * len(exp.settings["seeds"])
