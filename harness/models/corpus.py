"""A small English-like corpus from a fixed generated world, and multiple-choice tasks over it.

Everything is generated from seeds (no network, no downloads), so a model trained here can be
evaluated on questions it has never seen: the *held-out* part of the world (some sums, some
successors, some facts) is stated in the training text only in other words, or not at all, and
its questions are what the tasks ask. Accuracy above chance then means the model generalised
(addition, counting, or a fact read in another sentence form), and it grows with size and training.

``python -m harness.models.corpus --write-tasks harness/data/tasks`` writes the task files.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from harness.errors import HarnessError

#: the world (which facts exist, which are held out) never changes with the text seed
WORLD_SEED = 20240601
#: numbers are whole words 0..MAX_NUMBER
MAX_NUMBER = 199
#: summands of the arithmetic sentences run 0..ARITH_MAX
ARITH_MAX = 29
HELD_OUT_FRACTION = 0.25
N_CHOICES = 4

COLOURS = ["red", "blue", "green", "yellow", "black", "white", "brown", "pink"]
THINGS = [
    "apple", "kettle", "hat", "boat", "chair", "lamp", "book", "cup", "door", "kite",
    "shoe", "coat", "ball", "box", "car", "bike", "bag", "clock", "bell", "drum",
    "fork", "spoon", "plate", "bowl", "rug", "sock", "glove", "scarf", "tent", "flag",
    "pen", "brush", "comb", "key", "ring", "vase", "fan", "bed", "desk", "sofa",
]  # fmt: skip
SIZES = ["big", "small", "new", "cheap"]
NAMES = ["tom", "ann", "sam", "lily", "ben", "mia", "max", "zoe", "leo", "ivy"]
ANIMALS = ["dog", "cat", "bird", "fox", "cow", "duck", "frog", "goat"]
VERBS = ["run", "sleep", "eat", "sing", "jump", "swim", "walk", "sit"]
PLACES = ["park", "river", "garden", "house", "field", "forest"]
SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "su", "bel", "dra", "nor", "pi", "zan"]
N_COUNTRIES = 64

TASKS = {
    "arith_mc": "addition of two numbers 0..29 whose sum the training text never states",
    "successor_mc": "the number after n, for n never asked about in training (only counted)",
    "facts_mc": "colours of things and capitals of made-up countries read only in other words",
}


@dataclass(frozen=True)
class World:
    """The facts of the generated world and which of them are held out."""

    arith_train: tuple[tuple[int, int], ...]
    arith_test: tuple[tuple[int, int], ...]
    succ_train: tuple[int, ...]
    succ_test: tuple[int, ...]
    colour_of: dict[str, str]  # "big kettle" -> "blue"
    colour_test: frozenset[str]
    capital_of: dict[str, str]  # country -> capital
    capital_test: frozenset[str]


def _split(items: list, rng: random.Random) -> tuple[list, list]:
    """Shuffle a copy and cut off the held-out share; both parts keep the original order."""
    order = list(items)
    rng.shuffle(order)
    n_test = round(len(order) * HELD_OUT_FRACTION)
    test = set(order[:n_test])
    return [x for x in items if x not in test], [x for x in items if x in test]


def _made_up_names(rng: random.Random, n: int, parts: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        name = "".join(rng.choice(SYLLABLES) for _ in range(parts))
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


@lru_cache(maxsize=1)
def world() -> World:
    """The one world every corpus and task is drawn from (fixed seed)."""
    rng = random.Random(WORLD_SEED)
    pairs = [(a, b) for a in range(ARITH_MAX + 1) for b in range(ARITH_MAX + 1)]
    arith_train, arith_test = _split(pairs, rng)
    succ_train, succ_test = _split(list(range(MAX_NUMBER)), rng)
    objects = [f"{size} {thing}" for thing in THINGS for size in SIZES]
    colour_of = {obj: rng.choice(COLOURS) for obj in objects}
    _, colour_test = _split(objects, rng)
    taken: set[str] = set()
    countries = _made_up_names(rng, N_COUNTRIES, 2, taken)
    capitals = _made_up_names(rng, N_COUNTRIES, 3, taken)
    capital_of = dict(zip(countries, capitals, strict=True))
    _, capital_test = _split(countries, rng)
    return World(
        arith_train=tuple(arith_train),
        arith_test=tuple(arith_test),
        succ_train=tuple(succ_train),
        succ_test=tuple(succ_test),
        colour_of=colour_of,
        colour_test=frozenset(colour_test),
        capital_of=capital_of,
        capital_test=frozenset(capital_test),
    )


# ---------------------------------------------------------------------------- training text
def _sentence(rng: random.Random, w: World) -> str:
    """One training sentence; held-out questions never appear in their asked form."""
    kind = rng.random()
    if kind < 0.34:
        a, b = rng.choice(w.arith_train)
        return f"{a} plus {b} is {a + b} ."
    if kind < 0.44:
        n = rng.choice(w.succ_train)
        return f"after {n} comes {n + 1} ."
    if kind < 0.54:
        start = rng.randrange(MAX_NUMBER - 4)
        return "count : " + " ".join(str(n) for n in range(start, start + 5)) + " ."
    if kind < 0.69:
        obj = rng.choice(list(w.colour_of))
        colour = w.colour_of[obj]
        if obj in w.colour_test or rng.random() < 0.5:
            size, thing = obj.split()
            return f"{rng.choice(NAMES)} has a {size} {colour} {thing} ."
        return f"the {obj} is {colour} ."
    if kind < 0.84:
        country = rng.choice(list(w.capital_of))
        capital = w.capital_of[country]
        if country in w.capital_test or rng.random() < 0.5:
            return f"{rng.choice(NAMES)} flew to {capital} in {country} ."
        return f"the capital of {country} is {capital} ."
    # grammar agreement: singular subject takes -s, plural does not
    animal, verb, place = rng.choice(ANIMALS), rng.choice(VERBS), rng.choice(PLACES)
    if rng.random() < 0.5:
        return f"the {animal} {verb}s in the {place} ."
    return f"the {animal}s {verb} in the {place} ."


def train_text(
    n_docs: int | None = None, *, n_chars: int | None = None, seed: int = 0
) -> list[str]:
    """Training documents (a few sentences each): ``n_docs`` of them, or enough for ``n_chars``.

    The same ``seed`` gives the same documents; the world (and its held-out part) does not
    depend on it.
    """
    if (n_docs is None) == (n_chars is None):
        raise HarnessError("train_text needs exactly one of n_docs or n_chars")
    rng = random.Random(seed)
    w = world()
    docs: list[str] = []
    chars = 0
    while (n_docs is not None and len(docs) < n_docs) or (n_chars is not None and chars < n_chars):
        doc = " ".join(_sentence(rng, w) for _ in range(rng.randint(2, 6)))
        docs.append(doc)
        chars += len(doc) + 1
    return docs


def vocabulary() -> list[str]:
    """Every word the corpus and the tasks use (the tokenizer must keep each whole)."""
    w = world()
    words = {str(n) for n in range(MAX_NUMBER + 1)}
    words |= set(COLOURS) | set(THINGS) | set(SIZES) | set(NAMES) | set(PLACES)
    words |= set(ANIMALS) | {a + "s" for a in ANIMALS} | set(VERBS) | {v + "s" for v in VERBS}
    words |= set(w.capital_of) | set(w.capital_of.values())
    words |= {"plus", "is", "after", "comes", "count", ":", ".", "has", "a", "the", "capital"}
    words |= {"of", "flew", "to", "in"}
    return sorted(words)


# ---------------------------------------------------------------------------- tasks
def _mc(question: str, answer: str, distractors: list[str], rng: random.Random) -> dict:
    choices = [answer, *distractors]
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "answer": choices.index(answer)}


def _number_distractors(correct: int, rng: random.Random, spread: int) -> list[str]:
    pool = [n for n in range(correct - spread, correct + spread + 1) if n != correct]
    pool = [n for n in pool if 0 <= n <= MAX_NUMBER]
    return [str(n) for n in rng.sample(pool, N_CHOICES - 1)]


def _arith(split: str, rng: random.Random) -> list[dict]:
    w = world()
    pairs = w.arith_test if split == "test" else w.arith_train
    return [
        _mc(f"{a} plus {b} is", str(a + b), _number_distractors(a + b, rng, 10), rng)
        for a, b in pairs
    ]


def _successor(split: str, rng: random.Random) -> list[dict]:
    # The distractors are successors from the same split: every number that follows "comes" in
    # the training text is a train answer, so distractors from the other split would give the
    # held-out answer away (or, to a model that memorised, rule it out).
    w = world()
    ns = w.succ_test if split == "test" else w.succ_train
    answers = [n + 1 for n in ns]
    out = []
    for n in ns:
        near = sorted((a for a in answers if a != n + 1), key=lambda a: (abs(a - n - 1), a))[:8]
        others = [str(a) for a in rng.sample(near, N_CHOICES - 1)]
        out.append(_mc(f"after {n} comes", str(n + 1), others, rng))
    return out


def _facts(split: str, rng: random.Random) -> list[dict]:
    w = world()
    held = split == "test"
    out = []
    for obj, colour in w.colour_of.items():
        if (obj in w.colour_test) == held:
            others = rng.sample([c for c in COLOURS if c != colour], N_CHOICES - 1)
            out.append(_mc(f"the {obj} is", colour, others, rng))
    # capitals, like successors, take distractors from their own split (see _successor)
    capitals = [c for k, c in w.capital_of.items() if (k in w.capital_test) == held]
    for country, capital in w.capital_of.items():
        if (country in w.capital_test) == held:
            others = rng.sample([c for c in capitals if c != capital], N_CHOICES - 1)
            out.append(_mc(f"the capital of {country} is", capital, others, rng))
    return out


_TASK_BUILDERS = {"arith_mc": _arith, "successor_mc": _successor, "facts_mc": _facts}


def task_examples(task: str, split: str = "test", n: int | None = None) -> list[dict]:
    """Multiple-choice examples ``{"question", "choices", "answer"}`` (4 choices, chance 25%).

    ``split="test"``: the held-out questions (never in the training text, in that form);
    ``split="train"``: the same kind of question about facts the training text states.
    """
    if task not in _TASK_BUILDERS:
        raise HarnessError(f"unknown task {task!r} (known: {', '.join(_TASK_BUILDERS)})")
    if split not in ("train", "test"):
        raise HarnessError(f"unknown split {split!r} (known: train, test)")
    rng = random.Random(f"{task}/{split}")
    examples = _TASK_BUILDERS[task](split, rng)
    return examples if n is None else examples[:n]


# ---------------------------------------------------------------------------- task files
_TASK_YAML = """\
# Generated by `python -m harness.models.corpus --write-tasks DIR`; do not edit by hand.
# {description}
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {task}.jsonl
# datasets resolves data_files against the working directory; this loader resolves them
# against this folder instead, so the task runs from anywhere.
custom_dataset: !function local_jsonl.load
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_choice: choices
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

