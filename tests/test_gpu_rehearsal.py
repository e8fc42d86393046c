"""The gpu profile, rehearsed on CPU: every stage's gpu runs, shrunk, trained and analysed end to end.

The gpu profile is what a user with a GPU runs first. Here its params are shrunk without changing their
shape: every model becomes a small body (widths / 8, keeping distinct widths distinct), sequences of 256 or
more tokens become 8, batch sizes B become round(sqrt B) (one to one and in order on every grid used, so a
B=1 run no longer needs 256 times the steps of a B=256 one), every token count (budgets, warmups,
half-lives, log and eval intervals) shrinks with the sequence and by a further factor, task-set sizes by
256, and the hub corpus becomes a local `datasets` dataset (JSON lines in a temporary folder) read through
the same `hf:` path. Grids, seeds, follow-ups, analyses and claims are the gpu profile's own. Then, in a
temporary copy of the workbook, each stage runs as `dvc repro -S profile=gpu` would: the CLI sweep of its
experiment, then its notebook, which must write every declared output and find nothing left to train
(the sweep and the notebook declare the same runs). What a GPU user would hit first (a key a profile
lacks, an analysis that assumes the cpu profile's shapes, a hub-corpus path) fails here first. This is
also the suite's pipeline test: every notebook runs end to end here, and nbval re-executes the committed
cpu ones.
"""

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import papermill
import pytest
import yaml

from replication.data import shakespeare_plays

ROOT = Path(__file__).resolve().parents[1]
STAGES = [s for s, d in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items() if "notebooks/" in d["cmd"]]
PROFILES = yaml.safe_load((ROOT / "params.yaml").read_text())
SAME_ON_GPU = {s for s in STAGES if s in PROFILES["experiments"] and "gpu" not in (PROFILES["experiments"][s].get("profiles") or {})
               and not PROFILES["experiments"][s].get("run") and "grid" not in PROFILES["experiments"][s]}  # theory: no gpu settings
EXTRAS = [2.0**k for k in range(13, -1, -1)]  # token counts shrink on top of the sequence length by the largest of these that
# leaves every run an experiment first declares valid (a decay branch, a warmup, a window of at least one step) and two steps long
TASK_SHRINK = 256  # SmolTulu's task-set sizes
BATCH_KEYS = ("batch_size", "batch_sizes", "reference_batch_size", "branch_batch_sizes", "memory_batch_sizes", "schedule_batch_sizes",
              "optimum_batch_sizes", "fixed_batch_size", "center_batch_size", "micro_batch_size")
TOKEN_LISTS = ("budgets", "cosine_budgets", "branch_points")


def _is_token_key(key: str) -> bool:
    return key.split(".")[-1].endswith("tokens") or key in TOKEN_LISTS


