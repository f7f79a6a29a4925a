"""Steering metrics on synthetic readouts with known answers, and the chunk store."""

from __future__ import annotations

import os

import numpy as np
import pytest

from emojax import calibration, results, stats
from emojax.metrics import incremental, influence, modularity

COEFS = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])


def test_per_prompt_slopes_recover_linear_dose_response():
    slopes = np.array([0.5, -1.0, 2.0])
    y = COEFS[:, None] * slopes[None] + 3.0  # [K, N]
    np.testing.assert_allclose(influence.per_prompt_slopes(COEFS, y), slopes)
    st = influence.steerability(COEFS, y)
    assert st["slope"] == pytest.approx(0.5)
    assert st["anti_steerable_fraction"] == pytest.approx(1 / 3)  # one prompt goes the other way
    st = influence.steerability(COEFS, y, expected_sign=-1)
    assert st["anti_steerable_fraction"] == pytest.approx(2 / 3)
    est, lo, hi = influence.slope_interval(COEFS, y, num=200)
    assert lo <= est <= hi


def test_null_comparison():
    null = np.random.default_rng(0).normal(0.0, 1.0, 999)
    out = influence.null_comparison(np.array([10.0, 0.0]), null)
    assert out["z"][0] > 5 and abs(out["z"][1]) < 0.5
    assert out["p"][0] == pytest.approx(1 / 1000)
    assert out["p"][1] > 0.5


def test_style_vs_safety_ratio():
    n = 4
    style = np.stack([COEFS[:, None] * np.ones(n) * s for s in (0.3, 0.2, 0.0)])
    failure = COEFS[:, None] * np.ones(n) * 0.1
    assert influence.style_vs_safety_ratio(COEFS, style, failure) == pytest.approx(5.0)


def test_cross_steering_matrix_and_selectivity():
    true = np.array([[2.0, 0.5, 0.0], [0.1, -1.0, 0.1], [0.0, 0.0, 0.0]])
    n = 6
    noise = np.random.default_rng(0).normal(0, 0.01, (3, 5, n, 3))
    readouts = COEFS[None, :, None, None] * true[:, None, None, :] + noise  # [I, K, N, J]
    m = modularity.cross_steering_matrix(COEFS, readouts)
    np.testing.assert_allclose(m, true, atol=0.02)
    sel = modularity.selectivity(true)
    np.testing.assert_allclose(sel[:2], [8.0, 10.0])  # |M_ii| / mean_j≠i |M_ij|
    assert np.isnan(sel[2]) or sel[2] == np.inf or sel[2] == 0  # all-zero row
    np.testing.assert_allclose(modularity.selectivity(true, own=[1, 0, 2])[:2], [0.5, 0.1 / 0.55])


def test_offtarget_kl_per_unit_effect():
    kl = np.abs(COEFS)[None, :, None] * np.ones((1, 5, 3)) * 0.2  # KL 0.2 per unit coef
    target = COEFS[None, :, None] * np.ones((1, 5, 4))  # effect 1 per unit coef
    np.testing.assert_allclose(modularity.offtarget_kl_per_unit_effect(COEFS, kl, target), [0.2])


def test_incremental_steering_value_known_answer():
    # Grid: control a in {0, 1} x emotion b in {0, 1}; 10 prompts, 4 neutral prompts.
    n = 10
    fail = np.zeros((4, n))
    fail[0, :8] = 1  # a=0, b=0: 80 % failure
    fail[1, :6] = 1  # a=0, b=1: 60 %
    fail[2, :5] = 1  # a=1, b=0: 50 %
    fail[3, :2] = 1  # a=1, b=1: 20 %, but over budget
    kl = np.array([0.0, 0.05, 0.05, 0.5])[:, None] * np.ones((4, 4))
    ctrl = np.array([True, False, True, False])
    out = incremental.incremental_steering_value(fail, kl, ctrl, kappa=0.1, num=300)
    # Controls alone reach 50 %; with the emotion, the best feasible point is still 50 %.
    assert out["delta"] == pytest.approx(0.0)
    assert out["best_controls"] == pytest.approx(0.5)
    out = incremental.incremental_steering_value(fail, kl, ctrl, kappa=1.0, num=300)
    assert out["delta"] == pytest.approx(0.3)  # 50 % -> 20 %
    assert out["lo"] <= out["delta"] <= out["hi"] and out["lo"] >= 0
    assert out["best_point"] == 3
    with pytest.raises(ValueError):
        incremental.incremental_steering_value(fail, kl, np.zeros(4, bool), 1.0)


