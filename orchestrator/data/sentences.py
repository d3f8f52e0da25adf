"""Seeded text generators: everyday English and air-traffic-control phraseology, for the test and
demo speech that orchestrator.data.synth renders. Same seed, same sentences; a longer list starts
with the sentences of a shorter one (prefix-stable)."""
from __future__ import annotations

import random
from collections.abc import Callable

_SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
          "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spell_number(n: int) -> str:
    """English words for 0 <= n < 1000 ("one hundred and five")."""
    if n < 20:
        return _SMALL[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _SMALL[n % 10])
    rest = n % 100
    return f"{_SMALL[n // 100]} hundred" + (f" and {spell_number(rest)}" if rest else "")


_PEOPLE = ("my sister", "my brother", "the old man", "our neighbour", "the teacher", "a small child",
           "the doctor", "her friend", "the driver", "his mother", "the baker", "our guide",
           "my uncle", "the young woman", "the farmer", "your cousin", "the manager", "a tall man")
_PAST_VERBS = ("bought", "found", "painted", "carried", "cleaned", "borrowed", "sold", "lost",
               "fixed", "opened", "dropped", "washed", "ordered", "forgot", "moved", "wrapped")
_VERBS = ("buy", "find", "paint", "carry", "clean", "borrow", "sell", "fix", "open", "wash",
          "order", "move", "wrap", "check")
_ADJECTIVES = ("red", "blue", "green", "old", "new", "heavy", "small", "large", "wooden",
               "broken", "clean", "warm", "yellow", "quiet", "shiny", "cheap")
_NOUNS = ("bicycle", "umbrella", "box", "coat", "chair", "lamp", "basket", "kettle", "window",
          "bottle", "blanket", "ladder", "suitcase", "table", "jacket", "bucket", "book", "door")
_PLURAL = {"box": "boxes"}
_PLACES = ("at the market", "near the station", "in the garden", "behind the library",
           "by the river", "in the kitchen", "at the office", "on the bus", "in the park",
           "next to the bakery", "at the school", "in the hallway")
_TIMES = ("yesterday", "this morning", "last week", "on sunday", "before lunch", "after dinner",
          "last night", "on monday", "this afternoon", "an hour ago")
_FUTURES = ("tomorrow", "next week", "on friday", "tonight", "later today", "in the morning",
            "after school", "this weekend")
_WEATHER = ("cold", "warm", "windy", "rainy", "sunny", "cloudy", "foggy", "dry")
_ROOMS = ("kitchen", "office", "garage", "classroom", "hall", "library", "bedroom", "shop")
_PARTS_OF_DAY = ("in the morning", "in the afternoon", "in the evening", "at night")


def _plural(noun: str) -> str:
    return _PLURAL.get(noun, noun + "s")


_GENERAL_TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    lambda r: f"the {r.choice(_NOUNS)} is {r.choice(_ADJECTIVES)}",
    lambda r: f"where is my {r.choice(_ADJECTIVES)} {r.choice(_NOUNS)}",
    lambda r: f"{r.choice(_PEOPLE)} {r.choice(_PAST_VERBS)} it {r.choice(_TIMES)}",
    lambda r: f"{r.choice(_PEOPLE)} {r.choice(_PAST_VERBS)} the {r.choice(_ADJECTIVES)} "
              f"{r.choice(_NOUNS)} {r.choice(_PLACES)} {r.choice(_TIMES)}",
    lambda r: f"{r.choice(_PEOPLE)} {r.choice(_PAST_VERBS)} a {r.choice(_ADJECTIVES)} "
              f"{r.choice(_NOUNS)} {r.choice(_TIMES)}",
    lambda r: f"please put the {r.choice(_NOUNS)} {r.choice(_PLACES)}",
    lambda r: f"can you bring {spell_number(r.randint(2, 30))} {_plural(r.choice(_NOUNS))} "
              f"to the {r.choice(_ROOMS)}",
    lambda r: f"the {r.choice(_NOUNS)} {r.choice(_PLACES)} looks {r.choice(_ADJECTIVES)}",
    lambda r: f"we will meet {r.choice(_PLACES)} at {spell_number(r.randint(1, 12))} "
              f"{r.choice(_PARTS_OF_DAY)}",
    lambda r: f"{r.choice(_PEOPLE)} wants to {r.choice(_VERBS)} the {r.choice(_NOUNS)} "
              f"{r.choice(_FUTURES)}",
    lambda r: f"it will be {r.choice(_WEATHER)} and {r.choice(_WEATHER)} {r.choice(_FUTURES)}",
    lambda r: f"there are {spell_number(r.randint(2, 99))} {r.choice(_ADJECTIVES)} "
              f"{_plural(r.choice(_NOUNS))} {r.choice(_PLACES)}",
    lambda r: f"do not forget to {r.choice(_VERBS)} the {r.choice(_ADJECTIVES)} "
              f"{r.choice(_NOUNS)} {r.choice(_FUTURES)}",
    lambda r: f"the train leaves at {spell_number(r.randint(1, 12))} {r.choice(_PARTS_OF_DAY)}",
    lambda r: f"{r.choice(_PEOPLE)} paid {spell_number(r.randint(2, 999))} dollars for the "
              f"{r.choice(_NOUNS)}",
)

