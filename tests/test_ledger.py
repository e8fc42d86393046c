"""The claims ledger: complete, pointing at real stages and figures, and loud about what it cannot read."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from replication import ledger, report, verdicts
from replication.ledger import LedgerError

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _metrics_written_by(stage: str) -> set[str]:
    stage = STAGES.get(stage, {})
    return {next(iter(m)) if isinstance(m, dict) else m for m in stage.get("outs", []) + stage.get("metrics", [])}


def test_the_ledger_lists_every_paper_and_at_least_30_claims():
    papers = ledger.papers()
    assert list(papers) == ["marek", "zhang", "power", "smoltulu", "laws"]
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
    ({"kind": "result"}, "kind 'result' must be one of finding, check"),
    ({"requires": [{"value": "n_range", "says": "a 10x range"}]}, "needs value, says and at_most or at_least"),
    ({"rule": "equivalent", "params": {"allowance": 0.04}}, "allowance_source"),
])
def test_a_malformed_ledger_entry_is_an_error_naming_the_file_and_claim(tmp_path, monkeypatch, bad, message):
    entry = {"id": "marek.x.y", "kind": "finding", "source": "Fig. 1", "statement": "s", "paper_value": "v", "experiment": "marek_x",
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


def test_checks_are_the_claims_the_design_guarantees_and_findings_are_the_rest():
    kinds = {c.id: c.kind for c in ledger.claims().values()}
    assert {k for k, v in kinds.items() if v == "check"} == {
        "marek.memory.accumulation_matches_large_batch", "marek.memory.accumulation_needs_gradient_buffer",
        "marek.memory.lean_optimizers_save_memory", "marek.finetune.adafactor_at_lora_memory",
        "zhang.linear_regression.cbs_independent_of_m", "zhang.linear_regression.cbs_grows_with_n", "zhang.steps_to_target.cbs_rule",
        "zhang.local_cbs.batch_size_warmup_saves_steps", "smoltulu.ratio.high_ratio_forgets"}
    rows = report.ledger_rows(ROOT)
    text = (ROOT / "REPORT.md").read_text()
    checks_section = text[text.index("## Sanity checks of the machinery"):]
    for r in rows.itertuples():
        assert (f"`{r.id}`" in checks_section) == (r.kind == "check"), r.id


def _perturbed(m: dict, params: dict, rule: str):
    """Copies of a stored measurement moved the way a different outcome would move it: every number the
    rule reads pushed far to either side or onto the paper's range, with the gates (edges, an unresolved
    optimum) lifted; for a claim of several parts, every combination of its parts' moves."""
    if rule == "all_of":  # every combination of its parts' perturbations: parts contradicted today may all move
        names = list(params["parts"])
        options = [list(_perturbed(m["parts"][n], params["parts"][n].get("params") or {}, params["parts"][n]["rule"])) + [m["parts"][n]]
                   for n in names]
        for parts in itertools.product(*options):
            yield {**m, "edges": [], "parts": dict(zip(names, parts))}
        return
    base = {k: v for k, v in m.items() if k not in ("edges", "unresolved", "diverged")}
    if "difference" in m:
        scale = 10 * (abs(m.get("difference") or 0) + (m.get("se") or 0) + (m.get("seed_sd") or 0) + 1)
        for d in (-scale, 0.0, scale):
            yield {**base, "difference": d, "se": 1e-6 * scale, "seed_sd": base.get("seed_sd", 1e-6 * scale)}
    if "estimate" in m:
        finite = [p for p in (params.get("low"), params.get("high"), params.get("exclude")) if p is not None and np.isfinite(p)]
        targets = {-100.0, 100.0, *(p + d for p in finite for d in (-0.01, 0.01))}
        if params.get("low") is not None and params.get("high") is not None:
            targets.add((params["low"] + params["high"]) / 2)
        for t in targets:
            yield {**base, "estimate": t, "draws": list(t + np.linspace(-1e-4, 1e-4, 1000))}
    if "value" in m:
        for value in (-1e9, 0.0, 1e9, *(p + d for p in (params.get("at_most"), params.get("at_least")) if p is not None for d in (-1e-3, 1e-3))):
            yield {**base, "value": value}


