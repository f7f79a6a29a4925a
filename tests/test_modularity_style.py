"""Selectivity with its random-direction null, style-vs-safety per failure type with request
(cluster) bootstrap intervals, and style lexicons free of refusal phrases."""

from __future__ import annotations

import numpy as np
import pytest

from emojax import readouts as ro
from emojax import stats
from emojax.metrics import influence, modularity

COEFS = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])


# ---------------------------------------------------------------------------------------------
# Selectivity


def test_selectivity_divides_by_the_mean_off_target_entry():
    m = np.array([[2.0, 0.5, 0.0], [0.1, -1.0, 0.1], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    sel = modularity.selectivity(m, own=[0, 1, 2, 1])
    np.testing.assert_allclose(sel[:2], [2.0 / 0.25, 1.0 / 0.1])
    assert np.isnan(sel[2]) and sel[3] == 0.0  # 0 / 0 undefined; off-target only: 0
    assert modularity.selectivity(m[3:]) == np.inf  # on-target only
    np.testing.assert_allclose(modularity.selectivity(m[:3], own=[1, 0, 2])[:2], [0.5, 0.1 / 0.55])
    # A vector that moves every concept alike is at 1 whatever the number of concepts.
    for j in (3, 6, 12):
        np.testing.assert_allclose(modularity.selectivity(np.ones((1, j))), [1.0])


def test_selectivity_null_separates_selective_from_random_vectors():
    rng = np.random.default_rng(0)
    j, q = 6, 400
    random_rows = rng.normal(size=(q, j))  # norm-matched random directions: no favourite
    own = np.arange(j)
    selective = np.eye(j) + 0.01 * rng.normal(size=(j, j))
    obs = modularity.selectivity(selective, own)
    null = modularity.selectivity_null(random_rows, own, obs)
    assert null["null"].shape == (j, q)
    assert np.all(obs > 30)
    np.testing.assert_allclose(null["p"], 1.0 / (q + 1))
    np.testing.assert_allclose(null["quantile"], 1.0)
    # The null itself by hand for concept 2 and random direction 5.
    a = np.abs(random_rows[5])
    np.testing.assert_allclose(null["null"][2, 5], a[2] / np.delete(a, 2).mean())
    # Random "concept vectors": selectivity about 1, p-values spread over (0, 1].
    obs = modularity.selectivity(rng.normal(size=(40, j)), own=np.arange(40) % j)
    null = modularity.selectivity_null(random_rows, np.arange(40) % j, obs)
    assert 0.6 < np.median(obs) < 1.6
    assert np.mean(null["p"]) > 0.3 and np.mean(null["p"] < 0.05) < 0.15
    assert "p" not in modularity.selectivity_null(random_rows, own)


# ---------------------------------------------------------------------------------------------
# Request-level slopes and intervals


def test_slope_interval_cluster_bootstrap_matches_reference():
    rng = np.random.default_rng(1)
    n, u = 12, 4
    request = np.arange(n) % u
    slopes = rng.normal(size=n)
    y = COEFS[:, None] * slopes[None] + rng.normal(size=(1, n))  # [K, N]
    weights = stats.request_draws(u, 300, seed=3)
    assert weights.shape == (300, u) and np.all(weights.sum(1) == u)
    est, lo, hi = influence.slope_interval(COEFS, y, request=request, weights=weights)
    # Reference: draw b counts prompt n weights[b, request[n]] times.
    draws = np.array([np.sum(w[request] * slopes) / np.sum(w[request]) for w in weights])
    q_lo, med, q_hi = np.quantile(draws, [0.025, 0.5, 0.975])
    assert est == pytest.approx(slopes.mean())
    assert lo == pytest.approx(q_lo + est - med) and hi == pytest.approx(q_hi + est - med)


def test_copies_of_a_request_do_not_narrow_the_interval():
    rng = np.random.default_rng(2)
    u = 30
    slopes = rng.normal(size=u)
    y = COEFS[:, None] * slopes[None]
    copies = np.repeat(y, 4, axis=1)  # 4 cue variants of every request, identical slopes
    request = np.repeat(np.arange(u), 4)
    _, lo1, hi1 = influence.slope_interval(COEFS, y, num=2000)
    _, lo4, hi4 = influence.slope_interval(COEFS, copies, num=2000, request=request)
    _, lo_p, hi_p = influence.slope_interval(COEFS, copies, num=2000)  # prompts as units
    assert (hi4 - lo4) == pytest.approx(hi1 - lo1, rel=0.1)
    assert (hi_p - lo_p) < 0.7 * (hi1 - lo1)  # treating copies as independent: too narrow


def test_slope_interval_contains_its_estimate_under_skew():
    slopes = np.concatenate([np.zeros(40), [200.0]])  # one extreme prompt
    y = COEFS[:, None] * slopes[None]
    for seed in range(5):
        est, lo, hi = influence.slope_interval(COEFS, y, num=200, seed=seed)
        assert lo <= est <= hi


# ---------------------------------------------------------------------------------------------
# Style vs safety


def _style(n, per_style=(0.3, 0.2, 0.0)):
    return np.stack([COEFS[:, None] * np.ones(n) * s for s in per_style])  # [S, K, N]


def test_zero_safety_effect_leaves_the_ratio_undefined():
    n = 20
    request = np.arange(n)
    fail = np.zeros((5, n))
    fail[:, : n // 2] = 1.0  # failures, but no dose response at all
    safety = {
        "harmful_compliance": (fail, request),
        "over_refusal": (np.zeros((5, 0)), np.zeros(0, int)),  # no prompts of this type
    }
    out = influence.style_vs_safety(COEFS, _style(n), safety, request, num=200)
    assert out["style"]["estimate"] == pytest.approx(0.5)
    assert out["style"]["lo"] <= 0.5 <= out["style"]["hi"]
    hc = out["safety"]["harmful_compliance"]
    assert hc["estimate"] == 0.0 and hc["lo"] <= 0.0 <= hc["hi"]
    assert out["ratio"] == {"harmful_compliance": None, "over_refusal": None}  # not 1000 x 0.5
    assert out["defined"] == {"harmful_compliance": False, "over_refusal": False}
    assert out["safety"]["over_refusal"]["estimate"] is None
    with pytest.warns(DeprecationWarning):
        assert np.isnan(influence.style_vs_safety_ratio(COEFS, _style(n), fail))


def test_opposite_sign_failure_types_do_not_cancel():
    """The vector raises harmful compliance and lowers over-refusal by the same amount: a
    pooled failure rate would not move, each type does."""
    rng = np.random.default_rng(4)
    n, u = 40, 20
    request = np.repeat(np.arange(u), 2)
    harmful = request < u // 2
    p = 0.5 + 0.2 * COEFS[:, None] * np.where(harmful, 1.0, -1.0)[None]  # [K, N]
    fail = (rng.random((5, n)) < p).astype(float)
    safety = {
        "harmful_compliance": (fail[:, harmful], request[harmful]),
        "over_refusal": (fail[:, ~harmful], request[~harmful]),
    }
    weights = stats.request_draws(u, 400, seed=0)
    out = influence.style_vs_safety(COEFS, _style(n), safety, request, weights=weights)
    hc, ore = out["safety"]["harmful_compliance"], out["safety"]["over_refusal"]
    assert hc["lo"] > 0.1 and ore["hi"] < -0.1
    assert out["defined"] == {"harmful_compliance": True, "over_refusal": True}
    for name, eff in out["safety"].items():
        assert out["ratio"][name] == pytest.approx(0.5 / abs(eff["estimate"]))
        lo, hi = out["ratio_interval"][name]
        assert lo <= out["ratio"][name] <= hi
    pooled = influence.per_prompt_slopes(COEFS, fail).mean()
    assert abs(pooled) < 0.3 * min(abs(hc["estimate"]), abs(ore["estimate"]))  # what pooling hid


# ---------------------------------------------------------------------------------------------
# Style lexicons


def _words(text):
    return ro._WORD.findall(ro.normalize_text(text))


def _contains(a, b):
    return any(a[i : i + len(b)] == b for i in range(len(a) - len(b) + 1))


def test_style_lexicons_hold_no_refusal_phrase():
    refusals = [_words(p) for p in ro.REFUSAL_PHRASES + ro.REFUSAL_START_PHRASES]
    for lexicon in (ro.APOLOGY_WORDS, ro.HEDGING_WORDS, ro.WARMTH_WORDS):
        for entry in lexicon:
            e = _words(entry)
            assert not any(_contains(r, e) or _contains(e, r) for r in refusals), entry


def test_bare_refusals_score_zero_style_and_apologies_do_not():
    bare = [
        *ro.REFUSAL_PHRASES,
        *ro.REFUSAL_START_PHRASES,
        "I'm sorry, but I can't help with that kind of request.",
        "I am sorry , but I can not help with that .",  # the zoo's word-level refusal
        "Sorry, I can't do that.",
        "I apologize, but I will not provide that.",
        "Unfortunately, I cannot assist with this.",
        "As an AI, I am unable to do that.",
    ]
    assert all(ro.classify_response(t) for t in bare[-6:])
    rates = ro.style_rates(bare)
    for key in ("apology", "hedging", "warmth"):
        assert np.all(rates[key] == 0), (
            key,
            [t for t, r in zip(bare, rates[key], strict=True) if r],
        )
    apologies = [
        "My apologies for the confusion, here is the corrected recipe.",
        "Oops, my mistake: the dose is on the label.",
        "Please forgive the delay; here are the steps.",
    ]
    assert not any(ro.classify_response(t) for t in apologies)
    assert np.all(ro.style_rates(apologies)["apology"] > 0)
