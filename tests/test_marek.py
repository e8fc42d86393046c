"""The Marek analyses on synthetic run tables whose answers are known."""

import numpy as np
import pandas as pd
import pytest

from replication import marek
from replication.fit import best_per_group
from replication.optim import beta_from_half_life

SEQ = 64


def _runs(rows):
    base = {"optimizer.name": "adamw", "optimizer.lr": 1e-3, "optimizer.beta2": 0.95, "optimizer.beta2_half_life_tokens": np.nan,
            "micro_batch_size": np.nan, "seed": 0, "status": "ok"}
    out = pd.DataFrame([{**base, **r} for r in rows])
    out["id"] = [f"run{i}" for i in range(len(out))]
    return out


def test_with_beta2_fills_in_whichever_of_beta2_and_half_life_was_not_fixed():
    runs = marek.with_beta2(_runs([
        {"batch_size": 4, "optimizer.beta2": 0.95, "final_val_loss": 3.0},
        {"batch_size": 4, "optimizer.beta2_half_life_tokens": 10_000.0, "final_val_loss": 3.0},
    ]), SEQ)
    assert runs["regime"].tolist() == ["fixed beta2", "fixed half-life"]
    assert runs.loc[0, "beta2_half_life"] == pytest.approx(4 * SEQ * np.log(0.5) / np.log(0.95))
    assert runs.loc[1, "beta2"] == pytest.approx(0.5 ** (4 * SEQ / 10_000))


def test_optimal_half_life_finds_a_constant_optimum_and_a_flat_slope():
    """Loss is a parabola in log half-life with its vertex at 50k tokens at every batch size."""
    rows = []
    for b in (1, 4, 16, 64):
        for h in (5e3, 2e4, 5e4, 1.25e5, 5e5):
            rows.append({"batch_size": b, "optimizer.beta2_half_life_tokens": h, "final_val_loss": 3 + 0.01 * b + (np.log(h / 5e4)) ** 2})
    optima, fit = marek.optimal_half_life(marek.with_beta2(_runs(rows), SEQ), SEQ)
    assert optima["optimal_half_life"].tolist() == pytest.approx([5e4] * 4)
    assert optima["optimal_beta2"].tolist() == pytest.approx([beta_from_half_life(5e4, b * SEQ) for b in (1, 4, 16, 64)])
    assert fit["slope"] == pytest.approx(0, abs=1e-9)
    verdicts = [c["verdict"] for c in marek.half_life_claims(optima, fit)]
    assert verdicts == ["confirmed", "confirmed"]


def test_half_life_claim_is_not_confirmed_when_the_optimum_is_a_fixed_beta2():
    """Optimum at a constant beta2 (half-life proportional to B): slope 1, the paper's claim fails."""
    rows = []
    for b in (1, 4, 16, 64):
        best = 1000.0 * b
        for m in (0.25, 0.5, 1, 2, 4):
            rows.append({"batch_size": b, "optimizer.beta2_half_life_tokens": best * m, "final_val_loss": 3 + np.log(m) ** 2})
    optima, fit = marek.optimal_half_life(marek.with_beta2(_runs(rows), SEQ), SEQ)
    assert fit["slope"] == pytest.approx(1.0)
    assert marek.half_life_claims(optima, fit)[1]["verdict"] == "not confirmed"


def test_beta2_regime_claim_reads_the_gap_of_the_smallest_batch():
    best = pd.DataFrame([
        {"regime": "fixed beta2", "batch_size": 1, "loss": 3.5}, {"regime": "fixed beta2", "batch_size": 64, "loss": 3.2},
        {"regime": "fixed half-life", "batch_size": 1, "loss": 3.19}, {"regime": "fixed half-life", "batch_size": 64, "loss": 3.2},
    ])
    assert marek.beta2_regime_claims(best, tolerance=0.02)[0]["verdict"] == "confirmed"
    best.loc[2, "loss"] = 3.45  # small batch also bad with the half-life fixed
    assert marek.beta2_regime_claims(best, tolerance=0.02)[0]["verdict"] == "partly"


