"""Builds the zoo: base -> instruct -> safety-1 -> safety-2 -> safety-3, or reuses its cache.

`build_zoo` samples each stage's corpus (`emojax.zoo.corpus`), trains the tokenizer and each
model in turn, writes them into the cache (`emojax.zoo.cache`: layout, atomic writes, resume
after an interruption) under the config's hash (`emojax.zoo.recipe`), and records the
behaviour table (`emojax.zoo.behaviour`).

The config's `zoo.scenario` (`emojax.zoo.scenario.SCENARIOS`) chooses the planted truth; it is
part of the config hash, so every scenario builds to its own cache directory.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from emojax import concepts
from emojax.concepts import grammar
from emojax.config import ModelConfig
from emojax.loading import load_params, save_pretrained
from emojax.params import Params, init_params
from emojax.zoo import corpus
from emojax.zoo.behaviour import EVAL_KINDS, behaviour_table, format_behaviour
from emojax.zoo.cache import (
    BEHAVIOUR,
    MANIFEST,
    MODEL_MARKER,
    _locked,
    _publish,
    _remove_leftovers,
    _tokenizer_is_complete,
    _write_json_atomic,
    model_is_complete,
    zoo_is_complete,
)
from emojax.zoo.recipe import (
    ZOO_MODELS,
    ZOO_VERSION,
    _plain,
    config_hash,
    corpus_size,
    default_cache_dir,
    model_config,
    scenario_name,
    stage_spec,
    zoo_section,
)
from emojax.zoo.tokenizer import build_tokenizer, save_tokenizer
from emojax.zoo.train import train

MIN_RESPONSE_TOKENS = 8  # a chat document is kept (truncated) when this much response fits
# Loss weight of a response's first two tokens: the first decides refusal vs compliance (the
# policy), the second whether a compliant start is taken back ("sure ..." vs "sure ."). The
# planted behaviour is learned from two tokens per document among ~20 of style, so they get
# more weight (the same for every document: no label is favoured).
DECISION_WEIGHT = 10.0
DECISION_TOKENS = 2


def held_out_requests() -> frozenset[str]:
    """Validation and test requests of the eval sets: never in a training corpus."""
    texts = set()
    for kind in EVAL_KINDS:
        for split in ("val", "test"):
            texts.update(p.text for p in concepts.load_eval(kind, split))
    return frozenset(texts)


def encode_dialogues(
    tok: Any, dialogues: list[corpus.Dialogue], max_len: int, response_only: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded tokens int32 [N, T] and loss weights float32 [N, T] (T = max_len).

    Documents longer than max_len are truncated; a chat document is dropped only when its
    prompt leaves fewer than MIN_RESPONSE_TOKENS for the response (the response's opening
    decides the behaviour, so truncating a long tail keeps what the zoo must learn and keeps
    long styled responses from being dropped selectively). With response_only the loss covers
    the assistant turn (and its end token) only. The response's first DECISION_TOKENS tokens
    (the refusal decision, then the take-back decision) weigh DECISION_WEIGHT, every other
    covered token 1.
    """
    if response_only:
        dialogues = [d for d in dialogues if d.response]
    texts = [d.prompt + (f" {d.response} <|end|> " if d.response else "") for d in dialogues]
    full = tok.encode_batch(texts)
    prompts_all = tok.encode_batch([d.prompt for d in dialogues])
    prompts = prompts_all if response_only else None
    rows, masks = [], []
    for i, (d, enc) in enumerate(zip(dialogues, full, strict=True)):
        ids = enc.ids
        if len(ids) > max_len:
            if d.response and len(prompts_all[i].ids) + MIN_RESPONSE_TOKENS > max_len:
                continue
            ids = ids[:max_len]
        row = np.zeros(max_len, np.int32)
        row[: len(ids)] = ids
        mask = np.zeros(max_len, np.float32)
        mask[len(prompts[i].ids) if response_only else 0 : len(ids)] = 1.0
        if d.response:
            start = len(prompts_all[i].ids)
            mask[start : min(start + DECISION_TOKENS, len(ids))] = DECISION_WEIGHT
        rows.append(row)
        masks.append(mask)
    return np.stack(rows), np.stack(masks)


