"""The generated tables of README.md and docs/ come from the metrics files, never typed by hand; each lives in
one file, and the links between the pages resolve."""

import json
import re
from pathlib import Path

import pytest
import yaml

from replication import notebook, readme, runner

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(readme.BLOCKS))
def test_each_generated_block_is_current_in_its_own_file(name):
    assert readme.block(name, ROOT) in (ROOT / readme.FILES[name]).read_text(), (
        f"{readme.FILES[name]}'s {name} block is stale: run `python -m replication.readme`"
    )


def test_each_block_lives_in_exactly_one_file():
    assert set(readme.FILES) == set(readme.BLOCKS)
    for name in readme.BLOCKS:
        start, _ = readme._markers(name)
        holders = [p.relative_to(ROOT).as_posix() for p in PAGES if start in p.read_text()]
        assert holders == [readme.FILES[name]], f"{name} block found in {holders}, expected only in {readme.FILES[name]}"


def test_update_skips_files_the_root_lacks_and_rewrites_stale_blocks(tmp_path):
    for name in ("dvc.yaml", "params.yaml", "README.md"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    for folder in ("metrics", "figures"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    start, end = readme._markers("verdicts")
    text = (tmp_path / "README.md").read_text()
    (tmp_path / "README.md").write_text(re.sub(re.escape(start) + ".*?" + re.escape(end), f"{start}\nstale\n{end}", text, flags=re.S))
    assert readme.update_docs(tmp_path, only=("gallery", "verdicts")) == ["verdicts"]  # no docs/figures.md here
    assert (tmp_path / "README.md").read_text() == text
    assert not (tmp_path / "docs").exists()


def test_gallery_paths_are_relative_to_the_page_that_holds_it():
    page = ROOT / readme.FILES["gallery"]
    paths = re.findall(r'(?:href|src)="([^"]+)"', page.read_text())
    assert paths and all((page.parent / p).resolve().is_file() for p in paths)
    assert len(paths) == 2 * len(list((ROOT / "figures").glob("*/*.png")))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'(?:href|src)="([^"]+)"', text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor and linked.suffix == ".md":
            anchors = {_slug(h) for h in re.findall(r"^#+ (.*)$", linked.read_text(), flags=re.M)}
            assert anchor in anchors, f"{page.name}: no heading #{anchor} in {path or page.name}"


def test_readme_links_every_docs_page_and_names_every_stage():
    text = (ROOT / "README.md").read_text()
    assert [p.name for p in (ROOT / "docs").glob("*.md") if f"](docs/{p.name}" not in text] == []
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert [s for s in stages if f"| `{s}` |" not in text] == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_docs_describe_the_project_not_how_it_was_made(page):
    banned = r"\blent\b|slower host|faster host|interrupted execution|remote call|device tool|this task|this week|this VM"
    assert not re.findall(banned, page.read_text(), flags=re.I), page.name


def test_every_notebook_stage_records_its_wall_time():
    stages = {r["stage"] for r in readme.stage_timings(ROOT)}
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert notebooks <= stages, f"no timing block in the metrics of {sorted(notebooks - stages)}"


def test_a_run_that_trains_records_its_time_and_a_rerun_keeps_it(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    notebook._clock.clear()
    notebook._clock.update(start=0.0, trained=runner.runs_trained(), profile="smoke")
    monkeypatch.setattr(runner, "_runs_trained", runner.runs_trained() + 3)
    notebook.write_metrics(path, {"x": 1})
    first = json.loads(path.read_text())["timing"]
    assert first["runs_trained"] == 3 and first["wall_s"] > 0 and first["profile"] == "smoke"
    notebook._clock.update(trained=runner.runs_trained())  # a re-execution that reads every record back
    notebook.write_metrics(path, {"x": 1})
    assert json.loads(path.read_text())["timing"] == first