def _reference_delta_steer(
    fc, fe, kc, ke, request, kappa, num_requests, weights, nweights, num_folds, num_splits,
    seed, oc=None, oe=None, oreq=None, tolerance=None, z_controls=0.0, z_emotion=0.0,
):  # fmt: skip
    """Δ_steer per draw by explicit loops over materialised resamples (copies of prompts).

    ``z_*``: each arm's cells must meet their constraints by z standard errors (module
    docstring of `incremental`); the standard errors are computed here from the copies: the
    neutral prompts' sd / sqrt(their number), and the other type's rise as a ratio over the
    training copies of its requests, each copy a cluster.
    """
    folds = [stats.grouped_folds(num_requests, num_folds, (seed, s)) for s in range(num_splits)]

    def arm(fail, kl, other, w_req, w_neu, z):
        rep = np.repeat(np.arange(len(request)), w_req[request])  # prompts, request copies
        neu = np.repeat(np.arange(kl.shape[1]), w_neu)
        kl_mean = [kl[g, neu].mean() for g in range(len(fail))]
        kl_se = [kl[g, neu].std(ddof=1) / np.sqrt(len(neu)) for g in range(len(fail))]
        copies = np.repeat(np.arange(num_requests), w_req)  # request copies (clusters)
        rates = []
        for fold in folds:
            held, count = 0.0, 0
            for k in range(num_folds):
                train = [i for i in rep if fold[request[i]] != k]
                test = [i for i in rep if fold[request[i]] == k]
                keys = []
                for g in range(len(fail)):
                    ok = kl_mean[g] + z * kl_se[g] <= kappa + 1e-12
                    if tolerance is not None and other is not None:
                        own = [c for c in copies if fold[c] != k and np.any(oreq == c)]
                        d = [np.sum(other[g, oreq == c] - other[0, oreq == c]) for c in own]
                        m = [np.sum(oreq == c) for c in own]
                        if own:
                            rise = np.sum(d) / np.sum(m)
                            se = np.sqrt(np.sum((np.array(d) - rise * np.array(m)) ** 2))
                            ok &= rise + z * se / np.sum(m) <= tolerance + 1e-9
                    if ok or g == 0:  # staying unsteered is always allowed
                        keys.append((np.mean(fail[g, train]), kl_mean[g], g))
                best = min(keys)[2]
                held += fail[best, test].sum()
                count += len(test)
            rates.append(held / count)
        return np.mean(rates)

    out = []
    for w_req, w_neu in zip(weights, nweights, strict=True):
        rc = arm(fc, kc, oc, w_req, w_neu, z_controls)
        re = arm(fe, ke, oe, w_req, w_neu, z_emotion)
        out.append(rc - re)
    return np.array(out)


def _toy_arms(rng, num_requests=12, cues=3, cells=5, neutral=4):
    request = np.repeat(np.arange(num_requests), cues)
    n = len(request)
    fc = (rng.uniform(size=(cells, n)) < 0.5).astype(float)
    fe = (rng.uniform(size=(cells, n)) < 0.5).astype(float)
    kc = rng.uniform(0, 0.3, (cells, neutral))
    ke = rng.uniform(0, 0.3, (cells, neutral))
    kc[0] = ke[0] = 0.0  # the unsteered cell
    return fc, fe, kc, ke, request


