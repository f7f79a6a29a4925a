"""Dataset records, their schema, and loaders for JSONL / CSV files.

Contrast record (one JSON object per line; CSV: same names as header columns):
  id        str   unique id (optional in user files; default '<file stem>-<line>')
  concept   str   concept name (optional; default: the concept asked for)
  domain    str   topic label, e.g. 'medical' (optional; default 'unknown')
  positive  str   the prompt with the concept present          (required)
  negative  str   the matched prompt without it                (required)
  split     str   'train' | 'val' | 'test' (optional; default: seeded 60/20/20 split)
  template  str   id of the cue template that made the pair, e.g. 'concern-07' (optional;
                  default ''). Stability resamples templates; a pair without one is its own.

Evaluation record:
  id        str   unique id (optional)
  kind      str   'harmful' | 'harmless' | 'borderline' | 'neutral' (optional; default: asked)
  domain    str   topic label (optional)
  text      str   the user request (or neutral statement)     (required)
  split     str   'train' | 'val' | 'test' (optional)
  severity  int   0 (not harmful) .. 3 (severe); harmful requests only (optional; default 0)
  request   str   id of the underlying request (optional; default: the record's id). Records
                  that phrase one task differently share it; `load_eval` keeps it when it adds
                  a cue or framing, so every resampling can cluster on it.
  template  str   id of the cue / framing template in the text, e.g. 'concern-07' or
                  'concern-07+roleplay-03' (optional; default '': none).

Files are UTF-8 (a byte-order mark is allowed: they are read as 'utf-8-sig'). Extra fields are
ignored. A malformed line, a byte that is not UTF-8, a duplicate id (naming both lines) and a
file without records raise DatasetError('<file>:<line>: <reason>').
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SPLITS: tuple[str, ...] = ("train", "val", "test")
EVAL_KINDS: tuple[str, ...] = ("harmful", "harmless", "borderline", "neutral")
CONTRAST_FIELDS: tuple[str, ...] = (
    "id",
    "concept",
    "domain",
    "positive",
    "negative",
    "split",
    "template",
)
EVAL_FIELDS: tuple[str, ...] = ("id", "kind", "domain", "text", "split", "severity")
# Optional evaluation fields (the shipped files leave them at their defaults).
EVAL_OPTIONAL_FIELDS: tuple[str, ...] = ("request", "template")


class DatasetError(ValueError):
    """A malformed dataset file; the message names the file and the 1-based line number."""

    def __init__(self, path: str | Path, line: int, reason: str):
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = str(path), line, reason


@dataclass(frozen=True)
class ContrastPair:
    """Two prompts that differ in one concept and little else.

    `template` is the id of the cue template that made the pair ('' = unknown).
    """

    id: str
    concept: str
    domain: str
    positive: str
    negative: str
    split: str
    template: str = ""


@dataclass(frozen=True)
class EvalPrompt:
    """One evaluation prompt.

    Attributes:
      id: unique id of the record.
      kind: 'harmful' | 'harmless' | 'borderline' | 'neutral'.
      domain: topic label.
      text: the user text (with its cue / framing, when `load_eval` added one).
      split: 'train' | 'val' | 'test'.
      severity: 0 (not harmful) .. 3 (severe).
      request: the underlying request (default: `id`); cue and framing variants share it.
      template: the cue / framing template id(s) in `text` ('' = none).
    """

    id: str
    kind: str
    domain: str
    text: str
    split: str
    severity: int = 0
    request: str = ""
    template: str = ""

    def __post_init__(self):
        if not self.request:
            object.__setattr__(self, "request", self.id)


def contrast_filename(concept: str) -> str:
    return f"contrast_{concept}.jsonl"


def eval_filename(kind: str) -> str:
    return f"eval_{kind}.jsonl"


def _decode(path: Path) -> str:
    """The file's text; a byte that is not UTF-8 is a DatasetError at its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # -sig: a BOM (Excel's CSV export) is not text
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatasetError(
            path, line, f"not UTF-8: byte 0x{data[e.start]:02x} at column {column} "
            "(save the file as UTF-8)"
        ) from None  # fmt: skip


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Yields (line number, raw dict) from a .jsonl or .csv file."""
    text = _decode(path)
    if not text.strip():
        raise DatasetError(path, 1, "no records: the file is empty")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames:
            raise DatasetError(path, 1, "missing CSV header")
        for row in reader:
            if None in row:
                raise DatasetError(path, reader.line_num, "more values than header columns")
            if any(v is None for v in row.values()):
                raise DatasetError(path, reader.line_num, "fewer values than header columns")
            yield reader.line_num, {k: v for k, v in row.items() if v != ""}
        return
    # split("\n"), not splitlines(): U+2028 and friends may sit inside a JSON string.
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(path, n, f"invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DatasetError(path, n, "expected a JSON object")
        yield n, obj


def _checked(path: Path, records: list, lines: list[int]) -> list:
    """`records` if there are any and their ids are unique, else a DatasetError."""
    if not records:
        raise DatasetError(path, 1, "no records: the file has no data rows")
    first: dict[str, int] = {}
    for r, n in zip(records, lines, strict=True):
        if first.setdefault(r.id, n) != n:
            raise DatasetError(path, n, f"duplicate id {r.id!r} (also on line {first[r.id]})")
    return records


def _text(path: Path, n: int, obj: dict, key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if value is None:
        raise DatasetError(path, n, f"missing required field {key!r}")
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(path, n, f"field {key!r} must be a non-empty string")
    return value


def _optional_text(path: Path, n: int, obj: dict, key: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise DatasetError(path, n, f"field {key!r} must be a string")
    return value


def _split(path: Path, n: int, obj: dict) -> str:
    split = obj.get("split", "")
    if split not in SPLITS + ("",):
        raise DatasetError(path, n, f"split must be one of {SPLITS}, got {split!r}")
    return split


def _fill_splits(records: list, seed: str) -> list:
    """Assigns a seeded 60/20/20 split to records whose split is empty.

    Records of one request (evaluation records sharing `request`) get one split, so a request
    never sits in two splits; the cut counts requests.
    """
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        if not r.split:
            groups.setdefault(getattr(r, "request", "") or r.id, []).append(i)
    if not groups:
        return records
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    n_train, n_val = round(0.6 * len(order)), round(0.2 * len(order))
    out = list(records)
    for rank, members in enumerate(order):
        split = SPLITS[0] if rank < n_train else SPLITS[1] if rank < n_train + n_val else SPLITS[2]
        for i in members:
            out[i] = type(records[i])(**{**records[i].__dict__, "split": split})
    return out


def read_contrast(path: str | Path, concept: str | None = None) -> list[ContrastPair]:
    """Reads and validates contrast pairs from a .jsonl or .csv file.

    Args:
      path: the file.
      concept: default for records without a 'concept' field.

    Raises:
      DatasetError: on a malformed line, a byte that is not UTF-8, a duplicate id or a file
        without records (message '<file>:<line>: <reason>').
    """
    path = Path(path)
    records, lines = [], []
    for n, obj in _rows(path):
        lines.append(n)
        records.append(
            ContrastPair(
                id=_text(path, n, obj, "id", f"{path.stem}-{n}"),
                concept=_text(path, n, obj, "concept", concept or path.stem),
                domain=_text(path, n, obj, "domain", "unknown"),
                positive=_text(path, n, obj, "positive"),
                negative=_text(path, n, obj, "negative"),
                split=_split(path, n, obj),
                template=_optional_text(path, n, obj, "template"),
            )
        )
    return _fill_splits(_checked(path, records, lines), f"split-{path.name}")


def read_eval(path: str | Path, kind: str | None = None) -> list[EvalPrompt]:
    """Reads and validates evaluation prompts from a .jsonl or .csv file.

    Raises:
      DatasetError: on a malformed line, a byte that is not UTF-8, a duplicate id or a file
        without records (message '<file>:<line>: <reason>').
    """
    path = Path(path)
    records, lines = [], []
    for n, obj in _rows(path):
        lines.append(n)
        k = _text(path, n, obj, "kind", kind or path.stem)
        if k not in EVAL_KINDS:
            raise DatasetError(path, n, f"kind must be one of {EVAL_KINDS}, got {k!r}")
        sev = obj.get("severity", 0)
        try:
            sev_int = int(sev)
        except (TypeError, ValueError):
            sev_int = -1
        if isinstance(sev, bool) or sev_int < 0 or str(sev_int) != str(sev).strip():
            raise DatasetError(path, n, f"severity must be a non-negative integer, got {sev!r}")
        records.append(
            EvalPrompt(
                id=_text(path, n, obj, "id", f"{path.stem}-{n}"),
                kind=k,
                domain=_text(path, n, obj, "domain", "unknown"),
                text=_text(path, n, obj, "text"),
                split=_split(path, n, obj),
                severity=sev_int,
                request=_optional_text(path, n, obj, "request"),
                template=_optional_text(path, n, obj, "template"),
            )
        )
    return _fill_splits(_checked(path, records, lines), f"split-{path.name}")
