"""The work directory contract, checkpoint checks before any work, and provenance hashes.

* Outputs are published atomically: a write that fails (a kill simulated by an exception in
  the writer, in `os.replace` or in matplotlib's savefig) leaves the previous file intact.
* `summary.json` is written last and carries the config fingerprint.
* A rerun of the same config resumes; another config is refused before anything is written
  (every file hashed before and after), or moved aside with `overwrite=True`.
* Every axis checkpoint is checked (config.json, weight headers, dial ends) before the first
  point is analysed, without loading weights; corrupt files are named.

None of these tests runs the analysis: the guard, the checks and the writers are exercised
on tiny random checkpoints and a synthetic two-point result (seconds in all).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re

import jax
import matplotlib.figure
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import emojax
from configs.zoo import get_config
from emojax import breakpoint as bp
from emojax import pipeline, plots, report, results
from emojax.workdir import (
    MARKER,
    WorkdirError,
    check_workdir,
    config_fingerprint,
    start_run,
    stored_config,
)

TINY = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
        "vocab_size": 64}  # fmt: skip


def _checkpoint(path: pathlib.Path, **overrides) -> str:
    """A tiny random Llama checkpoint with a (placeholder) tokenizer file."""
    config = emojax.ModelConfig.from_hf_dict({**TINY, **overrides})
    emojax.save_pretrained(emojax.init_params(config, jax.random.PRNGKey(0)), config, str(path))
    (path / "tokenizer_config.json").write_text("{}")
    return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("ckpts")
    return {
        "a": _checkpoint(root / "a"),
        "b": _checkpoint(root / "b"),
        "deep": _checkpoint(root / "deep", num_hidden_layers=3),
    }


def _cfg(ckpts, **breakpoint):
    cfg = get_config("smoke")
    cfg.breakpoint.models = (ckpts["a"], ckpts["b"])
    cfg.breakpoint.labels = ("a", "b")
    for k, v in breakpoint.items():
        cfg.breakpoint[k] = v
    return cfg


def _hashes(root) -> dict[str, str]:
    """Relative path -> sha256 of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _previous_run(workdir: pathlib.Path, cfg) -> dict[str, str]:
    """A work directory as a finished run of `cfg` leaves it; returns its file hashes."""
    start_run(check_workdir(str(workdir), cfg))
    (workdir / "points" / "a" / "sweep").mkdir(parents=True)
    (workdir / "points" / "a" / "sweep" / "readouts.npz").write_bytes(b"npz" * 100)
    (workdir / "points.csv").write_text("label\na\nb\n")
    (workdir / "report.md").write_text("# the good report\n")
    (workdir / "summary.json").write_text(json.dumps({"config_fingerprint": "x"}))
    return _hashes(workdir)


