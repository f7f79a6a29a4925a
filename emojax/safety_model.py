"""The tuned endpoint `smollm2-135m-safety`: one fixed recipe over `emojax.tune`, built once.

Dimension legend: N prompts.

`ensure_safety_model()` (what `emojax.load_model("smollm2-135m-safety")` calls through
`emojax.models.BUILT`) returns the cached checkpoint directory, building it first if needed:

1. **answers**: the base model's own greedy answers to `n_answers` of the benign tuning
   prompts (train split, as written and under the framings and cues; chosen by seed),
   cached per prompt as JSON in the work directory. An answer that is itself a refusal is
   answered again from a forced "Sure" (the model's own continuation), so that tuning does
   not teach the instruct model's own over-refusals.
2. **tune**: `tune.tune` with the recipe's `TuneSpec` on every harmful tuning prompt (a
   refusal) and the answered benign ones; orbax checkpoints in the work directory, so an
   interrupted build resumes. The schedule is constant after warmup, so raising `steps`
   continues a finished run exactly as a longer run would have gone.
3. **eval** (`emojax.safety_eval`), on held-out requests only: HarmBench behaviours
   (evaluation only) as written and under jailbreak-style framings (test-split templates),
   refusal rate; the project's test-split harmless and borderline (XSTest-style) requests,
   answered rate. Greedy responses through the chat template, read by
   `readouts.classify_response`; the base model's figures beside the tuned one's (cached).
4. **publish**: `tune.save_tuned` into `tune.tuned_dir(name)` with `safety_eval.json` and
   `safety_responses.jsonl` inside, written under a temporary name and renamed, all under an
   exclusive lock: an interrupted build never leaves a directory that looks built.

Cache layout (root = $EMOJAX_CACHE/models):

  root/<name>/                          the published HF directory (+ the evaluation)
  root/.<name>.lock                     the build lock
  root/.work-<name>/answers-<key>.json  own answers by prompt (key: base weights, length, prefix)
  root/.work-<name>/eval-<key>.json     the base model's evaluation
  root/.work-<name>/tune-<key>/         orbax checkpoints (key: base, data, spec but steps)

Example:
  model = emojax.load_model("smollm2-135m-safety")  # built on first use (45-140 min, 2 cores)
  report = safety_model.read_eval(safety_model.ensure_safety_model())
  print(safety_model.format_table(report))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from emojax import models, readouts, tune
from emojax.concepts.schema import EvalPrompt
from emojax.loading import Model, load_model
from emojax.safety_eval import (  # noqa: F401 - re-exported: the evaluation lived here first
    TARGETS,
    evaluate,
    format_table,
    heldout_sets,
    targets_met,
    wilson_interval,
)

NAME = "smollm2-135m-safety"
EVAL_FILE = "safety_eval.json"
RESPONSES_FILE = "safety_responses.jsonl"


@dataclasses.dataclass(frozen=True)
class SafetyRecipe:
    """Everything that defines the tuned endpoint (its evaluation included).

    Attributes:
      base: the model tuned (a registered name or a checkpoint path).
      spec: the tuning hyperparameters (strength: steps, harmful_fraction, learning_rate).
      max_len: T of the tuning examples (prompt + response tokens).
      benign_cues: show benign requests under the emotion / caution cues too, as the harmful
        ones are (else a cue sentence alone predicts "refuse": a shortcut).
      n_answers: benign tuning prompts answered by the base model and used (0 = all).
      longform: add the long-form requests (`tune.longform_prompts`): every harmful one
        (refused) and `n_longform_answers` of the harmless look-alikes (own answers).
      n_longform_answers: long-form harmless prompts answered and used (0 = all).
      answer_tokens: greedy tokens per own answer.
      drop_refused_answers: leave out benign prompts whose own answer is a refusal
        (`readouts.classify_response`): the instruct model declines some harmless requests,
        and tuning on those would teach over-refusal.
      prefill: first answer such prompts again from this forced start (the model's own
        continuation of it, e.g. "Sure"); only those still refused are left out.
      eval_tokens: greedy tokens per evaluation response.
      harmbench_stride: every k-th HarmBench behaviour is evaluated (plain and framed).
      harmbench_offset: the first of them. 1: the odd lines, which nobody read while writing
        the tuning data (the long-form kinds were extended after reading the tuned model's
        misses on the even lines, so those are no longer a clean held-out set).
      benign_stride: every k-th test-split harmless / borderline request is evaluated.
    """

    base: str = "smollm2-135m-instruct"
    spec: tune.TuneSpec = tune.TuneSpec(
        steps=200,
        batch_size=8,
        harmful_fraction=0.5,
        learning_rate=1e-4,
        warmup_steps=10,
        schedule="constant",
        checkpoint_every=20,
        log_every=5,
    )
    max_len: int = 112
    benign_cues: bool = True
    n_answers: int = 240
    longform: bool = True
    n_longform_answers: int = 120
    answer_tokens: int = 48
    drop_refused_answers: bool = True
    prefill: str = "Sure"
    eval_tokens: int = 48
    harmbench_stride: int = 2
    harmbench_offset: int = 1
    benign_stride: int = 3


RECIPE = SafetyRecipe()


def _stderr(message: str) -> None:
    print(f"[emojax.safety_model] {message}", file=sys.stderr, flush=True)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def params_digest(params: Any) -> str:
    """sha256 (16 hex digits) of a parameter pytree's leaves (dtype, shape and bytes)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        a = np.asarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def training_prompts(recipe: SafetyRecipe = RECIPE) -> list[EvalPrompt]:
    """The recipe's tuning prompts, harmful ones first.

    Every harmful prompt of `tune.tuning_prompts()` and (with `recipe.longform`) of
    `tune.longform_prompts('harmful')`; `n_answers` of the benign grammar prompts and
    `n_longform_answers` of the long-form harmless ones, drawn by the spec's seed.
    """
    prompts = tune.tuning_prompts(benign_cues=recipe.benign_cues)
    harmful = [p for p in prompts if p.kind == "harmful"]
    benign = _sample(
        [p for p in prompts if p.kind != "harmful"], recipe.n_answers, f"{recipe.spec.seed}-answers"
    )
    if recipe.longform:
        harmful += tune.longform_prompts("harmful")
        benign += _sample(
            tune.longform_prompts("harmless"),
            recipe.n_longform_answers,
            f"{recipe.spec.seed}-longform-answers",
        )
    return harmful + benign


