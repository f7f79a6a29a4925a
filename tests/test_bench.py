"""scripts/bench.py runs end to end on a tiny model and reports every required number."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
REQUIRED = (
    "sweep_speedup_vs_torch_hooks",
    "generation_speedup_vs_torch_hooks",
    "intervention_overhead",
    "capture_overhead",
    "roofline_fraction",
)


def test_bench_quick_json_reports_required_keys_and_agreement():
    tiny = ["--d_model=64", "--num_layers=2", "--num_heads=4", "--d_ff=128", "--vocab=512"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--json", *tiny],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    for key in REQUIRED:
        assert np.isfinite(r[key]) and r[key] > -1.0, key
    assert r["sweep_speedup_vs_torch_hooks"] > 0 and r["generation_speedup_vs_torch_hooks"] > 0
    # Both implementations ran the same weights on the same prompts.
    assert r["max_refusal_score_diff"] < 1e-3
    assert r["generated_token_agreement"] == 1.0