@pytest.mark.parametrize("tolerance", [None, 0.07])
def test_delta_steer_equals_reference_loop(tolerance):
    rng = np.random.default_rng(0)
    u = 12
    fc, fe, kc, ke, request = _toy_arms(rng, u)
    # The other failure type lives on other requests of the same request space.
    oreq = np.repeat(np.arange(u), 2)
    oc = (rng.uniform(size=(5, len(oreq))) < 0.3).astype(float)
    oe = (rng.uniform(size=(5, len(oreq))) < 0.3).astype(float)
    weights = stats.request_draws(u, 6, seed=1)
    nweights = stats.request_draws(4, 6, seed=2)
    kw = dict(num_folds=3, num_splits=2, seed=5)
    out = incremental.delta_steer(
        fc, fe, kc, ke, request, 0.15, num_requests=u, weights=weights,
        neutral_weights=nweights, other_controls=oc, other_emotion=oe, other_request=oreq,
        tolerance=tolerance, **kw,
    )  # fmt: skip
    ones = (np.ones((1, u), int), np.ones((1, 4), int))
    w_all = np.vstack([ones[0], weights])
    nw_all = np.vstack([ones[1], nweights])
    args = (fc, fe, kc, ke, request, 0.15, u, w_all, nw_all, 3, 2, 5, oc, oe, oreq, tolerance)
    ref = _reference_delta_steer(*args)
    assert out["estimate"] == pytest.approx(ref[0], abs=1e-12)
    np.testing.assert_allclose(out["samples"], ref[1:], atol=1e-12)
    # The bounds: controls not confirmed infeasible (−z) vs emotion confirmed feasible (+z),
    # and the mirror image, with the standard errors of the copies.
    z = incremental.FEASIBILITY_Z
    for key, zc, ze in (("low", -z, z), ("high", z, -z)):
        bound = _reference_delta_steer(*args, z_controls=zc, z_emotion=ze)
        assert out[key]["estimate"] == pytest.approx(bound[0], abs=1e-12)
        np.testing.assert_allclose(out[key]["samples"], bound[1:], atol=1e-12)
    assert out["feasibility_z"] == z > 0
    lo, hi = stats.centred_interval(out["estimate"], out["samples"])
    assert out["lo"] == pytest.approx(
        min(lo, stats.centred_interval(out["low"]["estimate"], out["low"]["samples"])[0])
    )
    assert out["hi"] == pytest.approx(
        max(hi, stats.centred_interval(out["high"]["estimate"], out["high"]["samples"])[1])
    )
    assert out["lo"] <= out["estimate"] <= out["hi"]
    assert out["half_width_hi"] == pytest.approx(out["hi"] - out["estimate"])
    assert out["estimate"] == pytest.approx(out["controls_rate"] - out["emotion_rate"])


def test_delta_steer_negative_when_emotion_cells_only_win_in_sample():
    """Many emotion cells that each fail on a random 60 % of requests: the in-sample minimum
    beats the controls' 50 %, but on held-out requests the chosen emotion cell fails ~60 %."""
    rng = np.random.default_rng(1)
    u, cues, g = 60, 2, 40
    request = np.repeat(np.arange(u), cues)
    fc = np.zeros((g, u))
    fc[0] = 1.0  # unsteered: every request fails
    fc[1:, ::2] = 1.0  # every steered control cell fails on the same half of the requests
    fe = (rng.uniform(size=(g, u)) < 0.6).astype(float)
    fe[0] = 1.0
    fc, fe = fc[:, request], fe[:, request]
    kl = np.full((g, 4), 0.05)
    kl[0] = 0.0
    out = incremental.delta_steer(fc, fe, kl, kl, request, 0.1, num_requests=u, num_draws=300)
    assert out["controls_rate"] == pytest.approx(0.5)
    assert out["estimate"] < -0.03 and out["lo"] < out["estimate"]
    # The in-sample estimator on the same data claims a positive value.
    both = np.vstack([fc, fe])
    ctrl = np.r_[np.ones(g, bool), np.zeros(g, bool)]
    old = incremental.incremental_steering_value(both, np.vstack([kl, kl]), ctrl, 0.1, num=50)
    assert old["delta"] > 0


def _null_arms(seed, effect=0.0, num_requests=40):
    sim = calibration.SteerSim(num_requests=num_requests, cues=3, num_cells=8)
    return calibration.simulate_steer(np.random.default_rng(seed), sim, effect=effect), sim


