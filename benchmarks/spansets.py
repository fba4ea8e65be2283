"""Entity and answer data for span tests and benchmarks, built from templates and hand-written gazetteers.

No packaged NER or extractive-QA data set was found in the package lists (see docs/spans.md), so the
sets are generated: real first names, surnames, cities and organisations (written out below, several
languages and scripts, accents included) fill sentence templates, and every entity's character offsets
are known exactly because the generator places them. Each pool is split in two halves: training rows
draw names from one half and test rows from the other, so a score measures tagging names never seen in
training, not recalling them. Deterministic for a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FIRST = [
    "Maria", "José", "Aisha", "Liam", "Chen", "Zoë", "Łukasz", "Ngozi", "Hiroshi", "Fatima", "Olga", "Mateo",
    "Priya", "Sven", "Amélie", "Kwame", "Ingrid", "Rahul", "Elena", "Tomás", "Yusuf", "Hannah", "Dmitri", "Leila",
    "Carlos", "Sofia", "Nikolai", "Aiko", "Omar", "Greta", "Jamal", "Claire", "Pedro", "Anika", "Mehmet", "Rosa",
]
LAST = [
    "Lopez", "Müller", "Okafor", "Nakamura", "Kowalski", "Dubois", "Haddad", "Silva", "Johansson", "Patel",
    "Rossi", "Ivanova", "García", "O'Brien", "Nguyen", "Schmidt", "Mensah", "Yilmaz", "Andersen", "Moreau",
    "Kim", "Novak", "Fischer", "Costa", "Sato", "Petrov", "Brennan", "Herrera", "Lindqvist", "Adeyemi",
]
CITIES = [
    "Lyon", "Nairobi", "Osaka", "Kraków", "São Paulo", "Toronto", "Munich", "Lagos", "Seville", "Bergen",
    "Chennai", "Porto", "Istanbul", "Melbourne", "Zürich", "Accra", "Valparaíso", "Gdańsk", "Hanoi", "Dublin",
    "Marseille", "Bogotá", "Tampere", "Kyoto", "Cork", "Bilbao", "Leipzig", "Mombasa", "Quito", "Tbilisi",
]
ORGS = [
    "Siemens", "Unilever", "Nokia", "Toyota", "Oxfam", "UNESCO", "Airbus", "Deutsche Bahn", "Red Cross",
    "Philips", "Renault", "Ericsson", "Banco Santander", "Nestlé", "Infosys", "the World Bank", "Spotify",
    "Volvo", "Heineken", "Maersk", "Petrobras", "Tata Steel", "Médecins Sans Frontières", "Lufthansa",
    "Samsung", "Danone", "Equinor", "Safaricom", "Roche", "Interpol",
]
YEARS = [str(y) for y in range(1990, 2024)]

ENTITY_TEMPLATES = [
    "{PER} joined {ORG} in {LOC}.",
    "{PER} works for {ORG}.",
    "Yesterday {PER} flew from {LOC} to {LOC}.",
    "{ORG} opened a new office in {LOC} last spring.",
    "According to {PER}, {ORG} will hire more engineers.",
    "The conference in {LOC} was organised by {ORG} and chaired by {PER}.",
    "{PER} and {PER} met in {LOC} to sign the contract.",
    "Shares of {ORG} fell after the announcement.",
    "She moved to {LOC} after leaving {ORG}.",
    "Nobody expected the storm to be so strong this year.",
    "A spokesperson for {ORG} declined to comment on the report from {LOC}.",
    "{PER}, who grew up in {LOC}, now leads the research team at {ORG}.",
    "The mayor of {LOC} thanked {PER} for the donation.",
    "Our train was delayed for two hours because of the snow.",
    "{PER} said the partnership between {ORG} and {ORG} is good news for {LOC}.",
    "In {LOC}, {PER} founded a small bakery.",
    "The report was written by {PER} for {ORG}.",
    "Tickets for the concert in {LOC} sold out in minutes.",
]

QA_FACTS = {
    "born": ["{P} was born in {L}.", "{P} is a native of {L}.", "{L} is where {P} was born."],
    "works": ["{P} works for {O}.", "{P} has been employed by {O} since {Y}.", "{O} hired {P} as an analyst."],
    "moved": ["In {Y}, {P} moved to {M}.", "{P} relocated to {M} in {Y}."],
}
QA_QUESTIONS = {
    "born": [("Where was {P} born?", "L"), ("Which city is {P} from?", "L")],
    "works": [("Which company does {P} work for?", "O"), ("Who employs {P}?", "O")],
    "moved": [("When did {P} move to {M}?", "Y"), ("Where did {P} move in {Y}?", "M")],
}
FILLER = [
    "The weather that week was mild and dry.",
    "Local newspapers covered the story in detail.",
    "Several colleagues described the decision as surprising.",
    "The city council met twice during that month.",
    "Prices in the region rose steadily over the decade.",
]


@dataclass(frozen=True)
class Pools:
    first: list[str]
    last: list[str]
    cities: list[str]
    orgs: list[str]


def pools(half: int) -> Pools:
    """Half 0 (training names) or 1 (test names) of each gazetteer."""
    return Pools(*(items[half::2] for items in (FIRST, LAST, CITIES, ORGS)))


def entity_rows(n: int, half: int, seed: int) -> list[dict]:
    """``n`` rows ``{"input": text, "label": [{"start", "end", "label"}]}`` (PER, ORG, LOC) from
    gazetteer half ``half``."""
    rng = random.Random(seed * 1000 + half)
    p = pools(half)
    rows = []
    for _ in range(n):
        template = rng.choice(ENTITY_TEMPLATES)
        text, spans = "", []
        parts = template.replace("{", "\0{").replace("}", "}\0").split("\0")
        for part in parts:
            if part in ("{PER}", "{ORG}", "{LOC}"):
                kind = part[1:-1]
                value = (
                    f"{rng.choice(p.first)} {rng.choice(p.last)}" if kind == "PER"
                    else rng.choice(p.orgs) if kind == "ORG" else rng.choice(p.cities)
                )
                if text == "" and value.startswith("the "):
                    value = "The " + value[4:]
                start = len(text)
                if value.lower().startswith("the "):  # "the World Bank": the entity is "World Bank"
                    start += 4
                text += value
                spans.append({"start": start, "end": len(text), "label": kind})
            else:
                text += part
        rows.append({"input": text, "label": spans})
    return rows


def answer_rows(n: int, half: int, seed: int, unanswerable: float = 0.2, filler: int = 0) -> list[dict]:
    """``n`` rows ``{"input": {"question", "context"}, "label": {"start", "end"} | None}``: a context of
    facts about two people (and ``filler`` unrelated sentences between them), a question about one fact,
    the answer's offsets in the context; a share ``unanswerable`` asks about a third person (label None)."""
    rng = random.Random(seed * 1000 + 500 + half)
    p = pools(half)
    rows = []
    for _ in range(n):
        people = []
        while len(people) < 3:
            name = f"{rng.choice(p.first)} {rng.choice(p.last)}"
            if name not in people:
                people.append(name)
        sentences: list[tuple[str, dict[str, str], str]] = []
        for person in people[:2]:
            slots = {"P": person, "L": rng.choice(p.cities), "O": rng.choice(p.orgs),
                     "M": rng.choice(p.cities), "Y": rng.choice(YEARS)}
            for fact, variants in QA_FACTS.items():
                sentences.append((rng.choice(variants), slots, fact))
        rng.shuffle(sentences)
        context, located = "", {}
        for k, (template, slots, fact) in enumerate(sentences):
            if k and filler:
                context += " ".join(rng.choice(FILLER) for _ in range(filler)) + " "
            for piece in template.replace("{", "\0{").replace("}", "}\0").split("\0"):
                if piece.startswith("{") and piece.endswith("}"):
                    value = slots[piece[1:-1]]
                    if context == "" or context.endswith(". "):
                        value = value[:1].upper() + value[1:]
                    located[(slots["P"], fact, piece[1:-1])] = (len(context), len(context) + len(value))
                    context += value
                else:
                    context += piece
            context += " "
        context = context.strip()
        person_slots = {s["P"]: s for _, s, _ in sentences}
        fact = rng.choice(list(QA_QUESTIONS))
        question, slot = rng.choice(QA_QUESTIONS[fact])
        if rng.random() < unanswerable:
            asked = people[2]
            slots = dict(next(iter(person_slots.values())), P=asked)
            rows.append({"input": {"question": question.format(**slots), "context": context}, "label": None})
            continue
        asked = rng.choice(people[:2])
        slots = person_slots[asked]
        start, end = located[(asked, fact, slot)]
        rows.append({"input": {"question": question.format(**slots), "context": context},
                     "label": {"start": start, "end": end}})
    return rows
