r"""Builds the embedded model zoo (base, instruct, safety-1..3) and prints its behaviour table.

Examples:
  python scripts/build_zoo.py                                   # = --config=configs/zoo.py
  python scripts/build_zoo.py --config=configs/zoo.py:smoke --workdir=/tmp/smoke_zoo
  python scripts/build_zoo.py --config.zoo.scenario=persistent  # another planted truth

The zoo goes to ~/.cache/emojax/zoo/<config hash>/ unless --workdir is given; a complete build
there is reused, an interrupted one is detected and finished. The scenario (vanishing, persistent,
early, null: `emojax.zoo.scenario`) is part of the hash; its planted table is printed first.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emojax.workdir import define_config_file, run_main  # noqa: E402
from emojax.zoo import (  # noqa: E402
    build_zoo,
    format_behaviour,
    load_behaviour,
    planted_markdown,
    scenario_name,
)

# configs/ sits beside scripts/: the default is found from any working directory.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = define_config_file(
    "config",
    os.path.join(_REPO, "configs", "zoo.py"),
    "Config file (configs/zoo.py or configs/zoo.py:smoke).",
)
_WORKDIR = flags.DEFINE_string("workdir", "", "Zoo directory (default: the cache directory).")


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.INFO)
    print(planted_markdown(scenario_name(_CONFIG.value)) + "\n")
    paths = build_zoo(_CONFIG.value, _WORKDIR.value or None, log=logging.info)
    root = os.path.dirname(paths["base"])
    print(format_behaviour(load_behaviour(root)))
    print(json.dumps(paths, indent=2))


if __name__ == "__main__":
    run_main(main)