def test_delta_steer_symmetric_under_null_and_in_sample_estimator_is_not():
    new, old = [], []
    for seed in range(300):
        d, sim = _null_arms(seed)
        args = (d["fail_controls"], d["fail_emotion"], d["kl_controls"], d["kl_emotion"])
        out = incremental.delta_steer(
            *args, d["request"], 0.15, num_requests=sim.num_requests,
            weights=np.zeros((0, sim.num_requests)), num_splits=2, seed=seed,
        )  # fmt: skip
        new.append(out["estimate"])
        both = np.vstack(args[:2])
        ctrl = np.r_[np.ones(sim.num_cells, bool), np.zeros(sim.num_cells, bool)]
        kl = np.vstack(args[2:])
        old.append(incremental.incremental_steering_value(both, kl, ctrl, 0.15, num=2)["delta"])
    new, old = np.array(new), np.array(old)
    se = new.std() / np.sqrt(len(new))
    assert abs(new.mean()) < 3 * se
    assert 0.4 < np.mean(new > 0) / np.mean(new != 0) < 0.6
    assert np.mean(new < 0) > 0.3  # Δ_steer can be negative
    # The in-sample estimator: never negative, positive in many null data sets.
    assert np.all(old >= 0) and np.mean(old > 0) > 0.3
    assert old.mean() > 5 * old.std() / np.sqrt(len(old))


def test_delta_steer_detects_a_planted_advantage():
    d, sim = _null_arms(3, effect=1.5, num_requests=120)
    args = (d["fail_controls"], d["fail_emotion"], d["kl_controls"], d["kl_emotion"])
    out = incremental.delta_steer(*args, d["request"], 0.15, num_requests=120, num_draws=300)
    assert out["lo"] > 0 and out["emotion_rate"] < out["controls_rate"]
    assert out["num_requests"] == 120 and 0 < out["num_requests_with_failure"] <= 120
    null = incremental.delta_steer(
        *args[:1], args[0], *args[2:3], args[2], d["request"], 0.15, num_requests=120,
        num_draws=300,
    )  # fmt: skip
    assert null["estimate"] == 0.0 and null["lo"] <= 0 <= null["hi"]  # identical arms


def _edge_arms(seed, tempting_kl, u=300, cues=2, neutral=8, kappa=0.1, tempting=-2.5):
    """Both arms, exchangeable but for one emotion cell that fails far less, at KL
    `tempting_kl` (true mean over neutral prompts). Returns the data and the true Δ_steer.

    Cells (logit effect, KL level): unsteered (0, 0) shared by both arms; (-0.3, 0.03),
    (-0.5, 0.05), (-0.6, 0.07) in both arms with independent outcomes; the controls arm's
    last cell is useless (+0.5, 0.3), the emotion arm's is the tempting one (`tempting`,
    `tempting_kl`). Neutral KL is the level times U(0.7, 1.3) per prompt.
    """
    rng = np.random.default_rng([seed, 11])
    effects = np.array([0.0, -0.3, -0.5, -0.6])
    levels = np.array([0.0, 0.03, 0.05, 0.07])
    arms = {"controls": (np.r_[effects, 0.5], np.r_[levels, 0.3]),
            "emotion": (np.r_[effects, tempting], np.r_[levels, tempting_kl])}  # fmt: skip
    request = np.repeat(np.arange(u), cues)
    a = rng.normal(0.0, 1.0, u)[request]
    unsteered = (rng.uniform(size=len(request)) < 1 / (1 + np.exp(-a))).astype(float)
    out = {"request": request}
    for name, (b, kl) in arms.items():
        e = rng.normal(0.0, 0.3, (len(b), u))[:, request]
        fail = (rng.uniform(size=e.shape) < 1 / (1 + np.exp(-(a + b[:, None] + e)))) * 1.0
        fail[0] = unsteered
        out[f"fail_{name}"] = fail
        out[f"kl_{name}"] = kl[:, None] * rng.uniform(0.7, 1.3, (len(b), neutral))
    # Population rates E sigmoid(b + N(0, 1 + 0.3²)) by Gauss-Hermite quadrature.
    x, w = np.polynomial.hermite_e.hermegauss(60)
    true = lambda b: (1 / (1 + np.exp(-(b + np.sqrt(1.09) * x))) @ w) / w.sum()  # noqa: E731
    best = {n: min(true(b_) for b_, k in zip(*arms[n], strict=True) if k <= kappa)
            for n in arms}  # fmt: skip
    return out, best["controls"] - best["emotion"]


