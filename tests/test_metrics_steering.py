"""Steering metrics on synthetic readouts with known answers, and the chunk store."""

from __future__ import annotations

import os

import numpy as np
import pytest

from emojax import results
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
    np.testing.assert_allclose(sel[:2], [4.0, 5.0])
    assert np.isnan(sel[2]) or sel[2] == np.inf or sel[2] == 0  # all-zero row
    np.testing.assert_allclose(
        modularity.selectivity(true, own=[1, 0, 2])[:2], [0.5 / 2, 0.1 / 1.1]
    )


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
