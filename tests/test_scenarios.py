"""The zoo can disagree: every scenario's planted break is recovered by the whole pipeline.

Each scenario (emojax.zoo.scenario) plants a different truth on the same five-stage axis:
`vanishing` (break at safety-2), `persistent` (not reached), `early` (break at instruct) and
`null` (break at base). The validation zoo (`configs/zoo.py:validation`) is built per scenario
and the full break-point analysis runs on it; the recovered outcome and break must match.
"""

import os

import pytest

from configs.zoo import get_config
from emojax import pipeline
from emojax.zoo import build_zoo
from emojax.zoo.scenario import SCENARIOS

STAGES = ("base", "instruct", "safety-1", "safety-2", "safety-3")


@pytest.mark.parametrize("scenario", ["vanishing", "persistent", "early", "null"])
def test_recovers_planted_break(scenario, tmp_path_factory):
    cfg = get_config("validation")
    cfg.zoo.scenario = scenario
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    paths = build_zoo(cfg, base / f"validation_zoo_{scenario}")
    cfg.breakpoint.models = [str(paths[s]) for s in STAGES]
    cfg.breakpoint.labels = list(STAGES)
    summary = pipeline.run(cfg, str(tmp_path_factory.mktemp(f"scenario_{scenario}")))
    truth = SCENARIOS[scenario]
    brk = summary["break_point"]
    table = [
        (p["row"]["label"], {k: p["row"][k] for k in p["row"] if k.endswith("_hi")})
        for p in summary["points"]
    ]
    assert brk["outcome"] == truth.expected_outcome, (brk, table)
    assert brk["label"] == truth.expected_break, (brk, table)
