"""Every notebook is a stage. The pipeline itself (a CLI sweep, then the notebook, which finds nothing left to
train and writes every declared output) runs end to end for every stage in tests/test_gpu_rehearsal.py, on
the gpu profile shrunk to CPU size; nbval re-executes the committed cpu notebooks."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


def test_every_notebook_is_a_dvc_stage():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in NOTEBOOKS:
        assert name in stages and f"notebooks/{name}.ipynb" in stages[name]["deps"]
