"""Tests for emojax.probes: agreement with scikit-learn, and the behaviour of delta_mon."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from emojax import probes, stats


def _data(seed: int, n: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.default_rng(seed)
    X = rs.normal(size=(n, p)).astype(np.float32) * rs.uniform(0.5, 2.0, size=p)
    logit = X @ rs.normal(size=p) * 0.7 + 0.3
    y = (rs.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return X.astype(np.float32), y


def _sklearn(X, y, l2, sample_weight=None) -> LogisticRegression:
    n_eff = len(y) if sample_weight is None else sample_weight.sum()
    clf = LogisticRegression(C=1.0 / (l2 * n_eff), tol=1e-10, max_iter=10_000)
    return clf.fit(X, y, sample_weight=sample_weight)


def test_fit_logistic_matches_sklearn() -> None:
    X, y = _data(0, 150, 6)
    w = np.random.default_rng(1).integers(0, 3, size=150).astype(np.float32)
    fit = jax.jit(jax.vmap(probes.fit_logistic, (None, None, 0, None)))
    for weights in (None, w):
        got = fit(X, y, jnp.array([1e-3, 1e-1]), weights)
        for i, l2 in enumerate((1e-3, 1e-1)):
            ref = _sklearn(X, y, l2, weights)
            np.testing.assert_allclose(got.weights[i], ref.coef_[0], atol=1e-3, rtol=2e-3)
            assert float(got.bias[i]) == pytest.approx(ref.intercept_[0], abs=1e-3)
    # A masked column gets weight 0 and leaves the others as if it were absent.
    masked = probes.fit_logistic(X, y, 1e-2, mask=jnp.array([1, 1, 1, 1, 1, 0.0]))
    assert float(masked.weights[5]) == 0.0
    np.testing.assert_allclose(masked.weights[:5], _sklearn(X[:, :5], y, 1e-2).coef_[0], atol=2e-4)


def test_fit_logistic_wide_matches_sklearn() -> None:
    X, y = _data(2, 40, 120)  # P > N: solved in the row space of X
    got = probes.fit_logistic(X, y, 0.05)
    ref = _sklearn(X, y, 0.05)
    np.testing.assert_allclose(got.weights, ref.coef_[0], atol=2e-4)
    logits = probes.predict_logits(got, X)
    np.testing.assert_allclose(logits, ref.decision_function(X), rtol=2e-3, atol=2e-3)


def _nested_cv_sklearn(X, y, folds, l2_grid):
    """Reference: the nested CV of probes.cross_validate, one sklearn fit at a time."""
    k = folds.max() + 1
    oof, chosen = np.zeros(len(y)), []
    for outer in range(k):
        losses = []
        for l2 in l2_grid:
            nll, count = 0.0, 0
            for inner in range(k):
                if inner == outer:
                    continue
                tr = (folds != outer) & (folds != inner)
                va = folds == inner
                z = _sklearn(X[tr], y[tr], l2).decision_function(X[va])
                nll += np.sum(np.logaddexp(0, z) - y[va] * z)
                count += va.sum()
            losses.append(nll / count)
        best = l2_grid[int(np.argmin(losses))]
        chosen.append(best)
        tr = folds != outer
        oof[~tr] = _sklearn(X[tr], y[tr], best).decision_function(X[~tr])
    return oof, np.array(chosen)


def test_nested_cross_validation_matches_sklearn() -> None:
    X, y = _data(3, 160, 5)
    folds = np.asarray(probes.stratified_folds(jax.random.key(0), y, 4))
    assert np.ptp(np.bincount(folds)) <= 2 and np.ptp(np.bincount(folds[y == 1])) <= 1
    l2_grid = np.array([1e-3, 3e-2, 1.0], np.float32)
    cv = jax.jit(probes.cross_validate, static_argnames=("num_folds",))(
        X[None], jnp.ones((1, 5)), y, folds, l2_grid, num_folds=4
    )
    oof_ref, chosen_ref = _nested_cv_sklearn(X, y, folds, l2_grid)
    np.testing.assert_allclose(cv.chosen_l2[0], chosen_ref)
    np.testing.assert_allclose(cv.oof_logits[0], oof_ref, atol=2e-3)
    for k in range(4):  # fold-wise and pooled out-of-fold AUROC
        f = folds == k
        got = float(stats.auroc(cv.oof_logits[0][f], y[f]))
        assert got == pytest.approx(roc_auc_score(y[f], oof_ref[f]), abs=0.005)
    assert float(stats.auroc(cv.oof_logits[0], y)) == pytest.approx(
        roc_auc_score(y, oof_ref), abs=0.005
    )
    # The all-prompt fit behind the likelihood-ratio test is maximum likelihood.
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(X, y)
    z = ref.decision_function(X)
    deviance = 2 * np.sum(np.logaddexp(0, z) - y * z)
    assert float(cv.full_deviance[0]) == pytest.approx(deviance, rel=1e-3)
    # The standalone likelihood-ratio test: deviance difference of nested models.
    small = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(X[:, :3], y)
    z_small = small.decision_function(X[:, :3])
    ref_stat = 2 * np.sum(np.logaddexp(0, z_small) - y * z_small) - deviance
    stat, df, p = probes.likelihood_ratio_test(X[:, :3], X, y)
    assert float(stat) == pytest.approx(ref_stat, rel=1e-2, abs=1e-2) and float(df) == 2.0
    assert float(p) == pytest.approx(float(stats.chi2_sf(ref_stat, 2)), abs=1e-3)


def _synthetic_monitor(seed: jax.Array, signal: jax.Array) -> probes.MonitorArrays:
    """Controls carry signal; the one 'emotion' column carries `signal` extra (or none)."""
    n = 120
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    controls = jax.random.normal(k1, (n, 4))
    emotion = jax.random.normal(k2, (n, 1))
    logit = controls @ jnp.array([1.0, -0.5, 0.5, 0.0]) + signal * emotion[:, 0]
    y = (jax.random.uniform(k3, (n,)) < jax.nn.sigmoid(logit)).astype(jnp.float32)
    x = jnp.stack([jnp.pad(controls, ((0, 0), (0, 1))), jnp.concatenate([controls, emotion], 1)])
    mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1.0]])
    return probes.monitor_arrays.__wrapped__(
        x[:, None], mask, y, k4, jnp.array([1e-2, 1.0]), num_folds=3, num_bootstrap=200,
        num_refit_bootstrap=20, num_steps=8, batch_size=2,
    )  # fmt: skip


def test_delta_mon_null_coverage_and_planted_signal() -> None:
    num_null, num_signal = 100, 10
    seeds = jnp.arange(num_null + num_signal)
    signal = jnp.concatenate([jnp.zeros(num_null), jnp.full(num_signal, 2.0)])
    out = jax.jit(jax.vmap(_synthetic_monitor))(seeds, signal)
    delta = jax.tree.map(lambda x: np.asarray(x)[:, 0], out.delta_mon)  # layer 0
    covers = np.asarray(stats.Interval(*delta).covers(0.0))
    assert covers[:num_null].mean() >= 0.9
    assert not covers[num_null:].any() and (delta.lo[num_null:] > 0).all()
    p = np.asarray(out.lrt_p)[:, 0]
    assert (p[:num_null] < 0.05).mean() <= 0.15 and (p[num_null:] < 1e-3).all()
    assert np.asarray(out.lrt_df)[0] == 1.0
    auroc = np.asarray(out.auroc.estimate)[:, :, 0]  # [seed, set]
    assert (auroc[num_null:, 1] > auroc[num_null:, 0]).all()
    assert np.asarray(out.oof_logits).shape == (num_null + num_signal, 2, 1, 120)
    assert np.asarray(out.delta_mon_samples).shape == (num_null + num_signal, 1, 20)
    for field in ("tpr_at_fpr", "ece", "brier", "log_loss"):
        assert np.isfinite(np.asarray(getattr(out, field))).all()
    # Tables of one data set.
    result = probes.MonitorResult(
        ("controls", "controls+emotion"), jax.tree.map(lambda x: x[0], out)
    )
    rows = result.layer_rows()
    assert len(rows) == 1 and rows[0]["lrt_df"] == 1.0
    assert rows[0]["delta_mon_lo"] <= rows[0]["delta_mon"] <= rows[0]["delta_mon_hi"]
    assert rows[0]["delta_mon_refit_lo"] == rows[0]["delta_mon_lo"]
    assert np.isfinite(rows[0]["delta_mon_oof_lo"]) and result.best_layer() == 0


def test_feature_sets_and_monitor_tables() -> None:
    rs = np.random.default_rng(7)
    n, num_layers, d = 90, 2, 16
    acts = rs.normal(size=(n, num_layers, d)).astype(np.float32)
    names = (*probes.CONTROLS, *probes.EMOTIONS)
    directions = {k: rs.normal(size=(num_layers, d)).astype(np.float32) for k in names}
    policy = rs.normal(size=n).astype(np.float32)
    fs = probes.build_feature_sets(acts, directions, policy, residual_dims=8)
    assert fs.names == probes.FEATURE_SET_NAMES
    assert fs.features.shape == (3, num_layers, n, 9)
    np.testing.assert_array_equal(fs.mask.sum(1), [4, 7, 9])
    assert fs.columns[1] == (*probes.CONTROLS, probes.POLICY_LOGIT, *probes.EMOTIONS)
    unit = directions["concern"][1] / np.linalg.norm(directions["concern"][1])
    proj = acts[:, 1] @ unit
    np.testing.assert_allclose(
        fs.features[1, 1, :, 4], (proj - proj.mean()) / proj.std(), atol=1e-4
    )
    # A column that is constant up to float round-off carries nothing (not z-scored noise).
    flat = {k: np.full((n, num_layers), 3.0, np.float32) for k in names}
    flat["caution"] = flat["caution"] * (1 + 1e-7 * rs.normal(size=(n, num_layers)))
    fs_flat = probes.feature_sets_from_projections(flat, policy, residual=None)
    np.testing.assert_array_equal(fs_flat.features[1, :, :, :3], 0.0)
    with pytest.raises(KeyError, match="self_doubt"):
        probes.build_feature_sets(acts, {k: directions[k] for k in names[:-1]}, policy)


def test_finetune_shift() -> None:
    rs = np.random.default_rng(8)
    n, num_layers, d = 200, 3, 8
    base = rs.normal(size=(n, num_layers, d)).astype(np.float32)
    directions = {"concern": rs.normal(size=(num_layers, d)), "caution": np.eye(num_layers, d)}
    unit = directions["concern"] / np.linalg.norm(directions["concern"], axis=-1, keepdims=True)
    tuned = base + 0.3 * unit[None] + 0.05 * rs.normal(size=base.shape)
    shift = probes.finetune_shift(base, tuned, directions, jax.random.key(0), num=200)
    concern = shift["concern"]
    assert concern.estimate.shape == (num_layers,)
    assert np.all(np.asarray(concern.excludes(0.0)))
    np.testing.assert_allclose(concern.estimate, 0.3, atol=0.02)
    assert np.all(np.asarray(concern.hi - concern.lo) < 0.05)
    cos = np.einsum("ld,ld->l", unit, np.eye(num_layers, d))
    np.testing.assert_allclose(shift["caution"].estimate, 0.3 * cos, atol=0.02)


def test_bench_probes_small() -> None:
    out = probes.bench_probes(num_prompts=100, num_features=4, num_layers=2, num_folds=3)
    assert out["num_probes"] == 2 * 2 * 3 * 4
    assert out["max_auroc_diff"] < 0.005 and out["speedup"] > 0


# ----------------------------------------------------------------------------------------
# Δ_mon per failure type: request-grouped CV, cluster bootstrap with refits, random null.
# Every test uses one shape (144 prompts: 48 requests x 3 cues, in an id space of 144 so the
# prompt-level comparison fits too; 60 draws) so each program compiles once (~6 s of CPU).

_DM = dict(num_folds=4, l2_grid=(1e-2, 1e-1, 1.0), num_draws=60, num_requests=144)
_DM_NULL = dict(num_folds=4, l2_grid=(1e-2, 1e-1, 1.0), num_null=16, arm_size=3, num_requests=144)


def _clustered(seed, signal=0.0, num_requests=48, cues=3, prompt_noise=0.3):
    """Requests x cues with request-level labels driven by control 0 (+ emotion 0 x signal).

    Every feature is a request-level value plus prompt noise; the 48 random-direction
    columns are drawn like the emotion columns, so under signal = 0 the two are exchangeable.
    """
    rs = np.random.default_rng(seed)
    request = np.repeat(np.arange(num_requests), cues)
    n = len(request)
    zc = rs.normal(size=(num_requests, 4))
    ze = rs.normal(size=(num_requests, 3 + 48))
    logit = 2.0 * zc[:, 0] - 0.5 + signal * ze[:, 0]
    y = (rs.uniform(size=num_requests) < 1 / (1 + np.exp(-logit)))[request].astype(np.float32)
    xc = (zc[request] + prompt_noise * rs.normal(size=(n, 4))).astype(np.float32)
    xz = (ze[request] + prompt_noise * rs.normal(size=(n, 51))).astype(np.float32)
    return xc, xz[:, :3], y, request, xz[:, 3:].T


def test_stratified_grouped_folds_never_split_a_request() -> None:
    rs = np.random.default_rng(0)
    u, k = 37, 5
    request = rs.integers(0, u - 3, size=150)  # ids u-3.. have no prompts
    y = (rs.uniform(size=u) < 0.3)[request] * (rs.uniform(size=150) < 0.8)
    folds_u = np.asarray(
        probes.stratified_grouped_folds(jax.random.key(1), y, request, k, num_requests=u)
    )
    folds = folds_u[request]
    for r in np.unique(request):
        assert len(np.unique(folds[request == r])) == 1
    present = np.unique(request)
    failing = np.unique(request[y == 1])
    assert np.ptp(np.bincount(folds_u[present], minlength=k)) <= 1
    assert np.ptp(np.bincount(folds_u[failing], minlength=k)) <= 1
    # A plain stratified split over prompts does split requests (what grouping fixes).
    plain = np.asarray(probes.stratified_folds(jax.random.key(1), y, k))
    assert any(len(np.unique(plain[request == r])) > 1 for r in present)
    # In a bootstrap draw, copies stay together and absent requests do not unbalance folds.
    w = np.bincount(rs.integers(0, u, size=u), minlength=u)
    folds_w = np.asarray(
        probes.stratified_grouped_folds(
            jax.random.key(2), y, request, k, num_requests=u, request_weights=w
        )
    )
    drawn = np.intersect1d(present, np.flatnonzero(w))
    assert np.ptp(np.bincount(folds_w[drawn], minlength=k)) <= 1


def _nested_cv_reference(x, y, folds, l2_grid):
    """Hand-written nested CV (sklearn, StandardScaler fitted on each training set)."""
    from sklearn.preprocessing import StandardScaler

    def fit_predict(train, test, l2):
        scaler = StandardScaler().fit(x[train])
        c = 1.0 / (l2 * train.sum())
        clf = LogisticRegression(C=c, solver="newton-cholesky", tol=1e-8)
        with warnings.catch_warnings():  # its line search gives up at machine precision
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(scaler.transform(x[train]), y[train])
        return clf.decision_function(scaler.transform(x[test]))

    oof = np.zeros(len(y))
    for outer in np.unique(folds):
        losses = []
        for l2 in l2_grid:
            nll = 0.0
            for inner in np.unique(folds):
                if inner != outer:
                    va = folds == inner
                    z = fit_predict((folds != outer) & (folds != inner), va, l2)
                    nll += np.sum(np.logaddexp(0, z) - y[va] * z)
            losses.append(nll)
        test = folds == outer
        oof[test] = fit_predict(~test, test, l2_grid[int(np.argmin(losses))])
    return oof


def test_delta_mon_cluster_bootstrap_matches_hand_written_reference() -> None:
    xc, xe, y, request, _ = _clustered(3, signal=1.5)
    out = probes.delta_mon(xc, xe, y, request, seed=3, **_DM)
    weights = stats.request_draws(144, 60, 3)  # the draws delta_mon made from seed 3
    l2_grid = np.asarray(_DM["l2_grid"])
    full = np.concatenate([xc, xe], 1)
    cases = [(np.ones(144, int), out["folds"], out["estimate"])]
    cases += [(weights[0], out["draw_folds"][0], out["samples"][0])]
    for w, folds_u, got in cases:
        # The resampled data set, built by hand: request u copied w[u] times, in its fold.
        rows = np.concatenate([np.repeat(np.flatnonzero(request == u), w[u]) for u in range(48)])
        f, yy = folds_u[request[rows]], y[rows]
        assert len(rows) == np.sum(w[request])
        auc = [roc_auc_score(yy, _nested_cv_reference(x[rows], yy, f, l2_grid)) for x in (xc, full)]
        assert got == pytest.approx(auc[1] - auc[0], abs=1e-5)
    assert out["auroc_full"] - out["auroc_controls"] == pytest.approx(out["estimate"])
    assert out["oof_logits"].shape == (2, 144) and out["samples"].shape == (60,)
    assert out["num_requests"] == 48 and out["num_nan_draws"] == 0
    assert out["num_failing_requests"] == len(np.unique(request[y == 1]))
    # Copies of a request never straddle folds: folds are per request, in every draw.
    assert out["folds"].shape == (144,) and out["draw_folds"].shape == (60, 144)


def test_delta_mon_null_coverage_and_random_direction_null() -> None:
    covers, p_values = [], []
    for seed in range(20):
        xc, xe, y, request, random = _clustered(seed)
        out = probes.delta_mon(xc, xe, y, request, seed=seed, **_DM)
        null = probes.delta_mon_null(
            xc, random, y, request, observed=out["estimate"], seed=seed, **_DM_NULL
        )
        assert out["lo"] <= out["estimate"] <= out["hi"]  # centred on its estimate
        assert out["half_width_hi"] == pytest.approx(out["hi"] - out["estimate"])
        assert null["null"].shape == (16,) and null["q05"] <= null["q95"]
        assert null["auroc_controls"] == pytest.approx(out["auroc_controls"], abs=1e-6)
        covers.append(out["lo"] <= 0.0 <= out["hi"])
        p_values.append(null["p_value"])
    p_values = np.asarray(p_values)
    assert np.mean(covers) >= 0.9
    assert np.median(p_values) > 0.25 and np.mean(p_values <= 1 / 17 + 1e-9) <= 0.25


def test_delta_mon_planted_emotion_signal() -> None:
    for seed in range(3):
        xc, xe, y, request, random = _clustered(100 + seed, signal=8.0)
        out = probes.delta_mon(xc, xe, y, request, seed=seed, **_DM)
        null = probes.delta_mon_null(
            xc, random, y, request, observed=out["estimate"], seed=seed, **_DM_NULL
        )
        assert out["estimate"] > 0.1 and out["lo"] > 0.0
        assert out["auroc_full"] > out["auroc_controls"]
        assert out["estimate"] > null["q95"] and null["p_value"] == pytest.approx(1 / 17)


def test_prompt_level_bootstrap_is_too_narrow() -> None:
    # Cue variants share the label and the emotion cue: 3 prompts carry one request's worth
    # of information, which a prompt-level bootstrap counts three times.
    for seed in range(2):
        xc, xe, y, request, _ = _clustered(200 + seed, signal=1.5, prompt_noise=0.1)
        by_request = probes.delta_mon(xc, xe, y, request, seed=seed, **_DM)
        by_prompt = probes.delta_mon(xc, xe, y, np.arange(len(y)), seed=seed, **_DM)
        width = lambda o: o["hi"] - o["lo"]
        assert width(by_prompt) < 0.75 * width(by_request)


def test_delta_mon_edge_cases_and_feature_helpers() -> None:
    xc, xe, y, request, _ = _clustered(5)
    one_class = probes.delta_mon(xc, xe, np.zeros_like(y), request, seed=0, **_DM)
    assert np.isnan(one_class["estimate"]) and one_class["num_failing_requests"] == 0
    with pytest.raises(ValueError, match="request ids"):
        probes.delta_mon(xc, xe, y, request, **{**_DM, "num_requests": 10})
    with pytest.raises(ValueError, match="weights"):
        probes.delta_mon(xc, xe, y, request, weights=np.ones((5, 47), int), **_DM)
    # build_feature_sets -> delta_mon inputs.
    rs = np.random.default_rng(0)
    acts = rs.normal(size=(30, 2, 8)).astype(np.float32)
    names = (*probes.CONTROLS, *probes.EMOTIONS)
    fs = probes.build_feature_sets(
        acts, {k: rs.normal(size=(2, 8)) for k in names}, rs.normal(size=30), residual_dims=0
    )
    controls, emotion = probes.monitor_features(fs, 1)
    assert controls.shape == (30, 4) and emotion.shape == (30, 3)
    np.testing.assert_array_equal(controls, fs.features[0, 1, :, :4])


def test_monitor_groups_by_request() -> None:
    xc, xe, y, request, _ = _clustered(7, signal=2.0)
    x = np.stack([np.pad(xc, ((0, 0), (0, 3))), np.concatenate([xc, xe], 1)])[:, None]
    fs = probes.FeatureSets(
        ("controls", "controls+emotion"),
        (),
        jnp.asarray(x),
        jnp.array([[1.0] * 4 + [0] * 3, [1] * 7]),
    )
    kw = dict(num_folds=4, num_bootstrap=100, num_refit_bootstrap=0, num_steps=10)
    grouped = probes.monitor(fs, y, request=request, num_requests=144, **kw).layer_rows()[0]
    by_prompt = probes.monitor(fs, y, request=np.arange(144), **kw).layer_rows()[0]
    assert grouped["delta_mon_lo"] <= grouped["delta_mon"] <= grouped["delta_mon_hi"]
    width = lambda r: r["delta_mon_hi"] - r["delta_mon_lo"]
    assert width(by_prompt) < width(grouped)
