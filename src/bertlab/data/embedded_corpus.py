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