# ---------------------------------------------------------------------------------------------
# Atomic writers


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    results.write_text(str(path), "good\n")

    def half_then_killed(f):
        f.write(b"partial")
        raise KeyboardInterrupt  # a kill inside the writer

    with pytest.raises(KeyboardInterrupt):
        results.atomic_write(str(path), half_then_killed)
    assert path.read_text() == "good\n" and os.listdir(tmp_path) == ["report.md"]

    def killed_at_rename(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(results.os, "replace", killed_at_rename)
    with pytest.raises(KeyboardInterrupt):
        results.write_text(str(path), "new\n")
    assert path.read_text() == "good\n" and os.listdir(tmp_path) == ["report.md"]
    monkeypatch.undo()
    results.write_text(str(path), "new\n")  # the writer itself publishes the new content
    assert path.read_text() == "new\n"


def test_a_failing_savefig_leaves_the_previous_plot(tmp_path, monkeypatch):
    path = str(tmp_path / "stability_modularity.png")
    band = {"est": [0.5, 0.6], "lo": [0.4, 0.5], "hi": [0.6, 0.7]}
    plots.plot_curves(["a", "b"], {"panel": {"curve": band}}, path=path)
    good = open(path, "rb").read()
    assert good.startswith(b"\x89PNG")

    def broken_savefig(self, fname, **kwargs):
        fname.write(b"\x89PNG half a file")
        raise MemoryError("killed while rendering")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    with pytest.raises(MemoryError):
        plots.plot_curves(["a", "b"], {"panel": {"curve": band}}, path=path)
    assert open(path, "rb").read() == good and os.listdir(tmp_path) == [os.path.basename(path)]


def _synthetic_result(seed: int = 0, num_draws: int = 20, sources: list[str] | None = None):
    """A two-point result as `pipeline.run` hands it to `report.write_outputs`."""
    rng = np.random.default_rng(seed)
    labels = ["base", "instruct"]
    sources = sources or [f"/ckpt/{label}" for label in labels]
    points, per_point = [], []
    for i, label in enumerate(labels):
        types = {}
        for stat in ("delta_mon", "delta_steer"):
            for t in pipeline.FAILURE_TYPES:
                est = float(rng.normal(0.02, 0.01))
                scale = {"estimate": est, "lo": est - 0.03, "hi": est + 0.03,
                         "samples": est + rng.normal(0, 0.01, num_draws)}  # fmt: skip
                types[(stat, t)] = {
                    "estimable": True, "absolute": scale, "relative": dict(scale),
                    "estimable_draws": np.ones(num_draws, bool),
                    "null_q05": -0.05, "null_q95": 0.05, "null_p": 0.4,
                    "num_failing_requests": 6, "num_ok_requests": 6,
                }  # fmt: skip
        row = {"label": label, "source": sources[i], "policy_dominance": 0.2 * i,
               "harmful_compliance_rate": 0.4, "harmful_compliance_rate_lo": 0.3,
               "harmful_compliance_rate_hi": 0.5, "over_refusal_rate": 0.1,
               "over_refusal_rate_lo": 0.05, "over_refusal_rate_hi": 0.2, "refusal_rate": 0.5,
               "harmful_compliance_failing_requests": 9, "over_refusal_failing_requests": 3,
               "split_half": 0.9, "cross_domain": 0.8, "cross_model_cosine": 1.0,
               "selectivity": 1.5, "offtarget_kl_per_unit_effect": 0.01,
               "style_vs_safety": float("nan"), "style_vs_safety_defined": False,
               "sweep_layer": 1, "probe_site": 1,
               **{k: False for k, _ in report.DIAGNOSTICS}}  # fmt: skip
        for stat in ("delta_mon", "delta_steer"):
            sub = {t: v for (s, t), v in types.items() if s == stat}
            row.update(pipeline.point._value_columns(stat, sub, {}, get_config("smoke")))
        examples = {t: [{"prompt": f"request {k} of {t}", "unsteered": f"unsteered answer {k}",
                         "steered": f"steered answer {k}", "steering": "refusal +0.5, concern -0.5"}
                        for k in range(4)] for t in pipeline.FAILURE_TYPES}  # fmt: skip
        values = {f"{s}/{t}": {**v, "unsteered_rate": 0.4, "auroc_controls": 0.7}
                  for (s, t), v in types.items()}  # fmt: skip
        points.append({"row": row, "detail": {"row": row}, "matrix": np.eye(3),
                       "matrix_rows": ["x", "y", "z"], "matrix_cols": ["x", "y", "z"],
                       "values": values, "examples": examples})  # fmt: skip
        per_point.append(types)
    deltas = {}
    for name in pipeline.value_names(get_config("smoke")):
        stat, t = name.split("/")
        vals = [p[(stat, t)] for p in per_point]
        deltas[name] = {k: np.array([v["relative"][k] for v in vals])
                        for k in ("estimate", "lo", "hi")}  # fmt: skip
        deltas[name]["samples"] = np.stack([v["relative"]["samples"] for v in vals])
        deltas[name]["estimable"] = np.array([True, True])
    margins = {"delta_mon": 0.05, "delta_steer": 0.05}
    brk = bp.find_break_point(labels, deltas, margins)
    for i, p in enumerate(points):  # as pipeline.run does
        for name, st in brk.status.items():
            p["row"][name.replace("/", "_") + "_status"] = st[i]
    return points, deltas, margins, brk


def test_every_output_is_published_atomically_and_summary_last(tmp_path, monkeypatch):
    cfg = get_config("smoke")
    published = []
    real = results.atomic_write

    def recorded(path, write):
        published.append(path)
        real(path, write)

    monkeypatch.setattr(results, "atomic_write", recorded)
    summary = report.write_outputs(cfg, str(tmp_path), *_synthetic_result(), seconds=1.0)
    names = [os.path.relpath(p, tmp_path) for p in published]
    assert sorted(names) == sorted(os.listdir(tmp_path))  # every file went through the writer
    assert set(names) >= {"points.csv", "break_draws.npz", "incremental_value.png",
                          "stability_modularity.png", "cross_steering.png", "config.json",
                          "report.md", "summary.json"}  # fmt: skip
    assert names[-1] == "summary.json"  # the completion marker comes last
    assert summary["config_fingerprint"] == config_fingerprint(cfg)
    assert json.load(open(tmp_path / "config.json"))["config_fingerprint"] == config_fingerprint(
        cfg
    )


def test_report_names_the_answer_the_command_device_commit_and_checkpoints(tmp_path, ckpts):
    cfg = _cfg(ckpts)
    points, deltas, margins, brk = _synthetic_result(sources=[ckpts["a"], ckpts["b"]])
    cfg.breakpoint.labels = ("base", "instruct")
    report.write_outputs(cfg, str(tmp_path), points, deltas, margins, brk, seconds=1.0)
    text = (tmp_path / "report.md").read_text()
    lines = text.splitlines()
    assert lines[2] == report.headline(brk, ["base", "instruct"], [p["row"] for p in points])
    assert lines[2].startswith(f"**{brk.outcome[0].upper()}") and "Required: Δ_mon HC" in lines[2]
    assert "| base | 9 | 0.40 [0.30, 0.50] |" in text  # failures per type with intervals
    assert f"| Δ_steer OR | instruct | {brk.status['delta_steer/over_refusal'][1]} |" in text
    assert text.count("| request 0 of harmful_compliance | unsteered answer 0 |") == 2
    assert "request 3 of" not in text  # three examples per type and point
    prov = json.loads((tmp_path / "config.json").read_text())
    assert f"* command: `{report.command_line()}`" in text and prov["command"]
    assert f"* device: {report.device_name()}" in text and "cpu:0" not in text
    assert f"* commit: `{results.git_commit()}`" in text
    for label, name in (("base", "a"), ("instruct", "b")):
        digest = results.model_hash(ckpts[name])["model.safetensors"]
        assert prov["models"][label]["sha256"]["model.safetensors"] == digest
        assert f"`model.safetensors` {digest}" in text
    assert "No safety-tuned endpoint" in text and "local checkpoint" in text


def test_a_kill_while_the_report_is_written_keeps_the_previous_report(tmp_path, monkeypatch):
    cfg = get_config("smoke")
    report.write_outputs(cfg, str(tmp_path), *_synthetic_result(0), seconds=1.0)
    before = _hashes(tmp_path)
    real_replace = os.replace

    def killed_at_report(src, dst):
        if os.path.basename(dst) == "report.md":
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(results.os, "replace", killed_at_report)
    with pytest.raises(KeyboardInterrupt):  # another result: every table and plot differs
        report.write_outputs(cfg, str(tmp_path), *_synthetic_result(1), seconds=2.0)
    after = _hashes(tmp_path)
    assert after.keys() == before.keys()  # no temporary file, nothing truncated
    assert after["report.md"] == before["report.md"]
    assert after["summary.json"] == before["summary.json"]  # the old run's marker, untouched
    assert after["points.csv"] != before["points.csv"]  # the writes before it did happen


# ---------------------------------------------------------------------------------------------
# Resume, refuse, overwrite


def test_fingerprint_is_the_resolved_config_without_workdir():
    a, b = get_config("smoke"), get_config("smoke")
    b.workdir = "/elsewhere"
    b.breakpoint.models = list(a.breakpoint.models)  # a list assigned is the same tuple
    assert config_fingerprint(a) == config_fingerprint(b)
    b.data.max_pairs = 8
    assert config_fingerprint(a) != config_fingerprint(b)


def test_same_config_resumes_and_keeps_every_file(tmp_path):
    cfg = get_config("smoke")
    assert check_workdir(str(tmp_path / "new"), cfg).action == "fresh"
    assert check_workdir(str(tmp_path), cfg).action == "fresh"  # empty
    before = _previous_run(tmp_path, cfg)
    state = check_workdir(str(tmp_path), cfg)
    assert state.action == "resume"
    assert start_run(state) is None
    assert _hashes(tmp_path) == before  # run.json too: nothing rewritten


def test_another_config_is_refused_before_anything_is_written(tmp_path, ckpts, monkeypatch):
    old = _cfg(ckpts)
    before = _previous_run(tmp_path, old)
    new = _cfg(ckpts)
    new.data.max_pairs = 8
    new.breakpoint.labels = ("first", "second")
    for stage in ("data_files", "preflight", "evaluation_set", "analyse_point"):
        monkeypatch.setattr(
            pipeline.analysis, stage, lambda *a, **k: pytest.fail("work was started")
        )
    with pytest.raises(WorkdirError, match=r"data\.max_pairs: 16 -> 8") as e:
        pipeline.run(new, str(tmp_path))
    assert "breakpoint.labels" in str(e.value) and "--overwrite" in str(e.value)
    assert _hashes(tmp_path) == before  # byte for byte, and no new file


def test_overwrite_moves_the_old_outputs_aside(tmp_path, ckpts, monkeypatch):
    old = _cfg(ckpts)
    before = _previous_run(tmp_path, old)
    new = _cfg(ckpts)
    new.data.max_pairs = 8

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    # the first stage after the claim
    monkeypatch.setattr(pipeline.analysis, "evaluation_set", stop)
    with pytest.raises(Stop):
        pipeline.run(new, str(tmp_path), overwrite=True)
    (previous,) = [e for e in os.listdir(tmp_path) if e.startswith("previous-")]
    assert sorted(os.listdir(tmp_path)) == sorted([previous, MARKER])
    assert _hashes(tmp_path / previous) == before  # kept whole, not mixed
    assert json.load(open(tmp_path / MARKER))["fingerprint"] == config_fingerprint(new)
    assert check_workdir(str(tmp_path), new).action == "resume"
    with pytest.raises(WorkdirError):  # and the old config is now the different one
        check_workdir(str(tmp_path), old)


def test_outputs_of_runs_without_a_marker(tmp_path):
    cfg = get_config("smoke")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    prov = results.provenance(config=cfg)  # what every run's config.json has recorded
    (legacy / "config.json").write_text(json.dumps(prov))
    (legacy / "report.md").write_text("old")
    assert stored_config(str(legacy)) is not None
    assert check_workdir(str(legacy), cfg).action == "resume"
    other = get_config("smoke")
    other.seed = 1
    with pytest.raises(WorkdirError, match=r"seed: 0 -> 1"):
        check_workdir(str(legacy), other)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(WorkdirError, match=r"files of no emojax run.*notes\.txt"):
        check_workdir(str(foreign), cfg)
    assert check_workdir(str(foreign), cfg, overwrite=True).action == "overwrite"


# ---------------------------------------------------------------------------------------------
# Checkpoints checked before any work


def test_a_typo_in_the_second_model_fails_before_any_work(tmp_path, ckpts, monkeypatch):
    cfg = _cfg(ckpts)
    cfg.breakpoint.models = (ckpts["a"], ckpts["b"] + "_typo")
    monkeypatch.setattr(pipeline.axis, "load_point_model", lambda *a: pytest.fail("model loaded"))
    workdir = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="b_typo") as e:
        pipeline.run(cfg, str(workdir))
    assert "axis checkpoint 2 of 2" in "".join(e.value.__notes__)
    assert not workdir.exists()  # nothing written
    cfg.breakpoint.models = (ckpts["a"], ckpts["b"])  # the same config with the path fixed
    assert list(pipeline.preflight(cfg)) == list(cfg.breakpoint.models)


