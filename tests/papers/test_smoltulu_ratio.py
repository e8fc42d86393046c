"""smoltulu_ratio: the two arms' budgets, and every verdict computed on synthetic grids whose answer is known."""

import numpy as np
import pandas as pd
import pytest

from replication.claims import by_id
from replication.papers.smoltulu import ratio
from replication.params import experiment, load_params
from replication.sft import load_task_set

SIZES, LRS, SEEDS = [2, 4, 8, 16], [2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3], [0, 1, 2]


def test_equal_epochs_and_equal_steps_arms(tmp_path):
    exp = experiment(load_params("params.yaml"), "smoltulu_ratio", "smoke")
    pretrain, arms = ratio.arm_specs(exp, tmp_path)
    n_train = len(load_task_set(arms[ratio.EPOCHS][0].tasks)["train"])
    epochs = ratio.settings(exp)["epochs"]
    for x in arms[ratio.EPOCHS]:
        assert x.steps == round(epochs * n_train / x.batch_size) and x.tokens == x.steps * x.tokens_per_step
    largest = max(x.batch_size for x in arms[ratio.STEPS])
    assert {x.steps for x in arms[ratio.STEPS]} == {round(epochs * n_train / largest)}
    shared = {x.hash for x in arms[ratio.EPOCHS]} & {x.hash for x in arms[ratio.STEPS]}
    assert shared == {x.hash for x in arms[ratio.STEPS] if x.batch_size == largest}  # trained once
    every = arms[ratio.EPOCHS] + arms[ratio.STEPS]
    assert {x.tasks for x in every} == {arms[ratio.EPOCHS][0].tasks} and pretrain.tasks is None
    assert all(x.init_from.endswith(f"{pretrain.hash}.pt") for x in every)
    assert len(ratio.runs(exp, {}, tmp_path)) == len(set(x.hash for x in every))


def _grid(reasoning, pattern, heldout, seed=0, noise=0.01) -> pd.DataFrame:
    """Runs of both arms where each metric is a function of (LR, B) plus seed noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for arm in (ratio.EPOCHS, ratio.STEPS):
        for b in SIZES:
            for lr in LRS:
                for s in SEEDS:
                    r, p = (float(np.clip(f(lr, b) + noise * rng.normal(), 0, 1)) for f in (reasoning, pattern))
                    rows.append({"arm": arm, "batch_size": b, "lr": lr, "ratio": lr / b, "seed": s, "status": "ok", "steps": 300,
                                 "epochs": 2.0, "heldout_loss": heldout(lr, b) + noise * rng.normal(), "variable_binding": r,
                                 "corpus_continuation": p, "reasoning": r, "pattern": p})
    return pd.DataFrame(rows)


def _peak(centre):
    return lambda lr, b: 0.8 - 0.1 * (np.log2(lr / b) - np.log2(centre)) ** 2


def test_the_paper_s_picture_is_confirmed():
    runs = _grid(reasoning=_peak(2.5e-4), pattern=lambda lr, b: 0.6 - 0.05 * np.log2(lr / b / 1.5e-5),
                 heldout=lambda lr, b: 4 + 0.2 * np.log2(lr / b / 1.5e-5))
    table = ratio.cells(runs)
    claims = by_id(ratio.claims(runs, table))
    for cid in ("reasoning_prefers_high_ratio", "pattern_prefers_low_ratio", "opposite_optima", "ratio_not_lr_alone",
                "high_ratio_forgets", "survives_fixed_steps"):
        assert claims[f"smoltulu.ratio.{cid}"]["verdict"] == "confirmed", (cid, claims[f"smoltulu.ratio.{cid}"])
    assert claims["smoltulu.ratio.ratio_not_lr_alone"]["measurement"]["estimate"] == pytest.approx(1.0, abs=0.15)
    spread = ratio.equal_ratio_spread(runs, table, "reasoning")
    assert len(spread) == len(LRS) + len(SIZES) - 3  # every diagonal but the two corners
    assert spread["within_noise"].sum() >= len(spread) - 1  # a 2-SE band: one diagonal in six may stray by chance


def test_an_optimum_fixed_in_lr_and_flat_scores_are_not_confirmed():
    lr_only = lambda lr, b: 0.8 - 0.1 * np.log2(lr / 1e-3) ** 2  # the best LR is 1e-3 at every batch size
    runs = _grid(reasoning=lr_only, pattern=lambda lr, b: 0.5, heldout=lambda lr, b: 4.0)
    table = ratio.cells(runs)
    claims = by_id(ratio.claims(runs, table))
    ridge = claims["smoltulu.ratio.ratio_not_lr_alone"]
    assert ridge["measurement"]["estimate"] == pytest.approx(0.0, abs=0.15) and ridge["verdict"] == "not confirmed"
    assert claims["smoltulu.ratio.pattern_prefers_low_ratio"]["verdict"] == "within noise"
    assert claims["smoltulu.ratio.high_ratio_forgets"]["verdict"] == "within noise"
    assert ratio.equal_ratio_spread(runs, table, "reasoning")["within_noise"].sum() <= 1


def test_a_diverged_cell_is_never_the_best_and_counts_as_a_failure():
    runs = _grid(reasoning=_peak(2.5e-4), pattern=lambda lr, b: 0.5, heldout=lambda lr, b: 4.0)
    top = (runs["lr"] == 4e-3) & (runs["batch_size"] == 2)
    runs.loc[top, ["status", "variable_binding", "reasoning", "heldout_loss"]] = ["diverged", np.nan, np.nan, np.nan]
    table = ratio.cells(runs)
    high, _ = ratio.halves(table[table["arm"] == ratio.EPOCHS])
    assert ratio.best_cell(high, "reasoning")["lr"] != 4e-3 or ratio.best_cell(high, "reasoning")["batch_size"] != 2
    assert table.loc[(table["lr"] == 4e-3) & (table["batch_size"] == 2), "diverged"].eq(3).all()
