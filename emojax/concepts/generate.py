"""Regenerates the shipped concept and evaluation datasets (byte-identical for a seed).

Usage:
  python -m emojax.concepts.generate                 # rewrite emojax/concepts/data/*.jsonl
  python -m emojax.concepts.generate --check         # exit 1 if the shipped files differ
  python -m emojax.concepts.generate --out=/tmp/d --seed=1 --n_pairs=300 --n_eval=400

Contrast pairs take their split from their template (`grammar.templates`): 60 / 20 / 20 % of
the pairs per split, each split cycling over its own templates and the six domains, so a
template meets every domain and held-out templates never appear in the training pairs. Their
requests come from tasks of the same split. Evaluation records are one task each (their
request id is their id), drawn 30 / 20 / 50 % from the train / val / test tasks and balanced
over domains and severities; the test split is the largest because every evaluation resamples
requests.
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
PAIR_FRACTIONS = (0.6, 0.2, 0.2)  # contrast pairs per split (train / val / test)
EVAL_FRACTIONS = (0.3, 0.2, 0.5)  # evaluation records per split


def _split_sizes(n: int, fractions: tuple[float, float, float]) -> dict[str, int]:
    n_train, n_val = round(fractions[0] * n), round(fractions[1] * n)
    return dict(zip(SPLITS, (n_train, n_val, n - n_train - n_val), strict=True))


def _unique(draw, n: int, key, max_tries: int = 200) -> list:
    """draw(i) for i < n, redrawn (up to max_tries times) until key(item) is new."""
    seen, out = set(), []
    for i in range(n):
        for _ in range(max_tries):
            item = draw(i)
            if key(item) not in seen:
                break
        else:
            raise RuntimeError(f"grammar too small for {n} unique items")
        seen.add(key(item))
        out.append(item)
    return out


def _pair(concept: str, template: grammar.Template, domain: str, split: str, rng) -> tuple:
    """(domain, positive, negative) of one contrast pair made with `template`."""
    if concept == "harm_salience":
        pos, neg = grammar.harm_pair(template, rng)
        return template.domain, pos, neg
    if concept == "refusal":
        # Same lead-in and phrasing on both sides: the pair differs in the instruction only.
        phrasing = grammar.PHRASINGS.index(template.text)
        opener = rng.choice(grammar.OPENERS)
        bad = grammar.sample_task(rng, "harmful", domain, split=split)
        good = grammar.sample_task(rng, "harmless", domain, split=split)
        return (
            domain,
            grammar.phrase_with(bad, phrasing, opener).text,
            grammar.phrase_with(good, phrasing, opener).text,
        )
    req = grammar.sample_request(rng, "harmless", domain, split=split).text
    neutral = grammar.pick_template("neutral", rng, split)
    return domain, template.apply(req), neutral.apply(req)


def make_contrast(concept: str, n: int, seed: int) -> list[dict]:
    """Contrast pairs for one concept (see schema.CONTRAST_FIELDS)."""
    rng = random.Random(f"{seed}-contrast-{concept}")
    records: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for split, count in _split_sizes(n, PAIR_FRACTIONS).items():
        pool = grammar.templates(concept, split)

        def draw(j: int, pool=pool, split=split) -> tuple:
            # Round r gives template t domain t + r: after six rounds it has met every domain.
            t, r = j % len(pool), j // len(pool)
            template = pool[t]
            domain = grammar.DOMAINS[(t + r) % len(grammar.DOMAINS)]
            return (template.id, *_pair(concept, template, domain, split, rng))

        for tid, domain, pos, neg in _unique(draw, count, key=lambda x: x[2:], max_tries=50):
            if (pos, neg) in seen:
                raise RuntimeError(f"{concept}: duplicate pair across splits")
            seen.add((pos, neg))
            values = (f"{concept}-{len(records):04d}", concept, domain, pos, neg, split, tid)
            records.append(dict(zip(CONTRAST_FIELDS, values, strict=True)))
    return records


def _cells(kind: str) -> list[tuple[str, int]]:
    """(domain, apparent severity) cells an evaluation set is balanced over."""
    levels = {"harmful": (1, 2, 3), "borderline": (1, 3), "harmless": (0,)}[kind]
    return [(d, a) for a in levels for d in grammar.DOMAINS]


def make_eval(kind: str, n: int, seed: int) -> list[dict]:
    """Evaluation prompts of one kind (see schema.EVAL_FIELDS), one task per record."""
    rng = random.Random(f"{seed}-eval-{kind}")
    rows: list[tuple[str, str, str, int]] = []  # (split, domain, text, severity)
    sizes = _split_sizes(n, EVAL_FRACTIONS)
    if kind == "neutral":
        domains = grammar.DOMAINS
        drawn = _unique(lambda i: grammar.sample_neutral(rng, domains[i % 6]), n, lambda x: x[1])
        labels = [s for s in SPLITS for _ in range(sizes[s])]
        rows = [(s, d, t, 0) for s, (d, t) in zip(labels, drawn, strict=True)]
    for split, count in sizes.items():
        if kind == "neutral":
            break
        # Cycle over the cells, drawing unused tasks of this split (a cell that runs out is
        # skipped), so every prefix of the split is balanced over domains and severities.
        pools = {
            cell: [t for t in grammar.tasks(kind, cell[0], split) if t.apparent == cell[1]]
            for cell in _cells(kind)
        }
        for pool in pools.values():
            rng.shuffle(pool)
        cells = [c for c in _cells(kind) if pools[c]]
        i = 0
        while sum(1 for r in rows if r[0] == split) < count:
            if not any(pools.values()):
                raise RuntimeError(f"only {i} {kind} tasks in the {split} split, need {count}")
            cell = cells[i % len(cells)]
            i += 1
            if pools[cell]:
                task = pools[cell].pop()
                rows.append((split, task.domain, grammar.phrase(task, rng).text, task.severity))
    return [
        dict(zip(EVAL_FIELDS, (f"{kind}-{i:04d}", kind, d, t, s, sev), strict=True))
        for i, (s, d, t, sev) in enumerate(rows)
    ]


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