def _copy_ckpt(src: str, dest: pathlib.Path) -> pathlib.Path:
    import shutil

    shutil.copytree(src, dest)
    return dest


def test_preflight_reads_headers_only_and_names_the_bad_tensor(tmp_path, ckpts, monkeypatch):
    bad = _copy_ckpt(ckpts["b"], tmp_path / "bad")
    tensors = load_file(str(bad / "model.safetensors"))
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((3, 3), np.float32)
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    cfg = _cfg(ckpts)
    cfg.breakpoint.models = (ckpts["a"], str(bad))
    for reader in ("params_from_tensors", "iter_tensors"):  # no weight is read
        monkeypatch.setattr(emojax.loading, reader, lambda *a, **k: pytest.fail("weights read"))
    with pytest.raises(emojax.CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj.*\(3, 3\)"):
        pipeline.preflight(cfg)
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((64, 32), np.int32)
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(emojax.CheckpointError, match=r"up_proj.*dtype I32"):
        pipeline.preflight(cfg)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(emojax.CheckpointError, match=r"missing.*layers\.1\.mlp\.up_proj"):
        pipeline.preflight(cfg)
    (pathlib.Path(ckpts["a"]) / "tokenizer_config.json").rename(tmp_path / "tok")
    try:
        with pytest.raises(FileNotFoundError, match="no tokenizer files"):
            pipeline.preflight(_cfg(ckpts))
    finally:
        (tmp_path / "tok").rename(pathlib.Path(ckpts["a"]) / "tokenizer_config.json")


def test_dial_ends_are_compared_before_loading(ckpts, monkeypatch):
    cfg = _cfg(ckpts, axis="dial", dial_base=ckpts["a"], dial_tuned=ckpts["deep"])
    monkeypatch.setattr(pipeline.axis, "load_point_model", lambda *a: pytest.fail("model loaded"))
    with pytest.raises(bp.DialError, match="num_layers"):
        pipeline.preflight(cfg)
    cfg.breakpoint.dial_tuned = ckpts["b"]  # same architecture: passes
    assert set(pipeline.preflight(cfg)) == {ckpts["a"], ckpts["b"]}


def test_corrupt_weights_and_config_are_named(tmp_path, ckpts):
    bad = _copy_ckpt(ckpts["a"], tmp_path / "bad")
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    for load in (emojax.load_model, emojax.loading.validate_checkpoint):
        with pytest.raises(emojax.CheckpointError, match=rf"{re.escape(str(weights))}.*truncated"):
            load(str(bad))
    weights.write_bytes(b"\x00" * 7)
    with pytest.raises(emojax.CheckpointError, match=re.escape(str(weights))):
        emojax.load_model(str(bad))
    config = bad / "config.json"
    config.write_text('{"model_type": "llama",')
    for load in (emojax.load_model, emojax.ModelConfig.from_pretrained):
        with pytest.raises(ValueError, match=rf"{re.escape(str(config))} is not valid JSON"):
            load(str(bad))
    (bad / "config.json").write_text("[1, 2]")
    with pytest.raises(emojax.ConfigError, match="not an object"):
        emojax.load_model(str(bad))
    (bad / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(emojax.ConfigError, match=rf"{re.escape(str(config))}.*missing field"):
        emojax.load_model(str(bad))
    sharded = _copy_ckpt(ckpts["a"], tmp_path / "sharded")
    (sharded / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(emojax.CheckpointError, match=r"index\.json is not a safetensors index"):
        emojax.loading.validate_checkpoint(str(sharded))


# ---------------------------------------------------------------------------------------------
# Provenance


def test_zoo_model_directory_hashes_exclude_build_timings(tmp_path):
    from emojax.zoo import build
    from emojax.zoo.tokenizer import build_tokenizer

    config = emojax.ModelConfig.from_hf_dict(TINY)
    params = emojax.init_params(config, jax.random.PRNGKey(0))
    tok = build_tokenizer(["a b c d"])
    z = get_config("smoke").zoo
    hashes = []
    for i, summary in enumerate([{"final_loss": 1.0, "seconds": 3.2},
                                 {"final_loss": 1.0, "seconds": 9.7},
                                 {"final_loss": 1.5, "seconds": 3.2}]):  # fmt: skip
        root = tmp_path / str(i)
        root.mkdir()
        build._export(root, "base", params, config, tok, "digest", summary, z)
        hashes.append(results.model_hash(str(root / "base")))
    assert hashes[0] == hashes[1]  # identical builds, different wall times
    assert hashes[0] != hashes[2]  # the training record itself still counts
