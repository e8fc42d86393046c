"""zhang_data_size: B* against the data budget, read from one set of runs towards several targets."""

import pytest

from replication.papers.zhang import data_size, protocol
from replication.store import Store
from tests.papers.zhang_protocol import fake_record, zhang_experiment


@pytest.mark.slow
def test_data_size_reads_every_target_from_the_same_runs(tmp_path):
    exp = zhang_experiment("zhang_data_size")
    d = protocol.design(exp)
    store = Store(tmp_path, exp.profile, exp.name)
    while missing := [s for s in data_size.runs(exp, {}, tmp_path) if store.read(s.hash) is None]:
        for s in missing:
            store.write(fake_record(s))
    m = protocol.measure(exp, d, tmp_path)
    assert sorted(m.steps["target_multiple"].unique()) == list(d.target_multiples)
    b_opt = data_size.optimal_batch_sizes(m, d)
    assert len(b_opt) == len(d.target_multiples)
    claims, exponent = data_size.claims(m, exp, d)
    assert claims[0]["id"] == "zhang.data_size.cbs_grows_with_data" and "estimate" in exponent
