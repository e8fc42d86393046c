"""Test-session plumbing shared by tests/ and by nbval's re-execution of notebooks/executed/.

Running the tests must not write into the checkout: nbval re-executes every committed notebook, and a
notebook writes its metrics, figures, REPORT.md and README blocks where it runs. So the session points
nbval's kernels at a throw-away copy of the workbook (`REPLICATION_WORKBOOK`, honoured by
`replication.notebook.setup`), and fails if the checkout's `git status` changed anyway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
_COPIED = ("params.yaml", "dvc.yaml", "README.md", "REPORT.md", "docs", "results", "metrics", "figures")
_state: dict = {}


def _git_status() -> str | None:
    try:
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): nothing to compare
        return None


REHEARSAL = "tests/test_gpu_rehearsal.py::test_the_gpu_profile_runs"


def _worker(config) -> bool:
    """Whether this process is a pytest-xdist worker (its tests come from a controlling process)."""
    return hasattr(config, "workerinput")


def _distributing(config) -> bool:
    """Whether this process is the pytest-xdist controller, which runs no test itself."""
    return not _worker(config) and getattr(config.option, "dist", "no") != "no"


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's default): one worker per core, at most four (each test is one process; the tests
    that train start their own)."""
    return max(1, min(4, os.cpu_count() or 1))


def pytest_configure(config):
    if _worker(config) and config.workerinput.get("workercount", 1) > 1:
        # as many workers as cores: a second thread each (and in every process a test starts, a kernel or a CLI
        # run) would only wait for a core, and OpenMP's threads spin while they wait
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("MKL_NUM_THREADS", "1")
    if not _worker(config):  # one rehearsal folder per session, known to the workers before they start
        folder = Path(tempfile.mkdtemp(prefix="gpu-rehearsal-"))
        _state.update(rehearsal_folder=folder, previous_rehearsal=os.environ.get("REPLICATION_REHEARSAL_DIR"))
        os.environ["REPLICATION_REHEARSAL_DIR"] = str(folder)
    if _distributing(config):
        _state.update(before=_git_status())
        return  # the workers run the tests (and nbval), each with its own copy
    copy = Path(tempfile.mkdtemp(prefix="workbook-"))
    for name in _COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, symlinks=True)
        elif source.is_file():
            shutil.copy2(source, copy / name)
    _state.update(copy=copy, before=_git_status(), previous=os.environ.get("REPLICATION_WORKBOOK"))


def _start_rehearsal(module, nodeids) -> None:
    stages = [i.split("[", 1)[1].rstrip("]") for i in nodeids if i.startswith(REHEARSAL) and "[" in i]
    if stages and "rehearsal" not in _state:
        _state["rehearsal"] = module
        module.start(stages, _state["rehearsal_folder"])


def pytest_collection_finish(session):
    """Start the gpu-profile rehearsal of the selected stages in the background (tests/test_gpu_rehearsal.py),
    through the module pytest imported, so that its tests find the lanes already running."""
    if _worker(session.config) or session.config.option.collectonly:
        return  # under pytest-xdist the controller starts it (below)
    selected = [item for item in session.items if item.nodeid.startswith(REHEARSAL)]
    if selected:
        _start_rehearsal(selected[0].module, [item.nodeid for item in selected])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """Under pytest-xdist: the controller starts the rehearsal once the first worker has collected (before any test
    is handed out); the workers' rehearsal tests read each stage's outcome from the shared folder."""
    if "rehearsal" not in _state and any(i.startswith(REHEARSAL) for i in ids):
        import importlib.util

        spec = importlib.util.spec_from_file_location("gpu_rehearsal_lanes", ROOT / "tests" / "test_gpu_rehearsal.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _start_rehearsal(module, ids)


def pytest_collection_modifyitems(config, items):
    """Mark what executes notebooks (and so is slow), so `-m "not slow"` leaves a quick development subset; and check the
    gpu-profile rehearsal last, so that its stages, started in the background after collection, have the
    whole session to train."""
    for item in items:
        if type(item).__module__.startswith("nbval"):
            item.add_marker(pytest.mark.notebooks)
        if item.get_closest_marker("notebooks"):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.nodeid.startswith(REHEARSAL))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before nbval starts a notebook's kernel (at its first cell), point it at the copy; every other test
    (e.g. papermill into its own temporary workbook) runs without it."""
    if type(item).__module__.startswith("nbval"):
        os.environ["REPLICATION_WORKBOOK"] = str(_state["copy"])
    else:
        os.environ.pop("REPLICATION_WORKBOOK", None)


def pytest_sessionfinish(session, exitstatus):
    if _worker(session.config):
        return  # the controller checks, once every worker is done
    after = _git_status()
    if _state.get("before") is not None and after != _state["before"]:
        changed = sorted(set(after.splitlines()) ^ set(_state["before"].splitlines()))
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            "the tests changed the checkout (git status differs): " + "; ".join(changed[:20]), red=True)
        session.exitstatus = 1


def pytest_unconfigure(config):
    if "rehearsal" in _state:
        _state["rehearsal"].stop()
    if "rehearsal_folder" in _state:
        shutil.rmtree(_state["rehearsal_folder"], ignore_errors=True)
        _restore("REPLICATION_REHEARSAL_DIR", _state.get("previous_rehearsal"))
    _restore("REPLICATION_WORKBOOK", _state.get("previous"))
    if "copy" in _state:
        shutil.rmtree(_state["copy"], ignore_errors=True)


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
