"""What answering without a model scores on each evaluation task: chance, the best constant answer, copying
a number from the prompt, and echoing the prompt's list as given. A task-accuracy claim is about what
fine-tuning taught only where the model beats all four: two-hop binding asks for one of the two digits in
its prompt, so copying the first digit is right about half the time; a format check passes any output of
the most common format; three digits to sort already come sorted one time in six.

Every baseline is scored as `replication.sft` scores the model: an exact answer must be the whole output
(surrounding space stripped: the engine stores the answer with its leading space), a pattern must match
the whole output, and a ranked item is right only when the right choice is picked. A heuristic that picks
no choice of a ranked item guesses among them, so its expected accuracy there is 1 / number of choices.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

NUMBER = re.compile(r"\d+")


def expected_correct(item: dict, output: str) -> float:
    """The expected accuracy of answering `item` (an engine item: answer, pattern, or choices) with `output`."""
    text = output.strip()
    if "answer" in item:
        return float(item["answer"].strip() == text)
    if "pattern" in item:
        return float(re.fullmatch(item["pattern"], text) is not None)
    choices = [c.strip() for c in item["choices"]]
    return float(choices.index(text) == item["correct"]) if text in choices else 1 / len(choices)


def chance(items: list[dict]) -> float:
    """A random pick among a ranked item's choices; free generation (an exact answer or a format) has no chance level."""
    return float(np.mean([1 / len(item["choices"]) if "choices" in item else 0.0 for item in items]))


def accuracy(items: list[dict], outputs: list[str]) -> float:
    return float(np.mean([expected_correct(item, out) for item, out in zip(items, outputs)]))


def constant(items: list[dict], targets: list[str]) -> tuple[float, str]:
    """The best single output for every item, among the outputs fine-tuning teaches (`targets`, one per item):
    the most frequent right answer for an exact-answer task, any output of the most common format for a
    format task. Returns its accuracy and the output."""
    candidates = sorted(set(targets))
    scores = [accuracy(items, [c] * len(items)) for c in candidates]
    best = int(np.argmax(scores))
    return scores[best], candidates[best]


def copy_number(items: list[dict]) -> tuple[float, str]:
    """Answering with the first or the last number in the prompt (the better of the two; an empty answer when
    the prompt has none). Returns its accuracy and which number."""
    numbers = [NUMBER.findall(item["prompt"]) for item in items]
    scores = {which: accuracy(items, [found[k] if found else "" for found in numbers]) for which, k in (("first", 0), ("last", -1))}
    which = max(scores, key=scores.get)
    return scores[which], which


def echo(items: list[dict]) -> float:
    """Answering with the prompt's own list, unchanged: for `<instruction> a b c A:` the output `a b c` (for
    any prompt, its words after the first, up to the closing `A:`)."""
    outputs = [" ".join(item["prompt"].removesuffix(" A:").split()[1:]) for item in items]
    return accuracy(items, outputs)


def table(evaluation: dict[str, list[dict]], targets: dict[str, list[str]], family) -> pd.DataFrame:
    """One row per task: its items, family (`family(task)`), each baseline's accuracy (with the constant output
    and which number is copied; `echo`: the prompt's list as given) and the best of them, the bar a learned
    task must clear."""
    rows = []
    for task, items in sorted(evaluation.items()):
        held = targets[task]
        if len(held) != len(items):
            raise ValueError(f"baselines: {task} has {len(items)} evaluation items but {len(held)} targets")
        const, output = constant(items, held)
        copied, which = copy_number(items)
        row = {"task": task, "family": family(task), "items": len(items), "chance": chance(items), "constant": const,
               "constant_output": output, "copy_number": copied, "copied": which, "echo": echo(items)}
        row["best_baseline"] = max(row["chance"], const, copied, row["echo"])
        rows.append(row)
    return pd.DataFrame(rows)
