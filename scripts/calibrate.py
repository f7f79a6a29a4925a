r"""Calibration of Δ_steer intervals and of the break rule on simulated data with known truth.

Examples:
  python scripts/calibrate.py                          # 50 seeds, the README's table
  python scripts/calibrate.py --quick --seeds=20       # small and fast (as in CI)
  python scripts/calibrate.py --out=runs/calibration.json --margin=0.1
  python scripts/calibrate.py --sweep=runs/zoo/points/base/sweep

With --sweep, it also runs Δ_steer between two disjoint arms of a finished sweep's random
directions (exchangeable over directions: mean ~0 across pairs; see
emojax.calibration.random_arm_calibration for what the per-pair intervals mean).

Prints Markdown tables (coverage of the 95 % Δ_steer interval, false "significant" rate,
break-rule outcomes on planted axes) and writes the numbers as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emojax import calibration, results  # noqa: E402
from emojax.workdir import run_main  # noqa: E402

_SEEDS = flags.DEFINE_integer("seeds", 50, "Simulated data sets per study.")
_QUICK = flags.DEFINE_bool("quick", False, "Fewer requests and draws (CI).")
_MARGIN = flags.DEFINE_float("margin", 0.1, "Equivalence margin of Δ_steer for the break rule.")
_OUT = flags.DEFINE_string("out", "calibration.json", "Where to write the JSON results.")
_SWEEP = flags.DEFINE_multi_string("sweep", [], "Sweep work directories (random-arm study).")
_KAPPA = flags.DEFINE_float("kappa", 0.1, "KL budget of the random-arm study.")


def main(argv: list[str]) -> None:
    del argv
    start = time.perf_counter()
    result = calibration.run_calibration(_SEEDS.value, quick=_QUICK.value, margin=_MARGIN.value)
    result["seconds"] = time.perf_counter() - start
    print(calibration.markdown_table(result))
    if _SWEEP.value:
        print("\n| sweep | failure type | arm pairs | mean Δ | covers 0 | lo > 0 | hi < 0 |")
        print("|---|---|---|---|---|---|---|")
    for path in _SWEEP.value:
        real = calibration.sweep_calibration(path, _KAPPA.value, num_pairs=_SEEDS.value)
        result.setdefault("sweeps", {})[path] = real
        for ftype, r in real.items():
            print(f"| {path} | {ftype} | {r['num_pairs']} | {r['mean']:+.3f} | "
                  f"{r['coverage_zero']:.2f} | "
                  f"{r['significant']:.2f} | {r['negative']:.2f} |")  # fmt: skip
    results.write_text(_OUT.value, json.dumps(result, indent=2))  # atomic: never half a file
    print(f"wrote {_OUT.value} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    run_main(main)