def test_accumulation_arms_and_claims():
    runs = _runs([
        {"batch_size": 4, "final_val_loss": 3.00},
        {"batch_size": 64, "final_val_loss": 3.30},
        {"batch_size": 64, "micro_batch_size": 4.0, "final_val_loss": 3.305},
    ])
    runs["setup"] = marek.accumulation_setup(runs)
    assert runs["setup"].tolist() == ["small batch", "large batch", "large batch by accumulation"]
    best = best_per_group(runs, ["setup"], ["optimizer.lr"])
    memory = pd.DataFrame({"setup": ["small batch", "large batch", "large batch by accumulation"],
                           "gradients": [1.0, 1.0, 1.0], "total": [5.0, 9.0, 5.0]})
    verdicts = [c["verdict"] for c in marek.accumulation_claims(best, memory, tolerance=0.02)]
    assert verdicts == ["confirmed", "confirmed", "not tested at this scale"]


def _record(name, b, micro=None, params=100, state=200, act=50):
    return {"spec": {"optimizer": {"name": name}, "batch_size": b, "micro_batch_size": micro},
            "memory": {"parameters": params * 2**20, "gradients": params * 2**20, "optimizer_state": state * 2**20, "activations": act * 2**20}}


def test_memory_frame_totals_and_the_fused_accounting():
    memory = marek.memory_frame([_record("adamw", 4), _record("adamw", 64, micro=4)])
    assert memory["total"].tolist() == [450, 450]
    assert memory["total_fused"].tolist() == [350, 450]  # only the run without accumulation can drop its gradients


def test_memory_claims_compute_savings_against_adamw():
    records = [_record("adamw", 1, state=200, act=10), _record("sgd", 1, state=0, act=10), _record("adafactor", 1, state=1, act=10),
               _record("adamw", 64, state=200, act=600), _record("sgd", 64, state=0, act=600), _record("adafactor", 64, state=1, act=600)]
    claim = marek.memory_claims(marek.memory_frame(records))[0]
    assert claim["verdict"] == "confirmed"  # 1 - 210/410 = 49% saved at B=1
    assert "49% at B=1" in claim["measured"]


def test_curve_arms_pick_each_series_best_lr_and_keep_missing_ones_visible():
    beta2 = marek.with_beta2(_runs([
        {"batch_size": 64, "optimizer.lr": 1e-3, "final_val_loss": 3.3},
        {"batch_size": 64, "optimizer.lr": 3e-3, "final_val_loss": 3.2},
        {"batch_size": 1, "optimizer.lr": 1e-3, "final_val_loss": 3.6},
        {"batch_size": 1, "optimizer.beta2_half_life_tokens": 5e4, "final_val_loss": 3.1},
    ]), SEQ)
    optimizers = _runs([{"batch_size": 1, "optimizer.name": "adafactor", "final_val_loss": 3.11},
                        {"batch_size": 1, "optimizer.name": "sgd", "final_val_loss": np.nan, "status": "diverged"}])
    arms = marek.curve_arms(beta2, optimizers)
    assert arms["loss"].tolist()[:4] == [3.2, 3.6, 3.1, 3.11] and np.isnan(arms["loss"].iloc[4])
    assert arms["outcome"].iloc[4] == "every LR diverged"
    verdicts = [c["verdict"] for c in marek.curve_claims(arms, tolerance=0.02)]
    assert verdicts == ["confirmed", "confirmed", "confirmed", "not confirmed"]  # SGD diverged at every LR
    assert marek.curve_claims(arms.assign(outcome=["ok"] * 4 + ["no runs"]), 0.02)[3]["verdict"] == "not tested at this scale"


