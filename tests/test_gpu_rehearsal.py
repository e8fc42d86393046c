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

The stages run as dvc would order them, on single-threaded lanes, one per core (at least two, at most four):
models this small gain nothing from a second thread, so two stages at once take about the time of one. The
lanes start as soon as collection selects a rehearsal test (conftest.py; in the controlling process when
pytest-xdist distributes the tests) and run at low priority beside the rest of the suite; each stage's
outcome is a file in the rehearsal's folder (`REHEARSAL_ENV`), which the test of that stage waits for in
whichever process runs it. By the time these tests run, most stages are done.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from replication import pipeline
from replication.data import shakespeare_plays

ROOT = Path(__file__).resolve().parents[1]
DECLARED = pipeline.stages(ROOT / "dvc.yaml")
STAGES = [s for s, d in DECLARED.items() if "notebooks/" in d["cmd"]]
LANES = max(2, min(4, os.cpu_count() or 1))
COMMAND_TIMEOUT_S = 900
REHEARSAL_ENV = "REPLICATION_REHEARSAL_DIR"  # the folder the session's rehearsal runs in, set by conftest.py
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


def build_workbook(root: Path) -> Path:
    """A copy of the workbook in `root` (no results, figures or executed notebooks) whose gpu profile is shrunk,
    with a local dataset in place of the hub corpus and a token cache of its own."""
    corpus = root / "local-corpus"
    corpus.mkdir(parents=True)
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


class _Lanes:
    """Runs each stage (its CLI sweep, then its notebook through papermill) in a background lane once the stages
    whose outputs it reads are done, and writes each stage's outcome (`Outcomes`). A lane is one process
    (tests/rehearsal_lane.py) that runs its stages' commands one after another, so that torch and papermill are
    imported once per lane, not once per command; each notebook still runs in a kernel of its own.

    The lanes' processes run at low priority (nice 10) with one thread each, and with the environment of the
    moment they were started: the suite's other tests may run meanwhile, taking the CPU first, and what they
    set in the environment (a time limit, nbval's workbook) never reaches a stage."""

    def __init__(self, root: Path, stages: list[str]):
        needs = pipeline.upstream(DECLARED)
        self.root, self.pending, self.done, self.running, self.stopped = root, list(stages), {}, set(), False
        self.outcomes = Outcomes(root)
        self.needs = {s: needs[s] & set(stages) for s in stages}
        self.env = {k: v for k, v in os.environ.items() if k != "REPLICATION_WORKBOOK"}
        self.env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", REPLICATION_CACHE=str(root / "cache"))  # one core per lane
        self.ready = threading.Condition()
        for _ in range(LANES):
            threading.Thread(target=self._lane, daemon=True).start()

    def _take(self) -> str | None:
        while self.pending and not self.stopped:
            stage = next((s for s in self.pending if self.needs[s] <= self.done.keys()), None)
            if stage:
                self.pending.remove(stage)
                return stage
            self.ready.wait()
        return None

    def _lane(self) -> None:
        lane = None  # the lane's process (tests/rehearsal_lane.py), started at its first command
        while True:
            with self.ready:
                stage = self._take()
            if stage is None:
                if lane is not None:
                    lane.stdin.close()
                    lane.wait()
                return
            failed = sorted(s for s in self.needs[stage] if self.done[s])
            try:
                error, lane = (f"not run: {', '.join(failed)} failed first", lane) if failed else self._run(stage, lane)
            except Exception as err:  # noqa: BLE001 (a lane must always answer, or its tests wait forever)
                error = f"the rehearsal itself failed on {stage}: {type(err).__name__}: {err}"
            with self.ready:
                self.done[stage] = error
                self.outcomes.write(stage, error)
                self.ready.notify_all()

    def _start_lane(self) -> subprocess.Popen:
        low = ["nice", "-n", "10"] if shutil.which("nice") else []
        with self.ready, open(self.root / f"lane-{threading.get_ident()}.log", "a") as log:  # what escapes a command's capture
            if self.stopped:
                raise RuntimeError("stopped")
            process = subprocess.Popen([*low, sys.executable, str(Path(__file__).with_name("rehearsal_lane.py"))], cwd=self.root,
                                       env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, errors="replace")
            self.running.add(process)
        return process

    def _run(self, stage: str, lane: subprocess.Popen | None) -> tuple[str | None, subprocess.Popen | None]:
        """The stage's CLI sweep, then its notebook, in the lane's process; (what went wrong or None, the process
        to send the next stage to: None once one was killed)."""
        sweep = {"sweep": ["sweep", stage, "--profile", "gpu", "--workers", "1"]}
        for command in ([sweep] if stage != "report" else []) + [{"notebook": stage}]:
            what = f"{'replication' if 'sweep' in command else 'papermill'} {stage}"
            lane = lane or self._start_lane()
            timer = threading.Timer(COMMAND_TIMEOUT_S, lane.kill)
            timer.start()
            try:
                lane.stdin.write(json.dumps(command) + "\n")
                lane.stdin.flush()
                answer = lane.stdout.readline()
            except OSError:
                answer = ""
            finally:
                timer.cancel()
            if not answer:  # killed: past its time, or the session stopped
                with self.ready:
                    self.running.discard(lane)
                lane.kill()
                lane.wait()
                return ("stopped" if self.stopped else f"{what} ran past {COMMAND_TIMEOUT_S} s or its lane died"), None
            outcome = json.loads(answer)
            if outcome["rc"]:
                return f"{what} exited {outcome['rc']}:\n{outcome['stderr']}", lane
        return None, lane

    def stop(self) -> None:
        """End what is still running (an interrupted session) and remove the workbook copy."""
        with self.ready:
            self.stopped = True
            self.pending.clear()
            for process in self.running:
                process.kill()
            self.ready.notify_all()
        shutil.rmtree(self.root, ignore_errors=True)


