"""The weight dial between two checkpoints of one architecture: θ(α) = θ_0 + α (θ_1 − θ_0).

One axis of the break-point analysis (DESIGN.md §5): interpolated on device, leaf by leaf,
with both ends reproduced exactly.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from emojax.config import ModelConfig
from emojax.params import Params

Array = jax.Array


class DialError(ValueError):
    """The two ends of a dial are not the same architecture / tokenizer."""


def check_dial_compatible(
    base_config: ModelConfig,
    tuned_config: ModelConfig,
    base_tokenizer=None,
    tuned_tokenizer=None,
) -> None:
    """Raises DialError unless the two checkpoints can be interpolated weight by weight."""
    fields = [f.name for f in dataclasses.fields(ModelConfig) if f.compare]
    diffs = [
        f"{name}: {getattr(base_config, name)!r} vs {getattr(tuned_config, name)!r}"
        for name in fields
        if name not in ("bos_token_id", "eos_token_id", "pad_token_id")
        and getattr(base_config, name) != getattr(tuned_config, name)
    ]
    if diffs:
        raise DialError("dial ends differ in architecture: " + "; ".join(diffs))
    if base_tokenizer is not None and tuned_tokenizer is not None:
        vb, vt = base_tokenizer.get_vocab(), tuned_tokenizer.get_vocab()
        if vb != vt:
            only = sorted(set(vb.items()) ^ set(vt.items()))[:5]
            raise DialError(f"dial ends have different tokenizers (e.g. {only})")


@jax.jit
def interpolate_params(base: Params, tuned: Params, alpha: Array) -> Params:
    """θ(α) = θ_base + α (θ_tuned − θ_base), leaf by leaf, in float32, cast back.

    α = 0 and α = 1 return the two ends exactly (the interpolation is written so that each
    end is reproduced bit for bit: `(1 − α) θ_base + α θ_tuned` would not be at α = 1 in
    floating point, `where` makes both ends exact).
    """
    alpha = jnp.asarray(alpha, jnp.float32)

    def mix(b, t):
        b32, t32 = b.astype(jnp.float32), t.astype(jnp.float32)
        out = b32 + alpha * (t32 - b32)
        out = jnp.where(alpha == 1.0, t32, out)
        return out.astype(b.dtype)

    return jax.tree.map(mix, base, tuned)