def test_robustness_table_and_claims_on_a_flat_and_a_sharp_surface():
    rows = []
    for lr in (1e-3, 3e-3, 1e-2):
        for b1 in (0.0, 0.5, 0.9):
            rows.append({"batch_size": 1, "optimizer.lr": lr, "optimizer.beta1": b1, "final_val_loss": 3.0 + 0.01 * (lr == 1e-2)})
            sharp = 3.0 if (lr, b1) == (3e-3, 0.9) else (np.nan if lr == 1e-2 else 3.5 - 0.3 * b1)
            rows.append({"batch_size": 64, "optimizer.lr": lr, "optimizer.beta1": b1, "final_val_loss": sharp})
    table = marek.robustness_table(_runs(rows), tolerance=0.05).set_index("batch_size")
    assert table.loc[1, "fraction_within_tolerance"] == 1.0
    assert table.loc[64, "fraction_within_tolerance"] == pytest.approx(1 / 9)
    assert table.loc[64, "diverged"] == 3 and table.loc[1, "cost_of_beta1_0"] == 0.0
    assert table.loc[64, "cost_of_beta1_0"] == pytest.approx(0.5)
    verdicts = [c["verdict"] for c in marek.robustness_claims(table.reset_index(), tolerance=0.05)]
    assert verdicts == ["confirmed", "confirmed"]


class _Exp:
    """The parts of an Experiment the sensitivity helpers read."""

    class base:
        class data:
            seq_len = SEQ

        class optimizer:
            beta2_half_life_tokens = 30_000.0

    settings = {"centre_beta1": 0.9, "batch_sizes": [1, 64]}


def test_sensitivity_table_measures_change_from_the_centre_per_hyperparameter():
    centres = marek.sensitivity_centres(_Exp, {1: 1e-3, 64: 4e-3})
    assert centres[1]["optimizer.beta1_half_life_tokens"] == pytest.approx(SEQ * np.log(0.5) / np.log(0.9))
    rows = []
    for b, centre in centres.items():
        steep = 0.01 if b == 1 else 0.2
        for seed in (0, 1):
            rows.append({**centre, "seed": seed, "final_val_loss": 3.0})
            for key in marek.SENSITIVITY_KEYS:
                for m in (0.125, 8.0):
                    loss = np.nan if (b == 64 and key == "optimizer.lr" and m == 8.0) else 3.0 + steep * abs(np.log2(m)) / 3
                    rows.append({**centre, key: centre[key] * m, "seed": seed, "final_val_loss": loss})
    table = marek.sensitivity_table(pd.DataFrame(rows), centres)
    assert len(table) == 2 * 3 * 3  # batch sizes x hyperparameters x (two multipliers and the centre)
    assert table.loc[table.multiplier == 1.0, "delta_loss"].tolist() == pytest.approx([0.0] * 6)
    small = table[(table.batch_size == 1) & (table.multiplier != 1.0)]
    assert small["delta_loss"].tolist() == pytest.approx([0.01] * 6)
    lr_large = table[(table.batch_size == 64) & (table.hyperparameter == "learning rate")].set_index("multiplier")["delta_loss"]
    assert lr_large[0.125] == pytest.approx(0.2) and np.isinf(lr_large[8.0])
    assert marek.sensitivity_claims(table, tolerance=0.02)[0]["verdict"] == "confirmed"


def _best(table: dict[str, list[float]], sizes=(1, 4, 16, 64, 256)) -> pd.DataFrame:
    return pd.DataFrame([{"optimizer.name": o, "batch_size": b, "loss": loss}
                         for o, losses in table.items() for b, loss in zip(sizes, losses)])


def test_optimizer_claims_confirm_the_papers_own_numbers():
    """Fig. 1a as read off the authors' plots (SGD beyond B=16 off the chart: diverged here)."""
    best = _best({"muon": [3.66, 3.66, 3.70, 3.71, 3.72], "adamw": [3.69, 3.73, 3.73, 3.73, 3.75],
                  "adafactor": [3.69, 3.74, 3.75, 3.82, 4.00], "sgd": [3.82, 4.11, 4.54, np.nan, np.nan]})
    claims = marek.optimizer_claims(best, tolerance=0.02)
    assert [c["verdict"] for c in claims] == ["confirmed", "confirmed", "confirmed", "confirmed"]


