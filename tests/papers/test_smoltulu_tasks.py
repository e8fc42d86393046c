"""smoltulu tasks: seeded, answers verifiable from the prompt alone, splits disjoint, the mixture in the engine's form."""

import re

import pytest

from replication.papers.smoltulu import tasks


def _solve(ex: tasks.Example) -> str:
    """Recompute the answer from the prompt text, independently of the generator."""
    if ex.task == "carry_addition":
        a, b = map(int, re.match(r"Q: (\d+)\+(\d+)= A:", ex.prompt).groups())
        return str(a + b)
    if ex.task == "variable_binding":  # follow the links from the query back to a digit, in any order
        *assignments, query = ex.prompt.split("; ")
        links = dict(part.split("=") for part in assignments)
        name = query[0]
        while not links[name].isdigit():
            name = links[name]
        return links[name]
    if ex.task == "sort_digits":
        return " ".join(sorted(ex.prompt.removeprefix("sort ").removesuffix(" A:").split(), key=int))
    if ex.task == "reverse_words":
        return " ".join(reversed(ex.prompt.removeprefix("reverse ").removesuffix(" A:").split()))
    x, y, z = map(int, re.match(r"\w+ has (\d+) \w+, gets (\d+), gives (\d+) away", ex.prompt).groups())
    return str(x + y - z)


@pytest.mark.parametrize("task", ["carry_addition", "variable_binding", "word_problem", "sort_digits", "reverse_words"])
def test_reasoning_answers_follow_from_the_prompt(task):
    examples = tasks.generate(task, 200, seed=0)
    assert all(_solve(ex) == ex.answer for ex in examples)


def test_every_addition_carries():
    for ex in tasks.generate("carry_addition", 100, seed=1):
        a, b = map(int, re.findall(r"\d+", ex.prompt))
        assert any(int(x) + int(y) >= 10 for x, y in zip(str(a)[::-1], str(b)[::-1]))


def test_binding_needs_every_hop_and_has_a_distractor():
    for ex in tasks.generate("variable_binding", 100, seed=2):
        *assignments, _ = ex.prompt.split("; ")
        digits = [a for a in assignments if a.split("=")[1].isdigit()]
        assert len(assignments) == 4 and len(digits) == 2 and len({d.split("=")[1] for d in digits}) == 2


def test_patterns_rank_one_right_choice_and_formats_are_checked_by_their_regex_alone():
    for ex in tasks.generate("periodic_continuation", 100, seed=0):
        words = ex.prompt.split()
        period = next(p for p in range(1, len(words)) if all(words[i] == words[i % p] for i in range(len(words))))
        assert ex.choices[ex.correct].strip() == words[len(words) % period] and len(set(ex.choices)) == 4
    for ex in tasks.generate("fact_lookup", 64, seed=0):
        name = ex.prompt.split()[0]
        assert ex.choices[ex.correct].strip() == tasks.FACTS[name] and len(set(ex.choices)) == 4
        assert f"{name} lives in {tasks.FACTS[name]}." in tasks.fact_statements()
    examples = tasks.generate("format_following", 60, seed=0)
    assert {ex.pattern for ex in examples} == {pattern for _, pattern in tasks.FORMATS.values()}
    for ex in examples:
        words, instruction = re.fullmatch(r"Write ([a-z]+ [a-z]+) (.+)\. A:", ex.prompt).groups()
        assert ex.answer is None and ex.target == {"in brackets": f"[{words}]", "twice": f"{words} {words}",
                                                   "in capitals": words.upper()}[instruction]
        # the regex verifies the format whatever the words, and no other format passes it
        assert re.fullmatch(ex.pattern, ex.target) and re.fullmatch(ex.pattern, tasks.FORMATS[instruction][0]("gold ring"))
        assert not any(re.fullmatch(ex.pattern, write(words)) for other, (write, _) in tasks.FORMATS.items() if other != instruction)
        assert not re.fullmatch(ex.pattern, ex.target + " and more")


def test_the_mixture_keeps_evaluation_prompts_out_of_fine_tuning_and_states_every_fact():
    sizes = {"carry_addition": 50, "variable_binding": 50, "periodic_continuation": 40, "fact_lookup": 64, "format_following": 40}
    train, evaluation = tasks.mixture(sizes, 0.2, seed=1)
    prompts = {ex["prompt"] for ex in train}
    for task, items in evaluation.items():
        assert items and not prompts & {i["prompt"] for i in items}, task
    assert len(evaluation["carry_addition"]) == 10 and len(evaluation["fact_lookup"]) == 64
    assert {ex["completion"].strip() for ex in train if ex["prompt"] == "Fact:"} == set(tasks.fact_statements())
    assert all(ex["completion"].startswith(" ") for ex in train)  # one space between prompt and completion, as scored
    assert all(i["answer"] == " " + str(int(i["answer"])) for i in evaluation["carry_addition"])
    assert all(set(i) == {"prompt", "pattern"} for i in evaluation["format_following"])  # scored by regex, not exact match
    assert (train, evaluation) == tasks.mixture(sizes, 0.2, seed=1)


def test_continuation_items_rank_the_true_next_words():
    text = " ".join(f"w{i}" for i in range(2000))
    items = tasks.continuation_items(text, 30, seed=0, context_words=5, ending_words=3)
    for item in items:
        last = int(item["prompt"].split()[-1][1:])
        assert item["choices"][item["correct"]] == f" w{last + 1} w{last + 2} w{last + 3}" and len(item["choices"]) == 4
    assert items == tasks.continuation_items(text, 30, seed=0, context_words=5, ending_words=3)
    with pytest.raises(ValueError, match="too few"):
        tasks.continuation_items("a b c", 5, seed=0)
    with pytest.raises(ValueError, match="too few for 600 items"):  # 4 distinct passages per item
        tasks.continuation_items(text, 600, seed=0, context_words=5, ending_words=3)


def test_seeded_distinct_and_split_disjoint():
    a, b = tasks.generate("variable_binding", 300, seed=4), tasks.generate("variable_binding", 300, seed=4)
    assert a == b and a != tasks.generate("variable_binding", 300, seed=5)
    assert len({ex.prompt for ex in a}) == 300
    train, held_out = tasks.split(a, 0.2, seed=0)
    assert len(held_out) == 60 and not {ex.prompt for ex in train} & {ex.prompt for ex in held_out}
    assert {tasks.family(t) for t in tasks.TASKS} == {tasks.REASONING, tasks.LEARNED}  # every generated task is learned in fine-tuning
    assert {tasks.family(t) for t in tasks.CONTINUATIONS} == {tasks.KNOWLEDGE}  # the corpus's continuations draw on pretraining


def test_unknown_task_and_too_many_examples_are_clear_errors():
    with pytest.raises(ValueError, match="unknown; choose one of"):
        tasks.generate("gsm8k", 10, seed=0)
    with pytest.raises(ValueError, match="fewer than 65 distinct prompts"):
        tasks.generate("fact_lookup", 65, seed=0)
