import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_what_pyproject_declares():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    via_editable = any(p.startswith("-e .") for p in pip)
    listed = " ".join(str(d) for d in env["dependencies"] + pip)
    for dep in deps:
        name = re.split(r"[=<>\[ ]", dep)[0]
        assert via_editable or name in listed, f"{name} is in pyproject.toml but not in environment.yml"
    assert "python=3.11" in env["dependencies"]


def test_the_locks_pin_every_dependency_and_torch_per_variant():
    """requirements/lock-*.txt: the whole resolved set, one exact version per package, every dependency of
    pyproject.toml (and its test extra) among them; torch 2.13.0 as the CPU wheel or the CUDA one."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = [re.split(r"[=<>\[ ]", d)[0].lower() for d in project["dependencies"] + project["optional-dependencies"]["test"]]
    for variant, torch in (("cpu", "2.13.0+cpu"), ("cuda", "2.13.0")):
        pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", (ROOT / "requirements" / f"lock-{variant}.txt").read_text(), flags=re.M))
        pins = {k.lower(): v for k, v in pins.items()}
        assert not [d for d in direct if d not in pins], variant
        assert pins["torch"] == torch
        assert any(k.startswith("nvidia-") for k in pins) == (variant == "cuda")
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "-r requirements/lock-cpu.txt" in next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def test_torch_is_pinned_exactly():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```(?:bash|sh)\n(.*?)\n```", readme, flags=re.S)
    test_command = commands[1].strip()
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert "dvc repro" in commands[0]


def test_source_notebooks_are_committed_without_outputs():
    import nbformat

    for path in (ROOT / "notebooks").glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"), path
        assert nb.cells[1].metadata.get("tags") == ["parameters"] or any(
            "parameters" in c.metadata.get("tags", []) for c in nb.cells
        ), path


def test_executed_notebooks_keep_the_cell_ids_of_their_sources():
    """Stable cell ids: executing a notebook (papermill, nbval) churns no ids, so diffs show real edits."""
    import nbformat

    for path in (ROOT / "notebooks").glob("*.ipynb"):
        source = nbformat.read(path, as_version=4)
        executed = nbformat.read(ROOT / "notebooks" / "executed" / path.name, as_version=4)
        ids = [c.id for c in source.cells]
        assert len(set(ids)) == len(ids), path
        assert [c.id for c in executed.cells if "injected-parameters" not in c.metadata.get("tags", [])] == ids, path


def test_the_package_ships_its_paper_layer():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert config["include"] == ["replication*"]
    assert (ROOT / "replication" / "papers" / "marek" / "__init__.py").is_file()
