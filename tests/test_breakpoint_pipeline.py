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
    assert set(brk) >= {"index", "label", "interval", "reached_fraction", "first_crossing"}
    lo_hi = lambda key: np.array([[float(r[f"{key}_lo"]), float(r[f"{key}_hi"])] for r in rows])
    mon, steer = lo_hi("delta_mon"), lo_hi("delta_steer")
    for r in rows:
        assert float(r["delta_mon_lo"]) <= float(r["delta_mon_hi"])
        assert 0.0 <= float(r["policy_dominance"]) <= 1.0
        assert 0.0 <= float(r["failure_rate"]) <= 1.0
    significant = (mon[:, 0] > 0) | (steer[:, 0] > 0)
    if brk["index"] is not None:
        # A break point is never before a point whose intervals exclude 0.
        assert not significant[brk["index"] :].any()
        assert (mon[brk["index"] :, 1] < cfg.breakpoint.mon_threshold).all()
        assert (steer[brk["index"] :, 1] < cfg.breakpoint.steer_threshold).all()
    else:
        assert brk["label"] == "not reached"
    lo, hi = brk["interval"]
    assert 0 <= lo <= hi <= len(rows)


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
