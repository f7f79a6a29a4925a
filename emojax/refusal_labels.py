"""The hand-labelled refusal check set: its prompts, a model's responses, labels kept on rewrite.

`write_labelled_set` is scripts/refusal_responses.py: greedy responses of a real model for
hand-labelling refusals (the check set of `readouts.classify_response`, shipped as
emojax/concepts/data/refusal_labels.jsonl).

Prompts (`labelling_prompts`): a 'dev' part of 170 and a 'heldout' part of 100, each
HarmBench standard behaviours (some under jailbreak framings) and the project's English
harmful, harmless and borderline requests (XSTest-style: harmless requests that look
dangerous; borderline and harmless refusals are over-refusals). Each goes through the
model's chat template; the response is `max_new_tokens` greedy tokens (float32), cut at the
end-of-turn token; `refusal_score` is log p_R - log(1 - p_R) of the refusal-start tokens at
the first response position (`emojax.readouts`).

Every record written keeps an existing hand label (`refused`, `note`) of the same id and
prompt when the response is unchanged, so regenerating never loses labels silently; new or
changed responses get `refused: null` to be labelled by reading them.

Dimension letters: B prompts per generate call, T padded prompt tokens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import emojax
from emojax import concepts, readouts, redteam, results


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


def generate_responses(
    model,
    prompts: list[str],
    batch: int,
    max_new_tokens: int,
    log: Callable[[str], None] = print,
) -> tuple[list[str], list[float]]:
    """Greedy responses and first-position refusal scores, `batch` prompts at a time.

    Every call is padded to B = `batch` rows and one T (a multiple of 16), so one compiled
    program serves every batch.

    Args:
      model: an `emojax.Model` with a chat-template tokenizer.
      prompts: user texts (chat-formatted here).
      batch: B, prompts per generate call.
      max_new_tokens: greedy tokens per response.
      log: receives one progress line per batch.

    Returns:
      (texts cut at the end-of-turn token, refusal scores), one per prompt.
    """
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
        log(f"{start + len(chunk)}/{len(ids)} prompts ({time.perf_counter() - t0:.1f} s)")
    return texts, scores


def merge_labels(
    rows: list[dict], texts: list[str], scores: list[float], old: dict[str, dict]
) -> list[dict]:
    """Records with responses and scores, keeping the hand labels of unchanged responses.

    Args:
      rows: `labelling_prompts` records.
      texts, scores: one response and refusal score per row.
      old: {id: record} of the file being rewritten.

    Returns:
      rows + response, refusal_score (3 decimals), refused and note: the old record's when it
      has the same prompt and response, else None and "".
    """
    merged = []
    for row, text, score in zip(rows, texts, scores, strict=True):
        prev = old.get(row["id"], {})
        same = prev.get("prompt") == row["prompt"] and prev.get("response") == text
        merged.append(
            dict(row, response=text, refusal_score=round(float(score), 3),
                 refused=prev.get("refused") if same else None,
                 note=prev.get("note", "") if same else "")
        )  # fmt: skip
    return merged


def write_labelled_set(
    model_name: str,
    out: str | Path,
    *,
    parts: Sequence[str] = ("dev", "heldout"),
    batch: int = 30,
    max_new_tokens: int = 64,
    limit: int = 0,
    log: Callable[[str], None] = print,
) -> int:
    """Generates the responses of `parts` and writes them to the JSONL `out`, labels merged.

    Args:
      model_name: a registered model name or checkpoint path (loaded in float32).
      out: the JSONL file; its hand labels of unchanged responses are kept (`merge_labels`)
        and it is replaced atomically, so the labels are never truncated.
      parts: parts of the labelled set, one at a time (their padding and batches do not move).
      batch: prompts per generate call.
      max_new_tokens: greedy tokens per response.
      limit: only the first `limit` prompts of each part (0 = all).
      log: receives the progress lines.

    Returns:
      the number of records written.
    """
    model = emojax.load_model(model_name, dtype=jnp.float32)
    rows, texts, scores = [], [], []
    for part in parts:  # one part at a time: its padding and batches do not move
        part_rows = labelling_prompts(part)
        part_rows = part_rows[:limit] if limit else part_rows
        log(f"{part}: {len(part_rows)} prompts, {jax.devices()[0].platform}")
        prompts = [r["prompt"] for r in part_rows]
        t, s = generate_responses(model, prompts, batch, max_new_tokens, log=log)
        rows, texts, scores = rows + part_rows, texts + t, scores + s
    out = Path(out)
    old = {}
    if out.exists():
        old = {r["id"]: r for r in map(json.loads, out.read_text().splitlines()) if r}
    lines = [
        json.dumps(r, ensure_ascii=False) + "\n" for r in merge_labels(rows, texts, scores, old)
    ]
    results.write_text(str(out), "".join(lines))  # atomic: the hand labels are never truncated
    return len(rows)
