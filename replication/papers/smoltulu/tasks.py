"""SmolTulu's two task families, generated: multi-step reasoning (scored by exact match of a generated answer)
and pattern recognition / recall (scored by ranking choices by likelihood, or by a format regex). First piece
of the `smoltulu_ratio` experiment (issue 17); nothing here trains or downloads anything.

Every task is a pure function of (seed, size): the same call gives the same examples. Each example is a
`prompt` plus either an `answer` (exact match after stripping), a `pattern` (a regex the output must match
in full) or `choices` with the index of the right one. `split` cuts one task's examples into a fine-tuning and
an evaluation part with no prompt in both. The workbook's tokenizer is a byte-level BPE, so any task text is
representable (unseen strings fall back to bytes); the fine-tuning data teach the formats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

REASONING, PATTERN = "reasoning", "pattern"
_NAMES = ("Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea")
_ITEMS = ("apples", "coins", "books", "pens", "stones", "shells")
_CITIES = ("Verona", "Padua", "Milan", "Mantua", "Athens", "Ephesus", "Troy", "Tyre", "Sparta", "Delphi", "Naples", "Genoa")
_WORDS = ("red", "blue", "green", "gold", "grey", "pink", "black", "white")


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str
    answer: str | None = None  # exact match
    pattern: str | None = None  # full-match regex (format following)
    choices: tuple[str, ...] = ()  # ranking: the continuation with the highest likelihood should be choices[correct]
    correct: int | None = None
    target: str = field(default="", compare=False)  # what fine-tuning trains on after the prompt


def _example(task: str, prompt: str, **kw) -> Example:
    target = kw.get("answer") or (kw["choices"][kw["correct"]] if kw.get("choices") else kw.get("target", ""))
    return Example(task, prompt, target=target, **{k: v for k, v in kw.items() if k != "target"})


# ------------------------------------------------------------------------------------------- reasoning
def carry_addition(rng: np.random.Generator, digits: int = 3) -> Example:
    """Multi-digit addition whose sum carries at least once: `Q: 478+356= A:` -> `834`."""
    while True:
        a, b = (int(rng.integers(10 ** (digits - 1), 10**digits)) for _ in range(2))
        if any((a // 10**i % 10) + (b // 10**i % 10) >= 10 for i in range(digits)):
            return _example("carry_addition", f"Q: {a}+{b}= A:", answer=str(a + b))


def variable_binding(rng: np.random.Generator, hops: int = 3) -> Example:
    """Multi-hop binding: `a=3; b=a+4; c=b*2; c=?` -> `14` (each hop adds or multiplies the one before)."""
    names = "abcdefgh"[: hops + 1]
    value = int(rng.integers(1, 10))
    parts = [f"{names[0]}={value}"]
    for prev, name in zip(names, names[1:]):
        k = int(rng.integers(2, 5))
        if rng.random() < 0.5:
            parts.append(f"{name}={prev}+{k}")
            value += k
        else:
            parts.append(f"{name}={prev}*{k}")
            value *= k
    return _example("variable_binding", "; ".join(parts) + f"; {names[hops]}=?", answer=str(value))


def word_problem(rng: np.random.Generator) -> Example:
    """Two-step templated arithmetic: has x, buys y more, gives z away; how many now?"""
    name, item = _NAMES[int(rng.integers(len(_NAMES)))], _ITEMS[int(rng.integers(len(_ITEMS)))]
    x, y = int(rng.integers(2, 20)), int(rng.integers(2, 20))
    z = int(rng.integers(1, x + y))
    prompt = f"{name} has {x} {item}, gets {y} more and gives {z} away. How many {item} does {name} have now? A:"
    return _example("word_problem", prompt, answer=str(x + y - z))


# -------------------------------------------------------------------------------------------- patterns
def periodic_continuation(rng: np.random.Generator) -> Example:
    """Surface pattern completion, ranked: `red blue green red blue green red` -> `blue` among 4 words."""
    period = [str(w) for w in rng.choice(_WORDS, size=int(rng.integers(2, 4)), replace=False)]
    shown = int(rng.integers(len(period) + 1, 3 * len(period)))
    seq = [period[i % len(period)] for i in range(shown)]
    right = period[shown % len(period)]
    wrong = [str(w) for w in rng.choice([w for w in _WORDS if w != right], size=3, replace=False)]
    choices = [right, *wrong]
    order = rng.permutation(4)
    return _example("periodic_continuation", " ".join(seq), choices=tuple(f" {choices[i]}" for i in order),
                    correct=int(np.flatnonzero(order == 0)[0]))


def fact_lookup(rng: np.random.Generator, facts: dict[str, str] | None = None) -> Example:
    """Recall of a fixed table of facts (the same for every seed): `Where does Cleo live? A:` -> ` Milan`, ranked
    among the other cities. The fine-tuning split states the facts; the evaluation split queries them."""
    facts = facts or FACTS
    name = list(facts)[int(rng.integers(len(facts)))]
    right = facts[name]
    wrong = [str(c) for c in rng.choice([c for c in set(facts.values()) if c != right], size=3, replace=False)]
    order = rng.permutation(4)
    choices = [right, *wrong]
    return _example("fact_lookup", f"Where does {name} live? A:", choices=tuple(f" {choices[i]}" for i in order),
                    correct=int(np.flatnonzero(order == 0)[0]))


FACTS = dict(zip(_NAMES, _CITIES))


def format_following(rng: np.random.Generator) -> Example:
    """Instruction following checked by a regex (IFEval's kind): wrap a word in brackets, or write it in capitals."""
    word = _WORDS[int(rng.integers(len(_WORDS)))] + _ITEMS[int(rng.integers(len(_ITEMS)))]
    if rng.random() < 0.5:
        return _example("format_following", f"Write {word} in brackets. A:", pattern=re.escape(f"[{word}]"), target=f"[{word}]")
    return _example("format_following", f"Write {word} in capitals. A:", pattern=re.escape(word.upper()), target=word.upper())


TASKS = {"carry_addition": (REASONING, carry_addition), "variable_binding": (REASONING, variable_binding),
         "word_problem": (REASONING, word_problem), "periodic_continuation": (PATTERN, periodic_continuation),
         "fact_lookup": (PATTERN, fact_lookup), "format_following": (PATTERN, format_following)}


def generate(task: str, n: int, seed: int) -> list[Example]:
    """`n` distinct examples of `task` (a name in TASKS), a pure function of (task, n, seed)."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} is unknown; choose one of: {', '.join(TASKS)}")
    rng = np.random.default_rng([seed, list(TASKS).index(task)])
    make = TASKS[task][1]
    out: dict[str, Example] = {}
    for _ in range(50 * n):
        ex = make(rng)
        out.setdefault(ex.prompt, ex)
        if len(out) == n:
            return list(out.values())
    raise ValueError(f"task {task!r} has fewer than {n} distinct prompts")


def split(examples: list[Example], eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(fine-tuning, evaluation) with no prompt in both (examples are distinct by prompt)."""
    order = np.random.default_rng(seed).permutation(len(examples))
    n_eval = max(1, round(eval_fraction * len(examples)))
    return [examples[i] for i in sorted(order[n_eval:])], [examples[i] for i in sorted(order[:n_eval])]


def fact_statements(facts: dict[str, str] | None = None) -> list[str]:
    """The sentences that teach the facts during fine-tuning (fact_lookup's evaluation queries them)."""
    return [f"{name} lives in {city}." for name, city in (facts or FACTS).items()]


# ---------------------------------------------------------------------------------------------- scoring
def exact_match(output: str, example: Example) -> bool:
    return output.strip() == example.answer


def format_match(output: str, example: Example) -> bool:
    return re.fullmatch(example.pattern, output.strip()) is not None


def ranking_correct(choice_log_likelihoods, example: Example) -> bool:
    """The right choice has the highest log-likelihood (ties count against it)."""
    ll = np.asarray(choice_log_likelihoods, dtype=float)
    return bool(ll[example.correct] > np.delete(ll, example.correct).max())


def family(task: str) -> str:
    return TASKS[task][0]
