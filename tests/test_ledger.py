"""The claims ledger: complete, pointing at real stages and figures, and loud about what it cannot read."""

import json
from pathlib import Path

import pytest
import yaml

from replication import ledger, report
from replication.ledger import LedgerError

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _metrics_written_by(stage: str) -> set[str]:
    return {next(iter(m)) if isinstance(m, dict) else m for m in STAGES.get(stage, {}).get("metrics", [])}


def test_the_ledger_lists_every_paper_and_at_least_30_claims():
    papers = ledger.papers()
    assert list(papers) == ["marek", "zhang", "power", "smoltulu"]
    assert all(p.claims for p in papers.values())
    assert len(ledger.claims()) >= 30


@pytest.mark.parametrize("claim", ledger.claims().values(), ids=lambda c: c.id)
def test_every_claim_points_at_a_stage_that_writes_its_metrics_and_a_figure_that_exists_or_is_not_run_yet(claim):
    assert claim.metrics == f"metrics/{claim.paper}/{claim.experiment.partition('_')[2]}.json"  # one name end to end
    if claim.experiment in STAGES:
        assert claim.metrics in _metrics_written_by(claim.experiment)
        assert (ROOT / claim.figure).is_file(), f"{claim.id}: no figure {claim.figure}"
        assert (ROOT / claim.notebook).is_file()
    else:  # its experiment has not landed: the report must say so, not drop the claim
        assert not (ROOT / claim.metrics).exists()
        assert ledger.evaluate(claim, ROOT)[0].verdict == "not run yet"


def test_the_committed_metrics_carry_the_verdict_each_rule_gives_today():
    rows = report.ledger_rows(ROOT)  # raises when a stored verdict and its rule disagree
    landed = rows[rows["experiment"].isin(STAGES)]
    assert (landed["verdict"] != "not run yet").all()
    assert (rows.loc[~rows["experiment"].isin(STAGES), "verdict"] == "not run yet").all()


def _claim(tmp_path, **changes) -> ledger.Claim:
    base = dict(id="marek.x.y", paper="marek", source="Fig. 1", statement="s", paper_value="v", experiment="marek_x",
                metrics="metrics/marek/x.json", figure="figures/marek/x.png", rule="threshold", scale="any", params={"at_most": 1.0})
    return ledger.Claim(**{**base, **changes})


def test_a_missing_metrics_file_is_not_run_yet_and_a_missing_claim_is_an_error_naming_claim_and_key(tmp_path):
    claim = _claim(tmp_path)
    assert ledger.evaluate(claim, tmp_path)[0].verdict == "not run yet"
    path = tmp_path / claim.metrics
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"claims": [{"id": "marek.x.other", "measurement": {"value": 0.5}}]}))
    with pytest.raises(LedgerError, match=r"claim marek\.x\.y: metrics/marek/x\.json has no measurement under claims\[marek\.x\.y\]"):
        ledger.evaluate(claim, tmp_path)
    path.write_text(json.dumps({"claims": [{"id": "marek.x.y", "measurement": {"value": 0.5}}]}))
    assert ledger.evaluate(claim, tmp_path)[0].verdict == "confirmed"
    path.write_text(json.dumps({"claims": [{"id": "marek.x.y", "measurement": {"other": 0.5}}]}))
    with pytest.raises(LedgerError, match=r"claim marek\.x\.y .*lacks value"):
        ledger.evaluate(claim, tmp_path)
    path.write_text("{not json")
    with pytest.raises(LedgerError, match="not valid JSON"):
        ledger.evaluate(claim, tmp_path)


@pytest.mark.parametrize("bad, message", [
    ({"tolerance": 0.02}, "unknown key"),
    ({"rule": "roughly"}, "unknown rule 'roughly'"),
    ({"params": {"tolerance": 0.02}}, "takes at_least, at_most, not tolerance"),
    ({"id": "zhang.a.b"}, "must start with 'marek'"),
])
def test_a_malformed_ledger_entry_is_an_error_naming_the_file_and_claim(tmp_path, monkeypatch, bad, message):
    entry = {"id": "marek.x.y", "source": "Fig. 1", "statement": "s", "paper_value": "v", "experiment": "marek_x",
             "metrics": "metrics/marek/x.json", "figure": "figures/marek/x.png", "rule": "threshold", "params": {"at_most": 1}, "scale": "any"}
    folder = tmp_path / "replication" / "papers" / "marek"
    folder.mkdir(parents=True)
    (folder / "ledger.yaml").write_text(yaml.safe_dump({"paper": "marek", "title": "t", "arxiv": "1", "spec": "s", "claims": [{**entry, **bad}]}))
    monkeypatch.setattr(ledger, "PAPERS_DIR", tmp_path / "replication" / "papers")
    ledger.papers.cache_clear()
    try:
        with pytest.raises(LedgerError, match=message):
            ledger.papers()
    finally:
        ledger.papers.cache_clear()


def test_a_side_by_side_figure_says_so_when_our_metrics_have_no_points(tmp_path):
    """An experiment whose cells are all too short (the smoke profile) stores an empty series: the figure
    shows the paper's side and says why ours is missing, instead of failing the report."""
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "x.json").write_text(json.dumps({"gamma": []}))
    ref = {"ours": {"metrics": "metrics/x.json", "key": "gamma", "x": "tokens", "y": "gamma", "series": "model"}}
    ours, why = report._our_series(ref, tmp_path)
    assert ours == {} and "no points at this scale" in why
