"""The end-to-end break-point analysis on the smoke zoo: outputs, structure, invariants."""

import csv
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

import emojax
from configs.zoo import get_config
from emojax import pipeline


@pytest.fixture(scope="module")
def run(smoke_zoo, tmp_path_factory):
    cfg = get_config("smoke")
    cfg.breakpoint.models = [smoke_zoo[n] for n in ("base", "instruct", "safety-3")]
    cfg.breakpoint.labels = ["base", "instruct", "safety-3"]
    workdir = str(tmp_path_factory.mktemp("breakpoint"))
    summary = pipeline.run(cfg, workdir)
    return cfg, workdir, summary


def test_writes_every_output(run):
    _, workdir, _ = run
    for name in (
        "report.md",
        "summary.json",
        "points.csv",
        "config.json",
        "break_draws.npz",
        "incremental_value.png",
        "stability_modularity.png",
        "cross_steering.png",
    ):
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    for label in ("base", "instruct", "safety-3"):
        point = os.path.join(workdir, "points", label)
        for name in ("point.json", "stability.csv", "sweep/readouts.npz"):
            assert os.path.exists(os.path.join(point, name)), (label, name)
    report = open(os.path.join(workdir, "report.md")).read()
    assert "not claims about real language models" in report
    assert "![incremental value](incremental_value.png)" in report


