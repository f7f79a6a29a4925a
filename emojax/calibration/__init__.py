"""Calibration of Δ_steer and of the break rule on simulated clustered data with known truth.

Measured over seeds (DESIGN.md §5, calibration): coverage of the truth by the 95 % Δ_steer
interval and the false "significant" rate (lo > 0 under the null) on simulated steering data
(`emojax.calibration.steer`); the break rule's outcome on axes with planted answers
(`emojax.calibration.break_rule`); a monitoring null for Δ_mon with plain NumPy logistic
probes (`emojax.calibration.monitor`); and, as a second source, two arms of real
random-direction grids from a real sweep (`emojax.calibration.random_arms`).
`run_calibration` runs the whole study and `markdown_table` prints it
(`emojax.calibration.study`).
"""

from emojax.calibration.break_rule import (
    SCENARIOS,
    Scenario,
    break_study,
    simulate_axis,
)
from emojax.calibration.monitor import (
    delta_mon_numpy,
    fit_logistic,
    monitor_study,
    simulate_monitoring,
    weighted_auroc,
)
from emojax.calibration.random_arms import (
    random_arm_calibration,
    sweep_calibration,
)
from emojax.calibration.steer import (
    SteerSim,
    simulate_random_grids,
    simulate_steer,
    steer_study,
    true_delta,
    true_rates,
)
from emojax.calibration.study import (
    markdown_table,
    run_calibration,
)

__all__ = [
    "SCENARIOS",
    "Scenario",
    "SteerSim",
    "break_study",
    "delta_mon_numpy",
    "fit_logistic",
    "markdown_table",
    "monitor_study",
    "random_arm_calibration",
    "run_calibration",
    "simulate_axis",
    "simulate_monitoring",
    "simulate_random_grids",
    "simulate_steer",
    "steer_study",
    "sweep_calibration",
    "true_delta",
    "true_rates",
    "weighted_auroc",
]
