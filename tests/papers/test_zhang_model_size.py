"""zhang_model_size: B* against model size at one shared token budget."""

import dataclasses

import pytest

from replication.papers.zhang import model_size
from tests.papers.zhang_protocol import zhang_experiment


def test_model_size_needs_one_budget():
    exp = zhang_experiment("zhang_model_size")
    models = {k: {**v, "reference_tokens": 1000 * (i + 1)} for i, (k, v) in enumerate(exp.settings["models"].items())}
    with pytest.raises(ValueError, match="share one reference_tokens"):
        model_size.runs(dataclasses.replace(exp, settings={**exp.settings, "models": models}), {}, "unused")


@pytest.mark.slow
def test_a_noise_scale_that_does_not_depend_on_the_model_gives_a_flat_critical_batch_size(tmp_path):
    from replication.papers.zhang import protocol
    from tests.papers.zhang_protocol import fill

    exp = zhang_experiment("zhang_model_size")
    d = protocol.design(exp)
    fill(exp, tmp_path, model_size)
    m = protocol.measure(exp, d, tmp_path)
    claims, exponent = model_size.claims(m, exp, d)  # the synthetic B_noise is the same for every model
    assert claims[0]["id"] == "zhang.model_size.cbs_flat_in_model_size"
    assert abs(exponent["estimate"]) < 0.15, exponent
