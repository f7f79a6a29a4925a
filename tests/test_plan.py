"""scripts/plan.py knows the registered models and GPU chips (emojax.run_plan,
emojax.parallel.plan).

* A registered name plans without its weights: from its cached file when it has been fetched
  or built, else from `REGISTERED_ARCHITECTURES` (nothing is downloaded or built).
* `configs/smollm2.py` on an H100 prints a plan with memory and time estimates; an unknown
  chip is one `error:` line that lists the valid ones.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from emojax import models
from emojax import sharding as sh
from emojax.parallel import plan
from emojax.run_plan import plan_report

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _plan_script(*args: str, cache: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plan.py"), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=180,
        env=dict(os.environ, JAX_PLATFORMS="cpu", EMOJAX_CACHE=str(cache)),
    )  # fmt: skip


def test_every_registered_model_has_an_architecture(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOJAX_CACHE", str(tmp_path))  # nothing cached
    for name in sorted({*models.REGISTRY, *models.BUILT}):
        c = sh.reference_config(name)
        # SmolLM2-135M (as tests/test_gguf.py reads it from the real GGUF file).
        assert (c.num_layers, c.d_model, c.num_heads, c.num_kv_heads) == (30, 576, 9, 3), name
        assert (c.vocab_size, c.tie_embeddings, c.rope_theta) == (49152, True, 100000.0)
    assert list(tmp_path.iterdir()) == []  # nothing fetched or built


def test_a_cached_registered_model_is_read_from_its_files(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOJAX_CACHE", str(tmp_path))
    built = models.model_path("smollm2-135m-safety")
    built.mkdir(parents=True)
    (built / ".lock").write_text("")  # a build under way: no config yet, the table answers
    assert sh.reference_config("smollm2-135m-safety").num_layers == 30
    tiny = {**plan.REFERENCE_HF_CONFIGS["smollm2-135m"], "num_hidden_layers": 2}
    (built / "config.json").write_text(json.dumps(tiny))
    assert sh.reference_config("smollm2-135m-safety").num_layers == 2


def test_an_unknown_model_lists_the_registered_and_known_names():
    with pytest.raises(ValueError, match="registered model") as info:
        sh.reference_config("smollm3-135m")
    assert "smollm2-135m-instruct, smollm2-135m-safety" in str(info.value)
    assert "llama-3.1-8b" in str(info.value)


def test_gpu_chips_plan_with_their_memory(tmp_path, monkeypatch):
    from configs.smollm2 import get_config

    monkeypatch.setenv("EMOJAX_CACHE", str(tmp_path))
    cfg = get_config("")
    for chip, gib in (("h100", 80), ("h200", 140), ("a100", 80)):
        report = plan_report("smollm2-135m-instruct", cfg, 1, 1, chip=chip)
        assert f"on 1 x {chip} ({gib} GiB, " in report, report
        assert f"GiB of {gib} GiB per chip: fits" in report
        assert "on demand" not in report  # no GPU price is listed
    assert "~ $" in plan_report("smollm2-135m-instruct", cfg, 1, 1, chip="v5e")
    with pytest.raises(ValueError, match="unknown chip 'h800': known are v5e, v5p, v6e, h100"):
        plan_report("smollm2-135m-instruct", cfg, 1, 1, chip="h800")


def test_plan_script_smollm2_on_an_h100(tmp_path):
    proc = _plan_script("--config=configs/smollm2.py", "--chip=h100", cache=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "== smollm2-135m-instruct: 0.13B params, float32, mesh (data, model) = (1, 1) on " \
        "1 x h100 (80 GiB, 989 TFLOP/s bf16 peak each) ==" in out, out  # fmt: skip
    assert "verified against jax.eval_shape" in out
    assert re.search(r"time at 40% MFU of the bf16 peak +[0-9.]+ (s|min|h)\n", out), out
    assert "not a known architecture" not in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []  # planned without fetching the model


def test_plan_script_unknown_chip_lists_the_valid_ones(tmp_path):
    proc = _plan_script("--config=configs/smollm2.py", "--chip=h800", cache=tmp_path)
    assert proc.returncode == 2
    errors = [s for s in proc.stderr.splitlines() if s.startswith("error: ")]
    assert errors == ["error: flag --chip=h800: value should be one of "
                      "<v5e|v5p|v6e|h100|h200|a100>"], proc.stderr[-3000:]  # fmt: skip
