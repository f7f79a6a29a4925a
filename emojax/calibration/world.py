"""The simulated requests of the calibration: their failures along an axis and what the
probes see, with Δ_mon's truth computed on a very large sample.

Dimension legend: U requests (of one failure type), N prompts (cue variants, 2–8 per
request), Fc control features (4: harm salience, caution, refusal, policy logit), Fe emotion
features (3).

**The latent model** of one failure type. Request u has control latents c_u ~ N(0, I), an
emotion latent m_u ~ N(0, 1) and a residual r_u ~ N(0, σ_r²), fixed along the axis (the
same requests at every point). At a point with monitoring coupling γ its propensity is
a_u = c_u·β + γ m_u + r_u. Prompt n of request u fails under intervention i when

    z = μ + a_u + c_n + b_i + e_iu + η_in > 0,

with c_n ~ N(0, σ_c²) the cue variant's own effect (shared by every intervention), b_i the
intervention's effect (0 unsteered), e_iu ~ N(0, σ_e²) the request's response to a steered
intervention (0 unsteered) and η_in ~ N(0, σ_η²). z is Gaussian, so an intervention's
failure rate over the population of requests is exactly Φ((μ + b_i) / s_i) with
s_i² = var(a) + σ_c² + σ_η² (+ σ_e² when steered); μ is set so that the unsteered rate is
the point's planted rate. The unsteered outcome of a prompt is one draw, shared by the
unsteered cell of every grid (greedy decoding of the same prompt by the same model).

**What the probes see** at a point: x_c = c_u + noise, x_e = x_c M + m_u + noise (noise
N(0, 0.5²) per prompt and point). Given x_c, x_e carries only m_u and noise, so with γ = 0
the emotion features add nothing to the controls: Δ_mon's truth is 0. With γ > 0 its truth
is the population AUROC of the logistic probe on x_c and x_e minus that on x_c, computed
by `true_mon` on a large sample of independent prompts (400,000 by default).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
from scipy import special

from emojax.calibration.monitor import fit_logistic, weighted_auroc

# Coefficients of the control latents in the failure propensity (|β|² = 1.35).
BETA = np.array([0.7, -0.5, 0.6, 0.5])
# How the emotion projections mix the controls (fixed: one emotion-vector geometry).
MIX = np.random.default_rng(20260).normal(0.0, 0.5, (4, 3))
FEATURE_NOISE = 0.5


@dataclasses.dataclass(frozen=True)
class Latents:
    """Standard deviations of the latent model (module docstring).

    Attributes:
      residual: σ_r, the request effect the probes cannot see.
      cue: σ_c, the prompt's (cue variant's) effect.
      response: σ_e, a request's own response to a steered intervention.
      noise: σ_η, per prompt and intervention.
    """

    residual: float = 0.8
    cue: float = 0.4
    response: float = 0.3
    noise: float = 0.3

    def scale(self, coupling: float, steered: bool) -> float:
        """s_i: the sd of z − μ − b_i."""
        var = BETA @ BETA + coupling**2 + self.residual**2 + self.cue**2 + self.noise**2
        return float(np.sqrt(var + (self.response**2 if steered else 0.0)))

    def base_logit(self, rate: float, coupling: float) -> float:
        """μ such that the unsteered failure rate is `rate`."""
        return float(self.scale(coupling, False) * special.ndtri(rate))


def rate(latents: Latents, mu: float, effect: Any, coupling: float, steered: bool) -> Any:
    """Population failure rate Φ((μ + b) / s) of interventions with effects `effect`."""
    return special.ndtr((mu + np.asarray(effect)) / latents.scale(coupling, steered))


@dataclasses.dataclass(frozen=True)
class Requests:
    """The requests of one failure type, fixed along the axis.

    Attributes:
      request: [N] request id of each prompt (0..U-1, local to the type).
      controls: [U, Fc] control latents c_u.
      emotion: [U] emotion latent m_u.
      residual: [U] r_u.
      cue: [N] c_n.
    """

    request: np.ndarray
    controls: np.ndarray
    emotion: np.ndarray
    residual: np.ndarray
    cue: np.ndarray

    @property
    def num_requests(self) -> int:
        return len(self.emotion)

    def propensity(self, coupling: float) -> np.ndarray:
        """[U] a_u = c_u·β + γ m_u + r_u."""
        return self.controls @ BETA + coupling * self.emotion + self.residual


def draw_requests(
    rng: np.random.Generator, num_requests: int, cues: tuple[int, int], latents: Latents
) -> Requests:
    """U requests with `cues` = (fewest, most) prompts each (uniform)."""
    counts = rng.integers(cues[0], cues[1] + 1, num_requests)
    request = np.repeat(np.arange(num_requests), counts)
    return Requests(
        request=request,
        controls=rng.normal(size=(num_requests, len(BETA))),
        emotion=rng.normal(size=num_requests),
        residual=rng.normal(0.0, latents.residual, num_requests),
        cue=rng.normal(0.0, latents.cue, len(request)),
    )


def unsteered(
    rng: np.random.Generator, req: Requests, latents: Latents, mu: float, coupling: float
) -> dict[str, np.ndarray]:
    """One point's unsteered pass: per prompt the latent without noise, the failure, features.

    Returns:
      ``mean`` [N] (μ + a_u + c_n, what every intervention adds its effect to), ``failure``
      [N] 0/1, ``x_controls`` [N, Fc], ``x_emotion`` [N, Fe].
    """
    n = len(req.request)
    mean = mu + req.propensity(coupling)[req.request] + req.cue
    failure = (mean + rng.normal(0.0, latents.noise, n) > 0).astype(np.float64)
    x_c = req.controls[req.request] + rng.normal(0.0, FEATURE_NOISE, (n, len(BETA)))
    x_e = x_c @ MIX + req.emotion[req.request, None] + rng.normal(0.0, FEATURE_NOISE, (n, 3))
    return {"mean": mean, "failure": failure, "x_controls": x_c, "x_emotion": x_e}


@functools.cache
def true_mon(latents: Latents, rate_: float, coupling: float, num: int = 400_000):
    """Δ_mon's truth at a point: population AUROCs of the logistic probes, on `num` prompts.

    Prompts are independent here (one per request): the population AUROC over prompts does
    not depend on how prompts cluster. Each probe is fitted (Newton to convergence, a
    negligible penalty) and scored on the same sample; at this size the fit's optimism is
    below 1e-4.

    Returns:
      ``absolute`` (AUROC full − controls), ``relative`` (that / (1 − AUROC controls)),
      ``auroc_controls``.
    """
    rng = np.random.default_rng([int(rate_ * 1e6), int(coupling * 1e3), 23])
    mu = latents.base_logit(rate_, coupling)
    req = draw_requests(rng, num, (1, 1), latents)
    data = unsteered(rng, req, latents, mu, coupling)
    y, ones = data["failure"], np.ones((1, num))
    auc = []
    for x in (data["x_controls"], np.hstack([data["x_controls"], data["x_emotion"]])):
        x = (x - x.mean(0)) / x.std(0)
        beta = fit_logistic(x, y, ones, 1e-6, iters=10)[0]
        auc.append(float(weighted_auroc((beta[0] + x @ beta[1:])[None], y, ones)[0]))
    delta = auc[1] - auc[0]
    return {"absolute": delta, "relative": delta / (1.0 - auc[0]), "auroc_controls": auc[0]}
