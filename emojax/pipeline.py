"""The end-to-end break-point analysis: every stage, at every point of the axis.

Data flow per axis point (DESIGN.md §1):
`loading -> extract (vectors, stability) -> sweep (steering readouts, modularity, Δ_steer)
-> probes (the model's own failures, Δ_mon) -> breakpoint`.

Before any work, `run` checks the work directory (`emojax.workdir`: same config resumes,
another config is refused before anything is written) and every axis point's checkpoint
(`preflight`: config.json and weight headers, no weights loaded). Everything a point produces
is written under `<workdir>/points/<label>/`; the axis-level tables, plots, `report.md` and
(last) `summary.json` are written by `emojax.report`. Every file is published atomically.
"""

from __future__ import annotations

import dataclasses
import functools
import logging as std_logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from emojax import breakpoint as bp
from emojax import concepts, extract, probes, results, stats, sweep, vectors
from emojax import readouts as ro
from emojax.generate import decode_tokens, generate
from emojax.interventions import Intervention
from emojax.loading import Model, load_model, resolve_path, validate_checkpoint
from emojax.metrics import stability
from emojax.model import default_positions, embed, forward, init_cache, run_layers, unembed
from emojax.report import write_csv, write_outputs
from emojax.stats import require_finite
from emojax.workdir import WorkdirError, WorkdirState, check_workdir, start_run

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# Progress.


