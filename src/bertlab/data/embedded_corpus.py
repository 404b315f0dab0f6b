"""A small synthetic corpus written for bertlab, generated from a seed: no download, nothing to bring.

It has real structure for a masked-language model to learn: a fixed little world (every animal has one
colour, home, food and size) described by sentences with agreement, word order and facts that stay
consistent across documents, so predicting a masked word needs syntax, the rest of the sentence and the
document's topic. The same words also carry the sentiment of the embedded labelled set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Animal:
    name: str
    plural: str
    colour: str
    home: str
    food: str
    size: int  # larger is bigger


ANIMALS = [
    Animal("fox", "foxes", "red", "forest", "berries", 3),
    Animal("wolf", "wolves", "grey", "mountains", "deer", 5),
    Animal("bear", "bears", "brown", "woods", "honey", 8),
    Animal("mouse", "mice", "white", "field", "seeds", 1),
    Animal("owl", "owls", "speckled", "tower", "mice", 2),
    Animal("frog", "frogs", "green", "pond", "flies", 1),
    Animal("goat", "goats", "black", "hills", "grass", 4),
    Animal("horse", "horses", "chestnut", "meadow", "oats", 7),
    Animal("otter", "otters", "sleek", "river", "fish", 3),
    Animal("eagle", "eagles", "golden", "cliffs", "rabbits", 4),
    Animal("rabbit", "rabbits", "sandy", "burrow", "carrots", 2),
    Animal("whale", "whales", "blue", "ocean", "krill", 10),
    Animal("camel", "camels", "tan", "desert", "thorns", 7),
    Animal("seal", "seals", "spotted", "coast", "squid", 5),
    Animal("crow", "crows", "dark", "village", "scraps", 2),
    Animal("deer", "deer", "dappled", "glade", "leaves", 6),
]
PEOPLE = [
    "anna",
    "ben",
    "clara",
    "david",
    "elena",
    "farid",
    "grace",
    "hugo",
    "ines",
    "jonas",
    "kemal",
    "lena",
]
PLACES = ["the bridge", "the old mill", "the market", "the harbour", "the school", "the station", "the farm"]
TIMES = ["in the morning", "at noon", "in the evening", "at night", "after the storm", "before sunrise"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine"]
POSITIVE = ["wonderful", "delightful", "lovely", "beautiful", "charming", "excellent", "great", "pleasant"]
NEGATIVE = ["awful", "dreadful", "boring", "terrible", "dull", "miserable", "horrible", "disappointing"]


def _sentences_about(animal: Animal, rng: random.Random) -> list[str]:
    person, other = rng.sample(PEOPLE, 2)
    smaller = rng.choice([a for a in ANIMALS if a.size < animal.size] or [None])
    bigger = rng.choice([a for a in ANIMALS if a.size > animal.size] or [None])
    n = rng.choice(NUMBERS)
    sentences = [
        f"the {animal.name} lives in the {animal.home} .",
        f"the {animal.name} is {animal.colour} and eats {animal.food} .",
        f"{animal.plural} are {animal.colour} and they live in the {animal.home} .",
        f"every {animal.name} likes {animal.food} more than anything else .",
        f"{person} saw a {animal.colour} {animal.name} near {rng.choice(PLACES)} {rng.choice(TIMES)} .",
        f"{person} counted {n} {animal.plural} in the {animal.home} {rng.choice(TIMES)} .",
        f"when it rains , the {animal.plural} hide in the {animal.home} .",
        f"{person} told {other} that the {animal.name} had eaten all the {animal.food} .",
        f"{other} asked where the {animal.plural} sleep , and {person} said in the {animal.home} .",
        f"a hungry {animal.name} searches the {animal.home} for {animal.food} .",
    ]
    if smaller:
        sentences.append(f"the {animal.name} is bigger than the {smaller.name} .")
    if bigger:
        sentences.append(f"the {animal.name} is smaller than the {bigger.name} .")
        sentences.append(f"the {animal.plural} run away when the {bigger.name} comes .")
    return sentences


def generate_documents(documents: int, seed: int = 0) -> list[str]:
    """`documents` texts of 4-9 sentences, each mostly about one animal; deterministic for a seed."""
    rng = random.Random(seed)
    texts = []
    for _ in range(documents):
        animal = rng.choice(ANIMALS)
        pool = _sentences_about(animal, rng)
        chosen = rng.sample(pool, k=min(len(pool), rng.randint(4, 9)))
        texts.append(" ".join(chosen))
    return texts


def generate_reviews(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(text, label) pairs: short visit reports whose label (positive/negative) the wording decides.

    Each review mixes neutral facts from the world above with sentiment words and occasional negation
    ("not boring"), so the label depends on the text and is not given away by one fixed word.
    """
    rng = random.Random(seed)
    reviews = []
    for _ in range(count):
        label = rng.choice(["positive", "negative"])
        animal = rng.choice(ANIMALS)
        person = rng.choice(PEOPLE)
        own, opposite = (POSITIVE, NEGATIVE) if label == "positive" else (NEGATIVE, POSITIVE)
        parts = [f"{person} visited the {animal.home} to see the {animal.plural} ."]
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.25:
                parts.append(f"it was not {rng.choice(opposite)} at all .")
            else:
                parts.append(f"the trip was {rng.choice(own)} .")
        parts.append(rng.choice(_sentences_about(animal, rng)))
        rng.shuffle(parts)
        reviews.append((" ".join(parts), label))
    return reviews


