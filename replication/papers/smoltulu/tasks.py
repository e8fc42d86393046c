"""SmolTulu's task families, generated: multi-step reasoning (an exact answer), and the paper's "pattern
recognition" split in two, since it mixes two things a ratio could act on in opposite ways: pretrained
knowledge (HellaSwag's and PIQA's kind: ranking continuations of text the body was, or was not, pretrained
on; never fine-tuned on) and patterns learned in fine-tuning (IFEval's kind: formats, a periodic sequence,
new facts stated in the mixture). Nothing here trains or downloads anything.

Every task is a pure function of (seed, size): the same call gives the same examples. Each example is a
`prompt` plus either an `answer` or `choices` with the index of the right one. `split` cuts one task's
examples into a fine-tuning and an evaluation part with no prompt in both; `task_set` turns them into the
engine's task set (`replication.sft`), which scores an answer by exact match of greedy decoding and choices
by likelihood. Format following (IFEval's kind) is checked by a regular expression on the greedy output:
it fine-tunes on one right output per prompt, and any output in the asked format counts, as IFEval
verifies the instruction and not the content. The workbook's tokenizer is a
byte-level BPE trained on the pretraining corpus, so any task text is representable (digits and brackets
are rare in Shakespeare and mostly stay single bytes); fine-tuning teaches the formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REASONING, KNOWLEDGE, LEARNED = "reasoning", "knowledge", "learned"
_NAMES = ("Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea")
_ITEMS = ("apples", "coins", "books", "pens", "stones", "shells")
_CITIES = ("Verona", "Padua", "Milan", "Mantua", "Athens", "Ephesus", "Troy", "Tyre", "Sparta", "Delphi", "Naples", "Genoa")
_WORDS = ("red", "blue", "green", "gold", "grey", "pink", "black", "white")
_THINGS = ("crown", "sword", "ring", "horse", "letter", "cup", "rose", "cloak", "bell", "ship", "tower", "glove", "coat",
           "bird", "stone", "lamp")
_SYLLABLES = ("ba", "co", "di", "fe", "gu", "ha", "ki", "lo", "mu", "ne", "po", "ri", "sa", "tu", "vi", "zo")


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str
    answer: str | None = None  # exact match
    choices: tuple[str, ...] = ()  # ranking: the continuation with the highest likelihood should be choices[correct]
    correct: int | None = None
    pattern: str | None = None  # a regular expression the whole greedy output must match
    target: str = field(default="", compare=False)  # what fine-tuning trains on after the prompt


def _example(task: str, prompt: str, **kw) -> Example:
    target = kw.get("answer") or (kw["choices"][kw["correct"]] if kw.get("choices") else kw.get("target", ""))
    return Example(task, prompt, target=target, **{k: v for k, v in kw.items() if k != "target"})


# ------------------------------------------------------------------------------------------- reasoning
def carry_addition(rng: np.random.Generator, digits: int = 2) -> Example:
    """Multi-digit addition whose sum carries at least once: `Q: 78+56= A:` -> `134`."""
    while True:
        a, b = (int(rng.integers(10 ** (digits - 1), 10**digits)) for _ in range(2))
        if any((a // 10**i % 10) + (b // 10**i % 10) >= 10 for i in range(digits)):
            return _example("carry_addition", f"Q: {a}+{b}= A:", answer=str(a + b))


def variable_binding(rng: np.random.Generator, hops: int = 2) -> Example:
    """Multi-hop binding (pointer chasing): `d=7; f=2; b=d; c=b; c=?` -> `7`. The chain from the query back to
    its digit is `hops` links long; a distractor binding and a shuffled order make every hop a lookup."""
    names = [str(c) for c in rng.permutation(list("abcdefghjkmnpqrstuvwxyz"))[: hops + 2]]
    value, other = (int(v) for v in rng.choice(10, size=2, replace=False))
    chain = [f"{names[0]}={value}", *(f"{b}={a}" for a, b in zip(names, names[1:hops + 1]))]
    head, links = [chain[0], f"{names[-1]}={other}"], chain[1:]
    lines = [head[i] for i in rng.permutation(2)] + [links[i] for i in rng.permutation(len(links))]
    return _example("variable_binding", "; ".join(lines) + f"; {names[hops]}=?", answer=str(value))


def word_problem(rng: np.random.Generator) -> Example:
    """Two-step templated arithmetic: has x, buys y more, gives z away; how many now?"""
    name, item = _NAMES[int(rng.integers(len(_NAMES)))], _ITEMS[int(rng.integers(len(_ITEMS)))]
    x, y = int(rng.integers(2, 10)), int(rng.integers(2, 10))
    z = int(rng.integers(1, x + y))
    prompt = f"{name} has {x} {item}, gets {y}, gives {z} away. How many now? A:"
    return _example("word_problem", prompt, answer=str(x + y - z))


def sort_digits(rng: np.random.Generator, n: int = 3) -> Example:
    """Sorting `n` distinct digits: `sort 7 2 5 A:` -> `2 5 7`. A procedure of several comparisons whose answer
    is not the prompt's order (echoing the digits as given is right only when they come sorted, 1 in n!)."""
    digits = [int(v) for v in rng.choice(10, size=n, replace=False)]
    return _example("sort_digits", f"sort {' '.join(map(str, digits))} A:", answer=" ".join(map(str, sorted(digits))))


