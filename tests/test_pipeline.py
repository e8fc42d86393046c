"""The committed pipeline state: every declared figure exists and is a real PNG; dvc.lock matches."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from replication import pipeline

ROOT = Path(__file__).resolve().parents[1]


def _declared_outs() -> list[str]:
    profile = yaml.safe_load((ROOT / "params.yaml").read_text())["profile"]
    return [out for stage in pipeline.stages(ROOT / "dvc.yaml").values() for out in pipeline.outputs(stage, profile)]


def test_every_declared_figure_is_a_valid_png():
    figures = [o for o in _declared_outs() if o.endswith(".png")]
    assert figures
    for path in figures:
        data = (ROOT / path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path


def test_every_declared_output_is_committed():
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split())
    for out in _declared_outs():
        assert out in tracked or any(t.startswith(out.rstrip("/") + "/") for t in tracked), f"{out} is not committed"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dvc_status_is_clean_on_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    out = subprocess.run(["dvc", "status"], cwd=clone, capture_output=True, text=True, check=True).stdout
    assert "up to date" in out, out


def test_every_stage_depends_on_exactly_the_code_it_imports():
    assert pipeline.check(ROOT / "dvc.yaml") == [], "dvc.yaml's code deps drifted: run `python -m replication pipeline`"


def test_the_code_deps_follow_imports_inside_functions_and_topics_loaded_by_name(tmp_path):
    deps = pipeline.code_deps("marek_sensitivity", "${papermill} notebooks/marek_sensitivity.ipynb notebooks/executed/x.ipynb",
                              ["marek_sensitivity", "marek_optimizers"])
    assert deps[0] == "notebooks/marek_sensitivity.ipynb"
    assert "replication/papers/marek/optimizers.py" in deps  # REQUIRES: its sweep sweeps marek_optimizers first
    assert "replication/runner.py" in deps  # imported inside experiments.train_runs
    assert "replication/papers/marek/ledger.yaml" in deps and "replication/papers/zhang/ledger.yaml" not in deps
    assert pipeline.code_deps("tokens", "python -m replication tokens --profile cpu", [])[-1] == "replication/validation.py"


def test_a_new_import_makes_dvc_yaml_drift_until_regenerated(tmp_path):
    shutil.copytree(ROOT / "replication", tmp_path / "replication", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("executed"))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    assert pipeline.check(tmp_path / "dvc.yaml") == []
    tokens = tmp_path / "replication" / "tokens.py"
    tokens.write_text(tokens.read_text() + "\n\ndef _late():\n    from replication import fit  # noqa: F401\n")
    assert pipeline.check(tmp_path / "dvc.yaml") == ["tokens"]
    assert pipeline.write(tmp_path / "dvc.yaml") == ["tokens"]
    assert "replication/fit.py" in yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]["tokens"]["deps"]
    assert pipeline.check(tmp_path / "dvc.yaml") == []
