r"""Greedy responses of a real model for hand-labelling refusals (the classifier's check set).

Examples:
  python scripts/refusal_responses.py                      # SmolLM2, writes the unlabelled set
  python scripts/refusal_responses.py --limit=16 --out=/tmp/r.jsonl

Prompts (`labelling_prompts`): a 'dev' part of 170 and a 'heldout' part of 100, each
HarmBench standard behaviours (some under jailbreak framings) and the project's English
harmful, harmless and borderline requests (XSTest-style: harmless requests that look
dangerous; borderline and harmless refusals are over-refusals). Each goes through the
model's chat template; the response is `--max_new_tokens` greedy tokens (float32), cut at
the end-of-turn token; `refusal_score` is log p_R - log(1 - p_R) of the refusal-start tokens
at the first response position (`emojax.readouts`).

Every record of `--out` keeps an existing hand label (`refused`, `note`) of the same id and
prompt when the response is unchanged, so regenerating never loses labels silently; new or
changed responses get `refused: null` to be labelled by reading them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

import emojax
from emojax import concepts, readouts, redteam, results
from emojax.workdir import run_main

_MODEL = flags.DEFINE_string("model", "smollm2-135m-instruct", "registered name or path.")
_OUT = flags.DEFINE_string(
    "out", str(concepts.DATA_DIR / "refusal_labels.jsonl"), "JSONL file to write (merged)."
)
_BATCH = flags.DEFINE_integer("batch", 30, "prompts per generate call.")
_NEW = flags.DEFINE_integer("max_new_tokens", 64, "greedy tokens per response.")
_LIMIT = flags.DEFINE_integer("limit", 0, "only the first N prompts (0 = all).")
_PARTS = flags.DEFINE_list("parts", ["dev", "heldout"], "parts of the labelled set to write.")


def labelling_prompts(part: str = "dev") -> list[dict]:
    """The prompts of one part of the labelled set: id, part, source, kind, request, template.

    'dev' (170; the classifier's phrases were written after reading these responses):
    HarmBench behaviours 0, 4, 8, ... (50) and 10 under held-out jailbreak framings; the
    project's English test requests: 25 harmful, 15 harmful under held-out framings, 30
    harmless, 40 borderline. 'heldout' (100; labelled after the classifier was fixed):
    HarmBench behaviours 1, 5, 9, ... (40) and 3, 23, 43, ... under framings; validation-split
    requests: 12 harmful, 8 harmful under validation framings, 10 harmless, 20 borderline.
    """
    rows = []

    def add(source: str, records) -> None:
        for r in records:
            rows.append(
                dict(id=f"{source}/{r.id}/{r.template or 'plain'}", part=part, source=source,
                     kind=r.kind, request=r.request, template=r.template, prompt=r.text)
            )  # fmt: skip

    def eval_(kind, split, framing=None):
        return concepts.load_eval(kind, split, framing=framing, rendering="english")

    harmbench = redteam.load_harmbench()
    framed = redteam.load_harmbench(framing="jailbreak")
    if part == "dev":
        add("harmbench", harmbench[::4])
        add("harmbench", [framed[i] for i in range(2, 200, 20)])
        add("emojax", eval_("harmful", "test")[:25])
        add("emojax", eval_("harmful", "test", "jailbreak")[25:40])
        add("emojax", eval_("harmless", "test")[:30])
        add("emojax", eval_("borderline", "test")[:40])
    elif part == "heldout":
        add("harmbench", harmbench[1::4][:40])  # behaviours the dev part never shows
        add("harmbench", [framed[i] for i in range(3, 200, 20)])
        add("emojax", eval_("harmful", "val")[:12])
        add("emojax", eval_("harmful", "val", "jailbreak")[12:20])
        add("emojax", eval_("harmless", "val")[:10])
        add("emojax", eval_("borderline", "val")[:20])
    else:
        raise ValueError(f"part must be 'dev' or 'heldout', got {part!r}")
    return rows


def generate_responses(model, prompts: list[str], batch: int, max_new_tokens: int):
    """Greedy responses and first-position refusal scores, `batch` prompts at a time."""
    tok = model.tokenizer
    refusal = jnp.asarray(
        readouts.refusal_mask(readouts.refusal_token_ids(tok), model.config.vocab_size)
    )
    eos = sorted(
        {i for i in (tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")) if i is not None}
    )
    ids = [tok.encode(concepts.format_chat(tok, p), add_special_tokens=False) for p in prompts]
    pad_to = -(-max(len(x) for x in ids) // 16) * 16  # one compiled shape for every batch
    texts, scores = [], []
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        rows = chunk + [chunk[-1]] * (batch - len(chunk))  # fixed batch: no recompile
        tokens, mask = concepts.left_pad(rows, pad_id=eos[0], pad_to=pad_to)
        t0 = time.perf_counter()
        tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
        out = emojax.generate(
            model.params, model.config, tokens, max_new_tokens=max_new_tokens, attention_mask=mask
        )
        last = jnp.full((batch, 1), pad_to - 1)  # the first response position's logits
        logits = emojax.forward(
            model.params, model.config, tokens, attention_mask=mask, capture=False,
            logit_positions=last,
        ).logits  # fmt: skip
        score = readouts.refusal_score(logits[:, 0], refusal)
        new = np.asarray(out)[: len(chunk), pad_to:]
        texts += readouts.decode_responses(tok, new, eos)
        scores += np.asarray(score)[: len(chunk)].tolist()
        print(f"{start + len(chunk)}/{len(ids)} prompts ({time.perf_counter() - t0:.1f} s)")
    return texts, scores


def main(argv):
    del argv
    model = emojax.load_model(_MODEL.value, dtype=jnp.float32)
    rows, texts, scores = [], [], []
    for part in _PARTS.value:  # one part at a time: its padding and batches do not move
        part_rows = labelling_prompts(part)
        part_rows = part_rows[: _LIMIT.value] if _LIMIT.value else part_rows
        print(f"{part}: {len(part_rows)} prompts, {jax.devices()[0].platform}")
        prompts = [r["prompt"] for r in part_rows]
        t, s = generate_responses(model, prompts, _BATCH.value, _NEW.value)
        rows, texts, scores = rows + part_rows, texts + t, scores + s
    out = Path(_OUT.value)
    old = {}
    if out.exists():
        old = {r["id"]: r for r in map(json.loads, out.read_text().splitlines()) if r}
    lines = []
    for row, text, score in zip(rows, texts, scores, strict=True):
        prev = old.get(row["id"], {})
        same = prev.get("prompt") == row["prompt"] and prev.get("response") == text
        row = dict(row, response=text, refusal_score=round(float(score), 3),
                   refused=prev.get("refused") if same else None,
                   note=prev.get("note", "") if same else "")  # fmt: skip
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    results.write_text(str(out), "".join(lines))  # atomic: the hand labels are never truncated
    print(f"wrote {len(rows)} records to {out}")


if __name__ == "__main__":
    run_main(main)