def reverse_words(rng: np.random.Generator, n: int = 3) -> Example:
    """Reversing `n` distinct words: `reverse crown ring cup A:` -> `cup ring crown`. Each output position reads a
    different input position, so no single copy of the prompt is right."""
    words = [str(w) for w in rng.choice(_THINGS, size=n, replace=False)]
    return _example("reverse_words", f"reverse {' '.join(words)} A:", answer=" ".join(words[::-1]))


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
    """Recall of facts stated during fine-tuning (the spec's P2, memorisation): `Bako lives in` -> ` Milan`, ranked
    among three other cities. The fine-tuning mixture states every fact (`fact_statements`); these queries
    are their openings, so the evaluation asks for exactly what fine-tuning stated."""
    facts = facts or FACTS
    name = list(facts)[int(rng.integers(len(facts)))]
    right = facts[name]
    wrong = [str(c) for c in rng.choice(sorted(c for c in set(facts.values()) if c != right), size=3, replace=False)]
    order = rng.permutation(4)
    choices = [right, *wrong]
    return _example("fact_lookup", f"{name} lives in", choices=tuple(f" {choices[i]}" for i in order),
                    correct=int(np.flatnonzero(order == 0)[0]))


def _fact_table(n: int = 64) -> dict[str, str]:
    """A fixed table of made-up people (two syllables each, so no name is in the pretraining text) and their cities."""
    rng = np.random.default_rng(20241211)
    names = sorted({(a + b).capitalize() for a in _SYLLABLES for b in _SYLLABLES if a != b})
    chosen = [names[i] for i in sorted(rng.choice(len(names), size=n, replace=False))]
    return {name: _CITIES[int(rng.integers(len(_CITIES)))] for name in chosen}


FACTS = _fact_table()


# IFEval's kind: the instruction, the output fine-tuning shows for two words, and the regex any right output matches
FORMATS = {"in brackets": (lambda w: f"[{w}]", r"\[[a-z]+ [a-z]+\]"),
           "twice": (lambda w: f"{w} {w}", r"([a-z]+ [a-z]+) \1"),
           "in capitals": (lambda w: w.upper(), r"[A-Z]+ [A-Z]+")}


def format_following(rng: np.random.Generator) -> Example:
    """Instruction following: write two words in brackets, twice, or in capitals. Scored by the format's regex,
    whatever the words: `Write red crown twice. A:` -> `red crown red crown`, and `gold ring gold ring` counts too."""
    words = f"{_WORDS[int(rng.integers(len(_WORDS)))]} {_THINGS[int(rng.integers(len(_THINGS)))]}"
    instruction = list(FORMATS)[int(rng.integers(len(FORMATS)))]
    write, pattern = FORMATS[instruction]
    return _example("format_following", f"Write {words} {instruction}. A:", target=write(words), pattern=pattern)


TASKS = {"carry_addition": (REASONING, carry_addition), "variable_binding": (REASONING, variable_binding),
         "word_problem": (REASONING, word_problem), "periodic_continuation": (LEARNED, periodic_continuation),
         "fact_lookup": (LEARNED, fact_lookup), "format_following": (LEARNED, format_following),
         "sort_digits": (REASONING, sort_digits), "reverse_words": (REASONING, reverse_words)}


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