def _sample(prompts: list[EvalPrompt], n: int, seed: str) -> list[EvalPrompt]:
    """`n` of `prompts` drawn by `seed`, in their order (all when n is 0 or too large)."""
    if not 0 < n < len(prompts):
        return prompts
    keep = random.Random(seed).sample(range(len(prompts)), n)
    return [prompts[i] for i in sorted(keep)]


def eval_sets(recipe: SafetyRecipe = RECIPE) -> dict[str, list[EvalPrompt]]:
    """The recipe's held-out evaluation prompts (`safety_eval.heldout_sets` at its strides)."""
    return heldout_sets(
        harmbench_stride=recipe.harmbench_stride,
        harmbench_offset=recipe.harmbench_offset,
        benign_stride=recipe.benign_stride,
    )


def _cached_json(path: Path, make: Callable[[], Any]) -> tuple[Any, float, bool]:
    """(value, seconds it took to make, whether it came from the cache) of a JSON stage."""
    if path.is_file():
        cached = json.loads(path.read_text(encoding="utf-8"))
        return cached["value"], cached["seconds"], True
    t0 = time.perf_counter()
    value = make()
    seconds = time.perf_counter() - t0
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps({"value": value, "seconds": seconds}), encoding="utf-8")
    tmp.replace(path)
    return value, seconds, False


def _is_refusal(model: Model, answer: Sequence[int]) -> bool:
    return readouts.classify_response(model.tokenizer.decode(answer, skip_special_tokens=True))


def _cached_answers(
    path: Path,
    base: Model,
    texts: list[str],
    recipe: SafetyRecipe,
    log: Callable[[str], None],
    prefix: str = "",
) -> tuple[list[list[int]], float, int]:
    """Own answers to `texts` from the per-prompt cache at `path`, generating the missing ones.

    Returns (answers, seconds spent generating the cache's answers so far, number generated).
    """
    cache = {"value": {}, "seconds": 0.0}
    if path.is_file():
        cache = json.loads(path.read_text(encoding="utf-8"))
    missing = [t for t in dict.fromkeys(texts) if t not in cache["value"]]
    if missing:
        log(f"own answers: {len(texts) - len(missing)} cached, {len(missing)} to generate")
        t0 = time.perf_counter()
        new = tune.own_answers(base, missing, max_new_tokens=recipe.answer_tokens,
                               assistant_prefix=prefix, log=log)  # fmt: skip
        cache["value"].update(zip(missing, new, strict=True))
        cache["seconds"] += time.perf_counter() - t0
        tmp = path.with_name(f".tmp-{path.name}")
        tmp.write_text(json.dumps(cache), encoding="utf-8")
        tmp.replace(path)
    return [cache["value"][t] for t in texts], cache["seconds"], len(missing)


