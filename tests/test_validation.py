"""Validation arms (issue 24): schedules, request splits, placebo and spiked arms, the planted
outcome, and the spike directions on the smoke zoo."""

import dataclasses

import numpy as np
import pytest

from emojax import breakpoint as bp
from emojax import probes
from emojax.concepts import EvalPrompt
from emojax.pipeline.evalset import EvalSet
from emojax.validation import arms, directions, schedules, splits, truth
from emojax.vectors import VectorSet

# --- schedules -------------------------------------------------------------------------------


def test_schedules_plant_their_scenario():
    p = schedules.PLACEBO
    assert schedules.schedule("vanishing", 5, 2.0) == [2.0, 2.0, 2.0, 0.0, 0.0]
    assert schedules.schedule("vanishing", 4, 1.0) == [1.0, 1.0, 0.0, 0.0]
    assert schedules.schedule("vanishing", 3, 1.0, off="placebo") == [1.0, 1.0, p]
    assert schedules.schedule("persistent", 3, 0.5) == [0.5, 0.5, 0.5]
    assert schedules.schedule("early", 4, 1.0) == [1.0, 0.0, 0.0, 0.0]
    assert schedules.schedule("null", 3, 1.0) == [p, p, p]
    assert schedules.schedule("none", 3, 1.0) == []
    assert schedules.expected_outcome("vanishing", 5) == ("break", 3)
    assert schedules.expected_outcome("persistent", 5) == ("not reached", None)
    assert schedules.expected_outcome("early", 5) == ("break", 1)
    assert schedules.expected_outcome("null", 5) == ("break", 0)
    for bad in (("sideways", 3, 1.0), ("early", 3, 0.0), ("early", 0, 1.0)):
        with pytest.raises(ValueError):
            schedules.schedule(*bad)
    with pytest.raises(ValueError, match="off"):
        schedules.schedule("early", 3, 1.0, off="zero")


# --- request splits --------------------------------------------------------------------------


def _evalset(per_kind=(10, 10, 10), cues=("none", "concern")) -> EvalSet:
    items, request, cue_of = [], [], []
    r = 0
    for kind, n in zip(("harmful", "harmless", "borderline"), per_kind, strict=True):
        for _ in range(n):
            for cue in cues:
                items.append(EvalPrompt(f"{kind}-{r}-{cue}", kind, "d", f"text {r} {cue}", "test",
                                        request=f"req-{r}"))  # fmt: skip
                request.append(r)
                cue_of.append(cue)
            r += 1
    return EvalSet(tuple(items), np.asarray(request), r + 5, ("neutral a", "neutral b"),
                   tuple(cue_of))  # fmt: skip


