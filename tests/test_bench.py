import json

from replication import bench


def test_benchmark_measures_and_writes_its_figures(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--seconds", "0.1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["matmul_peak_gflops"] > 0
    rows = result["models"]["cpu"]
    singles = [r for r in rows if r["members"] == 1]
    ensembles = [r for r in rows if r["members"] > 1]
    assert [r["batch_size"] for r in singles] == [1, 4]
    assert {(r["batch_size"], r["members"]) for r in ensembles} == {(1, 4), (1, 8), (4, 4), (4, 8)}
    assert all(0 < r["mfu"] and r["speedup_vs_sequential"] > 0 for r in ensembles)
    assert all("fraction_of_single_run_at_batch_BxM" in r for r in ensembles)
    printed = capsys.readouterr().out
    assert "matmul peak" in printed and "MFU" in printed
