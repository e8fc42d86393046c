import json

import pytest

from replication import bench


@pytest.mark.slow
def test_benchmark_measures_and_writes_its_figures(tmp_path, monkeypatch, capsys):
    # one quick run covers every section, on a small model; the compiled rows are shrunk so it compiles in seconds:
    # (preset, vocab, seq_len, [(batch, members)])
    monkeypatch.setattr(bench, "MODELS", {"cpu": ("nano", 512, 32)})
    monkeypatch.setattr(bench, "COMPILED", {"micro": ("nano", 512, 32, [(1, 1), (1, 2)])})
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--seconds", "0.1", "--repeats", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["matmul_peak_measurements"]) == 3 and result["matmul_peak_gflops"] == max(result["matmul_peak_measurements"]) > 0
    rows = result["models"]["cpu"]
    singles = [r for r in rows if r["members"] == 1]
    ensembles = [r for r in rows if r["members"] > 1]
    assert [r["batch_size"] for r in singles] == [1, 4]
    assert {(r["batch_size"], r["members"]) for r in ensembles} == {(1, 4), (1, 8), (4, 4), (4, 8)}
    assert all(0 < r["mfu"] and r["speedup_vs_sequential"] > 0 for r in ensembles)
    for r in ensembles:  # a ratio is the median of the repeats, shown with their range
        low, high = r["speedup_vs_sequential_range"]
        assert low <= r["speedup_vs_sequential"] <= high
        assert "fraction_of_single_run_at_batch_BxM" in r
    peak = result["matmul_peak_gflops"]
    assert all(("mfu_failed" in r) == (r["model_gflops"] / peak > 1) for r in rows)  # flagged exactly when impossible

    single, ensemble = result["compiled"]["micro"]  # compiled steps timed against eager ones
    assert (single["members"], ensemble["members"]) == (1, 2)
    assert single["ran_compiled"] and ensemble["ran_compiled"]
    assert single["compile_s"] > 0 and single["speedup_vs_eager"] > 0
    assert single["speedup_vs_eager_range"][0] <= single["speedup_vs_eager"] <= single["speedup_vs_eager_range"][1]
    assert ensemble["speedup_vs_eager_sequential"] > 0 and "speedup_vs_eager_sequential" not in single
    printed = capsys.readouterr().out
    assert "matmul peak" in printed and "MFU" in printed and "compiled vs eager" in printed and "interleaved repeats" in printed


def test_an_mfu_above_100_percent_is_a_failed_measurement_not_a_result():
    result = {"matmul_peak_gflops": 100.0, "compiled": {},
              "models": {"cpu": [{"batch_size": 16, "members": 1, "model_gflops": 121.5}, {"batch_size": 1, "members": 1, "model_gflops": 20.0}]}}
    failed = bench._utilisation(result)
    impossible, fine = result["models"]["cpu"]
    assert impossible["mfu_failed"] and "mfu_failed" not in fine and fine["mfu"] == 0.2
    assert failed == ["cpu B=16 M=1: mfu 122% > 100 % of the measured peak: a failed measurement, not a result"]
    assert bench._mfu(impossible, "mfu") == "failed"
