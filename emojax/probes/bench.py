"""Benchmark: every probe of an analysis in one jitted program against a scikit-learn loop.

Dimension letters: G probe groups (sets x layers), N prompts, P features, K folds,
R regularisation values.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emojax import stats
from emojax.probes.fit import _newton_logistic

Array = jax.Array


def bench_probes(
    *,
    num_prompts: int = 400,
    num_features: int = 8,
    num_layers: int = 12,
    num_sets: int = 2,
    num_folds: int = 5,
    l2_grid: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0),
    num_steps: int = 15,
    seed: int = 0,
) -> dict[str, Any]:
    """Times every (set, layer, fold, l2) probe in one jitted program against sklearn.

    Synthetic data with a planted linear signal; each probe is trained on K - 1 folds and
    scored (AUROC) on the held-out fold, by both implementations with matched penalties
    (``C = 1 / (l2 * N_train)``, sklearn's default lbfgs solver and tolerance).

    Returns:
      dict with ``num_probes``, ``jax_s`` (steady state), ``jax_compile_s`` (first call),
      ``sklearn_s``, ``speedup``, ``speedup_incl_compile``, ``max_auroc_diff`` (over probes),
      ``mean_auroc`` and ``mean_auroc_sklearn``.
    """
    from sklearn.linear_model import LogisticRegression  # test/bench-only dependency

    rs = np.random.default_rng(seed)
    g, n, p, k = num_sets * num_layers, num_prompts, num_features, num_folds
    # Every group sees a noisy linear image of one latent that drives the label.
    latent = rs.normal(size=n)
    beta = rs.normal(size=(g, p)) / np.sqrt(p)
    X = (rs.normal(size=(g, n, p)) + latent[None, :, None] * beta[:, None]).astype(np.float32)
    y = (rs.uniform(size=n) < 1 / (1 + np.exp(-2.0 * latent))).astype(np.float32)
    folds = np.arange(n) % k
    rs.shuffle(folds)
    train = (folds[None, :] != np.arange(k)[:, None]).astype(np.float32)  # [K, N]
    test = ~train.astype(bool)
    l2 = np.asarray(l2_grid, np.float32)

    @jax.jit
    def all_probes(X: Array, y: Array, train: Array, l2: Array) -> Array:
        def group(x: Array) -> Array:
            fit = lambda w, lam: _newton_logistic(x, y, w, lam, jnp.ones(p), num_steps)
            theta = jax.vmap(jax.vmap(fit, (None, 0)), (0, None))(train, l2)  # [K, R, P+1]
            logits = jnp.einsum("np,krp->krn", x, theta[..., :-1]) + theta[..., -1:]
            held_out = 1.0 - train[:, None, :]
            return jax.vmap(jax.vmap(lambda z, w: stats.auroc(z, y, w)))(
                logits, jnp.broadcast_to(held_out, logits.shape)
            )

        return jax.vmap(group)(X)  # [G, K, R]

    args = (jnp.asarray(X), jnp.asarray(y), jnp.asarray(train), jnp.asarray(l2))
    t0 = time.perf_counter()
    auroc_jax = np.asarray(all_probes(*args).block_until_ready())
    jax_compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    auroc_jax = np.asarray(all_probes(*args).block_until_ready())
    jax_s = time.perf_counter() - t0

    from sklearn.metrics import roc_auc_score

    auroc_sk = np.zeros_like(auroc_jax)
    t0 = time.perf_counter()
    for gi in range(g):
        for ki in range(k):
            tr = train[ki].astype(bool)
            for ri, lam in enumerate(l2):
                clf = LogisticRegression(C=1.0 / (float(lam) * tr.sum()))
                clf.fit(X[gi, tr], y[tr])
                auroc_sk[gi, ki, ri] = roc_auc_score(
                    y[test[ki]], clf.decision_function(X[gi, test[ki]])
                )
    sklearn_s = time.perf_counter() - t0
    return {
        "num_probes": int(g * k * len(l2)),
        "num_prompts": n,
        "num_features": p,
        "jax_s": jax_s,
        "jax_compile_s": jax_compile_s,
        "sklearn_s": sklearn_s,
        "speedup": sklearn_s / jax_s,
        "speedup_incl_compile": sklearn_s / jax_compile_s,
        "max_auroc_diff": float(np.max(np.abs(auroc_jax - auroc_sk))),
        "mean_auroc": float(auroc_jax.mean()),
        "mean_auroc_sklearn": float(auroc_sk.mean()),
    }
