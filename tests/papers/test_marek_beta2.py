"""Marek et al., beta2 fixed vs its half-life fixed, and the optimal half-life: the analyses on synthetic run tables whose answers are known."""

import numpy as np
import pandas as pd
import pytest

from replication.half_life import beta_from_half_life
from replication.papers.marek import beta2
from tests.papers.marek_tables import SEQ, runs_table


def test_with_beta2_fills_in_whichever_of_beta2_and_half_life_was_not_fixed():
    runs = beta2.with_beta2(runs_table([
        {"batch_size": 4, "optimizer.beta2": 0.95, "final_val_loss": 3.0},
        {"batch_size": 4, "optimizer.beta2_half_life_tokens": 10_000.0, "final_val_loss": 3.0},
    ]), SEQ)
    assert runs["regime"].tolist() == ["fixed beta2", "fixed half-life"]
    assert runs.loc[0, "beta2_half_life"] == pytest.approx(4 * SEQ * np.log(0.5) / np.log(0.95))
    assert runs.loc[1, "beta2"] == pytest.approx(0.5 ** (4 * SEQ / 10_000))

def _seeded(rows: list[dict], noise: float = 0.002, steps: int = 1000) -> pd.DataFrame:
    """Three seeds of every row: its loss shifted by -noise, 0 and +noise."""
    return runs_table([{**r, "seed": s, "steps": steps, "final_val_loss": r["final_val_loss"] + noise * (s - 1)} for r in rows for s in range(3)])


def test_optimal_half_life_finds_a_constant_optimum_and_a_flat_slope():
    """Loss is a parabola in log half-life with its vertex at 50k tokens at every batch size."""
    rows = []
    for b in (1, 4, 16, 64):
        for h in (5e3, 2e4, 5e4, 1.25e5, 5e5):
            rows.append({"batch_size": b, "optimizer.beta2_half_life_tokens": h, "final_val_loss": 3 + 0.01 * b + (np.log(h / 5e4)) ** 2})
    sweep = beta2.with_beta2(_seeded(rows), SEQ)
    optima, fit = beta2.optimal_half_life(sweep, SEQ)
    assert optima["optimal_half_life"].tolist() == pytest.approx([5e4] * 4)
    assert optima["optimal_beta2"].tolist() == pytest.approx([beta_from_half_life(5e4, b * SEQ) for b in (1, 4, 16, 64)])
    assert fit["slope"] == pytest.approx(0, abs=1e-9)
    (c,) = beta2.half_life_claims(sweep, SEQ, tokens=1e6)
    assert c["verdict"] == "confirmed" and c["share"] > 0.9
    assert c["measurement"]["regime"]["half_life_share"] == pytest.approx(0.05) and "unresolved" not in c["measurement"]
    (short,) = beta2.half_life_claims(sweep, SEQ, tokens=2e5)  # the same optimum is a quarter of a shorter run
    assert short["verdict"] == "not testable at this scale" and "(0.25 vs 0.1; would need:" in short["reason"]


def test_half_life_claim_is_within_noise_when_a_neighbour_of_an_optimum_is_within_the_seed_noise():
    """At B=4 the next half-life up is 0.002 nats worse than the best, under the seeds' spread of 0.002 a side."""
    rows = []
    for b in (1, 4, 16, 64):
        for h in (5e3, 2e4, 5e4, 1.25e5, 5e5):
            flat = b == 4 and h == 1.25e5
            rows.append({"batch_size": b, "optimizer.beta2_half_life_tokens": h, "final_val_loss": 3.002 if flat else 3 + (np.log(h / 5e4)) ** 2})
    (c,) = beta2.half_life_claims(beta2.with_beta2(_seeded(rows), SEQ), SEQ, tokens=1e6)
    assert c["verdict"] == "within noise"
    assert c["measurement"]["unresolved"].startswith("the optimal half-life is not resolved at B=4 (125,000 vs the best 50,000 tokens")


def test_half_life_claim_is_not_testable_when_an_optimum_is_on_the_edge_of_its_grid():
    rows = [{"batch_size": b, "optimizer.beta2_half_life_tokens": h, "final_val_loss": 3 + (np.log(h / (5e3 if b == 64 else 5e4))) ** 2}
            for b in (1, 4, 16, 64) for h in (5e3, 2e4, 5e4, 1.25e5, 5e5)]
    (c,) = beta2.half_life_claims(beta2.with_beta2(_seeded(rows), SEQ), SEQ, tokens=1e6)
    assert c["verdict"] == "not testable at this scale"
    assert c["reason"] == "best beta2 half-life on the grid edge at B=64 (would need: the grid extended past that edge until the best cell is interior)"


