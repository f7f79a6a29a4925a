"""The sweep's settings and the condition grid they define.

Dimension legend: I steering vectors (named concepts, then random directions), L layers,
D model width, K coefficients, K' joint coefficients, P joint pairs (control, partner),
A sweep layers, C conditions.

A *condition* is a layer and a coefficient per vector (in units of that layer's median
residual norm): it adds `layer_norms[l] * Σ_i w_i v̂_i[l]` to `resid[l]` at every position,
which is exactly a PyTorch forward-pre-hook on decoder layer `l`. Single-vector grids
(`w = coef · e_i`) and joint control x emotion grids (`w = a · e_c + b · e_e`, for Δ_steer)
are both conditions, in one flat table (`build_conditions`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from emojax import validate

EMOTIONS = ("concern", "eagerness", "self_doubt")
CONTROLS = ("harm_salience", "caution", "refusal")
# Keys of a config's `sweep` section that choose the inputs, read by scripts, not run_sweep.
INPUT_KEYS = (
    "method", "prompts_per_kind", "requests_per_kind", "failing_requests", "ok_requests",
    "neutral_prompts",
)  # fmt: skip


def default_config() -> dict[str, Any]:
    """The sweep settings (the `sweep` section of configs/zoo.py overrides these).

    Keys:
      layers: injection layers; ints (negative counts from the end) or floats in [0, 1)
        (fraction of depth, so one config serves models of different depth).
      coefs: coefficients in units of the layer's median residual norm.
      vectors: named vectors to sweep (None = every concept of the VectorSet).
      num_random: norm-matched random directions (the null).
      generate_random: also generate (behaviour readouts) for random directions.
      max_new_tokens: length of the steered greedy responses.
      readout_layer: residual-stream index r in [0, L] (-1 = L, the last layer's output)
        whose last-position activation is projected on every concept direction (the
        directions and norm unit of vector layer min(r, L_v - 1)); only conditions injected
        below r get projections.
      joint_controls / joint_anchor / joint_emotions / joint_coefs: the joint grids of
        Δ_steer, each on a K' x K' coefficient grid, in three arms that search the same
        number of grids of the same shape: the *controls* arm, one grid per pair of
        `joint_controls` (refusal x harm-salience, refusal x caution, harm-salience x
        caution); the *emotion* arm, `joint_anchor` (the refusal direction) x each of
        `joint_emotions`; the *random* arm, `joint_anchor` x each of the first
        `joint_random` random directions, whose subsets of len(joint_emotions) grids are
        the null arms. C(len(joint_controls), 2) must equal len(joint_emotions).
      joint_random: random grids; C(joint_random, len(joint_emotions)) distinct null arms.
      kappas: KL budgets (nats, mean over neutral prompts) for Δ_steer.
      memory_mb: activation memory budget per program (sets the chunk sizes). On CPUs a
        small budget (tens of MB: batches that stay in cache) is fastest; on accelerators
        use most of the device memory.
      num_bootstrap: bootstrap resamples for intervals.
      seed: seed of the random directions and the bootstrap.
    """
    return dict(
        layers=(0.5,),
        coefs=(-0.5, -0.25, 0.0, 0.25, 0.5),
        vectors=None,
        num_random=16,
        generate_random=True,
        max_new_tokens=10,
        readout_layer=-1,
        joint_controls=CONTROLS,
        joint_anchor="refusal",
        joint_emotions=EMOTIONS,
        joint_random=8,
        joint_coefs=(-0.5, -0.25, 0.0, 0.25, 0.5),
        kappas=(0.05, 0.1, 0.25),
        memory_mb=64,
        num_bootstrap=1000,
        seed=0,
    )


def _resolve_config(config: Any) -> dict[str, Any]:
    out = default_config()
    if config is None:
        return out
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    # Keys of the config section that choose inputs (prompts, vector method), not settings.
    config = {k: v for k, v in config.items() if k not in INPUT_KEYS}
    unknown = set(config) - set(out)
    if unknown:
        raise ValueError(f"unknown sweep config keys {sorted(unknown)}; known: {sorted(out)}")
    out.update(config)
    keys = ("layers", "coefs", "joint_controls", "joint_emotions")
    for k in keys + ("joint_coefs", "kappas"):
        out[k] = tuple(out[k])
    if out["joint_random"] > out["num_random"]:
        raise ValueError(
            f"joint_random={out['joint_random']} exceeds num_random={out['num_random']}"
        )
    if out["vectors"] is not None:
        out["vectors"] = tuple(out["vectors"])
    if out["joint_emotions"] and not any(c == 0 for c in out["joint_coefs"]):
        raise ValueError("joint_coefs must contain 0 (the controls-alone points of Δ_steer)")
    num_control_grids = len(list(itertools.combinations(out["joint_controls"], 2)))
    if out["joint_emotions"] and num_control_grids != len(out["joint_emotions"]):
        raise ValueError(
            f"unequal Δ_steer arms: joint_controls={out['joint_controls']} give "
            f"{num_control_grids} control grids (one per pair), joint_emotions="
            f"{out['joint_emotions']} give {len(out['joint_emotions'])} emotion grids; the "
            "arms must search the same number of grids"
        )
    return out


ARMS = ("controls", "emotion", "random")


def _arm_of(cfg: dict[str, Any], first: str, partner: str) -> str:
    if first in cfg["joint_controls"] and partner in cfg["joint_controls"]:
        return "controls"
    return "emotion" if partner in cfg["joint_emotions"] else "random"


def joint_pairs(
    cfg: dict[str, Any], names: Sequence[str], num_named: int
) -> tuple[list[tuple[int, int]], list[str]]:
    """The joint grids of Δ_steer: (first, second) vector indices of each grid and its arm.

    The controls arm has one grid per pair of `joint_controls`; the emotion arm pairs
    `joint_anchor` with each emotion; the random arm pairs it with each of the first
    `joint_random` random directions. Every grid has the same K' x K' shape, and the
    controls and emotion arms the same number of grids (`_resolve_config` checks it), so
    neither arm searches more cells than the other.
    """
    named, names = list(names[:num_named]), list(names)
    randoms = names[num_named:][: cfg["joint_random"]]
    controls = [c for c in cfg["joint_controls"] if c in named]
    grids = list(itertools.combinations(controls, 2))
    anchor = cfg["joint_anchor"]
    if anchor in named:
        grids += [(anchor, e) for e in cfg["joint_emotions"] if e in named and e != anchor]
        grids += [(anchor, r) for r in randoms]
    pairs = [(names.index(a), names.index(b)) for a, b in grids]
    return pairs, [_arm_of(cfg, a, b) for a, b in grids]


def resolve_layers(layers: Sequence[float | int], num_layers: int) -> tuple[int, ...]:
    """Ints (negative from the end) or depth fractions in [0, 1) -> sorted unique layers."""
    out = {validate.depth_layer(x, num_layers, name=f"layers[{i}]") for i, x in enumerate(layers)}
    return tuple(sorted(out))


@dataclasses.dataclass
class SteeringVectors:
    """Unit directions [I, L, D] with names and the per-layer norm unit [L]."""

    names: tuple[str, ...]
    vectors: np.ndarray
    layer_norms: np.ndarray
    num_named: int

    @classmethod
    def build(
        cls, vectors: Any, names: Sequence[str] | None, num_random: int, seed: int
    ) -> SteeringVectors:
        """Named vectors of a `VectorSet` (or anything with `.concepts`, `.vectors` [C, L, D],
        `.layer_norms` [L]) plus `num_random` seeded random unit directions per layer."""
        all_names = tuple(vectors.concepts)
        names = tuple(all_names if names is None else names)
        v = np.asarray(vectors.vectors, np.float32)[[all_names.index(n) for n in names]]
        v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
        rng = np.random.default_rng(seed)
        r = rng.standard_normal((num_random, v.shape[1], v.shape[2])).astype(np.float32)
        r /= np.maximum(np.linalg.norm(r, axis=-1, keepdims=True), 1e-12)
        return cls(
            names=names + tuple(f"random_{i:02d}" for i in range(num_random)),
            vectors=np.concatenate([v, r], axis=0),
            layer_norms=np.asarray(vectors.layer_norms, np.float32),
            num_named=len(names),
        )


@dataclasses.dataclass
class Conditions:
    """The flat condition table and where each condition sits in the output grids.

    Attributes:
      layer: int [C] injection layer.
      weights: float [C, I] coefficient of every vector (norm units).
      generate: bool [C] run steered generation for this condition.
      grid_index: int [C, 3] (layer slot, vector, coef) for grid conditions, -1 otherwise.
      joint_index: int [C, 4] (layer slot, pair, a, b) for joint conditions, -1 otherwise.
      is_base: bool [C] the unsteered condition (zero weights; gives the baseline responses).
    """

    layer: np.ndarray
    weights: np.ndarray
    generate: np.ndarray
    grid_index: np.ndarray
    joint_index: np.ndarray
    is_base: np.ndarray


def build_conditions(
    layers: Sequence[int],
    num_vectors: int,
    num_named: int,
    coefs: Sequence[float],
    pairs: Sequence[tuple[int, int]],
    joint_coefs: Sequence[float],
    generate_random: bool,
) -> Conditions:
    """Single-vector grid [A, I, K] and joint grid [A, P, K', K'] as one condition table.

    Row 0 is the unsteered baseline (zero weights at the first layer), so the baseline
    responses come from the same compiled program as the steered ones.
    """
    rows = [(layers[0], np.zeros(num_vectors, np.float32), True, (-1, -1, -1), (-1,) * 4)]
    for a, layer in enumerate(layers):
        for i in range(num_vectors):
            for k, c in enumerate(coefs):
                w = np.zeros(num_vectors, np.float32)
                w[i] = c
                gen = generate_random or i < num_named
                rows.append((layer, w, gen, (a, i, k), (-1, -1, -1, -1)))
        for p, (ci, ei) in enumerate(pairs):
            for ka, ca in enumerate(joint_coefs):
                for kb, cb in enumerate(joint_coefs):
                    w = np.zeros(num_vectors, np.float32)
                    w[ci] += ca
                    w[ei] += cb
                    rows.append((layer, w, True, (-1, -1, -1), (a, p, ka, kb)))
    return Conditions(
        layer=np.asarray([r[0] for r in rows], np.int32),
        weights=np.stack([r[1] for r in rows]),
        generate=np.asarray([r[2] for r in rows], bool),
        grid_index=np.asarray([r[3] for r in rows], np.int32),
        joint_index=np.asarray([r[4] for r in rows], np.int32),
        is_base=np.arange(len(rows)) == 0,
    )


def steering_matrix(cond: Conditions, vecs: SteeringVectors) -> np.ndarray:
    """[C, D] vector added to resid[layer_c]: layer_norms[l] · Σ_i w_ci v̂_i[l]."""
    v = vecs.vectors[:, cond.layer]  # [I, C, D]
    s = np.einsum("ci,icd->cd", cond.weights, v)
    return (s * vecs.layer_norms[cond.layer][:, None]).astype(np.float32)
