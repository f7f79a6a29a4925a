"""Pure building blocks of the decoder: norms, rotary embeddings, attention, MLP.

Dimension legend: B batch, T query time, S key time, D model width, H query heads,
G key/value heads, R = H // G query heads per key/value head, K head dim, F MLP width.

Every function is a pure function of arrays and a static `ModelConfig`. Numerics follow the
Hugging Face reference: norms and softmax in float32, results cast back to the input dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from emojax.config import ModelConfig
from emojax.params import Norm

Array = jax.Array

# Finite "minus infinity": fully masked rows (left padding) stay NaN-free.
MASK_VALUE = -1e30


def norm(p: Norm, x: Array, config: ModelConfig) -> Array:
    """RMSNorm or LayerNorm over the last axis, computed in float32 like the references."""
    x32 = x.astype(jnp.float32)
    scale = p.scale.astype(jnp.float32)
    if config.norm_offset:
        scale = 1.0 + scale
    if config.norm_type == "layer":
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + config.norm_eps) * scale
        return (y + p.bias.astype(jnp.float32)).astype(x.dtype)
    y = x32 * jax.lax.rsqrt(jnp.square(x32).mean(-1, keepdims=True) + config.norm_eps)
    if config.norm_offset:  # Gemma scales in float32, then casts.
        return (y * scale).astype(x.dtype)
    return (scale * y.astype(x.dtype).astype(jnp.float32)).astype(x.dtype)


def rope_inv_freq(config: ModelConfig) -> np.ndarray:
    """Rotary inverse frequencies [K/2], with Llama 3.1 / linear scaling applied."""
    k = config.head_dim
    exponent = np.arange(0, k, 2, dtype=np.int64).astype(np.float32) / np.float32(k)
    inv_freq = (1.0 / (np.float32(config.rope_theta) ** exponent)).astype(np.float32)
    if not config.rope_scaling:
        return inv_freq
    s = dict(config.rope_scaling)
    factor = float(s["factor"])
    if s["rope_type"] == "linear":
        return (inv_freq / factor).astype(np.float32)
    # Llama 3.1: keep high frequencies, divide low ones by `factor`, interpolate in between.
    low, high = float(s["low_freq_factor"]), float(s["high_freq_factor"])
    old_len = float(s["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_tables(config: ModelConfig, positions: Array, dtype) -> tuple[Array, Array]:
    """cos and sin tables [B, T, K] for integer positions [B, T]."""
    inv_freq = jnp.asarray(rope_inv_freq(config))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, K/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotates x [B, T, N, K] with the half-split convention of the HF checkpoints."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


def attention_mask(
    q_slots: Array, k_slots: Array, k_valid: Array, window: int | None
) -> tuple[Array, Array]:
    """Boolean masks [B, 1, 1, T, S] for full and sliding-window layers.

    Args:
      q_slots: [T] sequence slot of each query (cache index, not the RoPE position).
      k_slots: [S] slot of each key.
      k_valid: [B, S] True where the key is a real (non-padding, written) token.
      window: sliding-window size, or None.
    """
    causal = k_slots[None, :] <= q_slots[:, None]  # [T, S]
    full = causal[None] & k_valid[:, None, :]
    if window is None:
        sliding = full
    else:
        sliding = full & (q_slots[:, None] - k_slots[None, :] < window)[None]
    return full[:, None, None], sliding[:, None, None]


def dense(x: Array, w: Array, in_dims: int = 1) -> Array:
    """Contracts the last `in_dims` axes of x with the first `in_dims` axes of w.

    Written as one 2-D matmul over flattened leading axes: XLA:CPU runs the weight gradient
    of a 3-D einsum (which contracts two batch axes) several times slower than this.
    """
    lead, contract = x.shape[: x.ndim - in_dims], x.shape[x.ndim - in_dims :]
    out = w.shape[in_dims:]
    y = x.reshape(-1, math.prod(contract)) @ w.reshape(math.prod(contract), -1)
    return y.reshape(*lead, *out)


def project_q(lp, config: ModelConfig, x: Array, cos: Array, sin: Array) -> Array:
    """Queries [B, T, H, K] of x [B, T, D] for one layer's slice of LayerParams."""
    q = dense(x, lp.wq)  # btd,dhk->bthk
    if lp.bq is not None:
        q = q + lp.bq
    if lp.q_norm is not None:
        q = norm(lp.q_norm, q, config)
    if config.positional == "rope":
        q = apply_rope(q, cos, sin)
    return q


def project_kv(lp, config: ModelConfig, x: Array, cos: Array, sin: Array) -> tuple[Array, Array]:
    """Keys and values [B, G, T, K] (head-major, the KV-cache layout) of x [B, T, D]."""
    k = dense(x, lp.wk)  # btd,dgk->btgk
    v = dense(x, lp.wv)
    if lp.bk is not None:
        k, v = k + lp.bk, v + lp.bv
    if lp.k_norm is not None:
        k = norm(lp.k_norm, k, config)
    if config.positional == "rope":
        k = apply_rope(k, cos, sin)
    return k.swapaxes(1, 2), v.swapaxes(1, 2)


def attend(lp, config: ModelConfig, q: Array, k: Array, v: Array, mask: Array) -> Array:
    """Grouped-query attention and output projection; returns the write [B, T, D].

    Args:
      lp: this layer's parameters (output projection).
      config: the model config.
      q: queries [B, T, H, K].
      k: keys [B, G, S, K], head-major (the KV-cache layout: each (b, g) block of keys is
        contiguous, so cached decoding reads the cache without a transposing copy).
      v: values [B, G, S, K].
      mask: boolean, broadcastable to [B, G, R, T, S].
    """
    b, t, h, kd = q.shape
    g = k.shape[1]
    q = q.reshape(b, t, g, h // g, kd)
    scores = jnp.einsum("btgrk,bgsk->bgrts", q, k, preferred_element_type=jnp.float32)
    scores = scores * config.query_scale
    if config.attn_softcap is not None:
        scores = jnp.tanh(scores / config.attn_softcap) * config.attn_softcap
    scores = jnp.where(mask, scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bgrts,bgsk->btgrk", probs, v).reshape(b, t, h, kd)
    out = dense(out, lp.wo, in_dims=2)  # bthk,hkd->btd
    if lp.bo is not None:
        out = out + lp.bo
    return out


def activation(config: ModelConfig, x: Array) -> Array:
    if config.activation == "silu":
        return jax.nn.silu(x)
    if config.activation == "gelu_tanh":
        return jax.nn.gelu(x, approximate=True)
    if config.activation == "gelu":
        return jax.nn.gelu(x, approximate=False)
    return jax.nn.relu(x)


def mlp(lp, config: ModelConfig, x: Array) -> Array:
    """Gated (SwiGLU/GeGLU) or plain MLP; returns the write [B, T, D]."""
    up = dense(x, lp.w_up)  # btd,df->btf
    if lp.b_up is not None:
        up = up + lp.b_up
    if lp.w_gate is not None:
        gate = dense(x, lp.w_gate)
        if lp.b_gate is not None:
            gate = gate + lp.b_gate
        hidden = activation(config, gate) * up
    else:
        hidden = activation(config, up)
    out = dense(hidden, lp.w_down)  # btf,fd->btd
    if lp.b_down is not None:
        out = out + lp.b_down
    return out