def _in_regime(m: dict, claim) -> dict:
    """The measurement with every regime value the ledger requires moved onto its limit (inside)."""
    regime = {**(m.get("regime") or {})}
    for r in claim.requires:
        regime[r["value"]] = r.get("at_most", r.get("at_least"))
    return {**m, "regime": regime}


@pytest.mark.parametrize("claim", [c for c in ledger.claims().values() if c.kind == "finding"], ids=lambda c: c.id)
def test_every_finding_has_a_measurement_that_would_change_its_verdict(claim):
    """A finding no measurement could fail is a check: for each finding, some perturbation of its stored
    measurement (the numbers moved, or the regime it requires met or missed) must change its verdict."""
    stored = ledger.stored_claim(claim, ROOT)
    if stored is None:
        pytest.skip(f"{claim.experiment} has not run")
    m = stored["measurement"]
    if m.get("untestable"):  # nothing was measured; the reason it could not be is its result
        assert ledger.evaluate(claim, ROOT)[0].verdict == "not testable at this scale"
        return
    before = verdicts.decide(claim.rule, claim.params, m, claim.requires).verdict
    after = {verdicts.decide(claim.rule, claim.params, _in_regime(p, claim), claim.requires).verdict
             for p in _perturbed(m, claim.params, claim.rule)}
    assert after - {before}, f"{claim.id}: no perturbation of its measurement changes its verdict ({before}): a check, not a finding"


def _reference(tmp_path, table: list[dict], **extra) -> dict:
    (tmp_path / "metrics").mkdir(exist_ok=True)
    (tmp_path / "metrics" / "x.json").write_text(json.dumps({"rows": table, **extra.pop("stored", {})}))
    ours = {"metrics": "metrics/x.json", "key": "rows", "x": "x", "y": "steps", "series": "model", **extra.pop("ours", {})}
    return {"title": "t", "source": "s", "x_label": "x", "y_label": "y", "normalise": "divide_first", "log_x": True, "log_y": True,
            "series": {"85M": {"x": [64, 128, 256], "y": [400, 200, 150]}, "1.2B": {"x": [64, 128, 256], "y": [800, 400, 200]}},
            "ours": ours, **extra}


def test_a_side_by_side_figure_marks_unreached_cells_and_puts_both_sides_on_b_over_b_star(tmp_path):
    """The paper's x over each series' B* (`x_over`); ours already on B / B*, a cell that never reached its
    target a triangle at its budget, left out of the line and of the normalisation."""
    import matplotlib

    matplotlib.use("Agg")
    rows = [{"model": "w32", "batch_size": b, "x": b / 4, "steps": s, "reached": r} for b, s, r in
            ((2, 1000, True), (4, 600, True), (8, 400, True), (16, 400, False))]
    ref = _reference(tmp_path, rows, ours={"reached": "reached", "grid": "batch_size"}, x_over={"85M": 128, "1.2B": 256}, shared_x=True)
    fig, drawn = report.side_by_side(ref, tmp_path)
    paper, ours = fig.axes[:2]
    assert sorted(line.get_xdata()[0] for line in paper.lines) == [0.25, 0.5]  # 64 / 256 and 64 / 128
    triangles = [line for line in ours.lines if line.get_marker() == "^"]
    assert len(triangles) == 1 and triangles[0].get_xdata()[0] == 4 and triangles[0].get_ydata()[0] == pytest.approx(0.4)
    joined = [line for line in ours.lines if line.get_linestyle() == "-" and len(line.get_xdata()) == 2]
    assert sorted(tuple(line.get_xdata()) for line in joined) == [(0.5, 1.0), (1.0, 2.0)]  # never through the unreached cell
    assert list(drawn.loc[drawn["side"] == "ours", "kind"]) == ["cell", "cell", "cell", "unreached"]  # the CSV beside the PNG
    with pytest.raises(LedgerError, match="x_over names series"):
        report.side_by_side({**ref, "x_over": {"604M": 1889}}, tmp_path)


