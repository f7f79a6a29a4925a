"""The main job: the break-point analysis along a policy-dominance axis.

With no flags it runs the default (configs/zoo.py): builds the embedded model zoo if absent,
runs extraction, steering sweeps and monitoring probes at every axis point, finds the break
point and writes report.md, summary.json, points.csv, plots and per-prompt readouts.

Examples:
  python scripts/breakpoint.py
  python scripts/breakpoint.py --workdir=runs/zoo
  python scripts/breakpoint.py --config=configs/zoo.py:smoke --workdir=/tmp/bp_smoke
  python scripts/breakpoint.py --config=configs/zoo.py --config.breakpoint.axis=dial
  python scripts/breakpoint.py --config=configs/gemma2_2b.py --workdir=runs/gemma2_2b

Rerunning the same config into a work directory resumes it; a different config is refused
before anything is written, unless --overwrite (the old outputs then move into
<workdir>/previous-<timestamp>/).
"""

import datetime
import os

from absl import flags, logging

from emojax import pipeline, sharding
from emojax.workdir import define_config_file, run_main

# configs/ sits beside scripts/: the default is found from any working directory.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = define_config_file(
    "config",
    os.path.join(_REPO, "configs", "zoo.py"),
    "Config file (ml_collections), e.g. configs/zoo.py or configs/gemma2_2b.py:dial.",
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default: runs/<time>).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite",
    False,
    "Use a work directory that holds another config's outputs: they are moved into "
    "<workdir>/previous-<timestamp>/ first (without it such a directory is refused).",
)


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    cfg = _CONFIG.value
    sharding.maybe_initialize_distributed(cfg.mesh.distributed)  # before any device use
    pipeline.quiet_library_logs()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = _WORKDIR.value or cfg.workdir or os.path.join("runs", f"breakpoint-{stamp}")
    summary = pipeline.run(cfg, workdir, overwrite=_OVERWRITE.value)
    if not sharding.is_writer():
        return
    if summary.get("preflight_only"):
        print("\n" + pipeline.preflight_table(summary))
        print(f"preflight: {os.path.abspath(os.path.join(workdir, 'preflight.json'))}")
        return
    brk = summary["break_point"]
    where = f" at {brk['label']}" if brk["label"] else ""
    print(f"\noutcome: {brk['outcome']}{where}  (95 % interval {brk['interval']})")
    print(f"report: {os.path.abspath(os.path.join(workdir, 'report.md'))}")


if __name__ == "__main__":
    run_main(main)
