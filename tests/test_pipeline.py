"""The committed pipeline state: every declared figure exists and is a real PNG; dvc.lock matches."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _declared_outs() -> list[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    outs = []
    for stage in stages.values():
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            outs.append((next(iter(out)) if isinstance(out, dict) else out).replace("${profile}", params["profile"]))
    return outs


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


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dvc_status_is_clean_on_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    out = subprocess.run(["dvc", "status"], cwd=clone, capture_output=True, text=True, check=True).stdout
    assert "up to date" in out, out
