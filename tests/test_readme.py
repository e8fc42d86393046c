"""The README's stage times and benchmark table come from the metrics files, never typed by hand."""

import json
from pathlib import Path

import pytest

from replication import notebook, readme, sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(readme.BLOCKS))
def test_readme_tables_match_the_metrics_files(name):
    assert readme.block(name, ROOT) in (ROOT / "README.md").read_text(), (
        f"README.md's {name} table is stale: run `python -m replication.readme`"
    )


def test_every_notebook_stage_records_its_wall_time():
    stages = {r["stage"] for r in readme.stage_timings(ROOT)}
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert notebooks <= stages, f"no timing block in the metrics of {sorted(notebooks - stages)}"


def test_a_run_that_trains_records_its_time_and_a_rerun_keeps_it(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    notebook._clock.clear()
    notebook._clock.update(start=0.0, trained=sweep.runs_trained(), profile="smoke")
    monkeypatch.setattr(sweep, "_runs_trained", sweep.runs_trained() + 3)
    notebook.write_metrics(path, {"x": 1})
    first = json.loads(path.read_text())["timing"]
    assert first["runs_trained"] == 3 and first["wall_s"] > 0 and first["profile"] == "smoke"
    notebook._clock.update(trained=sweep.runs_trained())  # a re-execution that reads every record back
    notebook.write_metrics(path, {"x": 1})
    assert json.loads(path.read_text())["timing"] == first