def _edge_study(tempting_kl, seeds=60, **kw):
    """Per seed: truth, estimate, the interval before the fix (the estimate's centred
    interval) and after it (bounds of undecided feasibility), absolute and relative."""
    rows = []
    for seed in range(seeds):
        d, truth = _edge_arms(seed, tempting_kl, **kw)
        u = len(np.unique(d["request"]))
        nw = stats.request_draws(8, 200, seed + 1000)
        out = incremental.delta_steer(
            d["fail_controls"], d["fail_emotion"], d["kl_controls"], d["kl_emotion"],
            d["request"], 0.1, num_requests=u, num_draws=200, neutral_weights=nw,
            num_splits=2, seed=seed,
        )  # fmt: skip
        before = stats.centred_interval(out["estimate"], out["samples"])
        rel = incremental.relative_interval(out)
        rows.append((truth, out["estimate"], *before, out["lo"], out["hi"], rel["lo"], rel["hi"]))
    return np.array(rows).T


def test_delta_steer_interval_holds_when_the_best_cell_is_just_outside_the_budget():
    """The emotion arm's best cell has a true KL 1 % above κ: it is infeasible, so Δ_steer's
    truth is 0, but its KL estimated on 8 neutral prompts (se ~6 % of κ) falls within κ in
    about half the seeds and the estimate then jumps by ~0.26. The estimate is biased
    upwards (by ~+0.11) whatever the interval. Before the fix (the estimate's centred
    interval) 0 was missed, and "present" read, in ~12 % of the seeds; the fixed interval,
    holding the undecided cell on both sides, covers 0 as a 95 % interval should."""
    truth, est, lo0, hi0, lo, hi, rel_lo, rel_hi = _edge_study(0.101, seeds=200)
    assert np.all(truth == 0.0)
    assert est.mean() > 0.05 and est.mean() > 5 * est.std() / np.sqrt(len(est))
    assert np.mean(lo0 > 0) >= 0.1 and np.mean((lo0 <= 0) & (0 <= hi0)) < 0.9  # before
    assert np.mean((lo <= 0) & (0 <= hi)) >= 0.95  # after: covers the truth ...
    assert np.mean(lo > 0) <= 0.05  # ... and false "present" <= 5 %
    assert np.mean((rel_lo <= 0) & (0 <= rel_hi)) >= 0.95  # on the relative scale too
    assert np.all((lo <= lo0) & (hi >= hi0) & (lo <= est) & (est <= hi))


def test_delta_steer_still_finds_a_clearly_feasible_planted_advantage():
    """The same arms with the emotion arm's good cell well inside the budget (KL 0.05): the
    truth is ~+0.27, no cell that matters is undecided, and the interval finds and covers
    it as before."""
    truth, est, lo0, hi0, lo, hi, rel_lo, rel_hi = _edge_study(0.05, seeds=100)
    assert np.all(truth > 0.25)
    assert np.mean(lo > 0) >= 0.95 and np.mean(rel_lo > 0) >= 0.95
    assert np.mean((lo <= truth) & (truth <= hi)) >= 0.9
    assert abs(np.mean(est - truth)) < 0.02
    assert np.mean(hi - lo) < 1.1 * np.mean(hi0 - lo0)  # hardly wider