def _shrink(node, factor: float, corpus: str, key: str = ""):
    """The gpu block `node`, shrunk: small widths, short sequences, token counts x `factor`, a local corpus."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "model" and isinstance(v, dict):
                width = v.get("width") or {"lm11m": 384, "micro": 128, "nano": 96}.get(v.get("preset"), 256)
                out[k] = {"width": max(16, width // 8), "depth": 1, "head_dim": 8}
            elif k == "data" and isinstance(v, dict):
                out[k] = _data(v, corpus)
            elif k in ("sizes",) and isinstance(v, dict):
                out[k] = {t: max(8, n // TASK_SHRINK) for t, n in v.items()}
            elif k == "continuation_items":
                out[k] = max(8, v // TASK_SHRINK)
            else:
                out[k] = _shrink(v, factor, corpus, k)
        return out
    if isinstance(node, list):
        return [_shrink(v, factor, corpus, key) for v in node]
    if isinstance(node, (int, float)) and not isinstance(node, bool) and node is not None:
        name = key.split(".")[-1]
        if _is_token_key(key):
            return max(1, int(node * factor))
        if name in BATCH_KEYS:  # monotone and one to one on the grids used (1, 4, 16, 64, 256 -> 1, 2, 4, 8, 16)
            return max(1, round(node ** 0.5))
        if name in ("width", "base_width", "widths"):
            return max(16, int(node) // 8)
        if name == "depth":
            return 1
        if name == "head_dim":
            return 8
        if name == "seq_len" and node >= 256:
            return 8
    return node


def _data(data: dict, corpus: str) -> dict:
    out = dict(data)
    if str(out.get("corpus", "")).startswith("hf:"):
        out.update(corpus=corpus, hf_config=None, max_documents=None)
    if out.get("seq_len", 0) >= 256:
        out["seq_len"] = 8
    out.update(vocab_size=min(out.get("vocab_size", 300), 300), val_tokens=512)
    return out


def gpu_rehearsal_params(params: dict, corpus: str) -> dict:
    """params.yaml with its gpu profile shrunk to run on CPU in seconds per stage (see the module's docstring)."""
    from replication.params import experiment

    out = copy.deepcopy(params)
    global_gpu = out["profiles"]["gpu"]
    seq = (global_gpu.get("run", {}).get("data") or {}).get("seq_len", 512)
    out["profiles"]["gpu"] = _shrink(global_gpu, (8 / seq if seq >= 256 else 1) / 512, corpus)
    for name, exp in out["experiments"].items():
        block = (exp.get("profiles") or {}).get("gpu")
        if block is None:
            continue
        base = experiment(params, name, "gpu").base
        block = {**block, "run": {"batch_size": base.batch_size, **(block.get("run") or {})}}  # the base run's batch size shrinks too
        factor = 8 / base.data.seq_len if base.data.seq_len >= 256 else 1
        for extra in EXTRAS:  # the most the first runs it declares allow: every one valid, with at least two steps
            exp["profiles"]["gpu"] = _shrink(block, factor / extra, corpus)
            if _fewest_steps(out, name) >= 2:
                break
    return out


def _fewest_steps(params: dict, name: str) -> int:
    """The fewest steps among the runs experiment `name` declares with nothing stored (its base run and grid where
    its runs follow from another experiment's); 0 if one is invalid."""
    import tempfile

    from replication.data import DataError
    from replication.experiments import declared_runs
    from replication.params import experiment
    from replication.spec import ConfigError

    try:
        exp = experiment(params, name, "gpu")
        try:
            with tempfile.TemporaryDirectory() as empty:
                specs = declared_runs(exp, params, empty)
        except (RuntimeError, FileNotFoundError, DataError):
            specs = [exp.base, *exp.expand()]
        return min((s.steps for s in specs), default=2)
    except (ConfigError, ValueError):
        return 0


@pytest.fixture(scope="module")
def workbook(tmp_path_factory):
    """A copy of the workbook (no results, figures or executed notebooks) whose gpu profile is shrunk, with a
    local dataset in place of the hub corpus."""
    root = tmp_path_factory.mktemp("gpu-rehearsal")
    corpus = root / "local-corpus"
    corpus.mkdir()
    with open(corpus / "train.jsonl", "w") as f:  # one JSON line per scene-sized chunk, as a hub dataset's rows
        for text in shakespeare_plays().values():
            for i in range(0, len(text), 4000):
                f.write(json.dumps({"text": text[i:i + 4000]}) + "\n")
    params = gpu_rehearsal_params(yaml.safe_load((ROOT / "params.yaml").read_text()), f"hf:{corpus}")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name in ("dvc.yaml", "README.md"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns("executed"))
    (root / "notebooks" / "executed").mkdir()
    return root


def _outs(stage: str) -> list[str]:
    d = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    return [next(iter(o)) if isinstance(o, dict) else o for o in d.get("outs", []) + d.get("metrics", [])]


@pytest.mark.notebooks
@pytest.mark.parametrize("stage", STAGES)  # dvc.yaml's order: a stage's inputs are made before it
def test_the_gpu_profile_runs_every_stage_end_to_end(workbook, stage):
    if stage in SAME_ON_GPU:
        pytest.skip(f"{stage} has no gpu settings of its own (its cpu run is what a GPU runs)")
    if stage != "report":
        sweep = subprocess.run([sys.executable, "-m", "replication", "sweep", stage, "--profile", "gpu", "--workers", "1"], cwd=workbook,
                               capture_output=True, text=True)
        assert sweep.returncode == 0, sweep.stderr[-3000:]
    papermill.execute_notebook(str(workbook / "notebooks" / f"{stage}.ipynb"), str(workbook / "notebooks" / "executed" / f"{stage}.ipynb"),
                               parameters={"profile": "gpu"}, kernel_name="python3", cwd=str(workbook), progress_bar=False)
    for path in _outs(stage):
        target = workbook / path.replace("${profile}", "gpu")
        assert target.exists(), f"stage {stage} did not write {path} on the gpu profile"
        if path.endswith(".png"):
            assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 1000, path
        if path.startswith("metrics/") and path.endswith(".json") and "verdicts" not in path and stage != "report":
            trained = json.loads(target.read_text())["timing"]["runs_trained"]
            assert trained == 0, f"{stage}: the notebook trained {trained} runs the sweep did not declare"


def test_the_shrunk_profile_keeps_the_gpu_profiles_shape():
    """As many runs as the gpu profile's grids, on distinct batch sizes in the same order, each of at least two
    steps, on a small body and short sequences."""
    from replication.params import experiment

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    shrunk = gpu_rehearsal_params(params, "hf:/nowhere")
    for name, exp in params["experiments"].items():
        if "grid" not in exp and "grid" not in ((exp.get("profiles") or {}).get("gpu") or {}):
            continue
        big, small = experiment(params, name, "gpu").expand(), experiment(shrunk, name, "gpu").expand()
        assert len(big) == len(small), name
        order = lambda specs: [s.batch_size for s in specs]  # noqa: E731
        assert sorted(set(order(big))) == sorted(set(order(big)), key=lambda b: round(b ** 0.5)), name
        assert len(set(order(small))) == len(set(order(big))), name
        assert all(s.steps >= 2 and s.data.seq_len <= 64 and s.model.width <= 64 for s in small), name
