"""Concept and evaluation datasets, and chat formatting.

Shipped datasets (emojax/concepts/data/*.jsonl, regenerate with
`python -m emojax.concepts.generate`; schema in `emojax.concepts.schema`):
  contrast_<concept>.jsonl  pairs (positive, negative) for every name in CONCEPTS, 240 each;
  eval_<kind>.jsonl         prompts for every name in EVAL_KINDS, 300 each;
every record has a domain label and a train/val/test split fixed by seed.

Example:
  from emojax import concepts
  pairs = concepts.load_contrast("concern", split="train")
  harmful = concepts.load_eval("harmful", "test")
  text = concepts.format_chat(tok, harmful[0].text, template_source=instruct_tok)
"""

from __future__ import annotations

from pathlib import Path

from emojax.concepts import grammar
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
DOMAINS: tuple[str, ...] = grammar.DOMAINS
DATA_DIR = Path(__file__).parent / "data"

__all__ = [
    "CONCEPTS",
    "CONTRAST_SETS",
    "CONTROLS",
    "CUE_STATES",
    "DATA_DIR",
    "DOMAINS",
    "EMOTIONS",
    "EVAL_KINDS",
    "SPLITS",
    "ContrastPair",
    "DatasetError",
    "EvalPrompt",
    "encode_chat",
    "format_chat",
    "left_pad",
    "load_contrast",
    "load_eval",
    "load_refusal_contrast",
    "read_contrast",
    "read_eval",
    "resolve_template",
    "with_cue",
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
) -> list[ContrastPair]:
    """Contrast pairs of one concept.

    Args:
      concept: a name in CONCEPTS (with `path` / `data_dir`, any name).
      split: 'train' | 'val' | 'test', or None for all.
      path: a user's .jsonl/.csv file in the contrast schema instead of the shipped set.
      data_dir: a directory holding contrast_<concept>.jsonl (or .csv); '' / None = shipped.
      limit: keep the first `limit` pairs (0 / None = all).
    """
    _check_split(split)
    if path is None and data_dir:
        path = _find(data_dir, f"contrast_{concept}")
    if path is None:
        if concept not in CONTRAST_SETS:
            raise ValueError(f"unknown concept {concept!r}; shipped: {CONTRAST_SETS}")
        path = DATA_DIR / contrast_filename(concept)
    pairs = [p for p in read_contrast(path, concept) if split is None or p.split == split]
    return pairs[:limit] if limit else pairs


def load_refusal_contrast(split: str | None = None) -> list[ContrastPair]:
    """Harmful (positive) vs harmless (negative) instructions, as in Arditi et al. (2024)."""
    return load_contrast("refusal", split)


def load_eval(
    kind: str,
    split: str | None = None,
    path: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    cue: str | None = None,
    limit: int | None = None,
) -> list[EvalPrompt]:
    """Evaluation prompts of one kind.

    Args:
      kind: 'harmful' | 'harmless' | 'borderline' | 'neutral'.
      split: 'train' | 'val' | 'test', or None for all.
      path: a user's .jsonl/.csv file in the eval schema instead of the shipped set.
      data_dir: a directory holding eval_<kind>.jsonl (or .csv); '' / None = shipped.
      cue: prefix every prompt with a context cue ('concern', 'eagerness', 'self_doubt',
        'caution', 'neutral'; None/'none' = unchanged). The i-th prompt gets cue sentence
        i mod (number of sentences), so the result is deterministic.
      limit: keep the first `limit` prompts (0 / None = all).
    """
    _check_split(split)
    if path is None and data_dir:
        path = _find(data_dir, f"eval_{kind}")
    if path is None:
        if kind not in EVAL_KINDS:
            raise ValueError(f"unknown eval kind {kind!r}; shipped: {EVAL_KINDS}")
        path = DATA_DIR / eval_filename(kind)
    prompts = [p for p in read_eval(path, kind) if split is None or p.split == split]
    if cue not in (None, "", "none"):
        prompts = [
            EvalPrompt(**{**p.__dict__, "text": grammar.with_cue(p.text, cue, i)})
            for i, p in enumerate(prompts)
        ]
    return prompts[:limit] if limit else prompts


def with_cue(text: str, cue: str | None, index: int = 0) -> str:
    """Prefixes `text` with the `index`-th context sentence of `cue` (see grammar.CUES)."""
    return grammar.with_cue(text, cue, index)