def test_a_side_by_side_figure_divides_ours_by_our_fitted_law_and_draws_its_interval(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    rows = [{"model": "ours", "x": t, "steps": 2.0 * t ** -0.5} for t in (100, 200, 400, 800)]
    claims = [{"id": "c", "measurement": {"draws": list(np.linspace(-0.6, -0.4, 200))}}]
    ref = _reference(tmp_path, rows, ours={"fit": {"key": "fit", "a": "a", "b": "b", "claim": "c", "variable": "T"}},
                     stored={"fit": {"a": 2.0, "b": -0.5}, "claims": claims}, normalise="divide_fit_first", relative_x=True,
                     series={}, power_laws={"x": [1e9, 8e9], "laws": {"paper (T^-0.5)": [4.6, -0.5]}})
    fig, drawn = report.side_by_side(ref, tmp_path)
    paper, ours = fig.axes[:2]
    law = paper.lines[0]
    assert list(law.get_xdata()) == [1.0, 8.0] and law.get_ydata()[0] == pytest.approx(1.0)  # T / T_min, over its value at T_min
    points = [line for line in ours.lines if line.get_marker() == "o"]
    assert [p.get_xdata()[0] for p in points] == [1.0, 2.0, 4.0, 8.0]
    assert [p.get_ydata()[0] for p in points] == pytest.approx([1.0, 2 ** -0.5, 0.5, 8 ** -0.5])  # on the law: exact
    assert any("T^-0.50" in line.get_label() for line in ours.lines) and ours.collections  # the fit and its band
    (tmp_path / "metrics" / "x.json").write_text(json.dumps({"rows": rows, "fit": {"a": None, "b": None}, "claims": claims}))
    fig, drawn = report.side_by_side(ref, tmp_path)  # too few cells to fit (stored as null): ours by its first cell, no fit drawn
    assert list(drawn.loc[drawn["side"] == "ours", "y"]) == pytest.approx([1.0, 2 ** -0.5, 0.5, 8 ** -0.5])
    assert not fig.axes[1].collections
    with pytest.raises(LedgerError, match="divide_fit_first needs"):
        report.side_by_side({**ref, "ours": {k: v for k, v in ref["ours"].items() if k != "fit"}}, tmp_path)


def test_a_side_by_side_figure_divides_by_given_values_and_draws_seed_intervals(tmp_path):
    """divide_given: the paper's y over its y_over per series, ours over a column; bars are the 95 % Student-t
    interval from the table's standard error and seeds, on the same scale; the title states the verdict."""
    import matplotlib

    matplotlib.use("Agg")
    rows = [{"model": "w32", "x": x, "steps": s, "s_min": 50.0, "se": 5.0, "n": 3} for x, s in ((0.5, 300.0), (1.0, 150.0), (2.0, 100.0))]
    ref = _reference(tmp_path, rows, ours={"y_over": "s_min", "se": "se", "n": "n", "verdict": "c"}, normalise="divide_given",
                     y_over={"85M": 100, "1.2B": 200}, stored={"claims": [{"id": "c", "verdict": "within noise"}]})
    fig, drawn = report.side_by_side(ref, tmp_path)
    paper, ours = fig.axes[:2]
    assert sorted(line.get_ydata()[0] for line in paper.lines) == [4.0, 4.0]  # 400 / 100 and 800 / 200
    theirs = drawn[drawn["side"] == "ours"]
    assert list(theirs["y"]) == [6.0, 3.0, 2.0]
    assert theirs["interval"].iloc[0] == pytest.approx(verdicts.t_critical(2) * 5.0 / 50.0)
    assert ours.get_title() == "this replication (verdict: within noise)"
    with pytest.raises(LedgerError, match="y_over for every series"):
        report.side_by_side({**ref, "y_over": {"85M": 100}}, tmp_path)
