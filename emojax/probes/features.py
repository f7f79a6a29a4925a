"""Monitoring features: projections on the control and emotion directions, the policy logit
and residual principal components, stacked into zero-padded feature sets.

Dimension letters: N prompts, L layers, D model, K directions, C residual components,
S feature sets, P (padded) features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from emojax import stats

Array = jax.Array

CONTROLS = ("harm_salience", "caution", "refusal")
EMOTIONS = ("concern", "eagerness", "self_doubt")
POLICY_LOGIT = "policy_logit"
FEATURE_SET_NAMES = ("controls", "controls+emotion", "residual")


class FeatureSets(NamedTuple):
    """Stacked, zero-padded feature sets for the probes."""

    names: tuple[str, ...]  # S names, e.g. FEATURE_SET_NAMES
    columns: tuple[tuple[str, ...], ...]  # per set, the names of its real columns
    features: Array  # [S, L, N, P]
    mask: Array  # [S, P] 1.0 for real columns

    def subset(self, names: Sequence[str]) -> FeatureSets:
        """The named sets only (in that order), padding trimmed to their widest."""
        idx = [self.names.index(k) for k in names]
        width = max(len(self.columns[i]) for i in idx)
        return FeatureSets(
            tuple(names),
            tuple(self.columns[i] for i in idx),
            self.features[jnp.asarray(idx), ..., :width],
            self.mask[jnp.asarray(idx), :width],
        )


def project(acts: Array, directions: Array) -> Array:
    """Projections [N, L, K] of activations [N, L, D] on unit directions [K, L, D]."""
    directions = jnp.asarray(directions, jnp.float32)
    unit = directions / jnp.maximum(jnp.linalg.norm(directions, axis=-1, keepdims=True), 1e-12)
    return jnp.einsum("nld,kld->nlk", jnp.asarray(acts, jnp.float32), unit)


def residual_components(acts: Array, num_components: int) -> Array:
    """Top principal-component scores [N, L, C] of each layer's activations [N, L, D]."""
    acts = jnp.asarray(acts, jnp.float32)
    centred = jnp.swapaxes(acts - acts.mean(0), 0, 1)  # [L, N, D]
    u, sv, _ = jnp.linalg.svd(centred, full_matrices=False)
    c = min(num_components, u.shape[-1])
    return jnp.swapaxes(u[..., :c] * sv[:, None, :c], 0, 1)


def _standardize(x: Array) -> Array:
    """Z-scores every column over items (axis 0); constant columns become 0.

    "Constant" is relative (sd <= 1e-5 x rms): a projection of one repeated token's
    activation varies only by float round-off, which z-scoring would blow up into noise.
    """
    sd = x.std(0)
    constant = sd <= 1e-5 * jnp.sqrt(jnp.mean(x**2, axis=0)) + 1e-30
    return jnp.where(constant, 0.0, (x - x.mean(0)) / jnp.where(constant, 1.0, sd))


def feature_sets_from_projections(
    projections: Mapping[str, Array],
    policy_logit: Array,
    *,
    controls: Sequence[str] = CONTROLS,
    emotions: Sequence[str] = EMOTIONS,
    residual: Array | None = None,
    standardize: bool = True,
) -> FeatureSets:
    """Builds the monitoring feature sets from per-layer projections.

    Projections can be accumulated chunk by chunk (``project`` on each chunk of prompts), so
    this works for activations that never fit in memory at once.

    Args:
      projections: {direction name: [N, L]} projections at the last prompt token.
      policy_logit: [N] the policy's refusal logit (layer independent).
      controls: names of the control directions.
      emotions: names of the emotion directions.
      residual: optional [N, L, C] residual features (e.g. ``residual_components``) for the
        upper-bound set ``residual`` (+ policy logit).
      standardize: z-score every column over prompts (unsupervised, so no label leak).

    Returns:
      FeatureSets with sets ``controls`` (controls + policy logit), ``controls+emotion`` and,
      if ``residual`` is given, ``residual``.
    """
    missing = [k for k in (*controls, *emotions) if k not in projections]
    if missing:
        raise KeyError(f"missing projections {missing}; have {sorted(projections)}")
    logit = jnp.asarray(policy_logit, jnp.float32)
    num_layers = jnp.asarray(projections[controls[0]]).shape[1]
    logit = jnp.broadcast_to(logit[:, None, None], (logit.shape[0], num_layers, 1))
    cols = lambda names: jnp.stack([jnp.asarray(projections[k], jnp.float32) for k in names], -1)
    sets = {"controls": (jnp.concatenate([cols(controls), logit], -1), (*controls, POLICY_LOGIT))}
    sets["controls+emotion"] = (
        jnp.concatenate([cols(controls), logit, cols(emotions)], -1),
        (*controls, POLICY_LOGIT, *emotions),
    )
    if residual is not None:
        residual = jnp.asarray(residual, jnp.float32)
        names = tuple(f"pc{i}" for i in range(residual.shape[-1])) + (POLICY_LOGIT,)
        sets["residual"] = (jnp.concatenate([residual, logit], -1), names)
    width = max(x.shape[-1] for x, _ in sets.values())
    feats, masks = [], []
    for x, names in sets.values():
        x = _standardize(x) if standardize else x
        feats.append(jnp.pad(x, ((0, 0), (0, 0), (0, width - x.shape[-1]))))
        masks.append(jnp.arange(width) < len(names))
    features = jnp.transpose(jnp.stack(feats), (0, 2, 1, 3))  # [S, L, N, P]
    return FeatureSets(
        tuple(sets),
        tuple(names for _, names in sets.values()),
        features,
        jnp.stack(masks).astype(jnp.float32),
    )


def build_feature_sets(
    acts: Array,
    directions: Mapping[str, Array],
    policy_logit: Array,
    *,
    controls: Sequence[str] = CONTROLS,
    emotions: Sequence[str] = EMOTIONS,
    residual_dims: int = 64,
    standardize: bool = True,
) -> FeatureSets:
    """Feature sets from last-prompt-token activations [N, L, D] and directions {name: [L, D]}.

    The ``residual`` upper bound uses the top ``residual_dims`` principal components of each
    layer's activations (0 disables it); projections are on unit-normalised directions.
    """
    names = (*controls, *emotions)
    missing = [k for k in names if k not in directions]
    if missing:
        raise KeyError(f"missing directions {missing}; have {sorted(directions)}")
    stats.require_finite(acts, "probe activations")
    stats.require_finite(policy_logit, "policy logit (refusal score)")
    proj = project(acts, jnp.stack([jnp.asarray(directions[k]) for k in names]))
    projections = {k: proj[..., i] for i, k in enumerate(names)}
    residual = residual_components(acts, residual_dims) if residual_dims > 0 else None
    return feature_sets_from_projections(
        projections,
        policy_logit,
        controls=controls,
        emotions=emotions,
        residual=residual,
        standardize=standardize,
    )