def test_summary_structure_and_break_point_invariant(run):
    cfg, workdir, summary = run
    assert summary["labels"] == ["base", "instruct", "safety-3"]
    with open(os.path.join(workdir, "points.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == summary["labels"]
    brk = summary["break_point"]
    assert brk["outcome"] in ("break", "not reached", "failures eliminated first",
                              "insufficient data")  # fmt: skip
    assert (brk["index"] is None) == (brk["outcome"] in ("not reached", "insufficient data"))
    assert (brk["label"] is None) == (brk["index"] is None)
    assert brk["required"] == list(cfg.breakpoint.required)
    lo_i, hi_i = brk["interval_index"]
    assert isinstance(lo_i, int) and isinstance(hi_i, int) and 0 <= lo_i <= hi_i <= len(rows) + 1
    names = summary["labels"] + ["not reached", "insufficient data"]
    assert brk["interval"] == [names[lo_i], names[hi_i]]
    assert sum(brk["draw_outcomes"].values()) == pytest.approx(1.0)
    assert brk["reached_fraction"] == brk["draw_outcomes"]["break"]
    margins = summary["margins"]
    statuses = ("present", "vanished", "failures eliminated", "undetermined")
    for i, r in enumerate(rows):
        assert 0.0 <= float(r["policy_dominance"]) <= 1.0
        for t in ("harmful_compliance", "over_refusal"):
            assert float(r[f"{t}_rate_lo"]) <= float(r[f"{t}_rate"]) <= float(r[f"{t}_rate_hi"])
            for stat in ("delta_mon", "delta_steer"):
                key = f"{stat}_{t}"
                status = brk["status"][f"{stat}/{t}"][i]
                assert r[key + "_status"] == status and status in statuses
                if r[f"{key}_estimable"] == "True":
                    est, lo, hi = (float(r[k]) for k in (key, key + "_lo", key + "_hi"))
                    assert lo <= est <= hi  # an interval contains its estimate
                    if r[key + "_null_p"]:
                        assert 0.0 < float(r[key + "_null_p"]) <= 1.0
                else:  # not estimable: empty cells, never a 0, and never vanished
                    assert r[key] == "" and r[key + "_hi"] == "" and r[key + "_rel"] == ""
                    assert status in ("undetermined", "failures eliminated")
    # The rule: from the break on, every required Δ is vanished or its failures eliminated,
    # read on the rule's scale with its margin.
    if brk["index"] is not None:
        for name in brk["required"]:
            assert all(st in ("vanished", "failures eliminated")
                       for st in brk["status"][name][brk["index"] :])  # fmt: skip
    assert set(margins) == {"delta_mon", "delta_steer"}


def test_report_shows_types_and_estimability(run):
    from emojax import report as rp
    from emojax import results

    _, workdir, summary = run
    report = open(os.path.join(workdir, "report.md")).read()
    lines = report.splitlines()
    brk = summary["break_point"]
    # The headline: the outcome first, then which Δs were required and where estimable.
    head = lines[2]
    assert head.startswith("**") and brk["outcome"].lower() in head.lower()
    assert "Required: Δ_mon HC, Δ_mon OR, Δ_steer HC, Δ_steer OR" in head
    for name, ok in brk["estimable"].items():
        assert f"{rp.delta_name(name)} {sum(ok)}/3" in head
    if brk["outcome"] == "insufficient data":
        assert "stop adding" not in head
    assert "not a known answer" in lines[4]  # the synthetic-organism caveat comes next
    # The per-point tables: failures per type with intervals, every (Δ, point) with status.
    with open(os.path.join(workdir, "points.csv")) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for t in ("harmful_compliance", "over_refusal"):
            rate = f"{float(r[f'{t}_rate']):.2f} [{float(r[f'{t}_rate_lo']):.2f}, "
            assert rate in report
        for name, statuses in brk["status"].items():
            i = summary["labels"].index(r["label"])
            assert f"| {rp.delta_name(name)} | {r['label']} | {statuses[i]} |" in report
    # Example generations: failing requests with their unsteered response.
    section = report.split("## Example generations")[1].split("## What was run")[0]
    for t in ("harmful_compliance", "over_refusal"):
        part = section.split(f"### {t.replace('_', ' ')}")[1].split("###")[0]
        for r in rows:
            n, failing = part.count(f"| {r['label']} |"), int(r[f"{t}_steered_failing"])
            assert min(3, failing) <= n <= 3 * (failing > 0), (t, r["label"], n)  # prompts
    # What was run, on what.
    assert f"* command: `{rp.command_line()}`" in report and "* device: CPU: " in report
    assert rp.command_line().startswith("python ")
    assert "cpu:0" not in report
    assert f"* commit: `{results.git_commit()}`" in report
    with open(os.path.join(workdir, "config.json")) as f:
        prov = json.load(f)
    for label in summary["labels"]:
        digest = prov["models"][label]["sha256"]["model.safetensors"]
        assert f"`model.safetensors` {digest}" in report
    assert "emojax zoo model" in report  # the models' provenance (no safety endpoint here)


def test_provenance(run):
    _, workdir, _ = run
    with open(os.path.join(workdir, "config.json")) as f:
        prov = json.load(f)
    assert prov["seed"] == 0
    assert set(prov["versions"]) >= {"jax", "numpy"}
    assert len(prov["models"]) == 3
    assert all(m["sha256"]["model.safetensors"] for m in prov["models"].values())


def test_dial_ends_reproduce_the_models(smoke_zoo):
    cfg = get_config("smoke")
    cfg.breakpoint.axis = "dial"
    cfg.breakpoint.dial_base = smoke_zoo["base"]
    cfg.breakpoint.dial_tuned = smoke_zoo["safety-3"]
    cfg.breakpoint.alphas = (0.0, 1.0, 1.5)
    points = list(pipeline.axis_points(cfg))
    assert [p.label for p in points] == ["α=0", "α=1", "α=1.5"]
    tokens = jnp.arange(2, 18, dtype=jnp.int32).reshape(2, 8)
    for point, name in zip(points[:2], ("base", "safety-3"), strict=True):
        ref = emojax.load_model(smoke_zoo[name])
        got = emojax.forward(point.model.params, point.model.config, tokens).logits
        want = emojax.forward(ref.params, ref.config, tokens).logits
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    base, tuned = (emojax.load_model(smoke_zoo[n]).params for n in ("base", "safety-3"))
    np.testing.assert_allclose(
        points[2].model.params.embed, base.embed + 1.5 * (tuned.embed - base.embed), atol=1e-6
    )


def test_dial_rejects_mismatched_checkpoints(smoke_zoo, tmp_path):
    from emojax.breakpoint import DialError

    cfg = get_config("smoke")
    other = emojax.ModelConfig.from_hf_dict(
        {**emojax.ModelConfig.from_pretrained(smoke_zoo["base"]).to_hf_dict(),
         "num_hidden_layers": 3}
    )  # fmt: skip
    import jax

    emojax.save_pretrained(emojax.init_params(other, jax.random.PRNGKey(0)), other, tmp_path)
    cfg.breakpoint.axis = "dial"
    cfg.breakpoint.dial_base = smoke_zoo["base"]
    cfg.breakpoint.dial_tuned = str(tmp_path)
    with pytest.raises(DialError, match="num_layers"):
        list(pipeline.axis_points(cfg))


def test_steering_value_on_a_real_sweep(run):
    """The estimable path of Δ_steer on the smoke run's sweep (min_failures lowered to 0)."""
    cfg, workdir, _ = run
    from emojax import stats, sweep

    res = sweep.SweepResults.load(os.path.join(workdir, "points", "base", "sweep"))
    u, m = res.meta["num_requests"], res.arrays["joint_kl"].shape[-1]
    draws = pipeline.Draws(
        stats.request_draws(u, 30, 0),
        np.random.default_rng(0).multinomial(m, np.full(m, 1.0 / m), size=30),
    )
    cfg = get_config("smoke")
    cfg.breakpoint.min_failures = 0
    sample = pipeline.SteeredSample(  # every request, unweighted
        evalset=None, request_weights=np.ones(u), draw_weights=draws.weights,
        chosen=np.ones(u, bool), failing=np.zeros(u, bool), strata={},
    )  # fmt: skip
    out = pipeline.steering_value(res, sample, draws, cfg)
    for ftype, v in out.items():
        assert v["estimable"], ftype
        a = v["absolute"]
        assert a["lo"] <= a["estimate"] <= a["hi"]
        assert a["samples"].shape == (30,) and v["estimable_draws"].shape == (30,)
        rel = v["relative"]
        floor = cfg.breakpoint.steer_min_rate  # the relative scale's floor on the rate
        assert rel["estimate"] == pytest.approx(a["estimate"] / max(v["unsteered_rate"], floor))
        assert 0.0 < v["null_p"] <= 1.0 and len(v["null"]) == v["null_arms"]
        assert v["null_arms"] == min(cfg.breakpoint.num_null, 4)  # C(4, 1) distinct arms
        cols = pipeline.point._value_columns("delta_steer", out, {}, cfg)
        assert cols[f"delta_steer_{ftype}"] == a["estimate"]
    cfg.breakpoint.min_failures = 10_000  # nothing is estimable: never a 0
    out = pipeline.steering_value(res, sample, draws, cfg)
    assert not any(v["estimable"] for v in out.values())
    assert all(np.isnan(v["absolute"]["estimate"]) for v in out.values())