def build_zoo(
    config: Any,
    workdir: str | os.PathLike | None = None,
    *,
    log: Callable[[str], None] = logging.info,
) -> dict[str, str]:
    """Builds the zoo (or reuses a complete cached one) and returns {model name: directory}.

    Args:
      config: the full config (with a `zoo` section) or the `zoo` section itself.
      workdir: the zoo directory; default `default_cache_dir(config)`.
      log: progress sink (default absl INFO).

    Returns:
      Model directories in policy-dominance order (base, instruct, safety-1..3), each a
      Hugging Face checkpoint loadable by `emojax.load_model` and transformers.
    """
    z = zoo_section(config)
    digest = config_hash(z)
    root = Path(workdir).expanduser() if workdir else default_cache_dir(z)
    root.mkdir(parents=True, exist_ok=True)
    paths = {m: str((root / m).resolve()) for m in ZOO_MODELS}
    with _locked(root):
        if zoo_is_complete(root, digest):
            log(f"zoo {digest}: reusing complete build in {root}")
            return paths
        t_start = time.perf_counter()
        removed = _remove_leftovers(root)
        if removed:
            log(f"zoo {digest}: removed leftovers of an interrupted build: {removed}")
        (root / MANIFEST).unlink(missing_ok=True)
        timings: dict[str, float] = {}

        # Tokenizer (on the base corpus + every shipped dataset + the grammar's words).
        t0 = time.perf_counter()
        held = held_out_requests()
        scenario = scenario_name(z)
        base_docs = corpus.sample_corpus("base", corpus_size(z, "base"), z.seed, held, scenario)
        tok_dir = root / "tokenizer"
        if _tokenizer_is_complete(tok_dir, digest):
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
        else:
            texts = [d.prompt + " " + d.response for d in base_docs]
            texts += list(_dataset_texts()) + [" ".join(sorted(grammar.all_words()))]
            texts.append(corpus.TAKE_BACK)  # its words even when no base document takes back
            tok = build_tokenizer(texts)
            tmp = root / f".tmp-tokenizer-{os.getpid()}"
            save_tokenizer(tok, str(tmp))
            (tmp / "zoo_tokenizer.json").write_text(json.dumps({"config_hash": digest}))
            _publish(tmp, tok_dir)
        cfg = model_config(z, tok.get_vocab_size())
        timings["data"] = round(time.perf_counter() - t0, 2)
        log(
            f"zoo {digest} (scenario {scenario}): vocab {cfg.vocab_size}, "
            f"{cfg.num_params:,} parameters, root {root}"
        )

        params: Params | None = None
        rebuilt: list[str] = []
        for name in ZOO_MODELS:
            if not rebuilt and model_is_complete(root / name, digest):
                log(f"[{name}] complete, reusing")
                params = None  # loaded lazily if a later stage needs training
                continue
            t0 = time.perf_counter()
            if params is None:
                if name == "base":
                    params = init_params(cfg, jax.random.PRNGKey(z.seed))
                else:
                    prev = ZOO_MODELS[ZOO_MODELS.index(name) - 1]
                    _, params = load_params(str(root / prev))
            docs = base_docs if name == "base" else corpus.sample_corpus(
                name, corpus_size(z, name), z.seed, held, scenario)  # fmt: skip
            tokens, mask = encode_dialogues(tok, docs, z.max_len, response_only=name != "base")
            params, summary = train(
                params, cfg, tokens, mask, stage_spec(z, name),
                seed=z.seed + ZOO_MODELS.index(name), log=log,
            )  # fmt: skip
            summary["sequences"] = int(tokens.shape[0])
            _export(root, name, params, cfg, tok, digest, summary, z)
            rebuilt.append(name)
            timings[name] = round(time.perf_counter() - t0, 2)

        t0 = time.perf_counter()
        if rebuilt or not (root / BEHAVIOUR).is_file():
            table = behaviour_table(paths, z, log=log)
            _write_json_atomic(root / BEHAVIOUR, table)
            log("\n" + format_behaviour(table))
        timings["behaviour"] = round(time.perf_counter() - t0, 2)
        timings["total"] = round(time.perf_counter() - t_start, 2)
        _write_json_atomic(
            root / MANIFEST,
            {
                "config_hash": digest,
                "version": ZOO_VERSION,
                "scenario": scenario,
                "models": {m: m for m in ZOO_MODELS},
                "rebuilt": rebuilt,
                "timings_s": timings,
                "zoo_config": _plain(z),
                "model_config": cfg.to_hf_dict(),
            },
        )
        log(f"zoo {digest}: built {rebuilt} in {timings['total']:.1f} s -> {root}")
    return paths


def _dataset_texts() -> Iterator[str]:
    for concept in concepts.CONTRAST_SETS:
        for p in concepts.load_contrast(concept):
            yield p.positive
            yield p.negative
    for kind in concepts.EVAL_KINDS:
        for p in concepts.load_eval(kind):
            yield p.text


def _export(
    root: Path,
    name: str,
    params: Params,
    cfg: ModelConfig,
    tok: Any,
    digest: str,
    summary: dict,
    z: Any,
) -> None:
    """Writes one Hugging Face checkpoint directory atomically."""
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_pretrained(params, cfg, str(tmp))
    with_template = name != "base" or bool(z.base_chat_template)
    save_tokenizer(tok, str(tmp), chat_template=corpus.CHAT_TEMPLATE if with_template else None)
    # Wall times differ between identical builds: they stay in the manifest's timings_s, so
    # every file of a model directory (and the provenance hash over them) is a function of
    # the config alone.
    training = {k: v for k, v in summary.items() if k != "seconds"}
    marker = {"config_hash": digest, "model": name, "version": ZOO_VERSION, "training": training}
    (tmp / MODEL_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    _publish(tmp, root / name)


def resolve_models(spec: str | list[str], config: Any) -> dict[str, str]:
    """`{name: checkpoint dir}` for "zoo" (every zoo model), zoo names, or directories.

    Zoo names build (or reuse) the zoo of `config`; a comma-separated string or a list both work.

    Raises:
      ValueError: a name is neither a directory nor a zoo model.
    """
    names = spec if isinstance(spec, list | tuple) else [s for s in spec.split(",") if s]
    names = list(ZOO_MODELS) if names == ["zoo"] else list(names)
    unknown = [n for n in names if n not in ZOO_MODELS and not os.path.isdir(n)]
    if unknown:
        raise ValueError(f"{unknown} are neither checkpoint directories nor zoo names {ZOO_MODELS}")
    built = (
        build_zoo(config) if any(n in ZOO_MODELS and not os.path.isdir(n) for n in names) else {}
    )
    return {os.path.basename(os.path.normpath(n)): str(built.get(n, n)) for n in names}