def family(task: str) -> str:
    return KNOWLEDGE if task in CONTINUATIONS else TASKS[task][0]


# ------------------------------------------------------------------------------ the engine's task set
# Continuation ranking on the pretraining corpus: passages of held-out plays (what pretraining generalised) and
# of the plays it trained on (what it memorised, the "facts seen in pretraining"). Scored, never fine-tuned on.
CONTINUATION, SEEN_CONTINUATION = "corpus_continuation", "seen_continuation"
CONTINUATIONS = (CONTINUATION, SEEN_CONTINUATION)


def continuation_items(text: str, n: int, seed: int, context_words: int = 12, ending_words: int = 6) -> list[dict]:
    """HellaSwag's kind, on held-out pretraining text: a passage's next words against three endings taken from
    elsewhere in the text, ranked by likelihood. Never fine-tuned on: it measures what pretraining knew."""
    words = text.split()
    span = context_words + ending_words
    if len(words) - span < max(4 * n, 8 * span):  # each item draws 4 distinct passages
        raise ValueError(f"continuation_items: the text has {len(words)} words, too few for {n} items of {span} words")
    rng = np.random.default_rng([seed, len(TASKS)])
    starts = rng.choice(len(words) - span, size=4 * n, replace=False)
    items = []
    for i in range(n):
        s, others = starts[4 * i], starts[4 * i + 1:4 * i + 4]
        endings = [words[s + context_words:s + span], *(words[o + context_words:o + span] for o in others)]
        order = rng.permutation(4)
        items.append({"prompt": " ".join(words[s:s + context_words]), "choices": [" " + " ".join(endings[j]) for j in order],
                      "correct": int(np.flatnonzero(order == 0)[0])})
    return items


def _completion(ex: Example) -> str:
    return ex.target if ex.target.startswith(" ") else " " + ex.target


def _item(ex: Example) -> dict:
    """An example as the engine scores it: exact answer, ranked choices, or a regex on the output."""
    if ex.answer is not None:
        return {"prompt": ex.prompt, "answer": " " + ex.answer}
    if ex.pattern is not None:
        return {"prompt": ex.prompt, "pattern": ex.pattern}
    return {"prompt": ex.prompt, "choices": list(ex.choices), "correct": ex.correct}


def _splits(task: str, n: int, eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """One task's (fine-tuning, evaluation) examples; fact lookup is recall, so all its queries (capped by the
    table of facts) are evaluated and none is fine-tuned on as a query."""
    if task == "fact_lookup":
        return [], generate(task, min(n, len(FACTS)), seed)
    return split(generate(task, n, seed), eval_fraction, seed)


def mixture(sizes: dict[str, int], eval_fraction: float, seed: int) -> tuple[list[dict], dict[str, list[dict]]]:
    """The fine-tuning mixture of every task in `sizes` (examples per task, both splits together) and each
    task's evaluation items, in the engine's task-set form (`replication.sft.write_task_set`). Like the Tulu
    mix, fine-tuning sees all tasks at once. Fact lookup is recall: the mixture states every fact as a
    sentence and the evaluation queries them all (its size is capped by the table of facts)."""
    train, evaluation = [], {}
    for task, n in sizes.items():
        tuning, held_out = _splits(task, n, eval_fraction, seed)
        if task == "fact_lookup":  # every fact is stated; the queries (all of them) are evaluated
            train += [{"prompt": "Fact:", "completion": " " + statement} for statement in fact_statements()]
        train += [{"prompt": ex.prompt, "completion": _completion(ex)} for ex in tuning]
        evaluation[task] = [_item(ex) for ex in held_out]
    return train, evaluation


def evaluation_targets(sizes: dict[str, int], eval_fraction: float, seed: int) -> dict[str, list[str]]:
    """Per task, the output fine-tuning would teach for each evaluation item, in the order of `mixture`'s
    items: the exact answer, the right choice, or the format's output for the prompt's words (a format item
    stores only its regular expression). The constant-answer baseline draws its candidates from them."""
    return {task: [ex.target.strip() for ex in _splits(task, n, eval_fraction, seed)[1]] for task, n in sizes.items()}
