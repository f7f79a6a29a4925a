"""The whole extraction of one model: capture, every method, the refusal layer, a VectorSet each.

`extract_model` reads the contrast sets and neutral texts, captures once, computes every
method's directions and (with a "refusal" concept) selects the refusal layer;
`load_or_extract_vectors` returns saved vectors or extracts them now from a run config.
`tokenizer_rendering` is how texts are written for a tokenizer when no rendering is given:
the zoo's spaced words for the zoo's word tokenizer, natural English for any other.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from emojax.extract.activations import DEFAULT_BUCKETS, Captured, CaptureStats, capture
from emojax.extract.contrast import load_contrast_sets, load_neutral
from emojax.extract.methods import METHODS, directions
from emojax.extract.refusal import RefusalSelection, select_refusal_layer


@dataclasses.dataclass
class Extraction:
    """Everything one model's extraction produced.

    Attributes:
      vector_sets: `{method: VectorSet}`.
      captured: the on-device statistics (for stability metrics).
      stats: capture cost (prompts, batches, compiles, seconds).
      refusal: the refusal layer selection (None without a "refusal" concept).
      seconds: wall time of the whole extraction (capture + directions + selection).
    """

    vector_sets: dict[str, Any]
    captured: Captured
    stats: CaptureStats
    refusal: RefusalSelection | None
    seconds: float


def config_kwargs(cfg) -> dict[str, Any]:
    """`extract_model` keyword arguments from a run config's `data` and `extract` sections."""
    d, e = cfg.data, cfg.extract
    return dict(
        concepts=(*d.emotions, *d.controls),
        methods=tuple(e.methods),
        split=d.extract_split,
        max_pairs=d.max_pairs or None,
        neutral_prompts=e.neutral_prompts or None,
        refusal_prompts=e.refusal_prompts,
        refusal_exclude_last=e.refusal_exclude_last,
        positions=dict(e.positions),
        template_source=e.template_source or None,
        data_dir=d.dir or None,
        rendering=d.get("rendering", "zoo"),
        batch_size=e.batch_size,
        buckets=tuple(e.buckets),
        max_items=e.max_items or None,
        l2=e.probe_l2,
        variance_fraction=e.neutral_variance,
    )


def tokenizer_rendering(tokenizer: Any) -> str:
    """The rendering a tokenizer was made for: 'zoo' for the zoo's word tokenizer, else
    'english' (real subword tokenizers, which would read "hurt . quick question :" as odd
    punctuation).

    The zoo's tokenizer (`emojax.zoo.tokenizer.build_tokenizer`, with or without a chat
    template) is recognised by its special tokens at fixed ids: <pad>, <unk>, <bos>, <|end|>,
    <|system|>, <|user|>, <|assistant|> = 0..6, which no real tokenizer has.
    """
    from emojax.zoo.tokenizer import SPECIALS  # up a layer, lazily: to tell the zoo tokenizer

    convert = getattr(tokenizer, "convert_tokens_to_ids", None)
    if convert is None:
        return "english"
    ids = convert(list(SPECIALS))
    return "zoo" if list(ids) == list(range(len(SPECIALS))) else "english"


