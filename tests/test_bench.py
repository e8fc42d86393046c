import json

from replication import bench


def test_benchmark_measures_and_writes_its_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "COMPILED", {})  # compiled rows: the next test
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


def test_benchmark_times_compiled_steps_against_eager_ones(tmp_path, monkeypatch, capsys):
    # the micro rows, shrunk so the test compiles in seconds: (preset, vocab, seq_len, [(batch, members)])
    monkeypatch.setattr(bench, "COMPILED", {"micro": ("nano", 512, 32, [(1, 1), (1, 2)])})
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--seconds", "0.1", "--out", str(out)]) == 0
    single, ensemble = json.loads(out.read_text())["compiled"]["micro"]
    assert (single["members"], ensemble["members"]) == (1, 2)
    assert single["ran_compiled"] and ensemble["ran_compiled"]
    assert single["compile_s"] > 0 and single["speedup_vs_eager"] > 0
    assert ensemble["speedup_vs_eager_sequential"] > 0 and "speedup_vs_eager_sequential" not in single
    assert "compiled vs eager" in capsys.readouterr().out
