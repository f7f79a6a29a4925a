"""Real sweeps: two arms of random-direction grids as an exchangeable null for Δ_steer.

`random_arm_calibration` takes the grids of a real sweep (`sweep_calibration` reads them from a
finished sweep directory) and measures what the request-bootstrap interval conditions on.

Dimension legend: Q random-direction grids, G cells per grid, N prompts, Mn neutral prompts,
U requests.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emojax import stats
from emojax.metrics import incremental


def random_arm_calibration(
    fail_random: np.ndarray,
    kl_random: np.ndarray,
    request: np.ndarray,
    kappa: float,
    *,
    num_requests: int,
    arm_size: int = 3,
    num_pairs: int = 20,
    num_draws: int = 400,
    seed: int = 0,
    zero: int = 0,
    **delta_kwargs: Any,
) -> dict[str, Any]:
    """Δ_steer between two arms of real random-direction grids: what the interval conditions on.

    Two disjoint sets of ``arm_size`` norm-matched random directions are exchangeable *over
    directions*, so across pairs Δ_steer is centred on 0. For one drawn pair it is not 0:
    particular directions steer more or less well. The request bootstrap is conditional on
    the vectors (it resamples requests, not directions), so its interval covers 0 for such a
    pair only when the two arms happen to steer alike. The share of pairs that look
    "significant" by the interval alone measures how much directions differ beyond request
    noise, and is the reason every Δ is reported with its random-direction null (p-value):
    value beyond an arbitrary direction is read there, not from the interval. Pairs share
    requests, so the rates are correlated.

    Args:
      fail_random: [Q, G, N] real 0/1 failures of each random direction's grid (one type).
      kl_random: [Q, G, Mn] neutral KL per grid cell.
      request: [N] request ids.
      kappa: KL budget.
      num_requests: U.
      arm_size: grids per arm (the number of emotions).
      num_pairs: arm pairs drawn.
      num_draws: bootstrap draws per pair.
      seed: seed.
      zero: the unsteered cell within each grid.
      **delta_kwargs: passed to `incremental.delta_steer` (num_folds, num_splits, ...).

    Returns:
      ``coverage_zero``, ``significant`` (lo > 0), ``negative`` (hi < 0), ``mean`` (of the
      estimates over pairs; ~0 by exchangeability), ``estimate`` [pairs].
    """
    fail_random = np.asarray(fail_random, np.float64)
    kl_random = np.asarray(kl_random, np.float64)
    q = fail_random.shape[0]
    if q < 2 * arm_size:
        raise ValueError(f"need >= {2 * arm_size} random grids for two arms, got {q}")
    rng = np.random.default_rng((seed, 17))
    weights = stats.request_draws(num_requests, num_draws, seed)
    rows = []
    for i in range(num_pairs):
        pick = rng.choice(q, 2 * arm_size, replace=False)
        arm_a, arm_b = pick[:arm_size], pick[arm_size:]
        flat = lambda x, arm: x[arm].reshape(-1, x.shape[-1])
        out = incremental.delta_steer(
            flat(fail_random, arm_a), flat(fail_random, arm_b), flat(kl_random, arm_a),
            flat(kl_random, arm_b), request, kappa, num_requests=num_requests,
            weights=weights, seed=seed + i, zero_controls=zero, zero_emotion=zero,
            **delta_kwargs,
        )  # fmt: skip
        rows.append((out["estimate"], out["lo"], out["hi"]))
    est, lo, hi = np.array(rows).T
    return {
        "num_pairs": num_pairs,
        "coverage_zero": float(np.mean((lo <= 0) & (0 <= hi))),
        "significant": float(np.mean(lo > 0)),
        "negative": float(np.mean(hi < 0)),
        "mean": float(np.mean(est)),
        "estimate": est,
    }


def sweep_calibration(
    sweep_dir: str, kappa: float, *, num_pairs: int = 50, num_draws: int = 200, seed: int = 0
) -> dict[str, Any]:
    """`random_arm_calibration` on a finished sweep's random-direction grids, per failure type.

    Args:
      sweep_dir: a sweep work directory (`points/<label>/sweep` of a break-point run).
      kappa: KL budget.
      num_pairs: arm pairs (the "seeds" of the study).
      num_draws: request draws per pair.
      seed: seed.

    Returns:
      {failure type: random_arm_calibration's result (estimates as a list)}.
    """
    from emojax import sweep

    res = sweep.SweepResults.load(sweep_dir)
    out = {}
    for ftype in sweep.FAILURE_TYPES:
        arms = sweep.joint_arms(res, 0, ftype)
        r = random_arm_calibration(
            arms.fail["random"], arms.kl["random"], arms.request, kappa,
            num_requests=arms.num_requests, num_pairs=num_pairs, num_draws=num_draws,
            seed=seed, zero=arms.zero["random"],
        )  # fmt: skip
        r["estimate"] = np.asarray(r["estimate"]).tolist()
        out[ftype] = r
    return out


def sweep_table(sweeps: dict[str, dict[str, dict[str, Any]]]) -> str:
    """`sweep_calibration` results per sweep directory as a Markdown table."""
    lines = [
        "| sweep | failure type | arm pairs | mean Δ | covers 0 | lo > 0 | hi < 0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for path, per_type in sweeps.items():
        for ftype, r in per_type.items():
            lines.append(
                f"| {path} | {ftype} | {r['num_pairs']} | {r['mean']:+.3f} "
                f"| {r['coverage_zero']:.2f} | {r['significant']:.2f} | {r['negative']:.2f} |"
            )
    return "\n".join(lines) + "\n"