def test_half_life_claim_is_not_confirmed_when_the_optimum_is_a_fixed_beta2():
    """Optimum at a constant beta2 (half-life proportional to B): slope 1, the paper's claim fails."""
    rows = []
    for b in (1, 4, 16, 64):
        best = 1000.0 * b
        for m in (0.25, 0.5, 1, 2, 4):
            rows.append({"batch_size": b, "optimizer.beta2_half_life_tokens": best * m, "final_val_loss": 3 + np.log(m) ** 2})
    sweep = beta2.with_beta2(_seeded(rows), SEQ)
    assert beta2.optimal_half_life(sweep, SEQ)[1]["slope"] == pytest.approx(1.0)
    assert beta2.half_life_claims(sweep, SEQ, tokens=1e6)[0]["verdict"] == "not confirmed"
    assert beta2.half_life_claims(sweep.query("seed == 0"), SEQ, tokens=1e6)[0]["verdict"] == "not testable at this scale"


def test_beta2_regime_claim_reads_the_gap_of_the_smallest_batch():
    rows = [{"regime": r, "batch_size": b, "final_val_loss": loss} for r, b, loss in (
        ("fixed beta2", 1, 3.5), ("fixed beta2", 64, 3.2), ("fixed half-life", 1, 3.19), ("fixed half-life", 64, 3.2))]
    runs = _seeded(rows)
    best = beta2.best_cells(runs)
    assert beta2.beta2_regime_claims(best, runs)[0]["verdict"] == "confirmed"
    runs.loc[(runs.regime == "fixed half-life") & (runs.batch_size == 1), "final_val_loss"] += 0.26  # small batch bad in both regimes
    assert beta2.beta2_regime_claims(beta2.best_cells(runs), runs)[0]["verdict"] == "not confirmed"  # its second part is contradicted


def test_the_hyperparameter_curves_read_the_beta1_sweep_at_each_batch_size_s_best_lr():
    """marek_optimizers' beta1 variants sit at each batch size's best LR; the sweep is those runs and the grid
    beta1 at the same LR (not the grid's other LRs), and every panel of the figure draws from them."""
    import matplotlib

    matplotlib.use("Agg")
    rows = []
    for b, best in ((1, 2e-3), (4, 4e-3)):
        rows += [{"batch_size": b, "optimizer.lr": lr, "optimizer.beta1_half_life_tokens": 800.0, "final_val_loss": 3.0 + abs(lr - best)}
                 for lr in (1e-3, 2e-3, 4e-3)]
        rows += [{"batch_size": b, "optimizer.lr": best, "optimizer.beta1_half_life_tokens": h, "final_val_loss": 3.1} for h in (100.0, 6400.0)]
    runs = runs_table(rows).assign(steps=300)
    sweep = beta2.beta1_sweep(runs)
    assert sorted(sweep.groupby("batch_size")["optimizer.lr"].unique().map(list).sum()) == [2e-3, 4e-3]
    assert sorted(sweep["optimizer.beta1_half_life_tokens"].unique()) == [100.0, 800.0, 6400.0] and len(sweep) == 6
    assert beta2.beta1_sweep(None) is None and beta2.beta1_sweep(runs.assign(**{"optimizer.beta1_half_life_tokens": 800.0})) is None
    lr = beta2.with_beta2(runs_table([{"batch_size": b, "optimizer.lr": lr, "optimizer.beta2_half_life_tokens": 5e3, "final_val_loss": 3.0,
                                       "steps": 300} for b in (1, 4) for lr in (1e-3, 2e-3)]), SEQ)
    halves = lr.assign(beta2_half_life=lambda f: f["beta2_half_life"] * f["optimizer.lr"] * 1e3)
    fig, drawn = beta2.hyperparameter_curves(lr, halves, sweep)
    assert [len(ax.lines) > 0 for ax in fig.axes] == [True] * 4
    assert drawn.groupby("panel").size().to_dict() == {"(a)": len(lr), "(b)": 6, "(c)": len(halves), "(d)": len(halves)}
    fig, drawn = beta2.hyperparameter_curves(lr, halves, None)  # no beta1 runs stored: the panel says so
    assert any("no runs stored" in t.get_text() for t in fig.axes[1].texts) and "(b)" not in set(drawn["panel"])