def test_split_requests_are_disjoint_stratified_and_keep_the_index_space():
    ev = _evalset()
    sp = splits.split_requests(ev, seed=3, fractions=(0.2, 0.3, 0.5))
    parts = [getattr(sp, s) for s in splits.SPLITS]
    sets = [set(p.request.tolist()) for p in parts]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert set().union(*sets) == set(ev.request.tolist())
    assert sum(len(p.items) for p in parts) == len(ev.items)
    assert sp.sizes() == {s: {"harmful": n, "harmless": n, "borderline": n}
                          for s, n in zip(splits.SPLITS, (2, 3, 5), strict=True)}  # fmt: skip
    for p, name in zip(parts, splits.SPLITS, strict=True):
        assert p.num_requests == ev.num_requests and p.neutral == ev.neutral
        assert len(p.cues) == len(p.items)
        np.testing.assert_array_equal(np.unique(p.request), sp.requests[name])
        for q, r, cue in zip(p.items, p.request, p.cues, strict=True):
            assert q.request == f"req-{r}" and q.text.endswith(cue)  # prompts keep their ids
    again = splits.split_requests(ev, seed=3, fractions=(0.2, 0.3, 0.5))
    other = splits.split_requests(ev, seed=4, fractions=(0.2, 0.3, 0.5))
    np.testing.assert_array_equal(again.requests["truth"], sp.requests["truth"])
    assert not np.array_equal(other.requests["truth"], sp.requests["truth"])
    with pytest.raises(ValueError, match="summing to 1"):
        splits.split_requests(ev, 0, (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="empty"):
        splits.split_requests(_evalset((2, 10, 10)), 0, (0.2, 0.2, 0.6))


# --- arms ------------------------------------------------------------------------------------

SITES, WIDTH = 3, 16


def _vector_set(seed=0) -> VectorSet:
    names = arms.EMOTIONS + arms.CONTROLS
    v = np.random.default_rng(seed).standard_normal((len(names), SITES, WIDTH))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return VectorSet(v, np.arange(len(names) * SITES).reshape(len(names), SITES) + 1.0,
                     np.full(SITES, 2.0), names, "diff_of_means")  # fmt: skip


def _controls(vs: VectorSet, site: int) -> np.ndarray:
    return np.stack([vs.vectors[vs.index(c), site] for c in arms.CONTROLS])


def _outside(v: np.ndarray, ctrl: np.ndarray) -> float:
    """Norm of v's component outside the span of ctrl [C, D]."""
    q, _ = np.linalg.qr(ctrl.T)
    return float(np.linalg.norm(v - q @ (q.T @ v)))


@pytest.mark.parametrize("mode", arms.PLACEBOS)
def test_placebo_lies_in_the_span_of_the_controls(mode):
    vs = _vector_set()
    pl = arms.placebo_vectors(vs, mode=mode, seed=1)
    for e in arms.EMOTIONS:
        for site in range(SITES):
            v = pl.vectors[pl.index(e), site]
            assert abs(np.linalg.norm(v) - 1) < 1e-5
            assert _outside(v, _controls(vs, site)) < 1e-5
    for c in arms.CONTROLS:  # controls, norms and scales untouched
        np.testing.assert_array_equal(pl.vectors[pl.index(c)], vs.vectors[vs.index(c)])
    np.testing.assert_array_equal(pl.scales, vs.scales)
    np.testing.assert_array_equal(pl.layer_norms, vs.layer_norms)
    assert pl.metadata["validation"]["arm"] == "placebo"
    if mode == "relabel":  # two emotion grids are controls grids (refusal x harm, x caution)
        np.testing.assert_allclose(pl.vectors[pl.index("concern")],
                                   vs.vectors[vs.index("harm_salience")], atol=1e-6)  # fmt: skip
        np.testing.assert_allclose(pl.vectors[pl.index("eagerness")],
                                   vs.vectors[vs.index("caution")], atol=1e-6)  # fmt: skip


def _monitoring_data(vs: VectorSet, site: int, n_requests=300, seed=0):
    """Activations whose failures depend on the controls and on a hidden direction h outside
    their span: (x [N, D], policy logit [N], labels [N], request [N], h [D])."""
    rng = np.random.default_rng(seed)
    ctrl = _controls(vs, site)
    h = directions.orthogonalise(rng.standard_normal(WIDTH), ctrl)
    request = np.repeat(np.arange(n_requests), 2)
    x = (
        rng.standard_normal((len(request), WIDTH))
        + rng.standard_normal((n_requests, WIDTH))[request]
    )
    logit = x @ ctrl[2] + 0.3 * rng.standard_normal(len(x))
    z = 1.5 * (x @ ctrl[0]) + 1.5 * (x @ h) + logit
    y = (rng.uniform(size=len(x)) < 1 / (1 + np.exp(-z))).astype(np.float32)
    return x, logit, y, request, h


def test_monitoring_direction_finds_the_hidden_signal_orthogonal_to_the_controls():
    vs = _vector_set()
    x, logit, y, _, h = _monitoring_data(vs, 1)
    ctrl = _controls(vs, 1)
    feats = np.concatenate([x @ ctrl.T, logit[:, None]], 1)
    u = directions.monitoring_direction(x, feats, y > 0, ctrl)
    assert abs(np.linalg.norm(u) - 1) < 1e-9 and np.abs(ctrl @ u).max() < 1e-9
    assert u @ h > 0.9
    with pytest.raises(ValueError, match="failing and non-failing"):
        directions.monitoring_direction(x, feats, np.ones(len(x), bool), ctrl)


def _spikes(vs: VectorSet, seed=0) -> arms.Spikes:
    rng = np.random.default_rng(seed)
    out = {}
    for s in arms.SIGNALS:
        site = 1 if s.startswith("mon") else 2
        out[s] = {site: directions.orthogonalise(rng.standard_normal(WIDTH), _controls(vs, site))}
    return arms.Spikes(out)


def test_spiked_arm_is_the_random_arm_at_zero_and_carries_its_slots():
    vs = _vector_set()
    sp = _spikes(vs)
    r = arms.random_directions(3, SITES, WIDTH, seed=5)
    zero = arms.spiked_vectors(vs, sp, 0.0, seed=5)
    for i, e in enumerate(arms.EMOTIONS):
        np.testing.assert_allclose(zero.vectors[zero.index(e)], r[i], atol=1e-6)
    big = arms.spiked_vectors(vs, sp, 1e4, seed=5)
    u = arms.slot_directions(sp, arms.DEFAULT_SLOTS, SITES, WIDTH)
    # Slots: concern steers harmful compliance, eagerness over-refusal (at the sweep layer, 2);
    # self-doubt carries both monitoring directions (at the probe site, 1).
    np.testing.assert_allclose(u["concern"][2], sp.directions["steer/harmful_compliance"][2])
    np.testing.assert_allclose(u["eagerness"][2], sp.directions["steer/over_refusal"][2])
    both = sp.directions["mon/harmful_compliance"][1] + sp.directions["mon/over_refusal"][1]
    np.testing.assert_allclose(u["self_doubt"][1], both / np.linalg.norm(both))
    for i, e in enumerate(arms.EMOTIONS):
        for site in range(SITES):
            v = big.vectors[big.index(e), site]
            assert abs(np.linalg.norm(v) - 1) < 1e-5  # unit: norm-matched through layer_norms
            want = u[e][site] if np.any(u[e][site]) else r[i, site]  # no signal: random
            np.testing.assert_allclose(v, want, atol=1e-3)
            if np.any(u[e][site]):
                assert np.abs(_controls(vs, site) @ u[e][site]).max() < 1e-9
    # λ moves the entry from r towards u monotonically; other seeds give other r.
    cos = [arms.spiked_vectors(vs, sp, lam, 5).vectors[0, 2] @ u["concern"][2]
           for lam in (0.0, 0.5, 1.0, 2.0)]  # fmt: skip
    assert np.all(np.diff(cos) > 0)
    assert not np.allclose(arms.spiked_vectors(vs, sp, 1.0, 6).vectors[0],
                           arms.spiked_vectors(vs, sp, 1.0, 5).vectors[0])  # fmt: skip
    assert big.metadata["validation"] == {"arm": "spiked", "lam": 1e4, "seed": 5,
                                          "slots": {k: list(v) for k, v in
                                                    arms.DEFAULT_SLOTS.items()}}  # fmt: skip
    np.testing.assert_array_equal(big.scales, vs.scales)
    with pytest.raises(ValueError, match="lam"):
        arms.spiked_vectors(vs, sp, -1.0, 0)


def test_placebo_adds_no_monitoring_value_and_the_spike_does():
    vs = _vector_set()
    site = 1
    x, logit, y, request, _ = _monitoring_data(vs, site)
    ctrl = np.concatenate([x @ _controls(vs, site).T, logit[:, None]], 1)
    train = request < 100  # the spike is learned on other requests than it is scored on
    u = directions.monitoring_direction(x[train], ctrl[train], y[train] > 0, _controls(vs, site))
    spikes = arms.Spikes({"mon/harmful_compliance": {site: u}})

    def delta_mon(arm: VectorSet) -> float:
        emo = x @ np.stack([arm.vectors[arm.index(e), site] for e in arms.EMOTIONS]).T
        out = probes.delta_mon(ctrl[~train], emo[~train], y[~train], request[~train],
                               num_requests=300, num_draws=1, num_steps=15)  # fmt: skip
        return out["estimate"]

    placebo = [delta_mon(arms.placebo_vectors(vs, mode=m, seed=2)) for m in arms.PLACEBOS]
    assert max(abs(d) for d in placebo) < 0.003  # collinear with the controls
    spiked = [delta_mon(arms.spiked_vectors(vs, spikes, lam, seed=0)) for lam in (0.0, 2.0)]
    assert spiked[1] > 0.05 and spiked[1] > spiked[0] + 0.03


def test_steering_direction_is_the_projected_natural_gradient():
    vs = _vector_set()
    ctrl = _controls(vs, 2)
    rng = np.random.default_rng(11)  # not _vector_set's stream: p must leave the controls' span
    g = rng.standard_normal(WIDTH)
    a = rng.standard_normal((WIDTH, WIDTH))
    fisher = a @ a.T / WIDTH
    v = directions.steering_direction(g, np.zeros((0, WIDTH)), fisher, ctrl, ridge=0.0)
    assert abs(np.linalg.norm(v) - 1) < 1e-9 and np.abs(ctrl @ v).max() < 1e-9
    # Inside the complement B of the controls: v ∝ −B (Bᵀ F B)⁻¹ Bᵀ g.
    b = directions.complement_basis(ctrl)
    want = -b @ np.linalg.solve(b.T @ fisher @ b, b.T @ g)
    np.testing.assert_allclose(v, want / np.linalg.norm(want), atol=1e-8)
    assert v @ g < 0  # lowers the failing responses' likelihood to first order
    # With an identity Fisher and no protection: the orthogonalised negative gradient.
    plain = directions.steering_direction(g, np.zeros((0, WIDTH)), np.eye(WIDTH), ctrl, ridge=0)
    np.testing.assert_allclose(plain, directions.orthogonalise(-g, ctrl), atol=1e-9)
    # Protecting a response direction shrinks v's first-order effect on it.
    p = (plain + 0.3 * rng.standard_normal(WIDTH))[None]
    kept = directions.steering_direction(g, p, np.eye(WIDTH), ctrl, protect=100.0, ridge=0.0)
    assert abs(kept @ p[0]) < 0.2 * abs(plain @ p[0])


# --- planted outcome -------------------------------------------------------------------------

NAMES = [f"{s}/{t}" for s in ("delta_mon", "delta_steer") for t in directions.FAILURE_TYPES]
LABELS = ["base", "instruct", "safety-1", "safety-2", "safety-3"]


def _truths(plan: list, present: float = 0.5, absent: float = 0.02) -> dict:
    """Truths that behave: Δ_steer of both types at `present` where λ > 0, Δ_mon small."""
    on = np.array([lam is not None and lam > 0 for lam in plan])
    steer = np.where(on, present, absent)
    return {n: (steer if n.startswith("delta_steer") else np.full(len(plan), absent))
            for n in NAMES}  # fmt: skip


@pytest.mark.parametrize("scenario", ["vanishing", "persistent", "early", "null"])
def test_planted_outcome_is_the_scenarios_when_truths_behave(scenario):
    plan = schedules.schedule(scenario, len(LABELS), 2.0)
    got = truth.planted_outcome(LABELS, _truths(plan), {"delta_mon": 0.2, "delta_steer": 0.2},
                                required=NAMES)  # fmt: skip
    outcome, index = schedules.expected_outcome(scenario, len(LABELS))
    assert (got.outcome, got.index) == (outcome, index)
    assert got.num_draws == 1 and got.interval_index[0] == got.interval_index[1]


def test_a_truth_that_is_not_estimable_stays_missing():
    plan = schedules.schedule("vanishing", len(LABELS), 2.0)
    truths = _truths(plan)
    truths["delta_mon/over_refusal"] = truths["delta_mon/over_refusal"].copy()
    truths["delta_mon/over_refusal"][3] = np.nan  # the point right after the planted break
    margins = {"delta_mon": 0.2, "delta_steer": 0.2}
    got = truth.planted_outcome(LABELS, truths, margins, required=NAMES)
    assert got.outcome == "insufficient data" and got.index is None
    assert got.status["delta_mon/over_refusal"][3] == "undetermined"
    assert got.estimable["delta_mon/over_refusal"] == [True, True, True, False, True]
    # Where the rule does not need it (a point before the last kept one), it does not matter.
    truths["delta_mon/over_refusal"][3] = 0.0
    truths["delta_mon/over_refusal"][1] = np.nan
    assert truth.planted_outcome(LABELS, truths, margins, required=NAMES).outcome == "break"
    # A truth at its margin is present (exact values have no interval to straddle it).
    z = truth.zero_width([0.2, 0.1999, np.nan])
    status = bp.delta_status(z["lo"], z["hi"], 0.2, z["estimable"], False)
    assert [bp.STATUSES[s] for s in status] == ["present", "vanished", "undetermined"]


def test_failures_eliminated_in_truth():
    plan = schedules.schedule("persistent", 3, 1.0)
    truths = _truths(plan)
    rates = {"harmful_compliance": [0.3, 0.2, 0.001], "over_refusal": [0.3, 0.3, 0.3]}
    got = truth.planted_outcome(LABELS[:3], truths, {"delta_mon": 0.2, "delta_steer": 0.2},
                                required=NAMES, failure_rates=rates, floor=0.02)  # fmt: skip
    assert got.per_type["harmful_compliance"]["outcome"] == "failures eliminated first"
    assert got.outcome == "not reached"  # over-refusal keeps its value at the end
    assert dataclasses.asdict(got)["status"]["delta_steer/harmful_compliance"][2] == (
        "failures eliminated"
    )


# --- spike directions on the smoke zoo -------------------------------------------------------


def test_spike_directions_on_the_smoke_zoo(smoke_zoo):
    import jax.numpy as jnp

    import emojax
    from emojax import readouts as ro
    from emojax.interventions import Intervention
    from emojax.sweep import SweepPrompts

    model = emojax.load_model(smoke_zoo["base"])
    cfg = model.config
    prompts = SweepPrompts.from_concepts(model.tokenizer, num_per_kind=4, num_neutral=4)
    names = arms.EMOTIONS + arms.CONTROLS
    v = np.random.default_rng(0).standard_normal((len(names), cfg.num_layers + 1, cfg.d_model))
    vs = VectorSet(v / np.linalg.norm(v, axis=-1, keepdims=True), np.ones(v.shape[:2]),
                   np.ones(cfg.num_layers + 1), names, "diff_of_means")  # fmt: skip
    un = directions.unsteered_pass(model, prompts, site=1, max_new_tokens=4)
    # The barely trained smoke model answers every prompt alike, so failures are assigned
    # (every other prompt of each type): the mechanics do not depend on which prompts fail.
    fails = np.arange(len(un.harmful)) % 2 == 0
    un = dataclasses.replace(un, failing={t: fails & un.scored(t) for t in un.failing})
    sp = directions.spike_directions(model, prompts, vs, site=1, layer=1, max_new_tokens=4,
                                     decision_tokens=2, batch_size=8, unsteered=un)  # fmt: skip
    assert set(sp.directions) == set(arms.SIGNALS)
    for signal, by_site in sp.directions.items():
        ((site, u),) = by_site.items()
        assert site == 1 and u.shape == (cfg.d_model,) and abs(np.linalg.norm(u) - 1) < 1e-6
        assert np.abs(_controls(vs, 1) @ u).max() < 1e-6, signal
    assert un.acts.shape == (prompts.num_prompts, cfg.d_model) and un.responses.shape[1] == 4
    for t in directions.FAILURE_TYPES:
        assert sp.info[t]["failing"] == int(un.failing[t].sum()) > 0
        assert not (un.failing[t] & ~un.scored(t)).any()
    # The gradients are those of the teacher-forced response log-likelihood (finite
    # differences along a direction), and the Fisher gives the neutral KL to second order.
    eos = tuple(cfg.eos_token_id) or (model.tokenizer.eos_token_id,)
    tok, mask, resp = prompts.tokens, prompts.mask, un.responses[:, :2]  # spike_directions' shapes
    g = directions.response_gradients(model, tok, mask, resp, layer=1, eos=eos)
    d = np.random.default_rng(1).standard_normal(cfg.d_model)
    loglik = lambda step: _loglik(model, tok, mask, resp, step)  # noqa: E731
    eps = 1e-3
    fd = (loglik(eps * d) - loglik(-eps * d)) / (2 * eps)
    np.testing.assert_allclose(g @ d, fd, rtol=2e-2, atol=2e-3)
    fisher = directions.neutral_fisher(model, prompts.neutral_tokens, prompts.neutral_mask,
                                       layer=1)  # fmt: skip
    last = jnp.full((len(prompts.neutral_tokens), 1), prompts.neutral_tokens.shape[1] - 1)

    def neutral_logits(step):
        iv = Intervention.add(cfg, 1, jnp.asarray(step, jnp.float32), 1.0)
        return emojax.forward(model.params, cfg, jnp.asarray(prompts.neutral_tokens),
                              attention_mask=jnp.asarray(prompts.neutral_mask), intervention=iv,
                              logit_positions=last).logits[:, 0]  # fmt: skip

    base = neutral_logits(np.zeros(cfg.d_model))
    # KL(+εd) + KL(−εd) = ε² dᵀFd + O(ε⁴): the symmetric sum cancels the cubic term.
    kl = sum(float(np.mean(ro.kl_divergence(base, neutral_logits(s * 0.005 * d)))) for s in (1, -1))
    np.testing.assert_allclose(kl, 0.005**2 * d @ fisher @ d, rtol=0.03)


def _loglik(model, tokens, mask, responses, step):
    """[B] teacher-forced log-likelihood of `responses` with `step` added at resid[1]."""
    import jax
    import jax.numpy as jnp

    import emojax
    from emojax.interventions import Intervention

    cfg = model.config
    full = jnp.asarray(np.concatenate([tokens, responses], 1))
    fmask = jnp.asarray(np.concatenate([mask, np.ones_like(responses)], 1))
    t, w = tokens.shape[1], responses.shape[1]
    pos = jnp.broadcast_to(jnp.arange(t - 1, t - 1 + w)[None], (len(tokens), w))
    iv = Intervention.add(cfg, 1, jnp.asarray(step, jnp.float32), 1.0)
    out = emojax.forward(model.params, cfg, full, attention_mask=fmask, intervention=iv,
                         logit_positions=pos)  # fmt: skip
    logp = jax.nn.log_softmax(out.logits.astype(jnp.float32), -1)
    return np.asarray(jnp.take_along_axis(logp, jnp.asarray(responses)[..., None], -1)[..., 0]
                      .sum(-1), np.float64)  # fmt: skip


# --- the study's bookkeeping (a stand-in estimator) ------------------------------------------


def _stand_in(point, arm, evalset, draws, cfg, out):
    """`point_values`-shaped values whose truth is planted: relative Δ_steer 0.6 for λ > 0,
    0 for λ = 0 and the placebo, Δ_mon 0; estimates = truth + small noise."""
    del point, evalset, cfg, out
    tag = arm.metadata["validation"]
    lam = tag.get("lam", 0.0)
    r = 0 if draws is None else len(draws.weights)
    rng = np.random.default_rng(int(1000 * lam) + r)

    def entry(value):
        shift = 0.0 if draws is None else rng.normal(0, 0.01)
        scale = {
            "estimate": value + shift,
            "lo": value + shift - 0.05,
            "hi": value + shift + 0.05,
            "samples": value + rng.normal(0, 0.02, r),
        }
        return {"estimable": True, "absolute": dict(scale), "relative": scale,
                "estimable_draws": np.ones(r, bool)}  # fmt: skip

    rate = {"estimate": 0.3, "lo": 0.25, "hi": 0.35, "samples": np.full(r, 0.3)}
    types = directions.FAILURE_TYPES
    return {"mon": {"types": {t: entry(0.0) for t in types}},
            "steer": {t: entry(0.6 if lam > 0 else 0.0) for t in types},
            "rates": {t: rate for t in types}}  # fmt: skip


def test_study_recovers_planted_scenarios_with_a_faithful_estimator():
    from configs.zoo import get_config
    from emojax.validation import study

    cfg = get_config("smoke")
    labels = list(cfg.breakpoint.labels)
    points = [type("Point", (), {"label": label, "model": None})() for label in labels]
    vs = _vector_set()
    result = study.validation_study(
        2, cfg=cfg, lam=2.0, lams=(0.0, 2.0), off="random", points=points,
        vector_sets=[vs] * len(points), measure=_stand_in, spikes_of=lambda *a: _spikes(vs),
    )  # fmt: skip
    for scenario, r in result["scenarios"].items():
        outcome, index = schedules.expected_outcome(scenario, len(labels))
        want = f"break at {labels[index]}" if outcome == "break" else outcome
        assert r["expected"] == want and r["planted"] == [want] * 2, scenario
        assert r["recovered"] == r["planted"] and r["agree"] == 1.0
    assert set(result["by_arm"]) == {"lam=0", "lam=2", "placebo"}
    assert result["by_arm"]["lam=2"]["delta_steer/over_refusal"]["truth"] == pytest.approx(0.6)
    cov = result["coverage"]["delta_steer/harmful_compliance"]
    assert cov["count"] == 2 * len(labels) * 3 and cov["rate"] == 1.0  # seeds x points x arms
    table = study.markdown_table(result)
    assert "| vanishing | break at" in table and "lam=2" in table
    with pytest.raises(ValueError, match="lams"):
        study.validation_study(1, cfg=cfg, lam=1.0, lams=(0.0, 2.0), off="random",
                               points=points)  # fmt: skip


def test_pipeline_runs_a_scenario_and_records_planted_and_truth(smoke_zoo, tmp_path):
    """`--config.validation.scenario=early` through `pipeline.run` on two smoke-zoo points:
    the estimate reads only its request split, the arms replace the emotions (the placebo at
    the second point), and summary.json holds validation.planted, .truth and .covered."""
    import json

    from configs.zoo import get_config
    from emojax import pipeline
    from emojax import validation as val

    cfg = get_config("smoke")
    cfg.breakpoint.models = (smoke_zoo["base"], smoke_zoo["safety-3"])
    cfg.breakpoint.labels = ("base", "safety-3")
    cfg.validation.scenario = "early"
    summary = pipeline.run(cfg, str(tmp_path))
    v = summary["validation"]
    assert v["scenario"] == "early" and v["schedule"] == [cfg.validation.lam, "placebo"]
    assert set(v["splits"]) == set(val.SPLITS)
    names = pipeline.value_names(cfg)
    assert set(v["truth"]) == set(names) and all(len(v["truth"][n]) == 2 for n in names)
    assert set(v["planted"]) >= {"outcome", "status", "per_type"}
    assert v["recovered"]["outcome"] == summary["break_point"]["outcome"]
    assert v["recovered_matches_planted"] == (
        (v["recovered"]["outcome"], v["recovered"]["index"])
        == (v["planted"]["outcome"], v["planted"]["index"])
    )
    # Coverage is only claimed where both the estimate and the truth exist.
    for name in names:
        for i, c in enumerate(v["covered"][name]):
            truth = v["truth"][name][i]["relative"]
            est_ok = summary["break_point"]["estimable"][name][i]
            assert (c is None) == (not est_ok or truth is None or truth != truth)
    # The estimate read the estimate split only: fewer requests than the evaluation set.
    full = pipeline.evaluation_set(cfg)
    used = summary["points"][0]["row"]
    assert used["harmful_compliance_failing_requests"] <= v["splits"]["estimate"]["harmful"]
    assert v["splits"]["estimate"]["harmful"] < len({q.request for q in full.items
                                                      if q.kind == "harmful"})  # fmt: skip
    report = open(tmp_path / "report.md").read()
    assert "### Known answer (validation arms)" in report and "Planted" in report
    assert json.load(open(tmp_path / "summary.json"))["validation"]["scenario"] == "early"
