"""The pipeline end to end: in a temporary copy, `python -m replication sweep` trains every run an
experiment declares, then papermill runs its notebook on the smoke profile, which must find nothing left
to train (its metrics' timing block counts the runs it trained)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import papermill
import pytest
import yaml

from replication.papers import topic

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


def _stage_outs(stage: str) -> list[str]:
    outs = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["outs"]
    return [next(iter(o)) if isinstance(o, dict) else o for o in outs]


@pytest.fixture(scope="module")
def workbook(tmp_path_factory):
    """A copy of the workbook with no results, figures or executed notebooks."""
    root = tmp_path_factory.mktemp("workbook")
    for name in ("params.yaml", "dvc.yaml", "README.md"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns("executed"))
    (root / "notebooks" / "executed").mkdir()
    return root


def _stage_metrics(stage: str) -> list[str]:
    metrics = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage].get("metrics", [])
    return [next(iter(m)) if isinstance(m, dict) else m for m in metrics]


@pytest.mark.parametrize("name", NOTEBOOKS)  # sorted: the report runs after every notebook whose metrics it reads
def test_the_cli_sweep_leaves_the_notebook_nothing_to_train(workbook, name):
    if topic(name) is not None or name in yaml.safe_load((ROOT / "params.yaml").read_text())["experiments"]:  # not the report
        sweep = subprocess.run([sys.executable, "-m", "replication", "sweep", name, "--profile", "smoke"], cwd=workbook,
                               capture_output=True, text=True)
        assert sweep.returncode == 0, sweep.stderr[-2000:]
    out = workbook / "notebooks" / "executed" / f"{name}.ipynb"
    papermill.execute_notebook(
        str(workbook / "notebooks" / f"{name}.ipynb"),
        str(out),
        parameters={"profile": "smoke"},
        kernel_name="python3",
        cwd=str(workbook),
        progress_bar=False,
    )
    for path in _stage_outs(name):
        path = path.replace("${profile}", "smoke")
        target = workbook / path
        assert target.exists(), f"stage {name} did not write {path}"
        if path.endswith(".png"):
            assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 1000
    (metrics,) = _stage_metrics(name)
    timing = json.loads((workbook / metrics).read_text())["timing"]
    assert timing["runs_trained"] == 0, f"{name}: the notebook trained {timing['runs_trained']} runs the sweep did not declare"


def test_every_notebook_is_a_dvc_stage():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in NOTEBOOKS:
        assert name in stages and f"notebooks/{name}.ipynb" in stages[name]["deps"]
