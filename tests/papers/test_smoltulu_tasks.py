"""smoltulu tasks: seeded, answers verifiable from the prompt alone, splits disjoint, scorers strict."""

import re

import pytest

from replication.papers.smoltulu import tasks


def _solve(ex: tasks.Example) -> str:
    """Recompute the answer from the prompt text, independently of the generator."""
    if ex.task == "carry_addition":
        a, b = map(int, re.match(r"Q: (\d+)\+(\d+)= A:", ex.prompt).groups())
        return str(a + b)
    if ex.task == "variable_binding":
        env = {}
        *assignments, query = ex.prompt.split("; ")
        for part in assignments:
            name, expr = part.split("=")
            env[name] = int(expr) if expr.isdigit() else (env[expr[0]] + int(expr[2:]) if expr[1] == "+" else env[expr[0]] * int(expr[2:]))
        return str(env[query[0]])
    x, y, z = map(int, re.match(r"\w+ has (\d+) \w+, gets (\d+) more and gives (\d+) away", ex.prompt).groups())
    return str(x + y - z)


@pytest.mark.parametrize("task", ["carry_addition", "variable_binding", "word_problem"])
def test_reasoning_answers_follow_from_the_prompt(task):
    examples = tasks.generate(task, 200, seed=0)
    assert all(_solve(ex) == ex.answer for ex in examples)
    assert all(tasks.exact_match(f" {ex.answer}\n", ex) and not tasks.exact_match(ex.answer + "0", ex) for ex in examples)


def test_every_addition_carries():
    for ex in tasks.generate("carry_addition", 100, seed=1):
        a, b = map(int, re.findall(r"\d+", ex.prompt))
        assert any(int(x) + int(y) >= 10 for x, y in zip(str(a)[::-1], str(b)[::-1]))


def test_patterns_rank_one_right_choice_and_formats_are_checked_by_regex():
    for ex in tasks.generate("periodic_continuation", 100, seed=0):
        words = ex.prompt.split()
        period = next(p for p in range(1, len(words)) if all(words[i] == words[i % p] for i in range(len(words))))
        assert ex.choices[ex.correct].strip() == words[len(words) % period] and len(set(ex.choices)) == 4
    for ex in tasks.generate("fact_lookup", 12, seed=0):
        name = ex.prompt.split()[2]
        assert ex.choices[ex.correct].strip() == tasks.FACTS[name]
        assert f"{name} lives in {tasks.FACTS[name]}." in tasks.fact_statements()
    for ex in tasks.generate("format_following", 50, seed=0):
        assert tasks.format_match(ex.target, ex) and not tasks.format_match(ex.target.lower() + "!", ex)
    assert tasks.ranking_correct([-1.0, -2.0, -3.0, -4.0], tasks.Example("t", "p", choices=("a", "b", "c", "d"), correct=0))
    assert not tasks.ranking_correct([-1.0, -1.0, -3.0, -4.0], tasks.Example("t", "p", choices=("a", "b", "c", "d"), correct=0))


def test_seeded_distinct_and_split_disjoint():
    a, b = tasks.generate("variable_binding", 300, seed=4), tasks.generate("variable_binding", 300, seed=4)
    assert a == b and a != tasks.generate("variable_binding", 300, seed=5)
    assert len({ex.prompt for ex in a}) == 300
    train, held_out = tasks.split(a, 0.2, seed=0)
    assert len(held_out) == 60 and not {ex.prompt for ex in train} & {ex.prompt for ex in held_out}
    assert {tasks.family(t) for t in tasks.TASKS} == {tasks.REASONING, tasks.PATTERN}


def test_unknown_task_and_too_many_examples_are_clear_errors():
    with pytest.raises(ValueError, match="unknown; choose one of"):
        tasks.generate("gsm8k", 10, seed=0)
    with pytest.raises(ValueError, match="fewer than 13 distinct prompts"):
        tasks.generate("fact_lookup", 13, seed=0)
