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


def pytest_configure(config):
    copy = Path(tempfile.mkdtemp(prefix="workbook-"))
    for name in _COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, symlinks=True)
        elif source.is_file():
            shutil.copy2(source, copy / name)
    _state.update(copy=copy, before=_git_status(), previous=os.environ.get("REPLICATION_WORKBOOK"))


def pytest_collection_finish(session):
    """Start the gpu-profile rehearsal of the selected stages in the background (tests/test_gpu_rehearsal.py),
    through the module pytest imported, so that its tests find the lanes already running."""
    selected = [item for item in session.items if item.nodeid.startswith("tests/test_gpu_rehearsal.py::test_the_gpu_profile_runs")]
    if selected and not session.config.option.collectonly:
        module = selected[0].module
        _state["rehearsal"] = module
        module.start([item.callspec.params["stage"] for item in selected])


def pytest_collection_modifyitems(config, items):
    """Mark what executes notebooks (and so is slow), so `-m "not slow"` leaves a quick development subset; and check the
    gpu-profile rehearsal last, so that its stages, started in the background after collection, have the
    whole session to train."""
    for item in items:
        if type(item).__module__.startswith("nbval"):
            item.add_marker(pytest.mark.notebooks)
        if item.get_closest_marker("notebooks"):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_gpu_rehearsal.py::test_the_gpu_profile_runs"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before nbval starts a notebook's kernel (at its first cell), point it at the copy; every other test
    (e.g. papermill into its own temporary workbook) runs without it."""
    if type(item).__module__.startswith("nbval"):
        os.environ["REPLICATION_WORKBOOK"] = str(_state["copy"])
    else:
        os.environ.pop("REPLICATION_WORKBOOK", None)


def pytest_sessionfinish(session, exitstatus):
    after = _git_status()
    if _state.get("before") is not None and after != _state["before"]:
        changed = sorted(set(after.splitlines()) ^ set(_state["before"].splitlines()))
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            "the tests changed the checkout (git status differs): " + "; ".join(changed[:20]), red=True)
        session.exitstatus = 1


def pytest_unconfigure(config):
    if "rehearsal" in _state:
        _state["rehearsal"].stop()
    if _state.get("previous") is None:
        os.environ.pop("REPLICATION_WORKBOOK", None)
    else:
        os.environ["REPLICATION_WORKBOOK"] = _state["previous"]
    shutil.rmtree(_state.get("copy", ""), ignore_errors=True)
