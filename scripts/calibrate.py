r"""Calibration of the break rule as shipped, on simulated axes with known answers.

Examples:
  python scripts/calibrate.py --seeds=60               # docs/method.md's tables (~18 min, 2 cores)
  python scripts/calibrate.py --quick --seeds=3        # small and fast (as in CI)
  python scripts/calibrate.py --validation --seeds=20  # placebo and spiked arms (issue 24)
  python scripts/calibrate.py --validation --seeds=2 \
      --config.breakpoint.models='("base", "safety-1", "safety-3")' \
      --config.breakpoint.labels='("base", "safety-1", "safety-3")'   # a 3-point axis
  python scripts/calibrate.py --sweep=runs/zoo/points/base/sweep

Prints Markdown tables (emojax.calibration.markdown_table: coverage and statuses of every Δ on
both scales; the rule's answers per planted scenario) and writes the numbers as JSON. With
--validation it runs emojax.validation.study.validation_study on --config (the zoo by default;
its `validation` section sets λ, the off-points and the splits) and prints its table.
With --sweep it also runs Δ_steer between two disjoint arms of a finished sweep's random
directions (emojax.calibration.random_arm_calibration).
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emojax import calibration, results  # noqa: E402
from emojax.workdir import define_config_file, run_main  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = define_config_file(
    "config", os.path.join(_REPO, "configs", "zoo.py"), "The host of --validation (a config)."
)
_SEEDS = flags.DEFINE_integer("seeds", 60, "Simulated axes per scenario (seeds).")
_QUICK = flags.DEFINE_bool("quick", False, "Fewer requests, draws and truth prompts (CI).")
_OUT = flags.DEFINE_string("out", "calibration.json", "Where to write the JSON results.")
_VALIDATION = flags.DEFINE_bool(
    "validation", False, "Run emojax.validation's known-answer study instead."
)
_SWEEP = flags.DEFINE_multi_string("sweep", [], "Sweep work directories (random-arm study).")
_KAPPA = flags.DEFINE_float("kappa", 0.1, "KL budget of the random-arm study.")


def validation_table(num_seeds: int, cfg=None) -> str:
    """emojax.validation.study's table, or a user error while that module does not exist."""
    try:
        from emojax.validation import study
    except ImportError as e:
        if getattr(e, "name", None) not in ("emojax.validation", "emojax.validation.study"):
            raise
        raise FileNotFoundError(
            "--validation needs emojax/validation/study.py (issue 24), not in this checkout yet"
        ) from None
    result = study.validation_study(num_seeds=num_seeds, cfg=cfg)
    return result if isinstance(result, str) else study.markdown_table(result)


def main(argv: list[str]) -> None:
    del argv
    if _VALIDATION.value:
        print(validation_table(_SEEDS.value, _CONFIG.value))
        return
    result = calibration.run_calibration(_SEEDS.value, quick=_QUICK.value)
    print(calibration.markdown_table(result))
    if _SWEEP.value:
        result["sweeps"] = {
            p: calibration.sweep_calibration(p, _KAPPA.value, num_pairs=_SEEDS.value)
            for p in _SWEEP.value
        }
        print(calibration.sweep_table(result["sweeps"]))
    results.write_text(_OUT.value, json.dumps(result, indent=2))  # atomic: never half a file
    print(f"wrote {_OUT.value} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    run_main(main)
