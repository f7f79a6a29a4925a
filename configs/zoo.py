"""Default configuration: the whole break-point analysis on the embedded model zoo.

Examples:
  python scripts/breakpoint.py                                  # = --config=configs/zoo.py
  python scripts/breakpoint.py --config=configs/zoo.py:smoke    # tiny, for tests
  python scripts/extract_vectors.py --config=configs/zoo.py --model=instruct --workdir=/tmp/x

Each section belongs to one stage of the pipeline: zoo, data, extract, sweep, probes,
breakpoint, mesh.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    """Returns the zoo config; `arg='smoke'` shrinks everything for tests."""
    smoke = arg == "smoke"
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dtype = "float32"
    c.workdir = ""  # "" -> a fresh directory under ./runs/

    # --- zoo ---
    c.zoo = ml_collections.ConfigDict()
    c.zoo.smoke = smoke
    c.zoo.cache_dir = ""  # "" -> ~/.cache/emojax/zoo/<config hash>/

    # --- data ---
    c.data = ml_collections.ConfigDict()

    # --- extract ---
    c.extract = ml_collections.ConfigDict()

    # --- sweep ---
    c.sweep = ml_collections.ConfigDict()

    # --- probes ---
    c.probes = ml_collections.ConfigDict()

    # --- breakpoint ---
    c.breakpoint = ml_collections.ConfigDict()
    c.breakpoint.models = ["base", "instruct", "safety-1", "safety-2", "safety-3"]
    c.breakpoint.mon_threshold = 0.01
    c.breakpoint.steer_threshold = 0.01

    # --- mesh ---
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.model = 1
    return c
