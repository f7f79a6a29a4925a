"""The policy-dominance axis: its checkpoints, checked before any work, and its points.

`axis_checkpoints` reads the `breakpoint` section (a list of models, or a weight dial with
optional prefix models), `preflight` resolves and checks every checkpoint from its headers
alone, and `axis_points` loads one point at a time (a dial point interpolates its two ends).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from absl import logging

from emojax import breakpoint as bp
from emojax import results
from emojax.loading import Model, load_model, resolve_path, validate_checkpoint


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
