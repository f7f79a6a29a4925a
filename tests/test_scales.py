"""Relative scales: Δ over the ceiling the policy sets, drawn with the same draws, floored."""

import numpy as np
import pytest

from emojax.metrics import scales


def test_relative_is_delta_over_ceiling_draw_by_draw():
    rng = np.random.default_rng(0)
    samples = 0.02 + rng.normal(0, 0.01, 500)
    den = 0.4 + rng.normal(0, 0.02, 500)
    rel = scales.on_scale(0.02, samples, 0.4, den)
    assert rel["estimate"] == pytest.approx(0.05)
    np.testing.assert_allclose(rel["samples"], samples / den)
    assert rel["lo"] <= rel["estimate"] <= rel["hi"]
    assert scales.relative_mon(0.01, 0.9) == pytest.approx(0.1)
    assert scales.relative_steer(0.1, 0.5) == pytest.approx(0.2)


def test_a_vanishing_ceiling_is_floored_not_exploded():
    # Controls at AUROC 0.999: ΔAUROC −0.002 would read as −200 % of the headroom.
    assert scales.relative_mon(-0.002, 0.999) == pytest.approx(-2.0)
    assert scales.relative_mon(-0.002, 0.999, min_denominator=0.05) == pytest.approx(-0.04)
    # Above the floor nothing changes; a ceiling of 0 without a floor is undefined, not 0.
    assert scales.relative_mon(0.01, 0.9, min_denominator=0.05) == pytest.approx(0.1)
    assert np.isnan(scales.relative_steer(0.0, 0.0))
    nan = scales.on_scale(0.0, np.zeros(5), 0.0, np.zeros(5))
    assert np.isnan(nan["estimate"]) and np.isnan(nan["hi"])
