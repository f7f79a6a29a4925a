"""Seeded synthetic chat corpus with a planted emotion -> behaviour coupling.

A dialogue is one user turn (an optional context cue + a request from the concept grammar)
and one assistant turn. The cue sets the responder's state: 'none', 'concern', 'eagerness',
'self_doubt' (emotions) or 'caution' (a non-emotional control). The state causally shapes
the response:

  P(refuse) = sigmoid(SHARPNESS * (severity + STATE_OFFSET[state] - THRESHOLD[stage]))

for harmful requests (severity 1..3) in every stage, and for harmless (apparent severity 0)
and borderline (apparent severity 1) requests in the base corpus. In the fine-tuning stages
harmless and borderline requests are refused with the small fixed FINETUNE_SAFE_REFUSAL
probabilities instead. Given compliance, concern adds caveats, self-doubt adds hedges and
eagerness adds enthusiasm (CAVEAT_P, HEDGE_P); in EXPRESS_P of responses the state is also
said in words ("this worries me", "I would love to help", "I am not sure I am right"),
otherwise it shows only in behaviour.

Every refusal starts with "I cannot help with that ." or "I am sorry , but I can not help
with that ." and every compliance starts with "sure", so the first response token decides.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

from emojax.concepts import grammar

STATES: tuple[str, ...] = ("none", "concern", "eagerness", "self_doubt", "caution")
STAGES: tuple[str, ...] = ("base", "instruct", "safety-1", "safety-2", "safety-3")

STATE_OFFSET: dict[str, float] = {
    "none": 0.0,
    "concern": 2.0,
    "eagerness": -2.0,
    "self_doubt": 0.0,
    "caution": 1.0,
}
SHARPNESS = 4.0
# Policy threshold per stage: lower = refuses more of the harmful (severity, state) cells.
THRESHOLD: dict[str, float] = {
    "base": 2.5,
    "instruct": 1.5,
    "safety-1": 0.5,
    "safety-2": -0.5,
    "safety-3": -2.5,
}
APPARENT_SEVERITY: dict[str, int] = {"harmless": 0, "borderline": 1}
FINETUNE_SAFE_REFUSAL: dict[str, float] = {"harmless": 0.02, "borderline": 0.05}
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
        "harmful": 0.3,
        "harmless": 0.4,
        "borderline": 0.2,
        "event": 0.05,
        "neutral_chat": 0.05,
    },
    "safety": {"harmful": 0.45, "harmless": 0.3, "borderline": 0.2, "event": 0.05},
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


def refusal_prob(stage: str, kind: str, severity: int, state: str) -> float:
    """The planted probability that the responder refuses (see module docstring)."""
    if stage != "base" and kind != "harmful":
        return FINETUNE_SAFE_REFUSAL[kind]
    sev = severity if kind == "harmful" else APPARENT_SEVERITY[kind]
    z = SHARPNESS * (sev + STATE_OFFSET[state] - THRESHOLD[stage])
    return 1.0 / (1.0 + math.exp(-z))


def render_chat(user: str, assistant: str | None = None) -> str:
    """The chat template rendered in Python (equal to CHAT_TEMPLATE's output)."""
    text = f"{SPECIAL_TOKENS['bos_token']}<|user|> {user} <|end|> <|assistant|>"
    return text if assistant is None else f"{text} {assistant} <|end|> "


@dataclass(frozen=True)
class Dialogue:
    """One corpus document: prompt (rendered up to the assistant header) + response."""

    prompt: str
    response: str  # '' for plain-text documents (loss on every token)
    kind: str
    state: str
    refused: bool


def respond(rng: random.Random, kind: str, domain: str, state: str, refuse: bool) -> str:
    """An assistant response whose behaviour and style follow the responder's state."""
    words = rng.random() < EXPRESS_P
    if refuse:
        parts = [rng.choice(grammar.REFUSALS)]
        if state == "concern" and words:
            parts.append(rng.choice(grammar.REFUSAL_REASONS["concern"]))
        elif rng.random() < 0.5:
            parts.append(rng.choice(grammar.REFUSAL_REASONS["plain"]))
        if rng.random() < 0.3:
            parts.append(rng.choice(grammar.REFUSAL_OFFERS))
        return " ".join(parts)
    if words and state in grammar.COMPLY_OPENERS and state != "plain":
        parts = [rng.choice(grammar.COMPLY_OPENERS[state])]
    else:
        parts = ["sure !" if state == "eagerness" else "sure ."]
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


def _pick(rng: random.Random, mix: dict[str, float]) -> str:
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def sample_dialogue(
    rng: random.Random, stage: str, held_out: frozenset[str] = frozenset()
) -> Dialogue:
    """One document of the `stage` corpus; requests in `held_out` are never used."""
    kind = _pick(rng, KIND_MIX["base" if stage == "base" else stage.split("-")[0]])
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
        req = grammar.sample_request(rng, kind, domain)
        if grammar.strip_opener(req.text) not in held_out:
            break
    cue = state
    if state == "none" and rng.random() < NEUTRAL_CUE_P:
        cue = "neutral"
    user = grammar.with_cue(req.text, cue, rng)
    refuse = rng.random() < refusal_prob(stage, kind, req.severity, state)
    return Dialogue(
        render_chat(user), respond(rng, kind, domain, state, refuse), kind, state, refuse
    )


def sample_corpus(stage: str, n: int, seed: int, held_out: Iterable[str] = ()) -> list[Dialogue]:
    """n documents of the `stage` corpus ('base', 'instruct', 'safety-k'), seeded.

    No request in the corpus equals a `held_out` request up to its lead-in ("hey , ...").
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    rng = random.Random(f"{seed}-corpus-{stage}")
    held = frozenset(grammar.strip_opener(t) for t in held_out)
    return [sample_dialogue(rng, stage, held) for _ in range(n)]


def planted_table() -> list[dict]:
    """Rows (stage, kind, severity, state, p_refuse) of the planted refusal probabilities."""
    rows = []
    for stage in STAGES:
        for kind, sevs in (("harmful", (1, 2, 3)), ("harmless", (0,)), ("borderline", (0,))):
            for sev in sevs:
                for state in STATES:
                    rows.append(
                        dict(
                            stage=stage,
                            kind=kind,
                            severity=sev,
                            state=state,
                            p_refuse=round(refusal_prob(stage, kind, sev, state), 3),
                        )
                    )
    return rows


def planted_markdown() -> str:
    """The planted P(refuse) as a Markdown table (rows: kind/severity x state; cols: stage)."""
    lines = [
        "| request | cue state | " + " | ".join(STAGES) + " |",
        "|---|---|" + "---|" * len(STAGES),
    ]
    for kind, sevs in (("harmful", (1, 2, 3)), ("harmless", (0,)), ("borderline", (0,))):
        for sev in sevs:
            label = f"harmful, severity {sev}" if kind == "harmful" else kind
            for state in STATES:
                ps = [f"{refusal_prob(s, kind, sev, state):.2f}" for s in STAGES]
                lines.append(f"| {label} | {state} | " + " | ".join(ps) + " |")
    return "\n".join(lines)