def generate_review_pairs(count: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(text, label, text_pair): two visit reports, labelled `same` when they share their sentiment, else
    `different`: neither text alone decides the label, so a model must compare them (a pair task)."""
    rng = random.Random(seed)
    reports = generate_reviews(2 * count, seed=rng.randrange(1 << 30))
    pairs = []
    for index in range(count):
        (first, first_label), (second, second_label) = reports[2 * index], reports[2 * index + 1]
        pairs.append((first, "same" if first_label == second_label else "different", second))
    return pairs


TAGGED_ANIMALS = ANIMALS[:6]


def _own_sentences(animal: Animal, rng: random.Random) -> list[str]:
    """Sentences about `animal` that name no other animal (no comparisons)."""
    return [
        s
        for s in _sentences_about(animal, rng)
        if not any(word in s for word in (" bigger than ", " smaller than ", " comes ."))
    ]


def generate_tagged_reports(count: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    """(text, labels): a report of one to three of six animals; its labels are the animals it names
    (a multi-label task)."""
    rng = random.Random(seed)
    reports = []
    for _ in range(count):
        animals = rng.sample(TAGGED_ANIMALS, k=rng.randint(1, 3))
        person = rng.choice(PEOPLE)
        parts = [f"{person} walked to {rng.choice(PLACES)} {rng.choice(TIMES)} ."]
        for animal in animals:
            parts.append(rng.choice(_own_sentences(animal, rng)))
        rng.shuffle(parts)
        reports.append((" ".join(parts), sorted(animal.name for animal in animals)))
    return reports


def generate_sized_reports(count: int, seed: int = 0) -> list[tuple[str, float]]:
    """(text, value): a report about one animal; its value is the animal's size (1-10), which the text
    never states (a regression task: the model learns what each animal is)."""
    rng = random.Random(seed)
    reports = []
    for _ in range(count):
        animal = rng.choice(ANIMALS)
        pool = _own_sentences(animal, rng)
        reports.append((" ".join(rng.sample(pool, k=min(len(pool), rng.randint(2, 4)))), float(animal.size)))
    return reports


# Embedded labelled sets by name: the problem type each is (Hugging Face's names) and its generator, whose
# records are (text, label) or (text, label, text_pair).
EMBEDDED_TASKS = {
    "sentiment": "single_label_classification",
    "pairs": "single_label_classification",
    "tags": "multi_label_classification",
    "sizes": "regression",
}
_GENERATORS = {
    "sentiment": generate_reviews,
    "pairs": generate_review_pairs,
    "tags": generate_tagged_reports,
    "sizes": generate_sized_reports,
}


def generate_labelled(task: str, count: int, seed: int = 0) -> list[tuple]:
    """The records of embedded set `task` (a key of EMBEDDED_TASKS); labels as a record holds them."""
    records = _GENERATORS[task](count, seed)
    if task == "tags":
        return [(text, tuple(labels)) for text, labels in records]
    return records
