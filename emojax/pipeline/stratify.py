"""Which requests the sweep steers: stratified by their unsteered outcome, reweighted to the
point's population (DESIGN.md §4, "Sampling and power").

Dimension legend: N prompts, U requests, R bootstrap draws.

A failure-rate reduction is made on the requests that fail, so steering a random subset
wastes most of the budget where failures are rare. At each axis point the unsteered
behaviour pass (every evaluation request, every cue) tells each request's outcome; for each
failure type the sweep steers ``failing`` requests that fail unsteered and ``ok`` requests
that do not (both matter: steering can also break a request that did not fail), every cue
variant of a chosen request as one cluster. Each chosen request carries the weight
``population of its stratum / sample of its stratum``, so every rate the sweep reports is the
point's population rate. In a bootstrap draw with request multiplicities m_u the weights
are recomputed from the draw (``Σ_pop m / Σ_sample m`` per stratum), so the interval carries
the uncertainty of the strata's sizes too.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from emojax.pipeline.evalset import FAILURE_TYPES, TYPE_KINDS, EvalSet
from emojax.stats import stratum_weights


@dataclasses.dataclass(frozen=True)
class SteeredSample:
    """The steered requests of one axis point and their population weights.

    Attributes:
      evalset: the steered prompts (the chosen requests under the sweep's cues).
      request_weights: [U] full-data weight of every request (0 where not steered).
      draw_weights: [R, U] effective weights in each draw (multiplicity x stratum weight).
      chosen: [U] bool, the request is steered.
      failing: [U] bool, the request fails unsteered (on its sweep-cue prompts).
      strata: failure type -> {"failing": [sample, population], "ok": [...]} request counts.
    """

    evalset: EvalSet
    request_weights: np.ndarray
    draw_weights: np.ndarray
    chosen: np.ndarray
    failing: np.ndarray
    strata: dict[str, dict[str, list[int]]]


def request_outcomes(
    evalset: EvalSet, labels: dict[str, np.ndarray], cues: tuple[str, ...] | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per failure type: which requests are in its population and which of them fail.

    Args:
      evalset: the evaluation set the labels were read on (N prompts).
      labels: failure type -> [N] 0/1 unsteered failures (`unsteered_behaviour`).
      cues: the sweep's cues (None: every cue); only those prompts decide a request's outcome.

    Returns:
      (present, failing): failure type -> [U] bool.
    """
    kinds = np.array([q.kind for q in evalset.items])
    keep = np.ones(len(kinds), bool)
    if cues is not None:
        keep &= np.isin(np.asarray(evalset.cues), cues)
    present, failing = {}, {}
    for t in FAILURE_TYPES:
        sel = keep & np.isin(kinds, TYPE_KINDS[t])
        present[t] = np.zeros(evalset.num_requests, bool)
        present[t][evalset.request[sel]] = True
        failing[t] = np.zeros(evalset.num_requests, bool)
        failing[t][evalset.request[sel & (np.asarray(labels[t]) > 0.5)]] = True
    return present, failing


def steered_sample(
    evalset: EvalSet,
    labels: dict[str, np.ndarray],
    draws: np.ndarray,
    *,
    failing: int,
    ok: int,
    cues: tuple[str, ...] | None = None,
    seed: int = 0,
) -> SteeredSample:
    """Chooses the steered requests of each failure type, stratified by unsteered outcome.

    Args:
      evalset: every evaluation prompt of the point (all cues).
      labels: failure type -> [N] unsteered 0/1 failures on `evalset`.
      draws: [R, U] the shared request multiplicities.
      failing: failing requests steered per failure type (all when fewer fail; 0 = all).
      ok: non-failing requests steered per failure type (0 = all).
      cues: the cues the sweep steers (None: all).
      seed: the order in which requests of a stratum are taken (the same at every point).

    Returns:
      The `SteeredSample`.
    """
    present, fails = request_outcomes(evalset, labels, cues)
    u = evalset.num_requests
    order = np.random.default_rng([seed, 11]).permutation(u)
    chosen = np.zeros(u, bool)
    full = np.zeros(u)
    draw_w = np.zeros((len(draws), u))
    any_failing = np.zeros(u, bool)
    strata = {}
    for t in FAILURE_TYPES:
        strata[t] = {}
        for name, pop, n in (("failing", present[t] & fails[t], failing),
                             ("ok", present[t] & ~fails[t], ok)):  # fmt: skip
            ids = order[pop[order]]
            take = np.zeros(u, bool)
            take[ids if n <= 0 else ids[:n]] = True
            full += stratum_weights(np.ones(u), pop, take)
            draw_w += stratum_weights(draws, pop, take)
            chosen |= take
            strata[t][name] = [int(take.sum()), int(pop.sum())]
        any_failing |= fails[t] & present[t]
    in_cues = np.ones(len(evalset.items), bool) if cues is None else np.isin(evalset.cues, cues)
    keep = np.flatnonzero(chosen[evalset.request] & in_cues)
    sub = EvalSet(
        tuple(evalset.items[i] for i in keep), evalset.request[keep], evalset.num_requests,
        evalset.neutral, tuple(evalset.cues[i] for i in keep) if evalset.cues else (),
    )  # fmt: skip
    return SteeredSample(sub, full, draw_w, chosen, any_failing, strata)
