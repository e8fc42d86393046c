"""smoltulu baselines: each heuristic scored as the engine scores the model, and the bars they set on the real task set."""

import re

import pytest

from replication.papers.smoltulu import baselines, tasks

SIZES = {"carry_addition": 200, "variable_binding": 400, "word_problem": 200, "periodic_continuation": 200, "fact_lookup": 64,
         "format_following": 120, "sort_digits": 600, "reverse_words": 400}


def test_each_item_kind_is_scored_as_the_engine_scores_the_model():
    answer = {"prompt": "Q: 1+2= A:", "answer": " 3"}
    assert baselines.expected_correct(answer, "3") == 1 and baselines.expected_correct(answer, " 3 ") == 1
    assert baselines.expected_correct(answer, "33") == 0  # exact match of the whole output
    ranked = {"prompt": "red blue red", "choices": [" green", " blue", " gold"], "correct": 1}
    assert baselines.expected_correct(ranked, "blue") == 1 and baselines.expected_correct(ranked, "gold") == 0
    assert baselines.expected_correct(ranked, "7") == pytest.approx(1 / 3)  # no choice picked: a guess
    pattern = {"prompt": "Write red crown in brackets. A:", "pattern": tasks.FORMATS["in brackets"][1]}
    assert baselines.expected_correct(pattern, "[gold ring]") == 1 and baselines.expected_correct(pattern, "gold ring") == 0
    assert baselines.chance([answer, ranked, pattern]) == pytest.approx((0 + 1 / 3 + 0) / 3)


def test_the_bars_on_the_generated_tasks():
    train, evaluation = tasks.mixture(SIZES, 0.25, seed=3)
    targets = tasks.evaluation_targets(SIZES, 0.25, seed=3)
    assert {t: len(v) for t, v in targets.items()} == {t: len(v) for t, v in evaluation.items()}
    for item, target in zip(evaluation["format_following"], targets["format_following"]):
        assert re.fullmatch(item["pattern"], target)  # each target is a right output of its item
    base = baselines.table(evaluation, targets, tasks.family).set_index("task")
    # two-hop binding asks for one of the prompt's two digits: copying the first is right about half the time
    assert base.loc["variable_binding", "copy_number"] == pytest.approx(0.5, abs=0.1)
    assert base.loc["variable_binding", "best_baseline"] == base.loc["variable_binding", "copy_number"]
    # one output in the most common format passes that format's regex: about a third of the items
    share = max(sum(i["pattern"] == p for i in evaluation["format_following"]) for _, p in tasks.FORMATS.values())
    assert base.loc["format_following", "constant"] == pytest.approx(share / len(evaluation["format_following"]))
    # an addition with a carry is never one of its operands; a constant sum is rarely right
    assert base.loc["carry_addition", "copy_number"] == 0 and base.loc["carry_addition", "constant"] < 0.1
    for task in ("periodic_continuation", "fact_lookup"):  # ranked among 4: chance is a quarter, no heuristic is far above
        assert base.loc[task, "chance"] == 0.25 and 0.25 <= base.loc[task, "best_baseline"] < 0.5
    # three distinct digits come sorted one time in six: echoing them is the bar; reversed words never echo
    assert base.loc["sort_digits", "echo"] == pytest.approx(1 / 6, abs=0.05) == base.loc["sort_digits", "best_baseline"]
    assert base.loc["reverse_words", "echo"] == 0 and base.loc["reverse_words", "best_baseline"] < 0.05
    assert (base["best_baseline"] == base[["chance", "constant", "copy_number", "echo"]].max(axis=1)).all()


def test_targets_that_do_not_match_the_items_are_an_error():
    _, evaluation = tasks.mixture({"word_problem": 40}, 0.25, seed=0)
    with pytest.raises(ValueError, match="evaluation items but"):
        baselines.table(evaluation, {"word_problem": ["1"]}, tasks.family)
