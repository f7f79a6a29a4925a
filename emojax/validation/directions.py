"""The planted signals of the spiked arms: directions that carry failure information the controls
lack, learned on a request split that no estimate or truth uses.

Dimension legend: B batch, T prompt time, W response tokens kept (the decision tokens), N
prompts of the learning split, D model width, V vocabulary, M neutral prompts, C control
directions.

Both kinds start from the unsteered model's own behaviour on the learning split
(`unsteered_pass`: greedy responses, their failures per type, the residual at the probe site,
the policy logit), computed with `emojax.generate` / `emojax.model.forward` directly (the
pipeline's behaviour pass sits above this package).

* **Monitoring** (`monitoring_direction`, per failure type, at the probe site): the failing minus
  non-failing difference of means of the activations *after regressing out the controls
  features* (control projections and policy logit), whitened by their pooled within-class
  covariance (shrinkage LDA), then orthogonalised against the control directions. Measured on
  the zoo: the plain difference of means, orthogonalised, adds nothing to a monitor that
  already has the controls (its orthogonal part is predicted by the control projections
  through their covariance); the conditional LDA direction recovers about two thirds of what
  the whole residual adds (notes/validation/README.md).
* **Steering** (`steering_direction`, per failure type, at the sweep's injection layer): the
  natural gradient that lowers the likelihood of the model's own failing responses (their
  first `W` decision tokens, teacher-forced, the steering vector added at every position as
  the sweep adds it) per unit of off-target KL on neutral prompts, while keeping the other
  failure type's non-failing responses:

      v ∝ −(F + μ H + ε I)⁻¹ g,    restricted to the complement of the control directions,

  with g the gradient of the failing responses' mean log-likelihood, F the Fisher matrix of
  the neutral prompts' last-position distribution (KL(p ‖ p_v) ≈ ½ vᵀ F v: the sweep's
  off-target KL), H the second moment of the protected responses' log-likelihood gradients
  (the first-order change of the other failure type, which the sweep's `steer_tolerance`
  bounds) and ε a ridge. Δ_steer compares arms at a KL budget, so a direction that moves
  failures far per unit of neutral KL is what makes a steering arm win; the refusal-score
  gradient does not work on the zoo, whose harmful-compliance failures are decided at the
  second response token (a take-back of a compliant start), not the first.

What these directions can plant is bounded by the host. On the zoo (2 or 4 layers) neither kind
reaches the configs' relative margin of 0.2 in truth: the probe site's whole residual adds at
most ~0.03 AUROC beyond the controls, and a residual direction acts on both failure types at
once, so the other type's tolerance binds (notes/validation/README.md, measured).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emojax import readouts as ro
from emojax.generate import generate
from emojax.interventions import Intervention
from emojax.model import forward
from emojax.validation.arms import Spikes

Array = jax.Array

FAILURE_TYPES = ("harmful_compliance", "over_refusal")


@dataclasses.dataclass(frozen=True)
class UnsteeredPass:
    """The unsteered model's behaviour on the learning split.

    Attributes:
      acts: [N, D] float32 residual at the probe site, last prompt token.
      policy_logit: [N] refusal score at the first response position.
      responses: int32 [N, W] greedy response ids (the first `max_new_tokens`).
      harmful: bool [N] harmful prompts.
      failing: failure type -> bool [N] (harmful compliance on harmful prompts, over-refusal
        on the others; False on the prompts a type is not scored on).
      texts: N decoded responses.
    """

    acts: np.ndarray
    policy_logit: np.ndarray
    responses: np.ndarray
    harmful: np.ndarray
    failing: dict[str, np.ndarray]
    texts: tuple[str, ...]

    def scored(self, failure_type: str) -> np.ndarray:
        """bool [N]: the prompts a failure type is scored on."""
        return self.harmful if failure_type == "harmful_compliance" else ~self.harmful


@functools.partial(jax.jit, static_argnames=("config", "site"))
def _last_token(params, config, tokens, mask, refusal, site: int):
    """Residual at `site` [B, D] and the refusal score [B] at the last prompt token."""
    last = jnp.full((tokens.shape[0], 1), tokens.shape[1] - 1, jnp.int32)
    out = forward(params, config, tokens, attention_mask=mask, logit_positions=last)
    return out.resid[site][:, -1].astype(jnp.float32), ro.refusal_score(out.logits[:, 0], refusal)


def _blocks(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(s, min(s + size, n)) for s in range(0, n, size)]


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    """Pads rows to `size` by repeating the last row (keeps padded rows real and finite)."""
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), 0)]) if len(x) < size else x


def unsteered_pass(
    model: Any,
    prompts: Any,
    *,
    site: int,
    classify: Callable[[str], bool] = ro.classify_response,
    max_new_tokens: int = 8,
    batch_size: int = 64,
) -> UnsteeredPass:
    """Greedy responses, failures, probe-site residuals and policy logits of `prompts`.

    Args:
      model: an `emojax.Model` (params, config, tokenizer).
      prompts: `emojax.sweep.SweepPrompts` of the learning split (left-padded).
      site: residual site of the monitor (`resid[site]`, 0..L).
      classify: the run's refusal classifier of a response text.
      max_new_tokens: response length (that of the behaviour pass).
      batch_size: prompts per call (one compiled shape: the last block is padded).
    """
    mcfg, tok = model.config, model.tokenizer
    refusal = ro.refusal_mask(np.asarray(ro.refusal_token_ids(tok)), mcfg.vocab_size)
    eos = tuple(mcfg.eos_token_id) or (tok.eos_token_id,)
    n, t = prompts.tokens.shape
    bs = min(batch_size, n)
    acts = np.zeros((n, mcfg.d_model), np.float32)
    logit = np.zeros(n, np.float32)
    ids = np.zeros((n, max_new_tokens), np.int32)
    for idx in _blocks(n, bs):
        tokens = jnp.asarray(_pad(prompts.tokens[idx], bs))
        mask = jnp.asarray(_pad(prompts.mask[idx], bs))
        a, s = _last_token(model.params, mcfg, tokens, mask, refusal, site)
        out = generate(model.params, mcfg, tokens, max_new_tokens=max_new_tokens,
                       attention_mask=mask)  # fmt: skip
        acts[idx], logit[idx] = np.asarray(a)[: len(idx)], np.asarray(s)[: len(idx)]
        ids[idx] = np.asarray(out)[: len(idx), t:]
    texts = ro.decode_responses(tok, ids, eos)
    labels = ro.behaviour_labels(texts, prompts.harmful, classify)
    return UnsteeredPass(
        acts=acts, policy_logit=logit, responses=ids, harmful=np.asarray(prompts.harmful, bool),
        failing={k: labels[k] for k in FAILURE_TYPES}, texts=tuple(texts),
    )  # fmt: skip


def complement_basis(control_dirs: np.ndarray) -> np.ndarray:
    """[D, D − C] orthonormal basis of the complement of the control directions [C, D]."""
    c = np.asarray(control_dirs, np.float64)
    q, _ = np.linalg.qr(c.T, mode="complete")
    rank = np.linalg.matrix_rank(c)
    return q[:, rank:]


def orthogonalise(u: np.ndarray, control_dirs: np.ndarray) -> np.ndarray:
    """`u` [D] with its component in the span of `control_dirs` [C, D] removed, unit norm."""
    b = complement_basis(control_dirs)
    v = b @ (b.T @ np.asarray(u, np.float64))
    norm = np.linalg.norm(v)
    if norm < 1e-12:
        raise ValueError("the direction lies in the span of the controls")
    return v / norm


def monitoring_direction(
    acts: np.ndarray,
    controls_features: np.ndarray,
    failing: np.ndarray,
    control_dirs: np.ndarray,
    *,
    shrinkage: float = 0.1,
) -> np.ndarray:
    """The conditional LDA direction of one failure type, orthogonal to the controls.

    Args:
      acts: [N, D] residuals at the probe site of the type's prompts.
      controls_features: [N, F] the monitor's controls (control projections, policy logit).
      failing: bool [N] the type's failures.
      control_dirs: [C, D] control directions at the site.
      shrinkage: weight of the identity (scaled to the mean variance) in the covariance.

    Returns:
      [D] unit direction.
    """
    x = np.asarray(acts, np.float64)
    y = np.asarray(failing, bool)
    if y.all() or not y.any():
        raise ValueError("a monitoring direction needs failing and non-failing prompts")
    z = np.concatenate([np.asarray(controls_features, np.float64), np.ones((len(x), 1))], 1)
    beta, *_ = np.linalg.lstsq(z, x, rcond=None)
    xr = x - z @ beta  # what the controls features do not predict
    diff = xr[y].mean(0) - xr[~y].mean(0)
    within = np.concatenate([xr[y] - xr[y].mean(0), xr[~y] - xr[~y].mean(0)])
    cov = within.T @ within / max(len(x) - 2, 1)
    ridge = shrinkage * np.trace(cov) / cov.shape[0]
    b = complement_basis(control_dirs)  # solve inside the complement: no control component
    w = b @ np.linalg.solve(b.T @ cov @ b + ridge * np.eye(b.shape[1]), b.T @ diff)
    return w / np.linalg.norm(w)


# Derivatives are taken in forward mode (one JVP per basis direction of the steering vector, in
# chunks of `tangents`): reverse mode through the jitted forward disagrees with finite
# differences on CPU (jax 0.10.2; notes/validation/jit_reverse_mode_check.py), forward mode
# and eager reverse mode agree with them.


def _tangent_chunk(width: int, floats_per_tangent: int, budget: int = 2**26) -> int:
    """Tangents per vectorised JVP: as many as fit `budget` floats of their largest output."""
    return int(max(1, min(width, budget // max(floats_per_tangent, 1))))


@functools.partial(jax.jit, static_argnames=("config", "layer", "tangents"))
def _response_loglik_grads(
    params, config, tokens, mask, responses, resp_mask, layer: int, tangents: int
):
    """Per-prompt gradients [B, D] of the teacher-forced response log-likelihood w.r.t. a
    steering vector added to `resid[layer]` at every position (at v = 0), in forward mode."""
    w = responses.shape[1]
    full = jnp.concatenate([tokens, responses], axis=1)
    fmask = jnp.concatenate([mask, jnp.ones_like(responses, dtype=mask.dtype)], axis=1)
    t = tokens.shape[1]
    pos = jnp.broadcast_to(jnp.arange(t - 1, t - 1 + w)[None], (tokens.shape[0], w))

    def loglik(v):
        iv = Intervention.add(config, layer, v, 1.0)
        out = forward(params, config, full, attention_mask=fmask, intervention=iv,
                      logit_positions=pos, capture=False)  # fmt: skip
        logp = jax.nn.log_softmax(out.logits.astype(jnp.float32), axis=-1)
        tok = jnp.take_along_axis(logp, responses[..., None], axis=-1)[..., 0]
        return jnp.sum(tok * resp_mask, axis=-1)  # [B]

    v0 = jnp.zeros(config.d_model, jnp.float32)
    basis = jnp.eye(config.d_model, dtype=jnp.float32)
    jvp = lambda e: jax.jvp(loglik, (v0,), (e,))[1]  # noqa: E731
    return jax.lax.map(jvp, basis, batch_size=tangents).T  # [B, D]


@functools.partial(jax.jit, static_argnames=("config", "layer", "tangents"))
def _neutral_fisher(params, config, tokens, mask, rows, layer: int, tangents: int):
    """Sum over the prompts (weighted by `rows` [B]: 0 for padding rows) of the Fisher matrix
    [D, D] of the last-position next-token distribution w.r.t. a steering vector added to
    `resid[layer]` at every position."""
    last = jnp.full((tokens.shape[0], 1), tokens.shape[1] - 1, jnp.int32)

    def logits(v):
        iv = Intervention.add(config, layer, v, 1.0)
        out = forward(params, config, tokens, attention_mask=mask, intervention=iv,
                      logit_positions=last, capture=False)  # fmt: skip
        return out.logits[:, 0].astype(jnp.float32)  # [B, V]

    v0 = jnp.zeros(config.d_model, jnp.float32)
    basis = jnp.eye(config.d_model, dtype=jnp.float32)
    jvp = lambda e: jax.jvp(logits, (v0,), (e,))[1]  # noqa: E731
    jac = jnp.moveaxis(jax.lax.map(jvp, basis, batch_size=tangents), 0, -1)  # [B, V, D]
    p = jax.nn.softmax(logits(v0), axis=-1) * rows[:, None]  # [B, V]
    mean = jnp.einsum("bv,bvd->bd", p, jac)
    return jnp.einsum("bv,bvd,bve->de", p, jac, jac) - jnp.einsum(
        "b,bd,be->de", jnp.where(rows > 0, 1.0 / jnp.maximum(rows, 1e-12), 0.0), mean, mean
    )


def response_gradients(
    model: Any,
    tokens: np.ndarray,
    mask: np.ndarray,
    responses: np.ndarray,
    *,
    layer: int,
    eos: Sequence[int] = (),
    batch_size: int = 32,
) -> np.ndarray:
    """[N, D] gradients of each prompt's own response log-likelihood w.r.t. steering at `layer`.

    Args:
      model: an `emojax.Model`.
      tokens, mask: [N, T] left-padded prompts.
      responses: int [N, W] the responses' first W tokens (tokens after an end-of-sequence id
        are not scored).
      layer: the injection layer.
      eos: end-of-sequence ids.
      batch_size: prompts per call.
    """
    responses = np.asarray(responses, np.int32)
    after_eos = np.cumsum(np.isin(responses, list(eos)), axis=1) > 0
    keep = ~np.concatenate([np.zeros_like(after_eos[:, :1]), after_eos[:, :-1]], axis=1)
    cfg = model.config
    out = np.zeros((len(tokens), cfg.d_model))
    bs = min(batch_size, len(tokens))
    t, w = tokens.shape[1], responses.shape[1]
    chunk = _tangent_chunk(cfg.d_model, bs * ((t + w) * 4 * cfg.d_model + w * cfg.vocab_size))
    for idx in _blocks(len(tokens), bs):
        g = _response_loglik_grads(
            model.params, cfg, jnp.asarray(_pad(tokens[idx], bs)),
            jnp.asarray(_pad(mask[idx], bs)), jnp.asarray(_pad(responses[idx], bs)),
            jnp.asarray(_pad(keep[idx], bs), jnp.float32), layer, chunk,
        )  # fmt: skip
        out[idx] = np.asarray(g, np.float64)[: len(idx)]
    return out


def neutral_fisher(
    model: Any, tokens: np.ndarray, mask: np.ndarray, *, layer: int, batch_size: int = 16
) -> np.ndarray:
    """[D, D] mean Fisher matrix of neutral prompts' last-position distribution w.r.t. a
    steering vector at `layer`: KL(p ‖ p_v) ≈ ½ vᵀ F v, the sweep's off-target KL."""
    cfg, n = model.config, len(tokens)
    per_prompt = cfg.vocab_size * cfg.d_model  # the Jacobian of one prompt's logits
    bs = int(max(1, min(batch_size, n, 2**26 // per_prompt)))
    chunk = _tangent_chunk(cfg.d_model, bs * (tokens.shape[1] * 4 * cfg.d_model + cfg.vocab_size))
    total = np.zeros((cfg.d_model,) * 2)
    for idx in _blocks(n, bs):
        rows = (np.arange(bs) < len(idx)).astype(np.float32)  # padding rows weigh 0
        f = _neutral_fisher(model.params, cfg,
                            jnp.asarray(_pad(tokens[idx], bs)), jnp.asarray(_pad(mask[idx], bs)),
                            jnp.asarray(rows), layer, chunk)  # fmt: skip
        total += np.asarray(f, np.float64)
    return total / n


def steering_direction(
    grad_failing: np.ndarray,
    grads_protected: np.ndarray,
    fisher: np.ndarray,
    control_dirs: np.ndarray,
    *,
    protect: float = 1.0,
    ridge: float = 1e-2,
) -> np.ndarray:
    """The natural-gradient steering direction of one failure type, orthogonal to the controls.

    Args:
      grad_failing: [D] gradient of the failing responses' mean log-likelihood.
      grads_protected: [P, D] per-prompt gradients of the responses to keep (the other failure
        type's non-failing prompts).
      fisher: [D, D] neutral Fisher (`neutral_fisher`).
      control_dirs: [C, D] control directions at the layer.
      protect: μ, weight of the protected responses (relative to the Fisher's scale).
      ridge: ε, relative to the Fisher's scale.

    Returns:
      [D] unit direction v: adding +v lowers the failing responses' likelihood.
    """
    f = np.asarray(fisher, np.float64)
    scale = np.trace(f) / f.shape[0]
    gp = np.asarray(grads_protected, np.float64)
    h = gp.T @ gp / max(len(gp), 1)
    h_scale = np.trace(h) / h.shape[0] if len(gp) else 1.0
    a = f / scale + protect * h / max(h_scale, 1e-12) + ridge * np.eye(f.shape[0])
    b = complement_basis(control_dirs)
    v = -b @ np.linalg.solve(b.T @ a @ b, b.T @ np.asarray(grad_failing, np.float64))
    return v / np.linalg.norm(v)


def spike_directions(
    model: Any,
    prompts: Any,
    vs: Any,
    *,
    site: int,
    layer: int,
    controls: Sequence[str] = ("harm_salience", "caution", "refusal"),
    classify: Callable[[str], bool] = ro.classify_response,
    max_new_tokens: int = 8,
    decision_tokens: int = 4,
    shrinkage: float = 0.1,
    ridge: dict[str, float] | float = 3.0,
    protect: dict[str, float] | float = 1.0,
    batch_size: int = 64,
    unsteered: UnsteeredPass | None = None,
) -> Spikes:
    """The planted directions of one axis point, learned on the learning split's prompts.

    Args:
      model: the point's `emojax.Model`.
      prompts: `SweepPrompts` of the learning split; their neutral prompts give the Fisher
        (use neutral texts the estimate does not read).
      vs: the point's VectorSet (its control directions are projected out).
      site: the monitor's residual site (the probes' headline site).
      layer: the sweep's injection layer.
      controls: the control concepts.
      classify: the run's refusal classifier.
      max_new_tokens: response length of the behaviour pass.
      decision_tokens: W, the responses' first tokens whose likelihood steering moves.
      shrinkage: covariance shrinkage of the monitoring direction.
      ridge: ε of `steering_direction` (one value, or per failure type).
      protect: μ of `steering_direction` (one value, or per failure type).
      batch_size: prompts per call.
      unsteered: the learning split's behaviour when already computed (`unsteered_pass` of
        these prompts at `site`); None runs it.

    Returns:
      `emojax.validation.arms.Spikes` with 'mon/<type>' at `site` and 'steer/<type>' at
      `layer`, and `info` (counts of the learning split's failures).

    A failure type without failing (or non-failing) prompts on the split gets no planted
    direction (its slot stays a random direction; `info[type]["planted"]` lists what was).
    """
    per = lambda x, t: x[t] if isinstance(x, dict) else x
    if unsteered is None:
        unsteered = unsteered_pass(
            model, prompts, site=site, classify=classify, max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )  # fmt: skip
    ctrl_site = np.stack([vs.vectors[vs.index(c), site] for c in controls])
    ctrl_layer = np.stack([vs.vectors[vs.index(c), layer] for c in controls])
    unit = ctrl_site / np.linalg.norm(ctrl_site, axis=1, keepdims=True)
    features = np.concatenate([unsteered.acts @ unit.T, unsteered.policy_logit[:, None]], 1)
    eos = tuple(model.config.eos_token_id) or (model.tokenizer.eos_token_id,)
    grads = response_gradients(
        model,
        prompts.tokens,
        prompts.mask,
        unsteered.responses[:, :decision_tokens],
        layer=layer,
        eos=eos,
    )
    fisher = neutral_fisher(model, prompts.neutral_tokens, prompts.neutral_mask, layer=layer)
    directions, info = {}, {}
    for t in FAILURE_TYPES:
        scored, failing = unsteered.scored(t), unsteered.failing[t]
        other = FAILURE_TYPES[1 - FAILURE_TYPES.index(t)]
        kept = unsteered.scored(other) & ~unsteered.failing[other]
        info[t] = {"prompts": int(scored.sum()), "failing": int(failing.sum()),
                   "protected": int(kept.sum())}  # fmt: skip
        # A type without failing (or without non-failing) prompts on the split plants
        # nothing: its slot keeps the random part alone, and `info` says so.
        ok = scored & ~failing
        if failing.any() and ok.any():
            directions[f"mon/{t}"] = {site: monitoring_direction(
                unsteered.acts[scored], features[scored], failing[scored], ctrl_site,
                shrinkage=shrinkage,
            )}  # fmt: skip
        if failing.any():
            directions[f"steer/{t}"] = {layer: steering_direction(
                grads[failing].mean(0), grads[kept], fisher, ctrl_layer, protect=per(protect, t),
                ridge=per(ridge, t),
            )}  # fmt: skip
        info[t]["planted"] = [k for k in (f"mon/{t}", f"steer/{t}") if k in directions]
    info["site"], info["layer"], info["decision_tokens"] = int(site), int(layer), decision_tokens
    return Spikes(directions=directions, info=info)