class Outcomes:
    """Each stage's outcome as a file in the rehearsal's folder (`outcomes/<stage>.json`: null, or what went wrong),
    so that a test run in another process than the lanes (a pytest-xdist worker) reads it."""

    def __init__(self, root: Path):
        self.root, self.folder = root, root / "outcomes"

    def write(self, stage: str, error: str | None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{stage}.tmp"
        partial.write_text(json.dumps(error))
        partial.replace(self.folder / f"{stage}.json")  # atomic: a reader sees the whole outcome or none

    def result(self, stage: str, timeout_s: float = 2 * COMMAND_TIMEOUT_S * len(STAGES)) -> str | None:
        """None once `stage` ran end to end, else what went wrong; waits for the lanes to get there."""
        path, waited = self.folder / f"{stage}.json", 0.0
        while not path.exists():
            if waited > timeout_s:
                return f"{stage}: no answer from the rehearsal in {timeout_s:.0f} s"
            time.sleep(0.5)
            waited += 0.5
        return json.loads(path.read_text())


_lanes: _Lanes | None = None


def start(stages: list[str] | None = None, root: Path | None = None) -> _Lanes:
    """The session's rehearsal of `stages` (default: all) and the stages they read, started once, in `root`
    (default: a new temporary folder): by conftest.py as soon as collection selects rehearsal tests, so that
    the stages train while the rest of the suite runs."""
    global _lanes
    if _lanes is None:
        needs, wanted = pipeline.upstream(DECLARED), set(stages or STAGES)
        while (more := set().union(*(needs[s] for s in wanted)) & set(STAGES) - wanted):
            wanted |= more
        root = build_workbook(Path(root) if root else Path(tempfile.mkdtemp(prefix="gpu-rehearsal-")))
        _lanes = _Lanes(root, [s for s in STAGES if s in wanted and s not in SAME_ON_GPU])
    return _lanes


def stop() -> None:
    if _lanes is not None:
        _lanes.stop()


@pytest.fixture(scope="module")
def rehearsal():
    """The outcomes of the session's rehearsal: started by conftest.py (in this process or in the controlling
    one), or here when this module runs without it (e.g. through `python -m pytest -p no:...` plugins that skip
    collection hooks)."""
    folder = os.environ.get(REHEARSAL_ENV)
    if _lanes is None and not (folder and (Path(folder) / "params.yaml").exists()):
        return start().outcomes
    return Outcomes(_lanes.root if _lanes is not None else Path(folder))


@pytest.mark.notebooks
@pytest.mark.parametrize("stage", STAGES)  # dvc.yaml's order: a stage's inputs are made before it
def test_the_gpu_profile_runs_every_stage_end_to_end(rehearsal, stage):
    if stage in SAME_ON_GPU:
        pytest.skip(f"{stage} has no gpu settings of its own (its cpu run is what a GPU runs)")
    error = rehearsal.result(stage)
    assert error is None, error
    for path in pipeline.outputs(DECLARED[stage], "gpu"):
        target = rehearsal.root / path
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
