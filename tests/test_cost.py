"""GPU cost estimates from the measured benchmark, and the tokens stage's manifest."""

import json

import numpy as np
import pytest

from replication import cost
from replication.sizes import flops_per_token
from replication.params import load_params
from replication.spec import ConfigError, DataConfig, ModelConfig, RunSpec
from replication.tokens import data_configs, write_manifest

TP = cost.Throughput("test GPU", peak_gflops=1000.0, single=((512, 0.01), (32768, 0.2)), ensemble={1: ((4, 0.5), (32, 0.25))})
SPEC = RunSpec(model=ModelConfig(width=64, depth=2, head_dim=32), data=DataConfig(vocab_size=512, seq_len=512, val_tokens=1024),
               batch_size=1, tokens=10 * 512, eval_every_tokens=10 * 512)


def test_utilisation_is_interpolated_in_log_space_latency_bound_below_and_flat_above():
    assert TP.mfu(1, 1, 512) == pytest.approx(0.01)
    assert TP.mfu(1, 1, 128) == pytest.approx(0.0025)  # a smaller step takes as long: a quarter of the utilisation
    assert TP.mfu(8, 1, 512) == pytest.approx(np.exp(np.interp(np.log(4096), np.log([512, 32768]), np.log([0.01, 0.2]))))
    assert TP.mfu(1024, 1, 512) == pytest.approx(0.2)  # past the largest measured step: no extrapolation upwards
    assert TP.mfu(1, 4, 512) == pytest.approx(0.5 * TP.mfu(4, 1, 512))  # an ensemble: its measured share of one run


def test_a_group_costs_its_flops_at_the_measured_utilisation():
    fpt = flops_per_token(SPEC.model, 512, 512)
    evals = 2  # every 10 x 512 tokens, and at the start
    expected = fpt * (SPEC.tokens + cost.EVAL_FLOPS_SHARE * evals * 1024) / (1000e9 * 0.01)
    assert cost.group_seconds([SPEC], TP) == pytest.approx(expected)
    four = [SPEC.replace(seed=s) for s in range(4)]
    assert cost.groups(four) == [four]  # one ensemble
    assert cost.seconds(four, TP) == pytest.approx(4 * expected / 0.5 / (TP.mfu(4, 1, 512) / 0.01))


def test_the_benchmark_file_is_read_and_a_wrong_one_is_named(tmp_path):
    tp = cost.load_throughput()  # the committed H100 benchmark
    assert "H100" in tp.gpu and tp.single[0][1] < tp.single[-1][1]
    bad = tmp_path / "bench.json"
    bad.write_text(json.dumps({"machine": {}}))
    with pytest.raises(ConfigError, match="not a GPU benchmark"):
        cost.load_throughput(bad)
    with pytest.raises(FileNotFoundError, match="no GPU benchmark"):
        cost.load_throughput(tmp_path / "missing.json")


@pytest.fixture(scope="module")
def gpu_costs():
    return {r["stage"]: r for r in cost.stage_costs(load_params(), "gpu")}


@pytest.mark.slow
def test_every_gpu_stage_is_priced_or_says_why(gpu_costs):
    assert set(gpu_costs) == set(load_params()["experiments"])
    for name, r in gpu_costs.items():
        if r["first_round_from"] == "needs the corpus":  # sized from a fine-tuning mixture of FineWeb-Edu
            assert r["estimate_gpu_min"] is None and name == "smoltulu_ratio"
        elif r["first_round_runs"]:
            assert r["estimate_gpu_min"] >= r["first_round_gpu_min"] > 0
    assert gpu_costs["quickstart"]["estimate_gpu_min"] < 10
    table = cost.format_costs(list(gpu_costs.values()))
    assert "| quickstart | 2 |" in table and "1 not priced" in table


def test_the_paper_profile_prices_only_the_recorded_configurations_in_gpu_hours():
    params = load_params()
    rows = cost.stage_costs(params, "paper")
    recorded = {n for n, e in params["experiments"].items() if "paper" in (e.get("profiles") or {})}
    assert {r["stage"] for r in rows} == recorded and "zhang_steps_to_target" in recorded
    assert all(r["estimate_gpu_min"] > 60 * 100 for r in rows)  # every paper figure costs hundreds of GPU-hours
    assert "GPU-h" in cost.format_costs(rows, hours=True)


@pytest.mark.slow
def test_the_tokens_stage_builds_each_corpus_once_and_its_manifest_is_reproducible(tmp_path, monkeypatch):
    monkeypatch.setenv("REPLICATION_CACHE", str(tmp_path / "cache"))
    params = load_params()
    configs = data_configs(params, "smoke")
    assert len(configs) == len({(c.corpus, c.vocab_size, c.domain) for c in configs}) >= 2  # the fine-tuning domains too
    first = json.loads(write_manifest(params, "smoke", tmp_path / "a.json", progress=False).read_text())
    again = json.loads(write_manifest(params, "smoke", tmp_path / "b.json", progress=False).read_text())
    assert first == again and first["profile"] == "smoke"
    assert all(c["train_tokens"] > c["val_tokens"] > 0 for c in first["corpora"])
    from replication.data import load_tokens

    data = load_tokens(configs[0])
    assert isinstance(data.train, np.memmap)  # memory-mapped: worker processes share the pages
