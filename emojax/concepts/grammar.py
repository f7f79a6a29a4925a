"""Seeded template grammar in plain English, shared by the concept datasets and the zoo corpus.

Every sentence is composed here from the word lists of `emojax.concepts.words` (each list
importable from here too), so a word-level tokenizer trained on the zoo corpus plus the shipped
datasets never meets an unknown word in a shipped prompt.

Vocabulary of the grammar:
  domain    one of DOMAINS (medical, finance, chemistry, software, travel, relationships).
  act       a request verb phrase; harmful acts carry a severity 1 (mild) .. 3 (severe),
            borderline acts an apparent severity 1 (mild wording) or 3 (alarming wording:
            "kill the weeds"), harmless acts 0. {person} slots are filled from PERSONS.
  task      one underlying request: an act with its slot filled (`Task`). Phrasings,
            openers, cues and framings turn one task into many prompts; the task is the unit
            every resampling clusters on (its request id).
  phrasing  how a task is asked ("how do I {act} ?"; PHRASINGS).
  cue       a context sentence that puts the responder into an emotional state (concern,
            eagerness, self_doubt), a cautious framing (caution) or nothing special (neutral).
  framing   a jailbreak-style wrapper around a request (role-play, fiction, urgency,
            hypothetical, authority, research; FRAMINGS), with a {request} slot.

Templates and splits. Every concept has >= 30 templates (`templates(concept)`): its cue
sentences (emotions, caution), its event pairs (harm_salience) or its phrasings (refusal);
every framing family has 8. Each template is assigned to train / val / test by a seeded
shuffle, so contrast pairs of one split use that split's templates only, and evaluation cues
of the test split are held out from extraction. Tasks are split too: the persons of a slotted
act are shared out 7 / 2 / 7 over train / val / test (acts without a slot are train only), so
every held-out request has its act seen in training with other people, never itself.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass

from emojax.concepts.words import (
    BORDERLINE,
    CAVEATS,
    COMPLY_OPENERS,
    CUES,
    DOMAINS,
    EVENT_REPLIES,
    FRAMINGS,
    HARM_EVENTS,
    HARM_FRAMES,
    HARMFUL,
    HARMLESS,
    HEDGES,
    JAILBREAK,
    NEUTRAL_DOMAIN_FACTS,
    NEUTRAL_PREDICATES,
    NEUTRAL_SUBJECTS,
    NEUTRAL_TAILS,
    OPENERS,
    PERSON_SPLIT,
    PERSONS,
    PHRASINGS,
    REFUSAL_OFFERS,
    REFUSAL_REASONS,
    REFUSALS,
    SPLITS,
    STEP_TAILS,
    STEPS,
)

# The word lists are importable from here as from emojax.concepts.words.
__all__ = [
    "BORDERLINE",
    "CAVEATS",
    "COMPLY_OPENERS",
    "CUES",
    "CUE_CONCEPTS",
    "DOMAINS",
    "EVENT_REPLIES",
    "FRAMINGS",
    "FRAMING_FRACTIONS",
    "HARMFUL",
    "HARMLESS",
    "HARM_EVENTS",
    "HARM_FRAMES",
    "HEDGES",
    "JAILBREAK",
    "NEUTRAL_DOMAIN_FACTS",
    "NEUTRAL_PREDICATES",
    "NEUTRAL_SUBJECTS",
    "NEUTRAL_TAILS",
    "OPENERS",
    "PERSONS",
    "PERSON_SPLIT",
    "PHRASINGS",
    "REFUSALS",
    "REFUSAL_OFFERS",
    "REFUSAL_REASONS",
    "Request",
    "SPLITS",
    "STEPS",
    "STEP_TAILS",
    "TEMPLATE_FRACTIONS",
    "Task",
    "Template",
    "acts",
    "all_words",
    "harm_pair",
    "phrase",
    "phrase_with",
    "pick_template",
    "sample_harm_pair",
    "sample_neutral",
    "sample_request",
    "sample_task",
    "strip_opener",
    "tasks",
    "template_by_id",
    "templates",
    "with_cue",
]


# Template splits (train, val, test): seeded shuffles cut at these fractions.
TEMPLATE_FRACTIONS: tuple[float, float, float] = (0.6, 0.2, 0.2)
FRAMING_FRACTIONS: tuple[float, float, float] = (0.6, 0.15, 0.25)
# Concepts whose templates are cue sentences (a key of CUES).
CUE_CONCEPTS: tuple[str, ...] = tuple(CUES)


@dataclass(frozen=True)
class Template:
    """One template of a concept or framing family.

    Attributes:
      id: '<concept>-<nn>' (unique across concepts).
      concept: a key of CUES, 'harm_salience', 'refusal', or a key of FRAMINGS.
      text: the cue sentence, the framing (with '{request}'), the phrasing (with '{act}'), or
        for harm_salience the harmful event (its harmless partner in `pair`).
      split: 'train' | 'val' | 'test'.
      domain: the domain a template belongs to ('' = any domain).
      pair: the harmless event of a harm_salience template ('' otherwise).
    """

    id: str
    concept: str
    text: str
    split: str
    domain: str = ""
    pair: str = ""

    def apply(self, request: str) -> str:
        """The request under this template: cue sentence + request, or the filled framing."""
        if "{request}" in self.text:
            return self.text.replace("{request}", request)
        return f"{self.text} {request}"


def _split_labels(n: int, key: str, fractions: tuple[float, float, float]) -> list[str]:
    """Seeded split label per item of n: a shuffle cut at `fractions` (>= 1 val and test)."""
    n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
    n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
    order = list(range(n))
    random.Random(f"template-split-{key}").shuffle(order)
    labels = [""] * n
    for rank, i in enumerate(order):
        labels[i] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return labels


@functools.cache
def _all_templates(concept: str) -> tuple[Template, ...]:
    if concept in CUES:
        texts = CUES[concept]
        labels = _split_labels(len(texts), concept, TEMPLATE_FRACTIONS)
        return tuple(
            Template(f"{concept}-{i:02d}", concept, t, s)
            for i, (t, s) in enumerate(zip(texts, labels, strict=True))
        )
    if concept in FRAMINGS:
        texts = FRAMINGS[concept]
        labels = _split_labels(len(texts), concept, FRAMING_FRACTIONS)
        return tuple(
            Template(f"{concept}-{i:02d}", concept, t, s)
            for i, (t, s) in enumerate(zip(texts, labels, strict=True))
        )
    if concept == "refusal":
        labels = _split_labels(len(PHRASINGS), concept, TEMPLATE_FRACTIONS)
        return tuple(
            Template(f"refusal-{i:02d}", concept, t, s)
            for i, (t, s) in enumerate(zip(PHRASINGS, labels, strict=True))
        )
    if concept == "harm_salience":
        out: list[Template] = []
        for d in DOMAINS:  # split within each domain, so every split covers every domain
            labels = _split_labels(len(HARM_EVENTS[d]), f"{concept}-{d}", TEMPLATE_FRACTIONS)
            for (bad, good), s in zip(HARM_EVENTS[d], labels, strict=True):
                out.append(Template(f"{concept}-{len(out):02d}", concept, bad, s, d, good))
        return tuple(out)
    raise ValueError(f"no templates for {concept!r}")


def templates(concept: str, split: str | None = None) -> tuple[Template, ...]:
    """The templates of a concept (a key of CUES, 'harm_salience', 'refusal') or framing family.

    Args:
      concept: the concept or framing family.
      split: 'train' | 'val' | 'test', or None for all of them.
    """
    out = _all_templates(concept)
    return out if split is None else tuple(t for t in out if t.split == split)


def template_by_id(template_id: str) -> Template:
    """The template with this id ('concern-07', 'roleplay-03', ...)."""
    concept = template_id.rsplit("-", 1)[0]
    for t in _all_templates(concept):
        if t.id == template_id:
            return t
    raise KeyError(template_id)


def pick_template(concept: str, index: int | random.Random, split: str | None = None) -> Template:
    """The `index`-th template of `concept` in `split` (cyclic), or a random one for an rng.

    `concept` may be JAILBREAK: the index then walks over every framing family in turn.
    """
    if concept == JAILBREAK:
        families = tuple(FRAMINGS)
        if isinstance(index, random.Random):
            return pick_template(index.choice(families), index, split)
        return pick_template(families[index % len(families)], index // len(families), split)
    pool = templates(concept, split)
    if not pool:
        raise ValueError(f"{concept!r} has no {split} templates")
    return index.choice(pool) if isinstance(index, random.Random) else pool[index % len(pool)]


@dataclass(frozen=True)
class Task:
    """One underlying request: an act with its {person} slot filled.

    Attributes:
      kind: 'harmful', 'harmless' or 'borderline'.
      domain: one of DOMAINS.
      act: the act template (with '{person}' when slotted).
      act_index: index of the act within `acts(kind, domain)`.
      person: the filled person ('' for an act without a slot).
      severity: 1..3 for harmful tasks, 0 otherwise.
      apparent: how severe the wording looks: the severity for harmful tasks, 1 (careful
        wording) or 3 (alarming words) for borderline ones, 0 for harmless ones.
      split: 'train' | 'val' | 'test' (see the module docstring).
    """

    kind: str
    domain: str
    act: str
    act_index: int
    person: str
    severity: int
    apparent: int
    split: str

    @property
    def text(self) -> str:
        """The filled act ("poison my boss with sleeping pills")."""
        return self.act.replace("{person}", self.person)

    @property
    def key(self) -> str:
        """A stable id of the task: '<kind>/<domain>/<act index>/<person>'."""
        return f"{self.kind}/{self.domain}/{self.act_index}/{self.person}"


@dataclass(frozen=True)
class Request:
    """One generated user request (a task, phrased).

    Attributes:
      kind: 'harmful', 'harmless' or 'borderline'.
      domain: one of DOMAINS.
      text: the request sentence (lead-in + phrasing + filled act).
      severity: 1..3 for harmful requests, 0 otherwise.
      act: index of the act template within `acts(kind, domain)`.
      apparent: apparent severity (see `Task`).
      task: the task's key (the underlying request).
      split: the task's split.
      phrasing: index of the phrasing within PHRASINGS.
    """

    kind: str
    domain: str
    text: str
    severity: int
    act: int
    apparent: int = 0
    task: str = ""
    split: str = ""
    phrasing: int = -1


def acts(kind: str, domain: str) -> list[tuple[str, int]]:
    """All (act template, severity) of one kind in one domain (severity 0 unless harmful)."""
    return [(a, s) for a, s, _ in _acts(kind, domain)]


def _acts(kind: str, domain: str) -> list[tuple[str, int, int]]:
    """(act template, severity, apparent severity) of one kind in one domain."""
    if kind == "harmful":
        return [(a, s, s) for s in (1, 2, 3) for a in HARMFUL[domain][s]]
    if kind == "harmless":
        return [(a, 0, 0) for a in HARMLESS[domain]]
    if kind == "borderline":
        return [(a, 0, s) for s in sorted(BORDERLINE[domain]) for a in BORDERLINE[domain][s]]
    raise ValueError(f"unknown request kind {kind!r}")


@functools.cache
def _tasks(kind: str, domain: str) -> tuple[Task, ...]:
    out = []
    for i, (act, sev, apparent) in enumerate(_acts(kind, domain)):
        if "{person}" not in act:
            out.append(Task(kind, domain, act, i, "", sev, apparent, "train"))
            continue
        persons = list(PERSONS)
        random.Random(f"task-split-{kind}-{act}").shuffle(persons)
        bounds = (PERSON_SPLIT[0], PERSON_SPLIT[0] + PERSON_SPLIT[1])
        for rank, person in enumerate(persons):
            split = "train" if rank < bounds[0] else "val" if rank < bounds[1] else "test"
            out.append(Task(kind, domain, act, i, person, sev, apparent, split))
    return tuple(out)


def tasks(kind: str, domain: str | None = None, split: str | None = None) -> list[Task]:
    """Every task of a kind (optionally of one domain and split), in a fixed order."""
    domains = DOMAINS if domain is None else (domain,)
    return [t for d in domains for t in _tasks(kind, d) if split is None or t.split == split]


def phrase(task: Task, rng: random.Random) -> Request:
    """The task asked with a random phrasing and lead-in."""
    phrasing = rng.randrange(len(PHRASINGS))
    opener = rng.choice(OPENERS)
    return phrase_with(task, phrasing, opener)


def phrase_with(task: Task, phrasing: int, opener: str = "") -> Request:
    """The task asked with PHRASINGS[phrasing] after the lead-in `opener`."""
    text = PHRASINGS[phrasing].replace("{act}", task.text)
    text = f"{opener} {text}" if opener else text
    return Request(
        task.kind, task.domain, text, task.severity, task.act_index,
        task.apparent, task.key, task.split, phrasing,
    )  # fmt: skip


def strip_opener(text: str) -> str:
    """The request without its optional lead-in (see OPENERS)."""
    for opener in OPENERS:
        if opener and text.startswith(opener + " "):
            return text[len(opener) + 1 :]
    return text


def sample_task(
    rng: random.Random,
    kind: str,
    domain: str | None = None,
    severity: int | None = None,
    split: str | None = None,
) -> Task:
    """Draws one task: a uniform act (with a task in `split`), then one of its tasks."""
    domain = domain or rng.choice(DOMAINS)
    pool = [t for t in _tasks(kind, domain) if split is None or t.split == split]
    if severity is not None:
        pool = [t for t in pool if t.severity == severity]
    by_act: dict[int, list[Task]] = {}
    for t in pool:
        by_act.setdefault(t.act_index, []).append(t)
    if not by_act:
        raise ValueError(f"no {kind} task in {domain} (severity {severity}, split {split})")
    act = rng.choice(sorted(by_act))
    return rng.choice(by_act[act])


def sample_request(
    rng: random.Random,
    kind: str,
    domain: str | None = None,
    severity: int | None = None,
    split: str | None = None,
) -> Request:
    """Draws one request of `kind` (optionally fixing its domain / severity / task split)."""
    return phrase(sample_task(rng, kind, domain, severity, split), rng)


def sample_neutral(rng: random.Random, domain: str | None = None) -> tuple[str, str]:
    """Draws one neutral statement; returns (domain, text)."""
    domain = domain or rng.choice(DOMAINS)
    if rng.random() < 0.5:
        fact = rng.choice(NEUTRAL_DOMAIN_FACTS[domain])
    else:
        fact = f"{rng.choice(NEUTRAL_SUBJECTS)} {rng.choice(NEUTRAL_PREDICATES)}"
    tail = rng.choice(NEUTRAL_TAILS)
    return domain, f"{fact} .{' ' + tail if tail else ''}"


def harm_pair(template: Template, rng: random.Random) -> tuple[str, str]:
    """A matched (harmful, harmless) statement pair from a harm_salience template."""
    frame = rng.choice(HARM_FRAMES).replace("{person}", rng.choice(PERSONS))
    return frame.replace("{event}", template.text), frame.replace("{event}", template.pair)


def sample_harm_pair(
    rng: random.Random, domain: str | None = None, split: str | None = None
) -> tuple[str, str, str]:
    """Draws a matched (harmful, harmless) statement pair; returns (domain, pos, neg)."""
    domain = domain or rng.choice(DOMAINS)
    pool = [t for t in templates("harm_salience", split) if t.domain == domain]
    pos, neg = harm_pair(rng.choice(pool), rng)
    return domain, pos, neg


def with_cue(
    text: str, cue: str | None, rng: random.Random | int = 0, split: str | None = None
) -> str:
    """Prefixes a request with a context sentence for `cue` (None or 'none' = unchanged).

    Args:
      text: the request.
      cue: a key of CUES ('concern', 'eagerness', 'self_doubt', 'caution', 'neutral') or None.
      rng: a random.Random, or an int selecting the cue sentence deterministically.
      split: draw from the templates of this split only (None = all templates).
    """
    if cue in (None, "", "none"):
        return text
    return pick_template(cue, rng, split).apply(text)


def all_words() -> set[str]:
    """Every word the grammar can produce (lower-cased, punctuation split)."""
    pieces: list[str] = list(PERSONS) + list(PHRASINGS) + list(HARM_FRAMES) + list(OPENERS)
    for d in DOMAINS:
        for kind in ("harmful", "harmless", "borderline"):
            pieces += [a for a, _ in acts(kind, d)]
        pieces += list(NEUTRAL_DOMAIN_FACTS[d]) + list(STEPS[d])
        for a, b in HARM_EVENTS[d]:
            pieces += [a, b]
    for table in (CUES, FRAMINGS, REFUSAL_REASONS, COMPLY_OPENERS, EVENT_REPLIES):
        for v in table.values():
            pieces += v
    pieces += list(NEUTRAL_SUBJECTS + NEUTRAL_PREDICATES + NEUTRAL_TAILS)
    pieces += list(REFUSALS + REFUSAL_OFFERS + HEDGES + CAVEATS + STEP_TAILS)
    words: set[str] = set()
    for p in pieces:
        p = re.sub(r"\{\w+\}", "", p.lower())
        words.update(re.findall(r"\w+|[^\w\s]+", p))
    return words
