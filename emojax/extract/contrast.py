"""Contrast sets: the prompts of each concept and the token range read at their capture site.

`Prompt` and `ContrastSet` are the capture's inputs; `site_range` maps a capture site
(`POSITIONS`) to the tokens averaged there; `load_contrast_sets` / `load_neutral` read the
shipped concept datasets (or the user's files) through the family's chat template.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

POSITIONS = ("last", "prompt_mean", "response_mean", "post_instruction", "last_instruction")


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One tokenized prompt, optionally followed by a response continuation.

    Attributes:
      tokens: token ids of prompt + continuation.
      prompt_len: number of prompt tokens (None: every token is prompt).
      instruction_end: index of the first token after the user's instruction (the start of
        the chat-template tokens before the response); None: `post_instruction_len` of the
        contrast set decides.
    """

    tokens: tuple[int, ...]
    prompt_len: int | None = None
    instruction_end: int | None = None


@dataclasses.dataclass
class ContrastSet:
    """Positive and negative prompts of one concept and where to read them.

    Attributes:
      concept: concept name (e.g. "concern", "refusal").
      positive: prompts showing the concept (token lists or `Prompt`s).
      negative: contrast prompts; for `paired=True`, negative[i] is the pair of positive[i].
      position: capture site, one of `POSITIONS`: "last" (last prompt token), "prompt_mean"
        (mean over prompt tokens, a leading BOS excluded), "response_mean" (mean over the
        continuation), "post_instruction" (mean over the chat-template tokens between the
        instruction and the response, Arditi et al.), "last_instruction" (the instruction's
        last token).
      paired: whether positive and negative are aligned pairs.
      domains: optional domain label per positive item (per pair).
      post_instruction_len: post-instruction tokens of prompts without `instruction_end`.
      templates: optional cue-template label per positive item (per pair); stability
        resamples templates, so pairs built from one template are never counted as
        independent (None: every pair is its own template).
    """

    concept: str
    positive: Sequence[Sequence[int] | Prompt]
    negative: Sequence[Sequence[int] | Prompt]
    position: str = "last"
    paired: bool = True
    domains: Sequence[str] | None = None
    post_instruction_len: int = 1
    templates: Sequence[str] | None = None


def _as_prompt(p: Sequence[int] | Prompt) -> Prompt:
    return p if isinstance(p, Prompt) else Prompt(tuple(int(t) for t in p))


def site_range(
    prompt: Prompt, position: str, *, k: int = 1, bos_id: int | None = None
) -> tuple[int, int]:
    """`(start, end)` token range (into `prompt.tokens`) averaged at a capture site."""
    n = len(prompt.tokens)
    p = n if prompt.prompt_len is None else prompt.prompt_len
    inst = max(p - k, 1) if prompt.instruction_end is None else prompt.instruction_end
    if position == "last":
        return p - 1, p
    if position == "prompt_mean":
        skip = 1 if (bos_id is not None and p > 1 and prompt.tokens[0] == bos_id) else 0
        return skip, p
    if position == "response_mean":
        if p >= n:
            raise ValueError("response_mean needs a continuation after the prompt")
        return p, n
    if position == "post_instruction":
        return min(inst, p - 1), p
    if position == "last_instruction":
        return inst - 1, inst
    raise ValueError(f"unknown position {position!r}; expected one of {POSITIONS}")


# Emotions and caution at the last prompt token (the state the response starts from),
# harm salience at the instruction's last token, refusal at the post-instruction template tokens.
DEFAULT_POSITIONS = {
    "concern": "last",
    "eagerness": "last",
    "self_doubt": "last",
    "harm_salience": "last_instruction",
    "caution": "last",
    "refusal": "post_instruction",
}


def encode_prompt(
    tokenizer, user_text: str, template_source=None, continuation: str | None = None
) -> Prompt:
    """Chat-formats and tokenizes one user turn, locating where the instruction ends."""
    from emojax.concepts import format_chat

    text = format_chat(tokenizer, user_text, template_source)
    ids = tokenizer.encode(text, add_special_tokens=False)
    cut = text.rfind(user_text)
    inst = None
    if cut >= 0:
        inst = len(tokenizer.encode(text[: cut + len(user_text)], add_special_tokens=False))
        inst = min(max(inst, 1), len(ids) - 1)
    prompt_len = len(ids)
    if continuation:
        ids = ids + tokenizer.encode(continuation, add_special_tokens=False)
        return Prompt(tuple(ids), prompt_len, inst)
    return Prompt(tuple(ids), None, inst)


def load_contrast_sets(
    tokenizer,
    concepts: Sequence[str] | None = None,
    *,
    split: str | None = None,
    limit: int | None = None,
    template_source=None,
    positions: dict[str, str] | None = None,
    paths: dict[str, str] | None = None,
    data_dir: str | None = None,
    rendering: str = "zoo",
) -> list[ContrastSet]:
    """Contrast sets of `emojax.concepts` (or the user's JSONL files), chat-formatted.

    Args:
      tokenizer: the model's tokenizer.
      concepts: names (default: `emojax.concepts.CONCEPTS`).
      split: "train" | "val" | "test" | None (all).
      limit: pairs per concept (the first ones).
      template_source: the tuned model's tokenizer or directory, for a base model.
      positions: capture site per concept (default `DEFAULT_POSITIONS`, else "last").
      paths: optional `{concept: jsonl/csv path}` overrides.
      data_dir: a directory of user files (`emojax.concepts.find_data_file`: a concept's
        file there replaces the shipped set, a missing one falls back to it).
      rendering: 'zoo' (the shipped text) or 'english' (natural English for real tokenizers;
        same ids and templates, `emojax.concepts.english`).
    """
    from emojax import concepts as cdata

    positions = {**DEFAULT_POSITIONS, **(positions or {})}
    out = []
    for name in concepts or cdata.CONCEPTS:
        pairs = cdata.load_contrast(
            name, split, (paths or {}).get(name), data_dir=data_dir, rendering=rendering
        )
        pairs = pairs[:limit]
        enc = lambda t: encode_prompt(tokenizer, t, template_source)
        out.append(
            ContrastSet(
                concept=name,
                positive=[enc(p.positive) for p in pairs],
                negative=[enc(p.negative) for p in pairs],
                position=positions.get(name, "last"),
                paired=True,
                domains=[p.domain for p in pairs],
                # A pair without a template label is its own template (the pair id).
                templates=[getattr(p, "template", "") or p.id for p in pairs],
            )
        )
    return out


def load_neutral(
    tokenizer,
    *,
    split: str | None = None,
    limit: int | None = None,
    template_source=None,
    data_dir: str | None = None,
    rendering: str = "zoo",
) -> list[Prompt]:
    """Neutral eval texts through the chat template (norm units and neutral PCs)."""
    from emojax import concepts as cdata

    texts = [
        p.text
        for p in cdata.load_eval("neutral", split, limit=limit, data_dir=data_dir,
                                 rendering=rendering)
    ]  # fmt: skip
    return [encode_prompt(tokenizer, t, template_source) for t in texts]
