"""Stratified steering samples reweighted to the population, and the power preflight."""

import math

import ml_collections
import numpy as np
import pytest

from emojax import concepts, stats
from emojax.metrics import incremental, power
from emojax.pipeline import power as pipeline_power
from emojax.pipeline.evalset import EvalSet
from emojax.pipeline.stratify import steered_sample
from emojax.stats import stratum_weights


def _evalset(num_harmful=40, num_benign=30, cues=("none", "concern")):
    items, cue_of = [], []
    for kind, n in (("harmful", num_harmful), ("harmless", num_benign)):
        for i in range(n):
            for cue in cues:
                items.append(concepts.EvalPrompt(
                    id=f"{kind}-{i}", text=f"{kind} {i} {cue}", kind=kind, domain="d",
                    severity=1, split="test", request=f"{kind}-{i}", template=cue,
                ))  # fmt: skip
                cue_of.append(cue)
    request, num = concepts.request_index(items)
    return EvalSet(tuple(items), np.asarray(request), num, ("n",), tuple(cue_of))


def _labels(ev, fail_share_harm=0.25, fail_share_benign=0.1, seed=0):
    rng = np.random.default_rng(seed)
    fails_req = rng.uniform(size=ev.num_requests)
    kinds = np.array([q.kind for q in ev.items])
    harmful = kinds == "harmful"
    share = np.where(harmful, fail_share_harm, fail_share_benign)
    fail = (fails_req[ev.request] < share).astype(float)
    return {"harmful_compliance": np.where(harmful, fail, 0.0),
            "over_refusal": np.where(~harmful, fail, 0.0)}  # fmt: skip


def test_stratified_sample_reweights_to_the_population():
    ev = _evalset()
    labels = _labels(ev)
    draws = stats.request_draws(ev.num_requests, 50, 0)
    sample = steered_sample(ev, labels, draws, failing=5, ok=6, cues=("none",))
    hc = sample.strata["harmful_compliance"]
    assert hc["failing"][0] == min(5, hc["failing"][1]) and hc["ok"][0] == 6
    assert hc["failing"][1] + hc["ok"][1] == 40
    # Only the sweep's cue, every chosen request, nothing else.
    assert set(sample.evalset.cues) == {"none"}
    assert set(sample.evalset.request) == set(np.flatnonzero(sample.chosen))
    # Full-data weights sum to the population of each stratum (so of each type).
    w = sample.request_weights
    assert w[~sample.chosen].sum() == 0
    assert w.sum() == pytest.approx(70)
    # The unsteered failure rate of the sample, reweighted, is the population's.
    req_fail = np.zeros(ev.num_requests)
    none = np.asarray(ev.cues) == "none"
    req_fail[ev.request[none]] = labels["harmful_compliance"][none]
    harm = np.zeros(ev.num_requests, bool)
    harm[ev.request[np.array([q.kind == "harmful" for q in ev.items])]] = True
    pop_rate = req_fail[harm].mean()
    assert (w * req_fail)[harm].sum() / w[harm].sum() == pytest.approx(pop_rate)
    # In a draw, each stratum's weights sum to that draw's multiplicity of its population.
    r = 3
    pop_fail = harm & (req_fail > 0)
    got = sample.draw_weights[r][pop_fail].sum()
    assert got == pytest.approx(draws[r][pop_fail].sum())
    # delta_steer with these weights reports the population's unsteered rate.
    n_arm = 2
    sub = sample.evalset
    fail = np.stack([labels["harmful_compliance"][[ev.items.index(q) for q in sub.items]]] * n_arm)
    keep = np.array([q.kind == "harmful" for q in sub.items])
    kl = np.zeros((n_arm, 4))
    d = incremental.delta_steer(
        fail[:, keep], fail[:, keep], kl, kl, sub.request[keep], 0.1,
        num_requests=ev.num_requests, weights=sample.draw_weights,
        request_weights=sample.request_weights,
    )  # fmt: skip
    assert d["unsteered_rate"] == pytest.approx(pop_rate)
    assert d["estimate"] == 0.0 and d["unsteered_samples"].shape == (50,)


def test_stratum_weights_zero_where_a_draw_drops_the_whole_sample():
    pop = np.array([True, True, True, False])
    smp = np.array([True, False, False, False])
    m = np.array([[0, 2, 1, 1], [1, 1, 1, 1]], float)
    w = stratum_weights(m, pop, smp)
    np.testing.assert_allclose(w, [[0, 0, 0, 0], [3, 0, 0, 0]])


def test_power_margins_shrink_with_requests_and_refuse_when_asked():
    small = power.steer_margin({"failing": (10, 50), "ok": (10, 50)}, 0.5)
    big = power.steer_margin({"failing": (50, 50), "ok": (50, 50)}, 0.5)
    assert big < small
    # The relative scale divides by the failure rate; an unsteered stratum cannot be confirmed.
    assert power.steer_margin({"failing": (50, 50), "ok": (50, 50)}, 0.25) == pytest.approx(2 * big)
    assert math.isinf(power.steer_margin({"failing": (10, 50), "ok": (0, 50)}, 0.5))
    assert power.mon_margin(200, 200, 0.8) < power.mon_margin(20, 20, 0.8)
    assert math.isinf(power.mon_margin(0, 20, 0.8))
    # The preflight of a point: records every Δ, refuses with require_power.
    ev = _evalset()
    labels = _labels(ev)
    behaviour = {**labels, "policy_logit": np.random.default_rng(1).normal(size=len(ev.items))}
    draws = stats.request_draws(ev.num_requests, 20, 0)
    sample = steered_sample(ev, labels, draws, failing=3, ok=3)
    rates = {t: {"estimate": float(np.mean(v[v >= 0]))} for t, v in labels.items()}
    cfg = ml_collections.ConfigDict({"breakpoint": {
        "required": ("delta_steer/harmful_compliance",), "mon_margin": 0.2, "steer_margin": 0.2,
        "mon_scale": "relative", "steer_scale": "relative", "require_power": False,
    }})  # fmt: skip
    pre = pipeline_power.power_preflight(behaviour, ev, sample, rates, cfg, "p0")
    assert set(pre) == {f"{s}/{t}" for s in ("delta_mon", "delta_steer")
                        for t in ("harmful_compliance", "over_refusal")}  # fmt: skip
    assert pre["delta_steer/harmful_compliance"]["required"]
    assert not pre["delta_steer/harmful_compliance"]["powered"]
    cfg.breakpoint.require_power = True
    with pytest.raises(pipeline_power.PowerError, match="delta_steer/harmful_compliance"):
        pipeline_power.power_preflight(behaviour, ev, sample, rates, cfg, "p0")
