"""The finetuning-shift monitor: how far a fine-tune moves activations along each direction.

Dimension letters: N prompts, L layers, D model, K directions.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from emojax import stats
from emojax.probes.features import project

Array = jax.Array


def projection_shift(
    proj_base: Array, proj_tuned: Array, rng: Array, *, num: int = 1000, level: float = 0.95
) -> stats.Interval:
    """Mean shift ``proj_tuned - proj_base`` over the same prompts, paired bootstrap interval.

    Args:
      proj_base: [N, ...] projections of the base model's activations (e.g. [N, L, K]).
      proj_tuned: [N, ...] the fine-tuned model's projections on the same prompts.
      rng: PRNG key.
      num: bootstrap resamples.
      level: interval coverage.

    Returns:
      Interval with arrays of shape [...] (e.g. [L, K]).
    """
    diff = jnp.asarray(proj_tuned, jnp.float32) - jnp.asarray(proj_base, jnp.float32)
    return stats.bootstrap(rng, diff, lambda d: d.mean(0), num, level)


def finetune_shift(
    acts_base: Array,
    acts_tuned: Array,
    directions: Mapping[str, Array],
    rng: Array,
    *,
    num: int = 1000,
    level: float = 0.95,
) -> dict[str, stats.Interval]:
    """Shift of activations along each direction between two models of one family.

    As in persona-vector monitoring: project both models' last-prompt-token activations
    [N, L, D] (same prompts) on each unit direction ``{name: [L, D]}`` (fine-tunes of one base
    share a basis) and report the mean shift per layer with a paired bootstrap interval.

    Returns:
      {name: Interval of [L] arrays}.
    """
    names = tuple(directions)
    dirs = jnp.stack([jnp.asarray(directions[k]) for k in names])
    shift = projection_shift(
        project(acts_base, dirs), project(acts_tuned, dirs), rng, num=num, level=level
    )  # [L, K]
    return {k: jax.tree.map(lambda x, i=i: x[:, i], shift) for i, k in enumerate(names)}