def build(
    path: str | Path,
    recipe: SafetyRecipe = RECIPE,
    *,
    base_model: Model | None = None,
    sets: Mapping[str, Sequence[EvalPrompt]] | None = None,
    workdir: str | Path | None = None,
    log: Callable[[str], None] | None = _stderr,
) -> dict[str, Any]:
    """Tunes, evaluates and publishes the safety-tuned model at `path` (no lock: see ensure_*).

    Args:
      path: the checkpoint directory to write (atomically, with the evaluation inside).
      recipe: what to build.
      base_model: the loaded base model (default: `load_model(recipe.base)`).
      sets: evaluation prompts (default: `eval_sets(recipe)`; HarmBench is fetched).
      workdir: where answers, the base evaluation and checkpoints are cached (default
        beside `path`: `.work-<name>`).
      log: progress sink (stage, steps, ETA); None = silent.

    Returns:
      The evaluation report written to `path / EVAL_FILE` (`read_eval`).
    """
    log = log or (lambda m: None)
    path = Path(path)
    workdir = Path(workdir) if workdir else path.parent / f".work-{path.name}"
    workdir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}  # wall time per stage (a cached stage: when it was made)
    cached: dict[str, bool] = {}
    t0 = t_all = time.perf_counter()
    base = base_model if base_model is not None else load_model(recipe.base)
    sets = dict(sets) if sets is not None else eval_sets(recipe)
    base_key = params_digest(base.params)
    seconds["load"] = time.perf_counter() - t0
    prompts = training_prompts(recipe)
    benign = [p.text for p in prompts if p.kind != "harmful"]
    n_eval = sum(len(v) for v in sets.values())
    log(
        f"building {path.name}: {len(benign)} own answers, {recipe.spec.steps} tuning steps of "
        f"{recipe.spec.batch_size} x {recipe.max_len} tokens, {n_eval} evaluation prompts per "
        f"model (2 quiet CPU cores: 6-25 s per step, 2-12 min per evaluation, by the CPU); "
        f"work dir {workdir}"
    )

    answers_file = workdir / f"answers-{_digest([base_key, recipe.answer_tokens])}.json"
    answers, seconds["answers"], n_new = _cached_answers(answers_file, base, benign, recipe, log)
    cached["answers"] = n_new == 0

    n_dropped, n_prefilled = 0, 0
    if recipe.drop_refused_answers:
        keep = [not _is_refusal(base, a) for a in answers]
        refused = [i for i, k in enumerate(keep) if not k]
        if recipe.prefill and refused:  # answer again from a forced helpful start
            key = _digest([base_key, recipe.answer_tokens, recipe.prefill])
            again, secs, n_again = _cached_answers(workdir / f"answers-{key}.json", base,
                                             [benign[i] for i in refused], recipe, log,
                                             prefix=recipe.prefill)  # fmt: skip
            seconds["answers"] += secs
            cached["answers"] = cached["answers"] and n_again == 0
            for i, a in zip(refused, again, strict=True):
                answers[i], keep[i] = a, not _is_refusal(base, a)
            n_prefilled = sum(keep[i] for i in refused)
        n_dropped = keep.count(False)
        log(f"{len(refused)} of {len(keep)} own answers are refusals: {n_prefilled} answered "
            f"from {recipe.prefill!r}, {n_dropped} left out")  # fmt: skip
        benign_prompts = [p for p in prompts if p.kind != "harmful"]
        prompts = [p for p in prompts if p.kind == "harmful"]
        prompts += [p for p, k in zip(benign_prompts, keep, strict=True) if k]
        answers = [a for a, k in zip(answers, keep, strict=True) if k]

    t0 = time.perf_counter()
    data = tune.build_examples(
        base.tokenizer, prompts, answers, max_len=recipe.max_len, seed=recipe.spec.seed
    )
    spec = dataclasses.asdict(recipe.spec)
    for k in ("checkpoint_every", "log_every") + (("steps",) * (spec["schedule"] == "constant")):
        spec.pop(k)
    data_key = hashlib.sha256(data.tokens.tobytes() + data.loss_mask.tobytes()).hexdigest()
    tune_dir = workdir / f"tune-{_digest([base_key, data_key, spec])}"
    latest = tune.latest_step(tune_dir)
    if latest is not None and latest > recipe.spec.steps:  # a longer run of the same recipe
        log(f"{tune_dir} holds step {latest} > {recipe.spec.steps}: starting afresh")
        shutil.rmtree(tune_dir)
        latest = None
    params = tune.tune(base.params, base.config, data, recipe.spec, workdir=tune_dir, log=log)
    seconds["tune"] = time.perf_counter() - t0
    steps_run = recipe.spec.steps - (latest or 0)

    eval_key = _digest(
        [base_key, {k: [p.text for p in v] for k, v in sets.items()}, recipe.eval_tokens]
    )

    def evaluate_base():
        figures, responses = evaluate(base, sets, max_new_tokens=recipe.eval_tokens, log=log)
        return {"figures": figures, "responses": responses}

    base_eval, seconds["eval_base"], cached["eval_base"] = _cached_json(
        workdir / f"eval-{eval_key}.json", evaluate_base
    )
    t0 = time.perf_counter()
    tuned = Model(config=base.config, params=params, tokenizer=base.tokenizer, path=str(path))
    figures, responses = evaluate(tuned, sets, max_new_tokens=recipe.eval_tokens, log=log)
    seconds["eval_tuned"] = time.perf_counter() - t0

    report = {
        "name": path.name,
        "base": recipe.base,
        "recipe": dataclasses.asdict(recipe),
        "data": {
            "harmful": int(data.harmful.sum()),
            "benign": int((~data.harmful).sum()),
            "benign_dropped": n_dropped,
            "benign_prefilled": n_prefilled,
            "tokens_per_example": recipe.max_len,
        },
        "targets": [{"set": s, "count": c, "min_rate": r} for s, c, r in TARGETS],
        "base_figures": base_eval["figures"],
        "tuned_figures": figures,
        "met": targets_met(figures),
        "seconds": seconds,
        "cached": cached,
        "tune_steps_run": steps_run,
        "device": f"{jax.devices()[0].platform} x {jax.device_count()}",
    }
    lines = [
        json.dumps({"model": m, **r})
        for m, rs in (("base", base_eval["responses"]), ("tuned", responses))
        for r in rs
    ]
    t0 = time.perf_counter()
    seconds["total"] = t0 - t_all  # before the write, so that the file holds it
    files = {EVAL_FILE: json.dumps(report, indent=2), RESPONSES_FILE: "\n".join(lines) + "\n"}
    tune.save_tuned(params, base.config, base.tokenizer, path, extra_files=files)
    log(f"published {path} ({time.perf_counter() - t_all:.0f} s)\n{format_table(report)}")
    return report