_DIGITS = "zero one two three four five six seven eight niner".split()
_NATO = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee "
         "zulu").split()
_AIRLINES = ("speedbird", "delta", "united", "lufthansa", "ryanair", "easy", "american",
             "shamrock", "cactus", "jetblue", "southwest", "qantas", "emirates", "air canada",
             "air france", "swiss", "finnair", "iberia", "alitalia")
_FACILITIES = ("tower", "ground", "approach", "departure", "center", "radar", "clearance")


def _digits(r: random.Random, k: int, first_nonzero: bool = True) -> str:
    ds = [r.randint(1 if (first_nonzero and i == 0) else 0, 9) for i in range(k)]
    return " ".join(_DIGITS[d] for d in ds)


def _spoken(number: str) -> str:
    return " ".join(_DIGITS[int(c)] for c in number)


def _callsign(r: random.Random) -> str:
    if r.random() < 0.7:
        return f"{r.choice(_AIRLINES)} {_digits(r, r.randint(1, 4))}"
    return f"november {_digits(r, r.randint(1, 3))} {' '.join(r.choices(_NATO, k=2))}"


def _runway(r: random.Random) -> str:
    side = r.choice(("", " left", " right", " center"))
    return f"runway {_spoken(f'{r.randint(1, 36):02d}')}{side}"


def _level(r: random.Random) -> str:
    if r.random() < 0.6:
        return f"flight level {_spoken(f'{r.randint(5, 45) * 10:03d}')}"
    return f"{spell_number(r.randint(2, 9))} thousand feet"


def _frequency(r: random.Random) -> str:
    return f"{_spoken(str(r.randint(118, 136)))} decimal {_DIGITS[r.randint(0, 9)]}"


# Instructions that can follow another one in the same transmission...
_ATC_EN_ROUTE: tuple[Callable[[random.Random], str], ...] = (
    lambda r: f"turn {r.choice(('left', 'right'))} heading "
              f"{_spoken(f'{r.randint(1, 36) * 10:03d}')}",
    lambda r: f"{r.choice(('climb', 'descend'))} and maintain {_level(r)}",
    lambda r: f"contact {r.choice(_FACILITIES)} {_frequency(r)}",
    lambda r: f"squawk {' '.join(_DIGITS[r.randint(0, 7)] for _ in range(4))}",
    lambda r: f"reduce speed to {_spoken(str(r.randint(16, 25) * 10))} knots",
    lambda r: f"altimeter {_spoken(str(r.randint(2950, 3040)))}",
    lambda r: f"wind {_spoken(f'{r.randint(1, 36) * 10:03d}')} degrees "
              f"{spell_number(r.randint(3, 25))} knots",
)
# ...and runway instructions, at most one per transmission.
_ATC_RUNWAY: tuple[Callable[[random.Random], str], ...] = (
    lambda r: f"{_runway(r)} cleared for takeoff",
    lambda r: f"{_runway(r)} cleared to land",
    lambda r: f"hold short of {_runway(r)}",
    lambda r: f"taxi to {_runway(r)} via {' '.join(r.sample(_NATO, k=r.randint(1, 3)))}",
    lambda r: f"line up and wait {_runway(r)}",
)


def _atc_sentence(r: random.Random) -> str:
    call = _callsign(r)
    first = r.choice(_ATC_EN_ROUTE + _ATC_RUNWAY)(r)
    shape = r.randrange(3)
    if shape == 0:
        return f"{call} {first}"
    if shape == 1:
        return f"{first} {call}"  # pilot read-back
    return f"{call} {first} {r.choice(_ATC_EN_ROUTE)(r)}"


def _unique(make: Callable[[random.Random], str], n: int, seed: int, ok: Callable[[str], bool]) -> list[str]:
    rng, seen, out = random.Random(seed), set(), []
    for _ in range(50 * n + 1000):
        if len(out) == n:
            break
        s = make(rng)
        if s not in seen and ok(s):
            seen.add(s)
            out.append(s)
    if len(out) < n:
        raise ValueError(f"could only generate {len(out)} unique sentences, {n} requested")
    return out


def general_sentences(n: int, seed: int) -> list[str]:
    """`n` unique everyday English sentences (4-12 lowercase words, numbers spelled out)."""
    return _unique(lambda r: r.choice(_GENERAL_TEMPLATES)(r), n, seed,
                   lambda s: 4 <= len(s.split()) <= 12)


def atc_sentences(n: int, seed: int) -> list[str]:
    """`n` unique air-traffic-control transmissions (call sign + one or two instructions)."""
    return _unique(_atc_sentence, n, seed, lambda s: True)