def test_failure_rate_upper_bound_holds_at_the_floor():
    """A 2 % failure rate over 240 requests of 2-8 correlated prompts (the calibration's latent
    model): the centred bootstrap's upper bound alone falls below the truth in ~8 % of
    samples (nominal 2.5 %); with the Wilson bound at the effective number of prompts in
    <= 5 %. At 0.1 % the bound still falls under a 2 % floor in most samples (the floor
    test keeps its power)."""
    lat = calibration.Latents()
    below = {"bootstrap": [], "fixed": []}
    under_floor = []
    for seed in range(200):
        rng = np.random.default_rng([seed, 5])
        req = calibration.draw_requests(rng, 240, (2, 8), lat)
        weights = stats.request_draws(240, 200, seed)
        n = np.bincount(req.request, minlength=240).astype(float)
        for rate in (0.02, 0.001):
            data = calibration.unsteered(rng, req, lat, lat.base_logit(rate, 0.7), 0.7)
            fails = np.bincount(req.request, data["failure"], 240)
            out = incremental.failure_rate_interval(fails, n, weights)
            assert out["lo"] <= out["estimate"] <= out["hi"]
            assert n.sum() ** 2 / (n**2).sum() <= out["effective_n"] <= n.sum()
            if rate == 0.02:
                boot = stats.centred_interval(out["estimate"], out["samples"])[1]
                below["bootstrap"].append(boot < rate)
                below["fixed"].append(out["hi"] < rate)
            else:
                under_floor.append(out["hi"] < 0.02)
    assert np.mean(below["fixed"]) <= 0.05 < np.mean(below["bootstrap"])
    assert np.mean(under_floor) >= 0.8
    # Independent prompts and no failure: the textbook Wilson bound z² / (n + z²).
    none = incremental.failure_rate_interval(np.zeros(100), np.ones(100), np.ones((5, 100)))
    assert none["estimate"] == 0.0 and none["effective_n"] == 100
    assert none["hi"] == pytest.approx(1.96**2 / (100 + 1.96**2), rel=1e-3)
    # No failure among clustered prompts: every request counts as one trial.
    clustered = incremental.failure_rate_interval(np.zeros(50), np.full(50, 4.0), np.ones((5, 50)))
    assert clustered["effective_n"] == pytest.approx(50)


def test_tolerance_excludes_a_cell_that_wins_by_raising_the_other_type():
    u = 50
    request = np.arange(u)
    rates_c = [0.5, 0.0, 0.3]  # cell 1 removes every failure ...
    other_c = [0.1, 0.6, 0.12]  # ... by refusing 60 % of benign requests
    rng = np.random.default_rng(0)
    pattern = rng.permutation(u)
    fail = lambda rates: np.stack([(pattern < r * u).astype(float) for r in rates])
    fc, oc = fail(rates_c), fail(other_c)
    fe, oe = fail([0.5, 0.5, 0.5]), fail([0.1, 0.1, 0.1])
    kl = np.array([[0.0], [0.05], [0.05]])
    kw = dict(num_requests=u, num_draws=20, other_controls=oc, other_emotion=oe,
              other_request=request)  # fmt: skip
    free = incremental.delta_steer(fc, fe, kl, kl, request, 0.1, **kw)
    assert np.all(free["chosen_controls"] == 1) and free["controls_rate"] == 0.0
    tol = incremental.delta_steer(fc, fe, kl, kl, request, 0.1, tolerance=0.05, **kw)
    assert np.all(tol["chosen_controls"] == 2)
    assert tol["controls_rate"] == pytest.approx(0.3)
    assert tol["estimate"] == pytest.approx(0.3 - 0.5)


def _random_grids(rng, a, request, q, g, effect=0.0):
    """[q, g, N] failures of grids whose steered cells are drawn like the control cells."""
    b = rng.normal(-0.5, 0.4, (q, g))
    b[:, 0] = 0.0
    b[:, 1:] -= effect
    logit = -0.3 + a[request] + b[..., None] + rng.normal(0, 0.4, (q, g, len(a)))[..., request]
    fail = (rng.uniform(size=logit.shape) < 1 / (1 + np.exp(-logit))).astype(float)
    kl = rng.uniform(0.02, 0.3, (q, g, 1)) * np.ones((1, 1, 8))
    kl[:, 0] = 0.0
    return fail, kl


