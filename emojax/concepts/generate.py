"""Regenerates the shipped concept and evaluation datasets (byte-identical for a seed).

Usage:
  python -m emojax.concepts.generate                 # rewrite emojax/concepts/data/*.jsonl
  python -m emojax.concepts.generate --check         # exit 1 if the shipped files differ
  python -m emojax.concepts.generate --out=/tmp/d --seed=1 --n_pairs=300 --n_eval=400
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from emojax.concepts import grammar
from emojax.concepts.schema import (
    CONTRAST_FIELDS,
    EVAL_FIELDS,
    EVAL_KINDS,
    SPLITS,
    contrast_filename,
    eval_filename,
)

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_SEED = 0
DEFAULT_N_PAIRS = 240
DEFAULT_N_EVAL = 300
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train / val / test


def _assign_splits(records: list[dict], seed: int, name: str) -> None:
    """Writes a 'split' field: a seeded permutation cut 60/20/20 (train/val/test)."""
    order = list(range(len(records)))
    random.Random(f"{seed}-split-{name}").shuffle(order)
    n_train = round(SPLIT_FRACTIONS[0] * len(records))
    n_val = round(SPLIT_FRACTIONS[1] * len(records))
    for rank, i in enumerate(order):
        records[i]["split"] = (
            SPLITS[0] if rank < n_train else SPLITS[1] if rank < n_train + n_val else SPLITS[2]
        )


def _unique(draw, n: int, key, max_tries: int = 200_000) -> list:
    """Calls draw() until n items with distinct key(item) exist."""
    seen, out = set(), []
    for _ in range(max_tries):
        item = draw(len(out))
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
            if len(out) == n:
                return out
    raise RuntimeError(f"grammar too small for {n} unique items")


def make_contrast(concept: str, n: int, seed: int) -> list[dict]:
    """Contrast pairs for one concept (see schema.CONTRAST_FIELDS)."""
    rng = random.Random(f"{seed}-contrast-{concept}")

    def draw(i: int) -> tuple[str, str, str]:
        domain = grammar.DOMAINS[i % len(grammar.DOMAINS)]
        if concept == "harm_salience":
            return grammar.sample_harm_pair(rng, domain)
        if concept == "refusal":
            bad = grammar.sample_request(rng, "harmful", domain)
            good = grammar.sample_request(rng, "harmless", domain)
            # Same framing on both sides, so the pair differs in the instruction only.
            bad_act, good_act = _act_of(bad.text), _act_of(good.text)
            return domain, bad.text, bad.text.replace(bad_act, good_act)
        req = grammar.sample_request(rng, "harmless", domain)
        pos = grammar.with_cue(req.text, concept, rng)
        neg = grammar.with_cue(req.text, "neutral", rng)
        return domain, pos, neg

    triples = _unique(draw, n, key=lambda t: t[1:])
    records = [
        dict(zip(CONTRAST_FIELDS, (f"{concept}-{i:04d}", concept, d, p, q, ""), strict=True))
        for i, (d, p, q) in enumerate(triples)
    ]
    _assign_splits(records, seed, f"contrast-{concept}")
    return records


def _matches(framing: str, text: str) -> bool:
    head, tail = framing.split("{act}")
    return head in text and text.endswith(tail)


def _act_of(text: str) -> str:
    for f in grammar.FRAMINGS:
        if _matches(f, text):
            head, tail = f.split("{act}")
            start = text.index(head) + len(head)
            return text[start : len(text) - len(tail)]
    raise ValueError(text)


def make_eval(kind: str, n: int, seed: int) -> list[dict]:
    """Evaluation prompts of one kind (see schema.EVAL_FIELDS)."""
    rng = random.Random(f"{seed}-eval-{kind}")

    def draw(i: int) -> tuple[str, str, int]:
        domain = grammar.DOMAINS[i % len(grammar.DOMAINS)]
        if kind == "neutral":
            d, text = grammar.sample_neutral(rng, domain)
            return d, text, 0
        severity = 1 + (i // len(grammar.DOMAINS)) % 3 if kind == "harmful" else None
        req = grammar.sample_request(rng, kind, domain, severity)
        return req.domain, req.text, req.severity

    triples = _unique(draw, n, key=lambda t: t[1])
    records = [
        dict(zip(EVAL_FIELDS, (f"{kind}-{i:04d}", kind, d, t, "", s), strict=True))
        for i, (d, t, s) in enumerate(triples)
    ]
    _assign_splits(records, seed, f"eval-{kind}")
    return records


def generate_all(
    seed: int = DEFAULT_SEED, n_pairs: int = DEFAULT_N_PAIRS, n_eval: int = DEFAULT_N_EVAL
) -> dict[str, list[dict]]:
    """All datasets as {file name: records}."""
    from emojax.concepts import CONTRAST_SETS

    out = {}
    for concept in CONTRAST_SETS:
        out[contrast_filename(concept)] = make_contrast(concept, n_pairs, seed)
    for kind in EVAL_KINDS:
        out[eval_filename(kind)] = make_eval(kind, n_eval, seed)
    return out


def dumps_jsonl(records: list[dict]) -> str:
    """Canonical JSONL text (fixed key order, ASCII, '\\n' line ends)."""
    return "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=str(DATA_DIR))
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--n_pairs", type=int, default=DEFAULT_N_PAIRS)
    ap.add_argument("--n_eval", type=int, default=DEFAULT_N_EVAL)
    ap.add_argument("--check", action="store_true", help="compare with --out, write nothing")
    args = ap.parse_args(argv)
    out = Path(args.out)
    files = generate_all(args.seed, args.n_pairs, args.n_eval)
    stale = []
    for name, records in files.items():
        text = dumps_jsonl(records)
        path = out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check:
        print("stale: " + ", ".join(stale) if stale else f"{len(files)} files up to date")
        return 1 if stale else 0
    print(f"wrote {len(files)} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