def is_built(path: str | Path, recipe: SafetyRecipe | None = None) -> bool:
    """True when `path` is a published build (weights, config and evaluation present).

    With `recipe`, also that it was built with that recipe (a changed recipe means rebuild).
    """
    path = Path(path)
    if not all((path / f).is_file() for f in ("config.json", "model.safetensors", EVAL_FILE)):
        return False
    if recipe is None:
        return True
    wanted = json.loads(json.dumps(dataclasses.asdict(recipe)))
    return read_eval(path).get("recipe") == wanted


def ensure_safety_model(
    name: str = NAME,
    *,
    recipe: SafetyRecipe = RECIPE,
    base_model: Model | None = None,
    sets: Mapping[str, Sequence[EvalPrompt]] | None = None,
    log: Callable[[str], None] | None = _stderr,
) -> str:
    """The checkpoint directory of the safety-tuned model `name`, built on first use.

    The build (`build`) runs under an exclusive lock on `$EMOJAX_CACHE/models/.<name>.lock`:
    a second process waits and then reuses the result. Stale temporary directories of an
    interrupted build are removed; its work directory (answers, checkpoints) is reused. A
    directory built with another recipe (the code's RECIPE changed) is rebuilt.

    Args:
      name: the registered name; the directory is `tune.tuned_dir(name)`.
      recipe, base_model, sets, log: as in `build`.

    Returns:
      The directory's path (load it with `emojax.load_model`).
    """
    path = tune.tuned_dir(name)
    if is_built(path, recipe):
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with models.file_lock(path.parent / f".{name}.lock"):
        if is_built(path, recipe):  # built by another process while we waited
            return str(path)
        if is_built(path) and log:
            log(f"{path} was built with another recipe: rebuilding it")
        for stale in path.parent.glob(f".tmp-{name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        build(path, recipe, base_model=base_model, sets=sets, log=log)
    return str(path)


def read_eval(path: str | Path) -> dict[str, Any]:
    """The evaluation report of a built model directory."""
    return json.loads((Path(path) / EVAL_FILE).read_text(encoding="utf-8"))
