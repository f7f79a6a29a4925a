"""Interventions on the residual stream, as data.

Dimension legend: A additive entries, R ablated directions, S capped directions, L layers,
B batch, T time, D model width.

An `Intervention` is a pytree of arrays: which layers (a 0/1 mask over L), which positions
(a [B, T] mask), which vector and how strong are all values, never Python control flow, so
one compiled program serves every (vector, layer, coefficient) of a sweep, and `jax.vmap`
over a stacked batch of interventions runs many conditions at once.

Kinds, applied where layer `l` reads the residual stream (`resid[l]`, the input of decoder
layer `l`, exactly what a PyTorch forward-pre-hook on layer `l` sees):

* additive steering: `h += c · v` at the selected positions;
* directional ablation: `h -= (h · r̂) r̂` on `resid[l]` and on the attention and MLP outputs
  that layer `l` writes (at every layer this equals orthogonalising `r̂` out of every weight
  that writes to the residual stream);
* projection capping: `h · r̂` clamped to `[min, max]`.

Order at a layer's input: ablation, capping, then steering.

The constructors take raw vectors. Interventions from files and vector sets are built above
the core, which imports no file format: `emojax.control_vector.load_intervention` (a llama.cpp
control vector) and `VectorSet.intervention` (a concept in median-norm units).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from emojax import validate
from emojax.config import ModelConfig

Array = jax.Array


def _layer_mask(config: ModelConfig, layers: int | Sequence[int] | Array | None) -> Array:
    """A float mask [L] from an int, a sequence of ints, None (all layers) or an array."""
    num = config.num_layers
    if layers is None:
        return jnp.ones((num,), jnp.float32)
    if isinstance(layers, jax.Array | np.ndarray) and np.ndim(layers) == 1:
        if layers.shape[0] != num:
            raise ValueError(f"layer mask has length {layers.shape[0]}, model has {num} layers")
        validate.check_finite(layers, "layer mask")
        return layers.astype(jnp.float32)
    if isinstance(layers, int) or np.ndim(layers) == 0:
        idx = [validate.check_layer(layers, num, name="layer")]
    else:
        idx = [validate.check_layer(i, num, name=f"layer[{k}]") for k, i in enumerate(layers)]
    return jnp.zeros((num,), jnp.float32).at[jnp.asarray(idx, jnp.int32)].set(1.0)


def _unit(config: ModelConfig, direction: Array, what: str) -> Array:
    direction = jnp.asarray(direction, jnp.float32)
    if direction.shape != (config.d_model,):
        raise ValueError(
            f"{what} has shape {direction.shape}, expected ({config.d_model},) = d_model"
        )
    validate.check_finite(direction, what)
    return direction / jnp.maximum(jnp.linalg.norm(direction), 1e-12)


@struct.dataclass
class Intervention:
    """Steering, ablation and capping entries; see the module docstring.

    Attributes:
      add_vectors: [A, L, D] vector added at each layer (coefficient already folded in).
      add_masks: [A, B|1, T|1] 1 where entry `a` applies among the given tokens.
      add_on_new: [A] 1 where entry `a` also applies to tokens produced by `generate`.
      ablate_dirs: [R, D] unit directions.
      ablate_layers: [R, L] 1 at the layers whose writes are projected.
      cap_dirs: [S, D] unit directions.
      cap_layers: [S, L] 1 at the layers whose input is capped.
      cap_min: [S] lower bound of the projection.
      cap_max: [S] upper bound of the projection.
    """

    add_vectors: Array
    add_masks: Array
    add_on_new: Array
    ablate_dirs: Array
    ablate_layers: Array
    cap_dirs: Array
    cap_layers: Array
    cap_min: Array
    cap_max: Array

    @classmethod
    def none(cls, config: ModelConfig) -> Intervention:
        """An intervention that changes nothing."""
        num, d = config.num_layers, config.d_model
        z = jnp.zeros
        return cls(
            add_vectors=z((0, num, d)),
            add_masks=z((0, 1, 1)),
            add_on_new=z((0,)),
            ablate_dirs=z((0, d)),
            ablate_layers=z((0, num)),
            cap_dirs=z((0, d)),
            cap_layers=z((0, num)),
            cap_min=z((0,)),
            cap_max=z((0,)),
        )

    @classmethod
    def add(
        cls,
        config: ModelConfig,
        layer: int | Sequence[int] | Array,
        vector: Array,
        coef: float | Array = 1.0,
        positions: Array | None = None,
    ) -> Intervention:
        """Adds `coef * vector` to `resid[layer]`.

        Args:
          config: the model config.
          layer: an int, a sequence of ints, or a float mask [L] (e.g. a traced one-hot).
          vector: [D] steering vector (not normalised).
          coef: scalar coefficient (may be traced).
          positions: [B, T] boolean mask of the prompt positions to steer; None steers every
            position, including the tokens `generate` produces.

        Returns:
          The intervention.
        """
        vector = jnp.asarray(vector, jnp.float32)
        if vector.shape != (config.d_model,):
            raise ValueError(
                f"steering vector has shape {vector.shape}, expected ({config.d_model},)"
            )
        validate.check_finite(vector, "vector")
        validate.check_finite(coef, "coef")
        mask = _layer_mask(config, layer)
        vectors = (mask[:, None] * jnp.asarray(coef, jnp.float32) * vector)[None]
        if positions is None:
            masks, on_new = jnp.ones((1, 1, 1)), jnp.ones((1,))
        else:
            positions = jnp.asarray(positions)
            if positions.ndim != 2:
                raise ValueError(f"positions must be a [B, T] mask, got shape {positions.shape}")
            masks, on_new = positions.astype(jnp.float32)[None], jnp.zeros((1,))
        return cls.none(config).replace(add_vectors=vectors, add_masks=masks, add_on_new=on_new)

    @classmethod
    def steer(
        cls, config: ModelConfig, layer_mask: Array, vector: Array, coef: Array
    ) -> Intervention:
        """`add` at every position from arrays only (safe inside jit/vmap)."""
        return cls.add(config, jnp.asarray(layer_mask, jnp.float32), vector, coef)

    @classmethod
    def ablate(
        cls,
        config: ModelConfig,
        direction: Array,
        layers: int | Sequence[int] | Array | None = None,
    ) -> Intervention:
        """Projects the unit `direction` out of every residual write of `layers` (None = all)."""
        r = _unit(config, direction, "ablation direction")
        return cls.none(config).replace(
            ablate_dirs=r[None], ablate_layers=_layer_mask(config, layers)[None]
        )

    @classmethod
    def cap(
        cls,
        config: ModelConfig,
        direction: Array,
        max_value: float | Array,
        layers: int | Sequence[int] | Array | None = None,
        min_value: float | Array = -jnp.inf,
    ) -> Intervention:
        """Clamps the projection of `resid[l]` on the unit `direction` to [min, max]."""
        r = _unit(config, direction, "capping direction")
        validate.check_cap_bounds(min_value, max_value)
        return cls.none(config).replace(
            cap_dirs=r[None],
            cap_layers=_layer_mask(config, layers)[None],
            cap_min=jnp.asarray(min_value, jnp.float32).reshape(1),
            cap_max=jnp.asarray(max_value, jnp.float32).reshape(1),
        )

    def __add__(self, other: Intervention) -> Intervention:
        if not isinstance(other, Intervention):
            return NotImplemented
        shape = jnp.broadcast_shapes(self.add_masks.shape[1:], other.add_masks.shape[1:])
        cat = lambda a, b: jnp.concatenate([a, b], axis=0)
        widen = lambda m: jnp.broadcast_to(m, (m.shape[0], *shape))
        return Intervention(
            add_vectors=cat(self.add_vectors, other.add_vectors),
            add_masks=cat(widen(self.add_masks), widen(other.add_masks)),
            add_on_new=cat(self.add_on_new, other.add_on_new),
            ablate_dirs=cat(self.ablate_dirs, other.ablate_dirs),
            ablate_layers=cat(self.ablate_layers, other.ablate_layers),
            cap_dirs=cat(self.cap_dirs, other.cap_dirs),
            cap_layers=cat(self.cap_layers, other.cap_layers),
            cap_min=cat(self.cap_min, other.cap_min),
            cap_max=cat(self.cap_max, other.cap_max),
        )

    def per_layer(self) -> tuple[Array, Array, Array]:
        """Layer-major slices for `lax.scan`: vectors [L, A, D], ablate [L, R], cap [L, S]."""
        return (
            jnp.swapaxes(self.add_vectors, 0, 1),
            jnp.swapaxes(self.ablate_layers, 0, 1),
            jnp.swapaxes(self.cap_layers, 0, 1),
        )

    def position_weights(self, batch: int, time: int, new_tokens: bool = False) -> Array:
        """[A, B, T] weight of each additive entry at each token."""
        num = self.add_on_new.shape[0]
        if new_tokens:
            return jnp.broadcast_to(self.add_on_new[:, None, None], (num, batch, time))
        return jnp.broadcast_to(self.add_masks, (num, batch, time))


def ablate(x: Array, dirs: Array, weights: Array) -> Array:
    """Projects each unit direction dirs[r] [D] out of x [..., D], weighted by weights[r]."""
    for r in range(dirs.shape[0]):
        d = dirs[r].astype(x.dtype)
        coef = jnp.einsum("...d,d->...", x, d) * weights[r].astype(x.dtype)
        x = x - coef[..., None] * d
    return x


def apply_at_input(iv: Intervention, h: Array, layer_slices, weights: Array) -> Array:
    """Applies ablation, capping and steering to a layer's input h [B, T, D].

    Args:
      iv: the intervention.
      h: the residual stream entering the layer.
      layer_slices: this layer's (vectors [A, D], ablate weights [R], cap weights [S]).
      weights: [A, B, T] position weights of the additive entries.
    """
    vectors, ablate_w, cap_w = layer_slices
    h = ablate(h, iv.ablate_dirs, ablate_w)
    for s in range(iv.cap_dirs.shape[0]):
        d = iv.cap_dirs[s].astype(h.dtype)
        proj = jnp.einsum("btd,d->bt", h, d)
        target = jnp.clip(proj, iv.cap_min[s], iv.cap_max[s])
        h = h + (cap_w[s] * (target - proj))[..., None].astype(h.dtype) * d
    if vectors.shape[0]:
        h = h + jnp.einsum("abt,ad->btd", weights, vectors).astype(h.dtype)
    return h
