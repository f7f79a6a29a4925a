"""Concept and evaluation datasets, and chat formatting.

Shipped datasets (emojax/concepts/data/*.jsonl, regenerate with
`python -m emojax.concepts.generate`; schema in `emojax.concepts.schema`):
  contrast_<concept>.jsonl  pairs (positive, negative) for every name in CONCEPTS, 240 each
                            (144 / 48 / 48 train / val / test), each with its template id;
  eval_<kind>.jsonl         prompts for every name in EVAL_KINDS, 300 each (90 / 60 / 150),
                            one underlying request each;
every record has a domain label and a train/val/test split fixed by seed.

User files. A `data_dir` (the config's `data.dir`) holds any of these files as
`<name>.jsonl` or `<name>.csv` (one of the two). Each file it holds replaces the shipped one;
a file it lacks falls back to the shipped one (`find_data_file`), and a concept or kind that
is not shipped must be in it. `data_files` resolves, validates and hashes every file a run
reads, for its provenance.

Renderings. The shipped text is the zoo's rendering (words and punctuation separated by
spaces, for its word tokenizer). `rendering="english"` (in `load_contrast`, `load_eval`,
`templates`, `with_cue`, `with_framing`) gives the same records in natural English for real
tokenizers (sentence case, attached punctuation, possessives; `emojax.concepts.english`),
with identical ids, request ids and template ids. The English path has more benign test
requests than the grammar's: `overrefusal.load(kind)` gives 202 borderline-but-safe and 192
harmless requests written in English (`data/overrefusal_english.jsonl`), never in the zoo's
corpus; `emojax.pipeline` pools them with the grammar's through `data.benign_eval`.

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
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from emojax.concepts import english, grammar, overrefusal
from emojax.concepts.chat import encode_chat, format_chat, left_pad, resolve_template
from emojax.concepts.schema import (
    EVAL_KINDS,
    SPLITS,
    ContrastPair,
    DatasetError,
    EvalPrompt,
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
# A user file is JSONL or CSV; the shipped ones are JSONL.
DATA_SUFFIXES: tuple[str, ...] = (".jsonl", ".csv")
# Names `templates` knows: cue concepts, framing families and the two templated controls.
TEMPLATE_FAMILIES: tuple[str, ...] = CUES + FRAMINGS + ("harm_salience", "refusal")
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
    "DATA_SUFFIXES",
    "DOMAINS",
    "EMOTIONS",
    "EVAL_KINDS",
    "FRAMINGS",
    "JAILBREAK",
    "RENDERINGS",
    "SPLITS",
    "TEMPLATE_FAMILIES",
    "ContrastPair",
    "DatasetError",
    "EvalPrompt",
    "Template",
    "data_files",
    "encode_chat",
    "find_data_file",
    "format_chat",
    "left_pad",
    "load_contrast",
    "load_eval",
    "load_refusal_contrast",
    "overrefusal",
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


def find_data_file(stem: str, data_dir: str | Path | None = None) -> tuple[Path, bool]:
    """Where the dataset `stem` ('contrast_concern', 'eval_harmful', ...) is read from.

    The fallback rule: `<data_dir>/<stem>.jsonl` or `<data_dir>/<stem>.csv` if `data_dir` holds
    one, else the shipped `DATA_DIR/<stem>.jsonl`.

    Args:
      stem: the file name without its suffix.
      data_dir: a directory of user files ('' / None = shipped only).

    Returns:
      (path, shipped): the file and whether it is the shipped one.

    Raises:
      FileNotFoundError: `data_dir` is not a directory, or neither it nor the shipped data hold
        `stem`.
      ValueError: `data_dir` holds both `<stem>.jsonl` and `<stem>.csv`.
    """
    if data_dir:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"data directory {str(folder)!r} does not exist")
        found = [folder / f"{stem}{s}" for s in DATA_SUFFIXES if (folder / f"{stem}{s}").is_file()]
        if len(found) > 1:
            raise ValueError(f"{folder} holds both {found[0].name} and {found[1].name}; keep one")
        if found:
            return found[0], False
    shipped = DATA_DIR / f"{stem}.jsonl"
    if shipped.is_file():
        return shipped, True
    where = f"{stem}.jsonl or {stem}.csv in {data_dir}" if data_dir else f"{stem}.jsonl"
    raise FileNotFoundError(f"no {where}, and no shipped {stem}.jsonl to fall back to")


def _contrast_file(concept: str, data_dir: str | Path | None) -> Path:
    if not data_dir and concept not in CONTRAST_SETS:
        raise ValueError(f"unknown concept {concept!r}; shipped: {CONTRAST_SETS}")
    try:
        return find_data_file(f"contrast_{concept}", data_dir)[0]
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} (shipped concepts: {CONTRAST_SETS})") from None


def _eval_file(kind: str, data_dir: str | Path | None) -> Path:
    if kind not in EVAL_KINDS:
        raise ValueError(f"unknown eval kind {kind!r}; shipped: {EVAL_KINDS}")
    return find_data_file(f"eval_{kind}", data_dir)[0]


def _in_split(records: list, split: str | None, path: Path) -> list:
    """The records of `split`; none is an error (an empty set has no mean, only zeros)."""
    out = [r for r in records if split is None or r.split == split]
    if not out:
        counts = {s: sum(r.split == s for r in records) for s in SPLITS}
        raise ValueError(f"{path}: no records in split {split!r} (records per split: {counts})")
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_files(data: Mapping, *, kinds: Sequence[str] = EVAL_KINDS) -> dict[str, dict]:
    """Every dataset file a run reads, resolved by the fallback rule, validated and hashed.

    Reads each file completely (so a malformed line fails here, before any model work), checks
    the cue and framing names, and that every contrast set has pairs in the extraction split.

    Args:
      data: the config's `data` section: `dir`, `emotions`, `controls`, `cues`, optional
        `framings` and `extract_split` (a ConfigDict or a dict).
      kinds: the evaluation kinds the run reads.

    Returns:
      `{stem: {"path": absolute path, "sha256": hex digest, "shipped": bool, "records": int}}`
      for `contrast_<concept>` of every emotion and control, then `eval_<kind>` of every kind
      (`records`: every record in the file, all splits).

    Raises:
      DatasetError: a malformed file (`<file>:<line>: <reason>`).
      FileNotFoundError: `data.dir` does not exist, or a file is neither there nor shipped.
      ValueError: an unknown cue, framing or eval kind; a file `eval_<kind>` in `data.dir`
        whose kind is unknown (a typo would silently fall back); a contrast set without pairs
        in the extraction split; `<name>.jsonl` next to `<name>.csv`.
    """
    data_dir = data.get("dir") or None
    for cue in data.get("cues", ()):
        _check_family(cue, "cue", CUES + FRAMINGS + (JAILBREAK,), allow_none=True)
    for framing in data.get("framings", ()):
        _check_family(framing, "framing", FRAMINGS + (JAILBREAK,), allow_none=True)
    if data_dir and Path(data_dir).is_dir():
        for f in sorted(Path(data_dir).iterdir()):
            kind = f.stem.removeprefix("eval_")
            if f.stem.startswith("eval_") and f.suffix in DATA_SUFFIXES and kind not in EVAL_KINDS:
                raise ValueError(f"{f}: unknown eval kind {kind!r}; expected one of {EVAL_KINDS}")
    split = data.get("extract_split") or None
    out = {}
    for concept in dict.fromkeys((*data.get("emotions", ()), *data.get("controls", ()))):
        path = _contrast_file(concept, data_dir)
        records = read_contrast(path, concept)
        _in_split(records, split, path)
        out[f"contrast_{concept}"] = (path, len(records))
    for kind in dict.fromkeys(kinds):
        path = _eval_file(kind, data_dir)
        out[f"eval_{kind}"] = (path, len(read_eval(path, kind)))
    return {
        stem: {
            "path": str(path.resolve()),
            "sha256": _sha256(path),
            "shipped": path.parent.resolve() == DATA_DIR.resolve(),
            "records": n,
        }
        for stem, (path, n) in out.items()
    }


def _check_family(name: str | None, what: str, known: tuple[str, ...], allow_none=False) -> None:
    """A ValueError naming `name` and the known names, unless `name` is one of them."""
    if allow_none and name in (None, "", "none"):
        return
    if name not in known:
        raise ValueError(f"unknown {what} {name!r}; known: {known}")


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
      data_dir: a directory that may hold contrast_<concept>.jsonl (or .csv); without it,
        the shipped set (`find_data_file`). '' / None = shipped.
      limit: keep the first `limit` pairs (0 / None = all).
      rendering: 'zoo' (the shipped text) or 'english' (natural English, same ids).

    Raises:
      DatasetError: a malformed or empty file, or a duplicate id.
      ValueError: no pairs in `split` (an empty set would give an all-zero direction).
    """
    _check_split(split)
    english.check_rendering(rendering)
    path = Path(path) if path is not None else _contrast_file(concept, data_dir)
    pairs = _in_split(read_contrast(path, concept), split, path)
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
      data_dir: a directory that may hold eval_<kind>.jsonl (or .csv); without it, the
        shipped set (`find_data_file`). '' / None = shipped.
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

    Raises:
      DatasetError: a malformed or empty file, or a duplicate id.
      ValueError: an unknown kind, cue or framing; no prompts in `split`.
    """
    _check_split(split)
    english.check_rendering(rendering)
    path = Path(path) if path is not None else _eval_file(kind, data_dir)
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
    prompts = _in_split(read_eval(path, kind), split, path)
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
    _check_family(concept, "template family", TEMPLATE_FAMILIES)
    if english.check_rendering(rendering) == "english":
        return english.templates(concept, split)
    return grammar.templates(concept, split)


def with_cue(
    text: str, cue: str | None, index: int = 0, split: str | None = None, rendering: str = "zoo"
) -> str:
    """Prefixes `text` with the `index`-th context sentence of `cue` (see grammar.CUES).

    With rendering='english', `text` is English (any request) and so is the result.
    """
    _check_family(cue, "cue", TEMPLATE_FAMILIES + (JAILBREAK,), allow_none=True)
    if english.check_rendering(rendering) == "english":
        return text if cue in (None, "", "none") else english.with_cue(text, cue, index, split)
    return grammar.with_cue(text, cue, index, split)


def with_framing(
    text: str, framing: str, index: int = 0, split: str | None = None, rendering: str = "zoo"
) -> str:
    """Wraps `text` in the `index`-th template of a framing family (or 'jailbreak').

    With rendering='english', `text` is English (any request: a HarmBench behaviour, say).
    """
    _check_family(framing, "framing", TEMPLATE_FAMILIES + (JAILBREAK,))
    if english.check_rendering(rendering) == "english":
        return english.with_cue(text, framing, index, split)
    return grammar.pick_template(framing, index, split).apply(text)