def test_optimizer_claims_reject_a_world_where_large_batches_win():
    best = _best({"muon": [4.0, 3.9, 3.8, 3.7, 3.6], "adamw": [4.5, 4.2, 3.9, 3.7, 3.6],
                  "adafactor": [4.2, 4.0, 3.9, 3.7, 3.6], "sgd": [5.0, 4.9, 4.8, 4.7, 4.6]})
    verdicts = [c["verdict"] for c in marek.optimizer_claims(best, tolerance=0.02)]
    assert verdicts == ["not confirmed", "not confirmed", "not confirmed", "not confirmed"]


def test_few_steps_caveat_names_the_starved_batch_sizes():
    runs = pd.DataFrame({"batch_size": [1, 64, 256], "steps": [1562, 24, 6]})
    text = marek.few_steps_caveat(runs)
    assert "B=64 trains for 24" in text and "B=256 trains for 6" in text and "B=1 " not in text
    assert marek.few_steps_caveat(runs.assign(steps=[5000, 500, 200])) is None


def test_finetune_arms_are_named_from_method_optimizer_and_batch_size():
    runs = _runs([
        {"batch_size": 16, "lora_rank": np.nan, "final_val_loss": 4.0},
        {"batch_size": 1, "lora_rank": 8.0, "final_val_loss": 4.1},
        {"batch_size": 1, "optimizer.name": "adafactor", "lora_rank": np.nan, "final_val_loss": 4.0},
    ])
    assert marek.finetune_arm(runs).tolist() == ["full, AdamW B=16", "LoRA r=8, AdamW B=1", "full, Adafactor B=1"]


def _finetune_table(adafactor_loss, lora_loss, adafactor_fused):
    rows = [  # arm, optimizer, batch size, LoRA rank, loss, total (as trained), total_fused (no gradient buffer)
        ("full, AdamW B=16", "adamw", 16, None, 4.10, 40.0, 37.0), ("full, AdamW B=1", "adamw", 1, None, 4.09, 13.0, 10.0),
        ("full, Adafactor B=1", "adafactor", 1, None, adafactor_loss, adafactor_fused + 3.0, adafactor_fused),
        ("full, SGD (no momentum) B=1", "sgd", 1, None, 4.50, 7.4, 4.4),
        ("LoRA r=8, AdamW B=16", "adamw", 16, 8, lora_loss, 34.0, 33.9), ("LoRA r=8, AdamW B=1", "adamw", 1, 8, lora_loss + 0.01, 5.6, 5.5),
    ]
    return pd.DataFrame(rows, columns=["arm", "optimizer", "batch_size", "lora_rank", "loss", "total", "total_fused"])


def test_finetune_claims_confirm_the_paper_when_adafactor_matches_adam_and_beats_lora_at_lora_memory():
    claims = {c["claim"]: c["verdict"] for c in marek.finetune_claims(_finetune_table(4.09, 4.25, 5.0), tolerance=0.02)}
    assert claims["Full fine-tuning with Adafactor at batch size 1 matches Adam."] == "confirmed"
    assert claims["Small-batch full fine-tuning (Adafactor) beats LoRA."] == "confirmed"
    assert [v for c, v in claims.items() if c.startswith("...at LoRA-like memory")] == ["confirmed"]
    assert [v for c, v in claims.items() if "Adam at batch size 1" in c] == ["confirmed"]
    assert [v for c, v in claims.items() if "SGD" in c] == ["not confirmed"]  # 0.41 behind; partly needs <= 0.34


def test_finetune_claims_refute_the_paper_when_lora_wins_and_adafactor_needs_far_more_memory():
    claims = {c["claim"]: c["verdict"] for c in marek.finetune_claims(_finetune_table(4.30, 4.20, 30.0), tolerance=0.02)}
    assert claims["Full fine-tuning with Adafactor at batch size 1 matches Adam."] == "not confirmed"
    assert claims["Small-batch full fine-tuning (Adafactor) beats LoRA."] == "not confirmed"
    assert [v for c, v in claims.items() if c.startswith("...at LoRA-like memory")] == ["not confirmed"]