_LOADER_PY = '''\
"""Loads this folder's task JSONL files for lm-eval (``custom_dataset: !function local_jsonl.load``).

Generated by ``python -m harness.models.corpus --write-tasks DIR``; do not edit by hand.
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(data_files=None, **_):
    import datasets

    splits = {}
    for split, name in (data_files or {}).items():
        path = Path(name) if Path(name).is_absolute() else HERE / name
        with open(path, encoding="utf-8") as f:
            splits[split] = datasets.Dataset.from_list([json.loads(line) for line in f])
    return datasets.DatasetDict(splits)
'''


def task_files() -> dict[str, str]:
    """The task folder's contents, file name -> text (what ``--write-tasks`` writes)."""
    files = {"local_jsonl.py": _LOADER_PY}
    for task, description in TASKS.items():
        rows = task_examples(task, "test")
        files[f"{task}.jsonl"] = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        files[f"{task}.yaml"] = _TASK_YAML.format(task=task, description=description)
    return files


def write_tasks(folder: Path) -> list[Path]:
    """Write the lm-eval task YAMLs, their JSONL data and loader into ``folder``."""
    from harness import atomic

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in task_files().items():
        path = folder / name
        atomic.write_text(path, text)
        written.append(path)
    return written


def tasks_dir() -> Path:
    """The one copy of the task files: ``harness/data/tasks`` (``suites/tasks`` links to it)."""
    return Path(__file__).resolve().parent.parent / "data" / "tasks"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.models.corpus", description=__doc__)
    parser.add_argument("--write-tasks", type=Path, metavar="DIR", help="write the task files")
    parser.add_argument("--sample", type=int, metavar="N", help="print N training documents")
    args = parser.parse_args(argv)
    if args.write_tasks:
        for path in write_tasks(args.write_tasks):
            print(path)
    if args.sample:
        print("\n".join(train_text(args.sample)))


if __name__ == "__main__":
    main()
