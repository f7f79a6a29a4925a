"""Disjoint request splits of an evaluation set: learning (the spike directions), estimate (what
the pipeline measures) and truth (the same estimator on many more requests).

Dimension legend: N prompts, U requests (the shared index space of the evaluation set).

Requests, not prompts, are split: every cue and framing variant of a request lands in one
split, and each kind (harmful / harmless / borderline) is split in the same proportions.
Request ids keep the evaluation set's index space, so request draws (`weights [R, U]`) still
pair across splits and axis points.

Sizes on the zoo (configs/zoo.py, test split): 150 requests per kind, each harmful request
shown under 4 cues x (plain + framed) = 8 prompts and each benign one under 4 cues, 2400
prompts in all. `DEFAULT_FRACTIONS` (0.2, 0.2, 0.6) gives 30 / 30 / 90 requests per kind: a
truth on 3x the estimate's requests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

SPLITS = ("learn", "estimate", "truth")
DEFAULT_FRACTIONS = (0.2, 0.2, 0.6)


@dataclasses.dataclass(frozen=True)
class RequestSplits:
    """Three disjoint request splits of one evaluation set (each an `EvalSet`).

    Attributes:
      learn: the spike directions are learned here (never estimated or scored).
      estimate: the pipeline's estimate.
      truth: the measured truth.
      requests: split name -> sorted request ids (in the evaluation set's index space).
    """

    learn: Any
    estimate: Any
    truth: Any
    requests: dict[str, np.ndarray]

    def sizes(self) -> dict[str, dict[str, int]]:
        """split -> kind -> number of requests."""
        out = {}
        for name in SPLITS:
            ev = getattr(self, name)
            kinds: dict[str, set] = {}
            for q, r in zip(ev.items, ev.request, strict=True):
                kinds.setdefault(q.kind, set()).add(int(r))
            out[name] = {k: len(v) for k, v in kinds.items()}
        return out


def _subset(evalset: Any, keep: np.ndarray) -> Any:
    """The prompts `keep` (bool [N]) of an EvalSet, same request index space and neutral set."""
    idx = np.flatnonzero(keep)
    cues = tuple(evalset.cues[i] for i in idx) if evalset.cues else ()
    return dataclasses.replace(
        evalset, items=tuple(evalset.items[i] for i in idx), request=evalset.request[idx],
        cues=cues,
    )  # fmt: skip


def split_requests(
    evalset: Any, seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> RequestSplits:
    """Splits an evaluation set's requests into learning / estimate / truth, kind by kind.

    Args:
      evalset: an `emojax.pipeline.EvalSet` (items with `.kind`, `request` [N], `cues`).
      seed: the split's seed (a different seed, a different split).
      fractions: shares of each kind's requests for learn, estimate, truth (sum to 1; the
        truth takes what rounding leaves).

    Returns:
      The `RequestSplits`.

    Raises:
      ValueError: fractions that are not three non-negative shares summing to 1, a request
        whose prompts have different kinds, or a kind too small to give every split a request.
    """
    f = np.asarray(fractions, np.float64)
    if f.shape != (3,) or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be 3 shares (learn, estimate, truth) summing to 1: {f}")
    request = np.asarray(evalset.request)
    kind_of: dict[int, str] = {}
    for q, r in zip(evalset.items, request, strict=True):
        if kind_of.setdefault(int(r), q.kind) != q.kind:
            raise ValueError(f"request {int(r)} has prompts of kinds {kind_of[int(r)]}, {q.kind}")
    rng = np.random.default_rng([int(seed), 31])
    assign = {}
    for kind in sorted(set(kind_of.values())):
        ids = np.array(sorted(r for r, k in kind_of.items() if k == kind))
        ids = ids[rng.permutation(len(ids))]
        n_learn, n_est = int(round(f[0] * len(ids))), int(round(f[1] * len(ids)))
        counts = np.array([n_learn, n_est, len(ids) - n_learn - n_est])
        if ((counts < 1) & (f > 0)).any() or counts[2] < 0:
            raise ValueError(f"{len(ids)} {kind} requests leave a split empty at {f}")
        for i, r in enumerate(ids):
            assign[int(r)] = 0 if i < n_learn else 1 if i < n_learn + n_est else 2
    which = np.array([assign[int(r)] for r in request])
    parts = [_subset(evalset, which == s) for s in range(3)]
    requests = {
        name: np.array(sorted(r for r, s in assign.items() if s == i))
        for i, name in enumerate(SPLITS)
    }
    return RequestSplits(*parts, requests=requests)
