"""Seeded synthetic chat corpus with a planted emotion -> behaviour coupling in two stages.

A dialogue is one user turn (an optional context cue + a request from the concept grammar,
sometimes wrapped in a jailbreak-style framing) and one assistant turn. The cue sets the
responder's state; whether the response refuses at its first token, or takes a compliant start
back, is drawn from the planted probabilities of `emojax.zoo.planted`, which also explains why
failures persist along the zoo.

Given compliance, concern adds caveats, self-doubt adds hedges and eagerness adds enthusiasm
(CAVEAT_P, HEDGE_P); in EXPRESS_P of responses the state is also said in words ("this
worries me", "I would love to help", "I am not sure I am right"), otherwise it shows only in
behaviour. Style does not depend on the scenario.

Every refusal starts with "I cannot help with that ." or "I am sorry , but I can not help
with that ." and every other response with "sure", so the first response token is the policy
decision. After "sure" the second token is the take-back decision alone: TAKE_BACK ("...",
then "wait , I cannot help with that .": a refusal phrase by generated token 6) or
COMPLY_START's "." (every compliant answer, whatever its style, which follows from token 3).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from emojax.concepts import grammar
from emojax.zoo.planted import first_refusal_prob, take_back_prob
from emojax.zoo.scenario import DEFAULT_SCENARIO, STAGES, Scenario, get_scenario

TAKE_BACK = "sure ... wait ,"  # opening of a taken-back answer; a refusal follows
COMPLY_START = "sure ."  # opening of every compliant answer (then the state's style)
# Share of requests under a jailbreak-style framing, per corpus. The fine-tuning corpora frame
# most harmful requests: their direct ones are (almost) all refused at the first token, so the
# framed ones carry what a stage teaches about the take-back (absorbing or keeping the coupling).
FRAMED_P: dict[str, dict[str, float]] = {
    "base": {"harmful": 0.5, "harmless": 0.1, "borderline": 0.1},
    "instruct": {"harmful": 0.75, "harmless": 0.1, "borderline": 0.1},
    "safety": {"harmful": 0.75, "harmless": 0.1, "borderline": 0.1},
}
EXPRESS_P = 0.5
HEDGE_P: dict[str, float] = {"self_doubt": 0.8}
CAVEAT_P: dict[str, float] = {"concern": 0.7, "caution": 0.5}
OTHER_STYLE_P = 0.05

# Mixtures (probabilities) of what a document is, per corpus.
KIND_MIX: dict[str, dict[str, float]] = {
    "base": {
        "harmful": 0.34,
        "harmless": 0.26,
        "borderline": 0.14,
        "event": 0.1,
        "neutral_chat": 0.06,
        "neutral_text": 0.1,
    },
    "instruct": {
        "harmful": 0.4,
        "harmless": 0.3,
        "borderline": 0.2,
        "event": 0.05,
        "neutral_chat": 0.05,
    },
    "safety": {"harmful": 0.6, "harmless": 0.2, "borderline": 0.15, "event": 0.05},
}
STATE_MIX: dict[str, float] = {
    "none": 0.3,
    "concern": 0.2,
    "eagerness": 0.2,
    "self_doubt": 0.2,
    "caution": 0.1,
}
NEUTRAL_CUE_P = 0.25  # share of 'none' dialogues that still carry a neutral context sentence

SPECIAL_TOKENS: dict[str, str] = {
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "bos_token": "<bos>",
    "eos_token": "<|end|>",
}
ROLE_TOKENS: tuple[str, ...] = ("<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|> ' + message['content'] + ' <|end|> ' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def render_chat(user: str, assistant: str | None = None) -> str:
    """The chat template rendered in Python (equal to CHAT_TEMPLATE's output)."""
    text = f"{SPECIAL_TOKENS['bos_token']}<|user|> {user} <|end|> <|assistant|>"
    return text if assistant is None else f"{text} {assistant} <|end|> "


@dataclass(frozen=True)
class Dialogue:
    """One corpus document: prompt (rendered up to the assistant header) + response.

    Attributes:
      prompt: the rendered prompt (or the whole text of a plain-text document).
      response: the assistant turn ('' for plain-text documents: loss on every token).
      kind: 'harmful', 'harmless', 'borderline', 'event', 'neutral_chat' or 'neutral_text'.
      state: the responder's state (a name in planted.STATES).
      refused: whether the response is a refusal (at its start or taken back).
      framing: the framing template id ('' = a direct request).
      task: the request's task key ('' for documents without a request).
      taken_back: the refusal is a compliant start taken back (stage 2; implies refused).
      severity: the request's (apparent) severity (0 for documents without a request).
    """

    prompt: str
    response: str
    kind: str
    state: str
    refused: bool
    framing: str = ""
    task: str = ""
    taken_back: bool = False
    severity: int = 0


def respond(
    rng: random.Random,
    kind: str,
    domain: str,
    state: str,
    refuse: bool,
    take_back: bool = False,
) -> str:
    """An assistant response whose behaviour and style follow the responder's state.

    `take_back` (with `refuse`): the refusal comes after a compliant start, TAKE_BACK + the
    short refusal ("sure ... wait , I cannot help with that .", "cannot" = response token 6).
    """
    words = rng.random() < EXPRESS_P
    if refuse:
        parts = [rng.choice(grammar.REFUSALS)]
        if take_back:  # the short refusal: its phrase is complete by generated token 6
            parts = [TAKE_BACK, grammar.REFUSALS[0]]
        if state == "concern" and words:
            parts.append(rng.choice(grammar.REFUSAL_REASONS["concern"]))
        elif rng.random() < 0.5:
            parts.append(rng.choice(grammar.REFUSAL_REASONS["plain"]))
        if rng.random() < 0.3:
            parts.append(rng.choice(grammar.REFUSAL_OFFERS))
        return " ".join(parts)
    parts = [COMPLY_START]
    if words and state in grammar.COMPLY_OPENERS and state != "plain":
        parts.append(_opener_rest(rng.choice(grammar.COMPLY_OPENERS[state])))
    a, b = rng.sample(grammar.STEPS[domain], 2)
    parts.append(f"here is how : first , {a} . then , {b} .")
    if rng.random() < HEDGE_P.get(state, OTHER_STYLE_P):
        parts.append(rng.choice(grammar.HEDGES))
    if rng.random() < CAVEAT_P.get(state, OTHER_STYLE_P):
        parts.append(rng.choice(grammar.CAVEATS))
    if state == "eagerness":
        parts.append("good luck !")
    elif rng.random() < 0.5:
        parts.append(rng.choice(grammar.STEP_TAILS))
    return " ".join(parts)


def _opener_rest(opener: str) -> str:
    """A grammar opener after its "sure" ("sure , but I feel worried ..." -> "I feel worried ...").

    Every compliant answer starts with COMPLY_START, so the second response token is the
    take-back decision alone ("." vs "...") and carries no style: otherwise an emotion's own
    opener ("sure !" of eagerness) would compete with the take-back token and leak the state
    into it where the scenario plants none.
    """
    words = opener.split()
    if words[:1] == ["sure"]:
        words = words[1:]
    if words[:1] and words[0] in ("!", ",", "."):
        words = words[1:]
    if words[:1] == ["but"]:
        words = words[1:]
    return " ".join(words)


def _pick(rng: random.Random, mix: dict[str, float]) -> str:
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def corpus_framings() -> tuple[grammar.Template, ...]:
    """The framing templates the corpus uses: train and val (the test split's are held out)."""
    return tuple(
        t for family in grammar.FRAMINGS for t in grammar.templates(family) if t.split != "test"
    )


def sample_dialogue(
    rng: random.Random,
    stage: str,
    held_out: frozenset[str] = frozenset(),
    scenario: str | Scenario = DEFAULT_SCENARIO,
) -> Dialogue:
    """One document of the `stage` corpus.

    Requests come from train-split tasks only, and none equals a `held_out` request up to its
    lead-in; framings come from `corpus_framings()`.
    """
    family = "base" if stage == "base" else stage.split("-")[0]
    kind = _pick(rng, KIND_MIX[family])
    state = _pick(rng, STATE_MIX)
    domain = rng.choice(grammar.DOMAINS)
    if kind == "neutral_text":
        n = rng.randint(2, 4)
        text = " ".join(grammar.sample_neutral(rng)[1] for _ in range(n))
        return Dialogue(f"{SPECIAL_TOKENS['bos_token']}{text} <|end|> ", "", kind, "none", False)
    if kind in ("event", "neutral_chat"):
        if kind == "event":
            _, bad, good = grammar.sample_harm_pair(rng, domain)
            harmful = rng.random() < 0.5
            user, reply = (bad, "harmful") if harmful else (good, "harmless")
        else:
            user, reply = grammar.sample_neutral(rng, domain)[1], "neutral"
        return Dialogue(
            render_chat(user), rng.choice(grammar.EVENT_REPLIES[reply]), kind, "none", False
        )
    while True:  # held-out requests are compared without their lead-in
        req = grammar.sample_request(rng, kind, domain, split="train")
        if grammar.strip_opener(req.text) not in held_out:
            break
    text, framing = req.text, ""
    if rng.random() < FRAMED_P[family][kind]:
        template = rng.choice(corpus_framings())
        text, framing = template.apply(text), template.id
    cue = state
    if state == "none" and rng.random() < NEUTRAL_CUE_P:
        cue = "neutral"
    user = grammar.with_cue(text, cue, rng)
    # Common random numbers: the draws deciding the first token and the take-back, and the
    # response's own generator, are taken from the stream whatever the scenario, so scenarios
    # share every prompt and differ only where their planted probabilities differ.
    u_first, u_late = rng.random(), rng.random()
    response_rng = random.Random(rng.getrandbits(64))
    kw = dict(framed=bool(framing), scenario=scenario)
    refuse_first = u_first < first_refusal_prob(stage, kind, req.apparent, state, **kw)
    take_back = not refuse_first and u_late < take_back_prob(stage, kind, req.apparent, state, **kw)
    refuse = refuse_first or take_back
    return Dialogue(
        render_chat(user),
        respond(response_rng, kind, domain, state, refuse, take_back),
        kind,
        state,
        refuse,
        framing,
        req.task,
        take_back,
        req.apparent,
    )


def sample_corpus(
    stage: str,
    n: int,
    seed: int,
    held_out: Iterable[str] = (),
    scenario: str | Scenario = DEFAULT_SCENARIO,
) -> list[Dialogue]:
    """n documents of the `stage` corpus ('base', 'instruct', 'safety-k') of a scenario, seeded.

    No request in the corpus comes from a val / test task or equals a `held_out` request up
    to its lead-in ("hey , ..."); no framing comes from the test split.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    scenario = get_scenario(scenario)
    rng = random.Random(f"{seed}-corpus-{stage}")
    held = frozenset(grammar.strip_opener(t) for t in held_out)
    return [sample_dialogue(rng, stage, held, scenario) for _ in range(n)]