class Progress:
    """Stage / item progress lines with items per second and an ETA."""

    def __init__(self, total: int, what: str):
        self.total, self.what, self.done = total, what, 0
        self.start = time.perf_counter()

    def step(self, message: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        rate = self.done / max(elapsed, 1e-9)
        eta = (self.total - self.done) / max(rate, 1e-9)
        logging.info(
            "[%s %d/%d] %s | %.2f %s/min | elapsed %.0fs | ETA %.0fs",
            self.what, self.done, self.total, message, 60 * rate, self.what, elapsed, eta,
        )  # fmt: skip


class _DropInfo(std_logging.Filter):
    """Drops INFO records of chatty libraries (orbax logs every checkpoint step)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno > std_logging.INFO or "orbax" not in record.pathname


def quiet_library_logs() -> None:
    """Keeps the progress lines readable: orbax's INFO lines are dropped."""
    logging.get_absl_handler().addFilter(_DropInfo())


def stage(name: str) -> Callable:
    """Logs the start and duration of a pipeline stage."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            logging.info("  stage %s ...", name)
            out = fn(*args, **kwargs)
            logging.info("  stage %s done in %.1fs", name, time.perf_counter() - t0)
            return out

        return run

    return wrap


# ---------------------------------------------------------------------------------------------
# The axis.


@dataclasses.dataclass
class AxisPoint:
    """One model on the policy-dominance axis.

    Attributes:
      label: axis label ("instruct", "α=0.50", ...).
      source: where the weights come from (a path, or the dial's two paths and α).
      model: the loaded model (for a dial point, interpolated params).
      digest: a content hash of the weights' source for provenance.
    """

    label: str
    source: str
    model: Model
    digest: str


def resolve_paths(cfg, names: list[str]) -> dict[str, str]:
    """Zoo names -> built zoo directories (built on demand); registered model names
    (`emojax.models`, e.g. 'smollm2-135m-instruct') -> their cached file (fetched on first
    use); other names are kept as given."""
    from emojax import models, zoo

    out = {n: n for n in names}
    wanted = [n for n in names if n in zoo.ZOO_MODELS and not os.path.isdir(n)]
    if wanted and cfg.zoo.get("enabled", True):
        logging.info("building / reusing the model zoo for %s", wanted)
        built = zoo.build_zoo(cfg, cfg.zoo.cache_dir or None)
        out.update({n: str(built[n]) for n in wanted})
    for n in names:
        if not os.path.exists(n) and models.is_registered(n):
            out[n] = models.ensure_model(n)
    return out


def load_point_model(path: str, cfg) -> Model:
    """Loads a checkpoint; on a multi-device mesh straight into sharded arrays (`mesh` section).

    With one device this is `emojax.load_model`. With several, each device reads only its block
    of every tensor (`emojax.sharding.load_sharded_params`) and `jax.jit` runs every stage on
    the sharded weights unchanged.
    """
    dtype = getattr(jnp, cfg.dtype)
    if jax.device_count() == 1:
        return load_model(path, dtype=dtype)
    from emojax import sharding
    from emojax.loading import load_tokenizer

    path = resolve_path(path)
    mesh = sharding.mesh_from_config(cfg.mesh)
    rules = sharding.rules_from_config(cfg.mesh.get("rules"))
    config, params = sharding.load_sharded_params(path, mesh, dtype=dtype, rules=rules)
    return Model(config=config, params=params, tokenizer=load_tokenizer(path), path=path)


def dial_prefix(cfg) -> tuple[list[str], list[str]]:
    """(labels, checkpoint names) of the models put before a dial's points.

    `breakpoint.dial_prefix` (names; absent or empty: none) with `breakpoint.dial_prefix_labels`
    (default: the names): e.g. a base model that precedes the instruct -> tuned dial.

    Raises:
      ValueError: a label count other than the model count.
    """
    b = cfg.breakpoint
    names = list(b.get("dial_prefix", ()) or ())
    labels = list(b.get("dial_prefix_labels", ()) or names)
    if len(labels) != len(names):
        raise ValueError(
            f"{len(labels)} breakpoint.dial_prefix_labels for {len(names)} breakpoint.dial_prefix"
        )
    return labels, names


def axis_checkpoints(cfg) -> tuple[list[str], list[str]]:
    """(axis labels, checkpoint names) of the `breakpoint` section.

    For a dial: the labels of the prefix models (`dial_prefix`) then one per α, and the
    checkpoints of the prefix then the dial's two ends (base, tuned: always the last two).

    Raises:
      ValueError: an unknown axis, or a label count other than the model count.
    """
    b = cfg.breakpoint
    if b.axis == "dial":
        labels, names = dial_prefix(cfg)
        return labels + [f"α={a:g}" for a in b.alphas], names + [b.dial_base, b.dial_tuned]
    if b.axis != "models":
        raise ValueError(f"breakpoint.axis must be 'models' or 'dial', not {b.axis!r}")
    labels = list(b.labels) if b.get("labels") else list(b.models)
    if len(labels) != len(b.models):
        raise ValueError(
            f"{len(labels)} breakpoint.labels for {len(b.models)} breakpoint.models: override "
            "both (--config.breakpoint.labels='(...)')"
        )
    return labels, list(b.models)


# Files one of which a checkpoint directory needs for its tokenizer (the pipeline tokenises).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def preflight(cfg) -> dict[str, str]:
    """Resolves and checks every axis point's checkpoint before any work, in seconds.

    Each checkpoint's config.json and weight headers (tensor names, shapes, dtypes, file
    sizes) are checked without loading a weight (`emojax.loading.validate_checkpoint`), a
    checkpoint directory must hold tokenizer files, and a weight dial's two ends must have the
    same architecture. A typo in the last model path fails here, not after the first points
    have been analysed.

    Returns:
      Checkpoint name -> resolved path (zoo names built or reused, registered names fetched,
      Hugging Face ids found in the local cache).

    Raises:
      FileNotFoundError, ConfigError, CheckpointError: the first bad checkpoint, with a note
        naming its axis position; DialError: dial ends that cannot be interpolated;
        ValueError: an unknown axis, or a label count other than the model count.
    """
    _, names = axis_checkpoints(cfg)
    paths = resolve_paths(cfg, names)
    configs = {}
    for i, name in enumerate(names):
        try:
            paths[name] = path = resolve_path(paths[name])
            configs[name] = validate_checkpoint(path)
            if os.path.isfile(os.path.join(path, "config.json")) and not any(
                os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES
            ):
                raise FileNotFoundError(
                    f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in checkpoint {path}"
                )
        except (OSError, ValueError) as e:
            e.add_note(f"axis checkpoint {i + 1} of {len(names)} ({name!r}), checked before "
                       "any work")  # fmt: skip
            raise
    if cfg.breakpoint.axis == "dial":
        bp.check_dial_compatible(configs[names[-2]], configs[names[-1]])
    logging.info("checked %d checkpoints (config.json and weight headers)", len(names))
    return paths


def axis_points(cfg, paths: dict[str, str] | None = None) -> Iterator[AxisPoint]:
    """Yields the axis points one at a time (one model in memory at a time, plus dial ends).

    Args:
      cfg: the config (`breakpoint` section).
      paths: checkpoint name -> resolved path (`preflight`); resolved here when None.
    """
    b = cfg.breakpoint
    labels, names = axis_checkpoints(cfg)
    if paths is None:
        paths = resolve_paths(cfg, names)
    models = list(b.models) if b.axis == "models" else dial_prefix(cfg)[1]
    for label, name in zip(labels, models, strict=False):  # a dial's labels go on past these
        path = paths[name]
        model = load_point_model(path, cfg)
        yield AxisPoint(label, os.path.abspath(path), model, results.model_hash(path))
        del model
    if b.axis == "models":
        return
    base = load_point_model(paths[b.dial_base], cfg)
    same = os.path.realpath(paths[b.dial_base]) == os.path.realpath(paths[b.dial_tuned])
    tuned = base if same else load_point_model(paths[b.dial_tuned], cfg)  # loaded once
    bp.check_dial_compatible(base.config, tuned.config, base.tokenizer, tuned.tokenizer)
    hashes = (results.model_hash(paths[b.dial_base]), results.model_hash(paths[b.dial_tuned]))
    for alpha in b.alphas:
        params = bp.interpolate_params(base.params, tuned.params, jnp.float32(alpha))
        model = dataclasses.replace(tuned, params=params, path=f"dial α={alpha:g}")
        yield AxisPoint(
            f"α={alpha:g}",
            f"{paths[b.dial_base]} + {alpha:g}·({paths[b.dial_tuned]} − base)",
            model,
            results.fingerprint([hashes[0], hashes[1], float(alpha)]),
        )


# ---------------------------------------------------------------------------------------------
# The evaluation set: requests x cues, shared by the sweep and the probes.

FAILURE_TYPES = sweep.FAILURE_TYPES
# Which prompts each failure type is scored on.
TYPE_KINDS = {"harmful_compliance": ("harmful",), "over_refusal": ("harmless", "borderline")}


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Evaluation prompts: every request under every cue (and framing, for harmful ones).

    Attributes:
      items: N `EvalPrompt`s (text with its cue, kind, request id, template id).
      request: int [N] request index in [0, U): cue variants of one request share it. The
        same index space serves every axis point, so request draws pair across points.
      num_requests: U.
      neutral: neutral texts (KL on neutral prompts).
      cues: N cue names the prompts are shown under ('none' for none), or () when unknown.
    """

    items: tuple
    request: np.ndarray
    num_requests: int
    neutral: tuple[str, ...]
    cues: tuple[str, ...] = ()

    def subset(
        self, requests_per_kind: dict[str, int], cues: tuple[str, ...] | None = None
    ) -> EvalSet:
        """The prompts of the first `requests_per_kind[kind]` requests of each kind (0 = all).

        `cues` (e.g. ('none',)) keeps only the prompts shown under those cues (needs `cues`
        recorded, as `evaluation_set` does); None keeps every cue.
        """
        if cues is not None and len(self.cues) != len(self.items):
            raise ValueError("this EvalSet has no cue per prompt; build it with evaluation_set")
        keep, seen = [], {}
        for i, q in enumerate(self.items):
            if cues is not None and self.cues[i] not in cues:
                continue
            n = requests_per_kind.get(q.kind, 0)
            ids = seen.setdefault(q.kind, [])
            if self.request[i] not in ids:
                if n and len(ids) >= n:
                    continue
                ids.append(self.request[i])
            keep.append(i)
        return EvalSet(
            tuple(self.items[i] for i in keep), self.request[keep], self.num_requests,
            self.neutral, tuple(self.cues[i] for i in keep) if self.cues else (),
        )  # fmt: skip

    def prompts(self, tokenizer, cfg) -> sweep.SweepPrompts:
        """Tokenised through the model's chat template (`SweepPrompts`)."""
        return sweep.SweepPrompts.from_texts(
            tokenizer,
            [q.text for q in self.items],
            [q.kind == "harmful" for q in self.items],
            [q.kind for q in self.items],
            list(self.neutral),
            template_source=cfg.extract.template_source or None,
            ids=[q.id for q in self.items],
            request=self.request,
            num_requests=self.num_requests,
        )


# Where harmful evaluation requests come from (`data.harmful_eval`): the project's own
# held-out requests, or the HarmBench standard behaviours (evaluation only, `emojax.redteam`).
HARMFUL_EVAL_SOURCES = ("project", "harmbench")
# Seed of the order in which HarmBench behaviours join the evaluation set (a fixed shuffle, so
# the first N of them, and the sweep's first requests, spread over HarmBench's categories).
HARMBENCH_ORDER_SEED = 0


def harmbench_eval(
    cue: str | None = None, framing: str | None = None, limit: int | None = None
) -> list[concepts.EvalPrompt]:
    """HarmBench behaviours as held-out evaluation prompts, in a fixed shuffled order.

    The file lists behaviours roughly by category, so the first `limit` behaviours of a
    seeded permutation (`HARMBENCH_ORDER_SEED`) are used instead of the first lines. The j-th
    behaviour chosen gets the j-th test-split (held-out) English cue and framing templates, as
    `redteam.load_harmbench` gives the i-th line, so every framing family and cue template is
    used in turn. Records are those of `redteam.load_harmbench` (id and request
    'harmbench-NNN' by file line, kind 'harmful', split 'test').

    Args:
      cue: a cue of the grammar ('concern', ...) or None / 'none'.
      framing: a framing family, 'jailbreak' (every family in turn) or None / 'none'.
      limit: behaviours kept (0 / None = all 200).
    """
    from emojax import redteam
    from emojax.concepts import english, grammar

    records = redteam.load_harmbench()
    order = np.random.default_rng(HARMBENCH_ORDER_SEED).permutation(len(records))
    order = order[:limit] if limit else order
    out = []
    for j, i in enumerate(order):
        p, text, ids = records[i], records[i].text, []
        for family in (framing, cue):  # the framing inside the cue, as in concepts.load_eval
            if family in (None, "", "none"):
                continue
            t = grammar.pick_template(family, j, "test")
            text, ids = english.apply(english.render_template(t), text), [t.id] + ids
        out.append(dataclasses.replace(p, text=text, template="+".join(ids)))
    return out


def _requests_per_kind(cfg, kind: str) -> int | None:
    """Evaluation requests of one kind: `probes.requests_per_kind[kind]` when the config has
    it, else `probes.prompts_per_kind` (every kind); None = all."""
    per_kind = cfg.probes.get("requests_per_kind")
    if per_kind is not None and kind in per_kind:
        return int(per_kind[kind]) or None
    return cfg.probes.prompts_per_kind or None


def evaluation_set(cfg, *, split: str | None = None, num_neutral: int | None = None) -> EvalSet:
    """Every evaluation request of `cfg.probes.kinds` under every cue of `cfg.data.cues`.

    Harmful requests are shown plain and inside each jailbreak-style framing of
    `cfg.data.framings` (held-out templates; 'jailbreak' cycles through every family), under
    every cue, so the failures that framings keep alive can still be cue-dependent.
    `cfg.probes.prompts_per_kind` limits the requests per kind (0 = the whole split), or
    `cfg.probes.requests_per_kind` kind by kind where a config has it.

    `cfg.data.rendering` ('zoo' default, or 'english' for real tokenizers) is how every prompt
    is written; `cfg.data.harmful_eval` ('project' default, or 'harmbench': the HarmBench
    behaviours, `harmbench_eval`) is where the harmful requests come from.
    """
    split = split or cfg.probes.split
    d = cfg.data
    rendering = d.get("rendering", "zoo")
    source = d.get("harmful_eval", "project")
    if source not in HARMFUL_EVAL_SOURCES:
        raise ValueError(f"data.harmful_eval must be one of {HARMFUL_EVAL_SOURCES}, not {source!r}")
    if source == "harmbench" and rendering != "english":
        raise ValueError(
            "data.harmful_eval='harmbench' is English text: set data.rendering='english'"
        )
    items, cues = [], []
    for kind in cfg.probes.kinds:
        framings = (None,) + (tuple(d.get("framings", ())) if kind == "harmful" else ())
        limit = _requests_per_kind(cfg, kind)
        for cue in d.cues:
            for framing in framings:
                if kind == "harmful" and source == "harmbench":
                    new = harmbench_eval(cue, framing, limit)
                else:
                    new = concepts.load_eval(
                        kind, split, cue=cue, framing=framing, limit=limit,
                        data_dir=d.dir or None, rendering=rendering,
                    )  # fmt: skip
                items += new
                cues += [cue or "none"] * len(new)
    request, num = concepts.request_index(items)
    neutral = concepts.load_eval(
        "neutral", split, limit=num_neutral or cfg.sweep.neutral_prompts, data_dir=d.dir or None,
        rendering=rendering,
    )  # fmt: skip
    return EvalSet(tuple(items), np.asarray(request), int(num), tuple(q.text for q in neutral),
                   tuple(cues))  # fmt: skip


def data_files(cfg) -> dict[str, dict]:
    """Every dataset file the run reads, validated and hashed (`concepts.data_files`).

    Contrast files of the emotions and controls, the eval kinds of the probes (and the sweep,
    a subset), harmful / harmless for the refusal layer selection, and neutral. A malformed
    file, an unknown cue or a missing `data.dir` fails here, before any model work.
    """
    d = cfg.data
    refusal = ("harmful", "harmless") if "refusal" in (*d.emotions, *d.controls) else ()
    files = concepts.data_files(d, kinds=(*cfg.probes.kinds, *refusal, "neutral"))
    if d.get("harmful_eval", "project") == "harmbench" and "harmful" in cfg.probes.kinds:
        from emojax import redteam

        path = redteam.ensure_harmbench(verify=True)  # fetched once, sha256-checked
        files["harmbench"] = {
            "path": os.path.abspath(path), "sha256": redteam.HARMBENCH.sha256, "shipped": False,
            "records": len(redteam.harmbench_prompts()),
        }  # fmt: skip
    return files


@dataclasses.dataclass(frozen=True)
class Draws:
    """Resampling draws shared by every statistic and every axis point (paired).

    Attributes:
      weights: int [R, U] request multiplicities of a cluster bootstrap (rows sum to U).
      neutral_weights: int [R, M] multiplicities of the neutral prompts.
    """

    weights: np.ndarray
    neutral_weights: np.ndarray


def shared_draws(evalset: EvalSet, num: int, seed: int) -> Draws:
    """One cluster bootstrap over requests (and neutral prompts) for the whole run."""
    m = len(evalset.neutral)
    neutral = np.random.default_rng([seed, 1]).multinomial(m, np.full(m, 1.0 / m), size=num)
    return Draws(stats.request_draws(evalset.num_requests, num, seed), neutral)


# ---------------------------------------------------------------------------------------------
# Stages.


@stage("extract")
def run_extraction(point: AxisPoint, cfg, out: str, rng: Array, reference) -> dict:
    m = point.model
    ex = extract.extract_model(
        m.params, m.config, m.tokenizer, **extract.config_kwargs(cfg),
        metadata={"model": point.label, "source": point.source, "model_sha256": point.digest},
    )  # fmt: skip
    vectors.save_all(ex.vector_sets, os.path.join(out, "vectors"))
    d = cfg.data
    k1, k2 = jax.random.split(rng)
    report = stability.stability_report(
        k1, ex.captured, d.emotions, d.controls, cfg.extract.resamples
    )
    rows, crows = stability.report_rows(report)
    write_csv(os.path.join(out, "stability.csv"), rows)
    write_csv(os.path.join(out, "control_cosine.csv"), crows)
    cross = None
    if reference is not None:
        cross = stability.cross_model_report(
            k2, reference["captured"], ex.captured, cfg.extract.resamples
        )
    return {"extraction": ex, "report": report, "cross": cross}


@functools.partial(jax.jit, static_argnames=("config",))
def _last_token_pass(params, config, tokens, mask, refusal):
    """Residual at the last prompt token [B, L+1, D] (float32) and the refusal score [B]."""
    last = jnp.full((tokens.shape[0], 1), tokens.shape[1] - 1, jnp.int32)
    out = forward(params, config, tokens, attention_mask=mask, logit_positions=last)
    acts = jnp.swapaxes(out.resid[:, :, -1].astype(jnp.float32), 0, 1)
    return acts, ro.refusal_score(out.logits[:, 0], refusal)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens"))
def _behaviour_pass(params, config, tokens, mask, refusal, max_new_tokens: int):
    """One prefill serving the features and the greedy response of left-padded prompts.

    The prefill captures every layer's input and fills the KV cache; the last prompt
    position gives the residual features and the refusal score, its greedy token opens
    the response, and cached decoding continues it (`emojax.generate` does the same
    prefill and decoding, without the capture).

    Returns:
      acts [B, L+1, D] float32 at the last prompt token, refusal score [B], and the
      response ids int32 [B, max_new_tokens].
    """
    b, t = tokens.shape
    mask = mask.astype(jnp.int32)
    iv = Intervention.none(config)
    cache = init_cache(config, b, t + max_new_tokens, params.embed.dtype)
    k_valid = jnp.concatenate([mask, jnp.ones((b, max_new_tokens), jnp.int32)], 1).astype(bool)
    positions = default_positions(tokens, mask)
    h, captured, cache = run_layers(
        params, config, embed(params, config, tokens, positions), positions=positions,
        q_slots=jnp.arange(t), k_valid=k_valid, intervention=iv,
        weights=iv.position_weights(b, t), capture=True, cache=cache, cache_slot=0,
        out_index=jnp.full((b, 1), t - 1),
    )  # fmt: skip
    last = h[:, -1]
    acts = jnp.concatenate([captured[:, :, -1], last[None]], axis=0)  # [L+1, B, D]
    logits = unembed(params, config, last)
    greedy = lambda lg, key: jnp.argmax(lg, axis=-1).astype(jnp.int32)
    ids = decode_tokens(
        params, config, greedy(logits, None), positions[:, -1] + 1, cache, k_valid=k_valid,
        intervention=iv, weights=iv.position_weights(b, 1, new_tokens=True), start_slot=t,
        num_steps=max_new_tokens - 1, pick=greedy,
    )  # fmt: skip
    acts = jnp.swapaxes(acts.astype(jnp.float32), 0, 1)
    return acts, ro.refusal_score(logits, refusal), ids


def _pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    pad = np.zeros((size - x.shape[0], *x.shape[1:]), x.dtype)
    return np.concatenate([x, pad]) if len(pad) else x


def classifier(cfg) -> Callable[[str], bool]:
    """The refusal classifier of a run: `readouts.classifier` ('english' when absent)."""
    return ro.response_classifier(cfg.get("readouts", {}).get("classifier", "english"))


def _length_blocks(mask: np.ndarray, bs: int, multiple: int) -> list[tuple[np.ndarray, int]]:
    """Blocks of `bs` prompt indices by real length, each with its trimmed padded length.

    Prompts are sorted by real length (stable) and cut into blocks of `bs`; a block's left
    padding is trimmed to its longest prompt, rounded up to `multiple` (few compiles).
    Trimming columns that are padding in every row leaves each row's positions and
    attention unchanged (positions count real tokens).
    """
    n, t = mask.shape
    length = mask.sum(axis=1).astype(np.int64)
    order = np.argsort(length, kind="stable")
    out = []
    for start in range(0, n, bs):
        idx = order[start : start + bs]
        width = min(t, -(-int(length[idx].max()) // multiple) * multiple)
        out.append((idx, width))
    return out


@stage("behaviour")
def unsteered_behaviour(model: Model, prompts, cfg) -> dict[str, Any]:
    """The unsteered model's own behaviour and last-token features on `prompts`.

    With `probes.length_multiple` > 0 (the real-model path: long, varied prompts) prompts are
    batched by length, each batch's left padding is trimmed to a multiple of it, and one
    prefill per batch serves the features and the response (`_behaviour_pass`). By default
    (0) every batch keeps the full padded length and the features come from a separate
    forward pass, as before.

    Returns:
      acts [N, L+1, D], policy_logit [N] (refusal score), texts, and the behaviour labels of
      `emojax.readouts.behaviour_labels` with the run's classifier (`classifier(cfg)`):
      refused, harmful_compliance, over_refusal (the two failure types stay separate).
    """
    mcfg, tok, p = model.config, model.tokenizer, cfg.probes
    refusal = ro.refusal_mask(np.asarray(ro.refusal_token_ids(tok)), mcfg.vocab_size)
    eos = tuple(mcfg.eos_token_id) or (tok.eos_token_id,)
    n, t = prompts.tokens.shape
    bs = min(p.batch_size, n)  # one block size (last block padded): one compile per width
    multiple = int(p.get("length_multiple", 0) or 0)
    if multiple:
        blocks = _length_blocks(prompts.mask, bs, multiple)
    else:
        blocks = [(np.arange(s, min(s + bs, n)), t) for s in range(0, n, bs)]
    acts = np.zeros((n, mcfg.num_layers + 1, mcfg.d_model), np.float32)
    logit, texts = np.zeros(n, np.float32), [""] * n
    for idx, width in blocks:
        k = len(idx)
        tokens = jnp.asarray(_pad_rows(prompts.tokens[idx, t - width :], bs))
        mask = jnp.asarray(_pad_rows(prompts.mask[idx, t - width :], bs))
        mask = mask.at[k:, -1].set(1)  # padded rows: one real token keeps them finite
        if multiple:
            a, s, ids = _behaviour_pass(model.params, mcfg, tokens, mask, refusal,
                                        p.max_new_tokens)  # fmt: skip
        else:
            a, s = _last_token_pass(model.params, mcfg, tokens, mask, refusal)
            ids = generate(
                model.params, mcfg, tokens, max_new_tokens=p.max_new_tokens, attention_mask=mask
            )[:, width:]
        acts[idx] = np.asarray(a)[:k]
        logit[idx] = np.asarray(s)[:k]
        for i, text in zip(idx, ro.decode_responses(tok, np.asarray(ids)[:k], eos),
                           strict=True):  # fmt: skip
            texts[i] = text
    labels = ro.behaviour_labels(texts, prompts.harmful, classifier(cfg))
    require_finite(acts, f"last-token activations of {model.path or 'model'}")
    return {"acts": acts, "policy_logit": logit, "texts": texts, **labels}


def headline_site(spec: float | int, num_sites: int) -> int:
    """An int residual-site index, or a depth fraction of the sites 0..L."""
    if isinstance(spec, float) and 0.0 <= spec < 1.0:
        return int(round(spec * (num_sites - 1)))
    return int(spec) % num_sites


def _estimable_counts(failing: np.ndarray, request: np.ndarray, num_requests: int):
    """(requests with a failing prompt, requests with a non-failing prompt).

    A request whose cue variants both fail and do not fail counts on both sides: what a
    monitor or a steering arm can learn from is variation across requests' prompts.
    """
    failing = np.asarray(failing, bool)
    bad = np.zeros(num_requests, bool)
    bad[request[failing]] = True
    ok = np.zeros(num_requests, bool)
    ok[request[~failing]] = True
    return int(bad.sum()), int(ok.sum())


def _not_estimable(num_failing: int, num_ok: int, num_draws: int) -> dict:
    nan = float("nan")
    return {"estimable": False, "estimate": nan, "lo": nan, "hi": nan, "min_margin": nan,
            "null_q05": nan, "null_q95": nan, "null_p": nan, "num_failing_requests": num_failing,
            "num_ok_requests": num_ok, "samples": np.full(num_draws, np.nan)}  # fmt: skip


def _null_fields(observed: float, null: np.ndarray) -> dict:
    null = np.asarray(null, np.float64)
    null = null[np.isfinite(null)]
    if not null.size:
        return {"null_q05": float("nan"), "null_q95": float("nan"), "null_p": float("nan")}
    q05, q95 = np.quantile(null, [0.05, 0.95])
    p = (1.0 + np.sum(null >= observed)) / (1.0 + null.size)
    return {"null_q05": float(q05), "null_q95": float(q95), "null_p": float(p)}


def _estimated(value: dict, null, num_failing: int, num_ok: int, extra: tuple[str, ...]) -> dict:
    """One estimable Δ: estimate, interval, power, draws, counts and its null."""
    null = np.asarray(null, np.float64)
    est = float(value["estimate"])
    return {
        "estimable": True,
        "estimate": est,
        "lo": float(value["lo"]),
        "hi": float(value["hi"]),
        "min_margin": float(value["hi"]) - est,
        **{k: float(value[k]) for k in extra},
        "num_failing_requests": num_failing,
        "num_ok_requests": num_ok,
        "samples": np.asarray(value["samples"], np.float64),
        "null": null.tolist(),
        **_null_fields(est, null),
    }


def random_directions(num: int, width: int, seed: int) -> np.ndarray:
    """[Q, D] seeded random unit directions (the null of every projection-based statistic)."""
    r = np.random.default_rng([seed, 7]).standard_normal((num, width))
    return r / np.linalg.norm(r, axis=1, keepdims=True)


@stage("probes")
def monitoring_value(
    behaviour: dict, vs: vectors.VectorSet, evalset: EvalSet, draws: Draws, cfg, out: str
) -> dict:
    """Δ_mon per failure type at the headline site, with its random-direction null.

    Harmful compliance is monitored on harmful prompts (label: complied), over-refusal on
    harmless and borderline prompts (label: refused); never pooled. Controls: projections on
    harm-salience, caution and refusal directions plus the policy logit; the full model adds
    the emotion projections; the null replaces them by projections on random directions.
    """
    p, d, b = cfg.probes, cfg.data, cfg.breakpoint
    acts = behaviour["acts"]
    site = headline_site(p.layer, acts.shape[1])
    vsite = min(site, vs.vectors.shape[1] - 1)
    unit = lambda k: vs.vectors[vs.index(k), vsite] / np.linalg.norm(vs.vectors[vs.index(k), vsite])
    x = acts[:, site].astype(np.float64)
    ctrl = np.concatenate([x @ np.stack([unit(k) for k in d.controls]).T,
                           behaviour["policy_logit"][:, None]], axis=1)  # fmt: skip
    emo = x @ np.stack([unit(k) for k in d.emotions]).T
    rand = x @ random_directions(p.num_random, x.shape[1], cfg.seed).T  # [N, Q]
    kinds = np.array([q.kind for q in evalset.items])
    out_types, num_draws = {}, len(draws.weights)
    for ftype in FAILURE_TYPES:
        sel = np.isin(kinds, TYPE_KINDS[ftype])
        labels = behaviour[ftype][sel].astype(np.float32)
        req = evalset.request[sel]
        n_bad, n_ok = _estimable_counts(labels, req, evalset.num_requests)
        if not bp.estimable(n_bad, n_bad + n_ok, b.min_failures):  # mixed requests: both sides
            out_types[ftype] = _not_estimable(n_bad, n_ok, num_draws)
            continue
        common = dict(num_requests=evalset.num_requests, l2_grid=tuple(p.l2_grid),
                      num_folds=p.num_folds, num_steps=p.num_steps, seed=p.seed)  # fmt: skip
        mon = probes.delta_mon(ctrl[sel], emo[sel], labels, req, weights=draws.weights,
                               fpr=p.fpr, **common)  # fmt: skip
        null = probes.delta_mon_null(
            ctrl[sel], np.moveaxis(rand[sel], 1, 0)[:, :, None], labels, req,
            num_null=p.num_null, arm_size=len(d.emotions), observed=float(mon["estimate"]),
            **common,
        )  # fmt: skip
        out_types[ftype] = _estimated(mon, null["null"], n_bad, n_ok,
                                      ("auroc_controls", "auroc_full"))  # fmt: skip
    results.save_arrays(os.path.join(out, "probes.npz"), {
        "request": evalset.request, "policy_logit": behaviour["policy_logit"],
        **{f"label_{t}": behaviour[t] for t in FAILURE_TYPES},
        **{f"delta_mon_samples_{t}": v["samples"] for t, v in out_types.items()},
    })  # fmt: skip
    info = {t: {k: v for k, v in o.items() if k != "samples"} for t, o in out_types.items()}
    results.write_json(os.path.join(out, "probes.json"), {"site": site, **info})
    return {"site": site, "types": out_types}


@stage("sweep")
def run_steering(point: AxisPoint, vs: vectors.VectorSet, prompts, cfg, out: str) -> dict:
    res = sweep.run_sweep(
        point.model, vs, prompts, cfg.sweep, os.path.join(out, "sweep"), classify=classifier(cfg)
    )
    return {"results": res}


def steering_value(res: sweep.SweepResults, draws: Draws, cfg, layer_pos: int = 0) -> dict:
    """Δ_steer per failure type at the KL budget κ, with its random-direction null.

    Estimable when the unsteered model fails on enough requests of the sweep's prompts.
    """
    b = cfg.breakpoint
    arr = res.arrays
    harmful = np.asarray(arr["harmful"], bool)
    request = np.asarray(arr["request"])
    out, num_draws = {}, len(draws.weights)
    for ftype in FAILURE_TYPES:
        cols = harmful if ftype == "harmful_compliance" else ~harmful
        failing = np.asarray(arr[f"base_{ftype}"])[cols] > 0.5
        n_bad, n_ok = _estimable_counts(failing, request[cols], int(res.meta["num_requests"]))
        if not bp.estimable(n_bad, n_bad + n_ok, b.min_failures):  # mixed requests: both sides
            out[ftype] = _not_estimable(n_bad, n_ok, num_draws)
            continue
        d = sweep.delta_steer_from_sweep(
            res, layer_pos, ftype, b.kappa, weights=draws.weights,
            neutral_weights=draws.neutral_weights, tolerance=b.get("steer_tolerance"),
            num_null=b.num_null, seed=cfg.seed,
        )  # fmt: skip
        null = d.get("null", {}).get("null", [])
        out[ftype] = _estimated(d, null, n_bad, n_ok, ("controls_rate", "emotion_rate"))
    return out


# ---------------------------------------------------------------------------------------------
# One axis point.


def _mean_interval(iv, rows: list[int], site: int) -> tuple[float, float, float]:
    """Mean over `rows` (concepts) of an Interval [C, L] at one site (NaN where undefined)."""

    def pick(x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: e.g. one domain only
            return float(np.nanmean(np.asarray(x)[rows, site]))

    return pick(iv.estimate), pick(iv.lo), pick(iv.hi)


VALUE_FIELDS = ("estimate", "lo", "hi", "min_margin", "null_q05", "null_q95", "null_p")


def _value_columns(stat: str, per_type: dict) -> dict:
    """points.csv columns of one Δ per failure type; None (empty) where not estimable."""
    row = {}
    for ftype, v in per_type.items():
        key = f"{stat}_{ftype}"
        row[f"{key}_estimable"] = bool(v["estimable"])
        row[f"{key}_failing_requests"] = int(v["num_failing_requests"])  # on its own prompts
        row[f"{key}_ok_requests"] = int(v["num_ok_requests"])
        for f in VALUE_FIELDS:
            name = key if f == "estimate" else f"{key}_{f}"
            row[name] = float(v[f]) if v["estimable"] else None
    return row


def analyse_point(
    point: AxisPoint, cfg, workdir: str, rng: Array, reference, evalset: EvalSet, draws: Draws
) -> dict:
    """Every measurement at one axis point; returns its row and the draws for the break point."""
    out = os.path.join(workdir, "points", point.label.replace("/", "_"))
    os.makedirs(out, exist_ok=True)
    d, b = cfg.data, cfg.breakpoint
    k_ex, k_rest = jax.random.split(rng)
    ext = run_extraction(point, cfg, out, k_ex, reference)
    ex, report = ext["extraction"], ext["report"]
    vs = ex.vector_sets[cfg.sweep.method]

    tok = point.model.tokenizer
    sweep_cues = d.get("sweep_cues") or None  # the sweep's prompts: these cues only
    sweep_set = evalset.subset(dict(cfg.sweep.requests_per_kind),
                               tuple(sweep_cues) if sweep_cues else None)  # fmt: skip
    res = run_steering(point, vs, sweep_set.prompts(tok, cfg), cfg, out)["results"]
    layer_pos = 0  # the first sweep layer is the headline injection layer
    summary = res.summary[str(res.meta["layers"][layer_pos])]
    steer = steering_value(res, draws, cfg, layer_pos)

    behaviour = unsteered_behaviour(point.model, evalset.prompts(tok, cfg), cfg)
    mon = monitoring_value(behaviour, vs, evalset, draws, cfg, out)

    # Policy-dominance index: refusal score explained by the control projections.
    site = mon["site"]
    acts = behaviour["acts"][:, site]
    ctrl_dirs = np.stack([vs.vectors[vs.index(k), min(site, vs.vectors.shape[1] - 1)]
                          for k in d.controls])  # fmt: skip
    ctrl_proj = acts @ (ctrl_dirs / np.linalg.norm(ctrl_dirs, axis=1, keepdims=True)).T
    pdi = bp.policy_dominance_index(behaviour["policy_logit"], ctrl_proj)

    names = list(report["concepts"])
    emo_rows = [names.index(e) for e in d.emotions if e in names]
    vec_site = min(site, report["split_half"].estimate.shape[1] - 1)
    split_half = _mean_interval(report["split_half"], emo_rows, vec_site)
    cross_domain = _mean_interval(report["cross_domain"], emo_rows, vec_site)
    cross_model = (1.0, 1.0, 1.0)
    if ext["cross"] is not None and ext["cross"]["cosine"] is not None:
        cross_model = _mean_interval(ext["cross"]["cosine"], emo_rows, vec_site)
    elif ext["cross"] is not None:
        cross_model = _mean_interval(ext["cross"]["proj_corr"], emo_rows, vec_site)
    cs = summary["cross_steering"]
    rows_cs = cs["rows"]
    emo_cs = [rows_cs.index(e) for e in d.emotions if e in rows_cs]
    selectivity = float(np.nanmean(np.asarray(cs["selectivity"])[emo_cs]))
    sel_p = cs.get("selectivity_null_p")
    selectivity_p = float(np.nanmedian(np.asarray(sel_p)[emo_cs])) if sel_p else float("nan")
    offtarget = float(np.nanmean(np.asarray(cs["offtarget_kl_per_unit_effect"])[emo_cs]))
    style = style_summary(summary, d.emotions)
    steerability = {}
    for name in list(d.emotions) + list(d.controls):
        entry = summary["steerability"].get(name, {})
        keep = ("slope", "ci", "null_z", "null_p", "anti_steerable_fraction")
        steerability[name] = {
            t: {k: entry[t].get(k) for k in keep} for t in FAILURE_TYPES if entry.get(t)
        }
    rates = {t: float(np.mean(behaviour[t][np.isin([q.kind for q in evalset.items],
                                                   TYPE_KINDS[t])]))
             for t in FAILURE_TYPES}  # fmt: skip
    thresholds = bp.DiagnosticThresholds(
        controlled_auroc=b.controlled_auroc, controlled_failure=b.controlled_failure,
        style_ratio=b.style_ratio, alignment=b.alignment, selectivity=b.selectivity,
    )  # fmt: skip
    common = dict(
        controls_auroc={t: v.get("auroc_controls", float("nan"))
                        for t, v in mon["types"].items()},
        failure_rate=rates, cross_model_cosine=cross_model[0], selectivity=selectivity,
        thresholds=thresholds,
    )  # fmt: skip
    diag = bp.diagnostics(style_vs_safety=style["ratio"], **common)
    # Mostly stylistic: for most emotions the style effect is significant and no safety
    # effect is (intervals from the sweep's request bootstrap).
    per_emotion = [
        bp.diagnostics(style_effect=e["style"], safety_effect=e["safety"], **common)
        for e in style["intervals"]
    ]
    if per_emotion:
        votes = [x["emotion_mostly_stylistic"] for x in per_emotion]
        diag["emotion_mostly_stylistic"] = bool(sum(votes) > len(votes) / 2)
    row = {
        "label": point.label,
        "source": point.source,
        "model_sha256": point.digest,
        "policy_dominance": pdi,
        **{f"{t}_rate": rates[t] for t in FAILURE_TYPES},
        **{
            f"{t}_failing_requests": mon["types"][t]["num_failing_requests"] for t in FAILURE_TYPES
        },  # fmt: skip
        "refusal_rate": float(np.mean(behaviour["refused"])),
        **_value_columns("delta_mon", mon["types"]),
        **_value_columns("delta_steer", steer),
        "split_half": split_half[0],
        "split_half_lo": split_half[1],
        "split_half_hi": split_half[2],
        "cross_domain": cross_domain[0],
        "cross_domain_lo": cross_domain[1],
        "cross_domain_hi": cross_domain[2],
        "cross_model_cosine": cross_model[0],
        "cross_model_cosine_lo": cross_model[1],
        "cross_model_cosine_hi": cross_model[2],
        "selectivity": selectivity,
        "selectivity_null_p": selectivity_p,
        "offtarget_kl_per_unit_effect": offtarget,
        "style_vs_safety": style["ratio"],
        "style_effect": style["style"],
        "style_vs_safety_defined": style["defined"],
        "probe_site": site,
        "sweep_layer": int(res.meta["layers"][layer_pos]),
        **{f"diag_{k}": v for k, v in diag.items()},
    }
    detail = {
        "row": row,
        "steerability": steerability,
        "delta_mon": {
            t: {k: v for k, v in o.items() if k != "samples"} for t, o in mon["types"].items()
        },  # fmt: skip
        "delta_steer": {
            t: {k: v for k, v in o.items() if k != "samples"} for t, o in steer.items()
        },  # fmt: skip
        "cross_steering": cs,
        "style_vs_safety": summary.get("style_vs_safety", {}),
        "control_cosine": _control_cosine(report, vec_site),
    }
    results.write_json(os.path.join(out, "point.json"), detail)
    return {
        "row": row,
        "detail": detail,
        "samples": {
            **{f"delta_mon/{t}": v["samples"] for t, v in mon["types"].items()},
            **{f"delta_steer/{t}": v["samples"] for t, v in steer.items()},
        },
        "captured": ex.captured,
        "matrix": np.asarray(cs["matrix"], np.float64),
        "matrix_rows": list(cs["rows"]),
        "matrix_cols": list(cs["cols"]),
    }


def style_summary(summary: dict, emotions) -> dict:
    """Median style-vs-safety ratio over emotions and failure types where it is defined.

    The ratio |style effect| / |safety effect| exists only where the safety effect's interval
    excludes 0 (`emojax.metrics.influence.style_vs_safety`); elsewhere it is "not defined".
    """
    ratios, styles, intervals = [], [], []
    for e in emotions:
        entry = summary.get("style_vs_safety", {}).get(e)
        if not entry:
            continue
        styles.append(entry["style"]["estimate"])
        num = lambda x: float("nan") if x is None else float(x)
        intervals.append({
            "style": (num(entry["style"]["lo"]), num(entry["style"]["hi"])),
            "safety": {t: (num(v["lo"]), num(v["hi"])) for t, v in entry["safety"].items()},
        })  # fmt: skip
        for t in FAILURE_TYPES:
            r = entry.get("ratio", {}).get(t)
            if r is not None:
                ratios.append(r)
    return {
        "ratio": float(np.median(ratios)) if ratios else float("nan"),
        "defined": bool(ratios),
        "style": float(np.median(styles)) if styles else float("nan"),
        "intervals": intervals,
    }


def _control_cosine(report: dict, site: int) -> dict:
    if "control_cosine" not in report:
        return {}
    iv = report["control_cosine"]
    return {
        e: {k: float(np.asarray(iv.estimate)[i, j, site]) for j, k in enumerate(report["controls"])}
        for i, e in enumerate(report["emotions"])
    }


# ---------------------------------------------------------------------------------------------
# The whole axis.


def value_names(cfg) -> list[str]:
    """The incremental values the break rule reads: Δ_mon and Δ_steer per failure type."""
    return [f"{s}/{t}" for s in ("delta_mon", "delta_steer") for t in FAILURE_TYPES]


def claim_workdir(cfg, workdir: str, *, overwrite: bool = False) -> WorkdirState:
    """`emojax.workdir.check_workdir` on process 0, its verdict shared with every process."""
    from emojax import sharding

    state, error = None, None
    if sharding.is_writer():
        try:
            state = check_workdir(workdir, cfg, overwrite=overwrite)
        except WorkdirError as e:
            error = e
    refused = bool(sharding.broadcast_from_writer(np.asarray(error is not None, np.int32)))
    if error is not None:
        raise error
    if refused:
        raise WorkdirError(f"process 0 refused the work directory {workdir} (see its log)")
    return state


def run(cfg, workdir: str, *, overwrite: bool = False) -> dict:
    """Runs the analysis at every axis point and finds the break point.

    Nothing is written before three checks pass: the work directory holds nothing or this
    config's outputs (`emojax.workdir`: then the run resumes), the data files are valid and
    every axis point's checkpoint is (`preflight`).

    Args:
      cfg: the resolved config.
      workdir: the output directory.
      overwrite: a directory holding another config's outputs is used anyway, its old
        outputs moved into `<workdir>/previous-<timestamp>/`; otherwise such a directory is
        refused (`emojax.workdir.WorkdirError`, naming the differing keys).

    Returns:
      The summary dict (also written to `<workdir>/summary.json` by `emojax.report`).
    """
    from emojax import sharding

    state = claim_workdir(cfg, workdir, overwrite=overwrite)  # read-only: nothing written yet
    files = data_files(cfg)  # validates the user's data first; recorded in config.json
    paths = preflight(cfg)  # every checkpoint, before any work
    if sharding.is_writer():
        previous = start_run(state)  # the first write: run.json
        if previous:
            logging.info("moved the old outputs of %s aside into %s", workdir, previous)
        logging.info("work directory %s (%s, config %s)", workdir, state.action,
                     state.fingerprint)  # fmt: skip
    sharding.sync("workdir claimed")
    b = cfg.breakpoint
    num_points = len(axis_checkpoints(cfg)[0])
    progress = Progress(num_points, "axis points")
    rng = jax.random.key(cfg.seed)
    evalset = evaluation_set(cfg)
    draws = shared_draws(evalset, b.num_bootstrap, cfg.seed)
    logging.info("evaluation set: %d prompts of %d requests", len(evalset.items),
                 evalset.num_requests)  # fmt: skip
    points, reference = [], None
    t_start = time.perf_counter()
    for i, point in enumerate(axis_points(cfg, paths)):
        logging.info("axis point %d/%d: %s (%s)", i + 1, num_points, point.label, point.source)
        result = analyse_point(
            point, cfg, workdir, jax.random.fold_in(rng, i), reference, evalset, draws
        )
        if reference is None:
            reference = {"captured": result["captured"], "label": point.label}
        result.pop("captured")
        points.append(result)
        r = result["row"]
        progress.step(f"{point.label}: " + ", ".join(
            f"{n} {_short(r, n)}" for n in value_names(cfg)))  # fmt: skip
    labels = [p["row"]["label"] for p in points]
    deltas = {}
    for name in value_names(cfg):
        stat, ftype = name.split("/")
        key = f"{stat}_{ftype}"
        est = lambda f, key=key: np.array(
            [np.nan if p["row"][f] is None else p["row"][f] for p in points], np.float64
        )
        deltas[name] = {
            "estimate": est(key),
            "lo": est(f"{key}_lo"),
            "hi": est(f"{key}_hi"),
            "samples": np.stack([p["samples"][name] for p in points]),
            "estimable": np.array([p["row"][f"{key}_estimable"] for p in points]),
        }
    margins = {"delta_mon": b.mon_margin, "delta_steer": b.steer_margin}
    brk = bp.find_break_point(labels, deltas, margins)
    seconds = time.perf_counter() - t_start
    if not sharding.is_writer():  # multi-host: process 0 writes the axis-level outputs
        return {"break_point": brk.to_json(), "labels": labels}
    return write_outputs(cfg, workdir, points, deltas, margins, brk, seconds, data_files=files)


def _short(row: dict, name: str) -> str:
    key = name.replace("/", "_")
    if not row[f"{key}_estimable"]:
        return "not estimable"
    return f"{row[key]:+.3f} [{row[key + '_lo']:+.3f}, {row[key + '_hi']:+.3f}]"