def extract_model(
    params,
    config,
    tokenizer,
    *,
    concepts: Sequence[str] | None = None,
    methods: Sequence[str] = METHODS,
    split: str | None = "train",
    max_pairs: int | None = None,
    neutral_prompts: int | None = 200,
    refusal_prompts: int = 32,
    refusal_exclude_last: float = 0.2,
    positions: dict[str, str] | None = None,
    template_source=None,
    data_paths: dict[str, str] | None = None,
    data_dir: str | None = None,
    rendering: str | None = None,
    batch_size: int = 32,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    max_items: int | None = None,
    l2: float = 1e-2,
    variance_fraction: float = 0.5,
    metadata: dict[str, Any] | None = None,
) -> Extraction:
    """Directions of every concept x layer x method for one model, ready to save.

    Args:
      params, config, tokenizer: the model (`emojax.load_model`).
      concepts: concept names (default `emojax.concepts.CONCEPTS`).
      methods: subset of `METHODS`.
      split: dataset split of the contrast pairs and neutral texts.
      max_pairs: pairs per concept (None: all).
      neutral_prompts: neutral texts for norm units and neutral PCs (None: all).
      refusal_prompts: harmful and harmless eval prompts (each) scoring the refusal layers.
      refusal_exclude_last: fraction of the deepest layers never chosen for refusal.
      positions: capture site overrides per concept (see `DEFAULT_POSITIONS`).
      template_source: chat template source for a base model (see `emojax.concepts`).
      data_paths: `{concept: jsonl/csv}` overrides of the shipped contrast sets.
      data_dir: a directory of user files (the config's `data.dir`): its contrast files and
        its eval_neutral / eval_harmful / eval_harmless files replace the shipped ones, a
        missing file falls back to the shipped one (`emojax.concepts.find_data_file`).
      rendering: how the contrast, neutral and refusal-scoring texts are written: 'zoo' or
        'english' (the config's `data.rendering`); None follows the tokenizer
        (`tokenizer_rendering`: 'zoo' for the zoo's word tokenizer, 'english' otherwise).
      batch_size, buckets, max_items: see `capture`.
      l2: probe L2 strength.
      variance_fraction: neutral variance removed by the "denoised" method.
      metadata: extra provenance stored with the vectors (e.g. model name and hash).
    """
    from emojax import concepts as cdata
    from emojax.results import fingerprint
    from emojax.vectors import VectorSet

    t0 = time.perf_counter()
    rendering = rendering or tokenizer_rendering(tokenizer)
    sets = load_contrast_sets(
        tokenizer,
        concepts,
        split=split,
        limit=max_pairs,
        template_source=template_source,
        positions=positions,
        paths=data_paths,
        data_dir=data_dir,
        rendering=rendering,
    )
    neutral = load_neutral(
        tokenizer,
        split=split,
        limit=neutral_prompts,
        template_source=template_source,
        data_dir=data_dir,
        rendering=rendering,
    )
    pad_id = config.pad_token_id if config.pad_token_id is not None else 0
    captured, stats = capture(
        params,
        config,
        sets,
        neutral,
        batch_size=batch_size,
        buckets=buckets,
        max_items=max_items,
        bos_id=config.bos_token_id,
        pad_id=pad_id,
    )
    # Diff-of-means always: the refusal layer selection uses it.
    computed = tuple(dict.fromkeys(("diff_of_means", *methods)))
    dirs = jax.device_get(
        directions(captured, computed, l2=l2, variance_fraction=variance_fraction)
    )
    names = captured.concepts
    refusal = None
    if "refusal" in names:
        from emojax.readouts import refusal_token_ids

        enc = lambda kind: cdata.encode_chat(
            tokenizer,
            [
                p.text
                for p in cdata.load_eval(
                    kind, split, limit=refusal_prompts, data_dir=data_dir, rendering=rendering
                )
            ],
            template_source,
        )
        unit, scale = dirs["diff_of_means"]
        raw = unit[names.index("refusal")] * scale[names.index("refusal")][:, None]  # 0: undefined
        refusal = select_refusal_layer(
            params,
            config,
            raw,
            enc("harmful"),
            enc("harmless"),
            refusal_token_ids(tokenizer),
            exclude_last_fraction=refusal_exclude_last,
        )
    meta = {
        **(metadata or {}),
        "dataset_hash": fingerprint([[cs.positive, cs.negative] for cs in sets]),
        "neutral_hash": fingerprint(neutral),
        "positions": dict(zip(names, captured.positions, strict=True)),
        "pairs": {cs.concept: len(cs.positive) for cs in sets},
        "split": split,
        "rendering": rendering,
        "num_layers": config.num_layers,
        "sites": "resid[0..num_layers]",
        "d_model": config.d_model,
    }
    if refusal is not None:
        meta["selected_layer"] = {"refusal": refusal.layer}
    layer_norms = np.asarray(captured.layer_norms)
    vector_sets = {
        m: VectorSet(unit, scale, layer_norms, names, m, {**meta, "method": m})
        for m, (unit, scale) in dirs.items()
        if m in methods
    }
    return Extraction(vector_sets, captured, stats, refusal, time.perf_counter() - t0)


def load_or_extract_vectors(path: str, model, cfg, method: str):
    """The VectorSet saved at `path` (orbax directory or .safetensors export), or, when `path`
    is empty, `method`'s vectors extracted now with the run config's `data`/`extract` sections.
    """
    from emojax.vectors import VectorSet

    if path:
        if os.path.exists(os.path.join(path, "metadata.json")):
            return VectorSet.load(path)
        return VectorSet.load_safetensors(path)
    kwargs = {**config_kwargs(cfg), "methods": (method,)}
    ex = extract_model(model.params, model.config, model.tokenizer, **kwargs)
    return ex.vector_sets[method]
