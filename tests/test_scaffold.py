"""`python -m replication new`: the files of a new experiment, written into a copy of the workbook, run as
they are: the sweep trains, the notebook executes and writes its figure and metrics, the test passes, and
dvc.yaml's code deps stay generated."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _workbook(tmp_path: Path) -> Path:
    copy = tmp_path / "workbook"
    copy.mkdir()
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, copy / name)
    shutil.copytree(ROOT / "replication", copy / "replication", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "notebooks", copy / "notebooks", ignore=shutil.ignore_patterns("executed"))
    (copy / "tests" / "papers").mkdir(parents=True)
    return copy


def _python(copy: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(copy)}  # the copy's replication package, with the new topic in it
    return subprocess.run([sys.executable, *args], cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.notebooks
def test_a_new_experiment_runs_end_to_end(tmp_path):
    copy = _workbook(tmp_path)
    made = _python(copy, "-m", "replication", "new", "acme_lrscan")
    assert made.returncode == 0, made.stderr
    for path in ("replication/papers/acme/lrscan.py", "replication/papers/acme/ledger.yaml", "notebooks/acme_lrscan.ipynb",
                 "tests/papers/test_acme_lrscan.py"):
        assert (copy / path).is_file(), path
    stages = yaml.safe_load((copy / "dvc.yaml").read_text())["stages"]
    assert "replication/papers/acme/lrscan.py" in stages["acme_lrscan"]["deps"]
    assert {"metrics/acme", "figures/acme"} <= set(stages["report"]["deps"])
    assert {"metrics/verdicts/acme.json": {"cache": False}} in stages["report"]["metrics"]  # what `dvc metrics show` lists
    assert all("verdicts" not in next(iter(p)) for p in stages["report"]["plots"])
    assert _python(copy, "-m", "replication", "pipeline", "--check").returncode == 0
    assert "acme_lrscan" in yaml.safe_load((copy / "params.yaml").read_text())["experiments"]

    swept = _python(copy, "-m", "replication", "sweep", "acme_lrscan", "--profile", "smoke")
    assert swept.returncode == 0, swept.stderr
    ran = _python(copy, "-m", "papermill", "-k", "python3", "--cwd", ".", "--log-level", "WARNING", "notebooks/acme_lrscan.ipynb",
                  str(tmp_path / "out.ipynb"), "-p", "profile", "smoke")
    assert ran.returncode == 0, ran.stderr[-2000:]
    metrics = json.loads((copy / "metrics" / "acme" / "lrscan.json").read_text())
    assert metrics["claims"][0]["id"] == "acme.lrscan.small_batch_matches_large" and metrics["claims"][0]["verdict"]
    assert (copy / "figures" / "acme" / "lrscan.png").stat().st_size > 5000
    tested = _python(copy, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(copy), "tests/papers/test_acme_lrscan.py")
    assert tested.returncode == 0, tested.stdout[-2000:]


@pytest.mark.parametrize("name,match", [("Acme", "is not <paper>_<topic>"), ("acme", "is not <paper>_<topic>"),
                                        ("marek_optimizers", "already exists")])
def test_a_bad_or_taken_name_is_refused_and_writes_nothing(tmp_path, name, match):
    copy = _workbook(tmp_path)
    before = (copy / "params.yaml").read_text(), (copy / "dvc.yaml").read_text()
    made = _python(copy, "-m", "replication", "new", name)
    assert made.returncode == 2 and match in made.stderr
    assert ((copy / "params.yaml").read_text(), (copy / "dvc.yaml").read_text()) == before
