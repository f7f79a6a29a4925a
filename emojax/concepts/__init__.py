"""Concept and evaluation datasets, and chat formatting.

Shipped datasets (emojax/concepts/data/*.jsonl, regenerate with
`python -m emojax.concepts.generate`; schema in `emojax.concepts.schema`):
  contrast_<concept>.jsonl  pairs (positive, negative) for every name in CONCEPTS, 240 each
                            (144 / 48 / 48 train / val / test), each with its template id;
  eval_<kind>.jsonl         prompts for every name in EVAL_KINDS, 300 each (90 / 60 / 150),
                            one underlying request each;
every record has a domain label and a train/val/test split fixed by seed.

Renderings. The shipped text is the zoo's rendering (words and punctuation separated by
spaces, for its word tokenizer). `rendering="english"` (in `load_contrast`, `load_eval`,
`templates`, `with_cue`, `with_framing`) gives the same records in natural English for real
tokenizers (sentence case, attached punctuation, possessives; `emojax.concepts.english`),
with identical ids, request ids and template ids.

Units. A *request* is one underlying task; `load_eval(..., cue=..., framing=...)` shows it
under cue and framing templates and every variant keeps its `request` id, so resampling
clusters on `request_index(prompts)`. *Templates* (`templates(concept, split)`, >= 30 per
concept, 8 per framing family) are split like the data: contrast pairs of a split use that
split's templates, and the cues and framings `load_eval` adds to a split's prompts come from
that split's templates (the test split's are held out from extraction and from the zoo's
training corpus for framings).

Example:
  from emojax import concepts
  pairs = concepts.load_contrast("concern", split="train")
  harmful = concepts.load_eval("harmful", "test")
  cued = concepts.load_eval("harmful", "test", cue="concern")         # held-out cue templates
  framed = concepts.load_eval("harmful", "test", framing="roleplay")  # or cue="roleplay"
  request, num_requests = concepts.request_index(harmful + cued + framed)
  text = concepts.format_chat(tok, harmful[0].text, template_source=instruct_tok)
  real = concepts.load_eval("harmful", "test", framing="fiction", rendering="english")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emojax.concepts import english, grammar
from emojax.concepts.chat import encode_chat, format_chat, left_pad, resolve_template
from emojax.concepts.schema import (
    EVAL_KINDS,
    SPLITS,
    ContrastPair,
    DatasetError,
    EvalPrompt,
    contrast_filename,
    eval_filename,
    read_contrast,
    read_eval,
)

EMOTIONS: tuple[str, ...] = ("concern", "eagerness", "self_doubt")
# Non-emotional control directions with a shipped contrast set (the random null has none).
CONTROLS: tuple[str, ...] = ("harm_salience", "caution", "refusal")
CONCEPTS: tuple[str, ...] = EMOTIONS + CONTROLS
CONTRAST_SETS: tuple[str, ...] = CONCEPTS
# Emotional cues a prompt can carry (context sentences from grammar.CUES); 'none' = no cue.
CUE_STATES: tuple[str, ...] = ("none",) + EMOTIONS
# Cue concepts with templates (context sentences): the emotions, caution and neutral.
CUES: tuple[str, ...] = grammar.CUE_CONCEPTS
# Jailbreak-style framing families (role-play, fiction, ...); JAILBREAK = all in turn.
FRAMINGS: tuple[str, ...] = tuple(grammar.FRAMINGS)
JAILBREAK: str = grammar.JAILBREAK
DOMAINS: tuple[str, ...] = grammar.DOMAINS
DATA_DIR = Path(__file__).parent / "data"
Template = grammar.Template
# How text is written: the zoo's word-tokenizer rendering or natural English.
RENDERINGS: tuple[str, ...] = english.RENDERINGS

__all__ = [
    "CONCEPTS",
    "CONTRAST_SETS",
    "CONTROLS",
    "CUES",
    "CUE_STATES",
    "DATA_DIR",
    "DOMAINS",
    "EMOTIONS",
    "EVAL_KINDS",
    "FRAMINGS",
    "JAILBREAK",
    "RENDERINGS",
    "SPLITS",
    "ContrastPair",
    "DatasetError",
    "EvalPrompt",
    "Template",
    "encode_chat",
    "format_chat",
    "left_pad",
    "load_contrast",
    "load_eval",
    "load_refusal_contrast",
    "read_contrast",
    "read_eval",
    "request_index",
    "resolve_template",
    "template_index",
    "templates",
    "with_cue",
    "with_framing",
]


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")


def _find(data_dir: str | Path, stem: str) -> Path:
    for suffix in (".jsonl", ".csv"):
        path = Path(data_dir) / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"neither {stem}.jsonl nor {stem}.csv in {data_dir}")


def load_contrast(
    concept: str,
    split: str | None = None,
    path: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    rendering: str = "zoo",
) -> list[ContrastPair]:
    """Contrast pairs of one concept.

    Args:
      concept: a name in CONCEPTS (with `path` / `data_dir`, any name).
      split: 'train' | 'val' | 'test', or None for all.
      path: a user's .jsonl/.csv file in the contrast schema instead of the shipped set.
      data_dir: a directory holding contrast_<concept>.jsonl (or .csv); '' / None = shipped.
      limit: keep the first `limit` pairs (0 / None = all).
      rendering: 'zoo' (the shipped text) or 'english' (natural English, same ids).
    """
    _check_split(split)
    english.check_rendering(rendering)
    if path is None and data_dir:
        path = _find(data_dir, f"contrast_{concept}")
    if path is None:
        if concept not in CONTRAST_SETS:
            raise ValueError(f"unknown concept {concept!r}; shipped: {CONTRAST_SETS}")
        path = DATA_DIR / contrast_filename(concept)
    pairs = [p for p in read_contrast(path, concept) if split is None or p.split == split]
    pairs = pairs[:limit] if limit else pairs
    return [english.render_contrast(p) for p in pairs] if rendering == "english" else pairs


def load_refusal_contrast(split: str | None = None, rendering: str = "zoo") -> list[ContrastPair]:
    """Harmful (positive) vs harmless (negative) instructions, as in Arditi et al. (2024)."""
    return load_contrast("refusal", split, rendering=rendering)


def load_eval(
    kind: str,
    split: str | None = None,
    path: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    cue: str | None = None,
    framing: str | None = None,
    limit: int | None = None,
    template_split: str | None = None,
    rendering: str = "zoo",
) -> list[EvalPrompt]:
    """Evaluation prompts of one kind, optionally under a cue and / or a framing.

    Every prompt keeps its `request` id, so the variants of one request under different cues
    and framings share it (see `request_index`); `template` names the templates added.

    Args:
      kind: 'harmful' | 'harmless' | 'borderline' | 'neutral'.
      split: 'train' | 'val' | 'test', or None for all.
      path: a user's .jsonl/.csv file in the eval schema instead of the shipped set.
      data_dir: a directory holding eval_<kind>.jsonl (or .csv); '' / None = shipped.
      cue: prefix every prompt with a context sentence ('concern', 'eagerness', 'self_doubt',
        'caution', 'neutral'; None/'none' = unchanged). A framing family name ('roleplay',
        ...) or 'jailbreak' here means `framing=` that name.
      framing: wrap every request in a jailbreak-style framing: a family of FRAMINGS, or
        'jailbreak' for every family in turn; applied inside the cue ("{cue} {framed}").
      limit: keep the first `limit` prompts (0 / None = all).
      template_split: the split whose templates are used (default: `split`; None = all).
        The i-th prompt gets template i mod (number of templates), so the result is
        deterministic and the test split's prompts get held-out templates.
      rendering: 'zoo' (the shipped text) or 'english' (natural English, same ids; the
        prompt is composed in the zoo rendering, then rendered as a whole).
    """
    _check_split(split)
    english.check_rendering(rendering)
    if path is None and data_dir:
        path = _find(data_dir, f"eval_{kind}")
    if path is None:
        if kind not in EVAL_KINDS:
            raise ValueError(f"unknown eval kind {kind!r}; shipped: {EVAL_KINDS}")
        path = DATA_DIR / eval_filename(kind)
    if cue in FRAMINGS + (JAILBREAK,):
        if framing not in (None, "", "none"):
            raise ValueError(f"cue={cue!r} is a framing and framing={framing!r} is given too")
        cue, framing = None, cue
    cue = None if cue in (None, "", "none") else cue
    framing = None if framing in (None, "", "none") else framing
    if cue is not None and cue not in CUES:
        raise ValueError(f"unknown cue {cue!r}; expected one of {CUES + FRAMINGS}")
    if framing is not None and framing not in FRAMINGS + (JAILBREAK,):
        raise ValueError(f"unknown framing {framing!r}; expected one of {FRAMINGS + (JAILBREAK,)}")
    prompts = [p for p in read_eval(path, kind) if split is None or p.split == split]
    prompts = prompts[:limit] if limit else prompts
    if cue is None and framing is None:
        return [english.render_eval(p) for p in prompts] if rendering == "english" else prompts
    tsplit = template_split if template_split is not None else split
    out = []
    for i, p in enumerate(prompts):
        text, ids = p.text, []
        if framing is not None:
            t = grammar.pick_template(framing, i, tsplit)
            text, ids = t.apply(text), [t.id]
        if cue is not None:
            t = grammar.pick_template(cue, i, tsplit)
            text, ids = t.apply(text), [t.id] + ids
        template = "+".join(([p.template] if p.template else []) + ids)
        text = english.render(text) if rendering == "english" else text
        out.append(dataclasses.replace(p, text=text, template=template))
    return out


def _group_index(keys: Sequence[str]) -> tuple[np.ndarray, int]:
    index: dict[str, int] = {}
    ids = np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.int32)
    return ids, len(index)


def request_index(prompts: Sequence[EvalPrompt]) -> tuple[np.ndarray, int]:
    """Integer request ids: int32 [N] in [0, U) by first appearance, and U.

    Prompts of one underlying request (its cue and framing variants) share an index, so a
    cluster bootstrap or a grouped CV split draws requests, never single prompts.
    """
    return _group_index([p.request for p in prompts])


def template_index(records: Sequence[EvalPrompt | ContrastPair]) -> tuple[np.ndarray, int]:
    """Integer template ids: int32 [N] in [0, T) by first appearance, and T.

    A record without a template ('') is its own template (keyed by its id).
    """
    return _group_index([r.template or f"id:{r.id}" for r in records])


def templates(
    concept: str, split: str | None = None, rendering: str = "zoo"
) -> tuple[Template, ...]:
    """The templates of a concept or framing family (ids, texts, splits); see grammar.

    With rendering='english' their texts are in English (same ids and splits).
    """
    if english.check_rendering(rendering) == "english":
        return english.templates(concept, split)
    return grammar.templates(concept, split)


def with_cue(
    text: str, cue: str | None, index: int = 0, split: str | None = None, rendering: str = "zoo"
) -> str:
    """Prefixes `text` with the `index`-th context sentence of `cue` (see grammar.CUES).

    With rendering='english', `text` is English (any request) and so is the result.
    """
    if english.check_rendering(rendering) == "english":
        return text if cue in (None, "", "none") else english.with_cue(text, cue, index, split)
    return grammar.with_cue(text, cue, index, split)


def with_framing(
    text: str, framing: str, index: int = 0, split: str | None = None, rendering: str = "zoo"
) -> str:
    """Wraps `text` in the `index`-th template of a framing family (or 'jailbreak').

    With rendering='english', `text` is English (any request: a HarmBench behaviour, say).
    """
    if english.check_rendering(rendering) == "english":
        return english.with_cue(text, framing, index, split)
    return grammar.pick_template(framing, index, split).apply(text)