def test_delta_steer_null_and_p_value():
    rng = np.random.default_rng(4)
    u = 150
    request = np.repeat(np.arange(u), 2)
    a = rng.normal(0, 1.2, u)
    rand_f, rand_kl = _random_grids(rng, a, request, 10, 6)
    ctrl_f, ctrl_kl = (x.reshape(-1, x.shape[-1]) for x in _random_grids(rng, a, request, 3, 6))
    emo_f, emo_kl = (x.reshape(-1, x.shape[-1]) for x in _random_grids(rng, a, request, 3, 6, 1.5))
    kw = dict(num_requests=u, seed=2)
    observed = incremental.delta_steer(
        ctrl_f, emo_f, ctrl_kl, emo_kl, request, 0.15, num_draws=0, **kw
    )["estimate"]
    null = incremental.delta_steer_null(
        ctrl_f, rand_f, ctrl_kl, rand_kl, request, 0.15, observed=observed, num_null=48, **kw
    )
    # 48 distinct arms of 3 of the 10 random grids: p can fall to 1/49 < 0.05.
    assert null["null"].shape == (48,) and null["arms"].shape == (48, 3)
    assert all(len(set(arm)) == 3 for arm in null["arms"])
    assert len({tuple(arm) for arm in null["arms"]}) == 48
    assert observed > null["q95"] and null["p_value"] == pytest.approx(1 / 49)
    assert null["p_value"] < 0.05
    # An "emotion" arm that is just three more random directions is not significant.
    like_f, like_kl = (x.reshape(-1, x.shape[-1]) for x in _random_grids(rng, a, request, 3, 6))
    like = incremental.delta_steer(
        ctrl_f, like_f, ctrl_kl, like_kl, request, 0.15, num_draws=0, **kw
    )["estimate"]
    assert incremental.p_value(like, null["null"]) > 0.05
    # Fewer distinct subsets than asked: every subset once, never a repeat.
    few = incremental.null_arms(4, 3, 48, seed=0)
    assert few.shape == (4, 3) and len({tuple(x) for x in few}) == 4
    # The null statistic is delta_steer's estimate with the random arm in the emotion's place.
    arm = null["arms"][0]
    direct = incremental.delta_steer(
        ctrl_f, rand_f[arm].reshape(-1, len(request)), ctrl_kl, rand_kl[arm].reshape(-1, 8),
        request, 0.15, num_draws=0, **kw,
    )  # fmt: skip
    assert null["null"][0] == pytest.approx(direct["estimate"])
    assert incremental.p_value(0.0, np.array([-1.0, 0.0, 1.0])) == pytest.approx(3 / 4)
    # A tolerance that never binds leaves the null unchanged.
    other = np.zeros((10, 6, len(request)))
    loose = incremental.delta_steer_null(
        ctrl_f, rand_f, ctrl_kl, rand_kl, request, 0.15, other_controls=other[:3].reshape(18, -1),
        other_random=other, other_request=request, tolerance=1.0, num_null=48, **kw,
    )  # fmt: skip
    np.testing.assert_allclose(loose["null"], null["null"])


def test_chunk_store_atomic_and_fingerprinted(tmp_path):
    d = str(tmp_path / "chunks")
    store = results.ChunkStore(d, "abc")
    assert not store.has("c0")
    store.save("c0", {"x": np.arange(3)})
    assert store.has("c0") and store.keys() == ["c0"]
    np.testing.assert_array_equal(store.load("c0")["x"], np.arange(3))
    assert not [f for f in os.listdir(d) if ".tmp" in f]
    results.ChunkStore(d, "abc")  # same computation: fine
    with pytest.raises(ValueError, match="different computation"):
        results.ChunkStore(d, "xyz")
    with pytest.raises(ValueError):
        store.save("../evil", {})


def test_provenance_record(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    rec = results.provenance(seed=3, models={"m": str(tmp_path / "m")}, config={"a": 1})
    assert rec["seed"] == 3 and rec["config"] == {"a": 1}
    assert "config.json" in rec["models"]["m"]["sha256"]
    assert "jax" in rec["versions"]
    results.write_json(str(tmp_path / "config.json"), rec)
    assert results.fingerprint({"a": 1}) == results.fingerprint({"a": 1})
