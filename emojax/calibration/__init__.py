"""Calibration of the break rule as shipped, on simulated axes whose answers are known.

`run_calibration` (`emojax.calibration.study`) simulates axes with planted answers
(`emojax.calibration.scenarios`: a null, persistent and vanishing value, failures eliminated,
missing data, value at the margin) under the settings of the shipped configs (`Regime`:
relative margins, the failure floor, min_failures, κ, equal arms, stratified steered
requests, shared request draws). Each axis is measured as the pipeline measures a real one
(`emojax.calibration.axis`): Δ_steer with the real cross-fitted `delta_steer` on simulated
clustered requests (`world`, `grids`), Δ_mon with a NumPy form of the probes' estimator
(`monitor`), both on both scales, read by `emojax.breakpoint.find_break_point`. Every truth
is computed (Φ of the latent model for Δ_steer, a 400,000-prompt sample for Δ_mon).
`markdown_table` prints the README's tables. `steer` and `random_arms` keep the one-arm
simulator the Δ_steer tests use and the random-arm check on a real sweep.
"""

from emojax.calibration.axis import simulate_axis
from emojax.calibration.grids import Arms, build_arms, plant, true_steer
from emojax.calibration.monitor import (
    delta_mon_numpy,
    fit_logistic,
    stratified_grouped_folds,
    weighted_auroc,
)
from emojax.calibration.random_arms import (
    random_arm_calibration,
    sweep_calibration,
    sweep_table,
)
from emojax.calibration.scenarios import SCENARIOS, Plan, Regime, Scenario
from emojax.calibration.steer import (
    SteerSim,
    simulate_random_grids,
    simulate_steer,
    true_delta,
    true_rates,
)
from emojax.calibration.study import (
    RULES,
    markdown_table,
    not_estimable_as_vanished,
    quick_regime,
    read_axis,
    run_calibration,
)
from emojax.calibration.world import Latents, Requests, draw_requests, true_mon, unsteered

__all__ = [
    "RULES",
    "SCENARIOS",
    "Arms",
    "Latents",
    "Plan",
    "Regime",
    "Requests",
    "Scenario",
    "SteerSim",
    "build_arms",
    "delta_mon_numpy",
    "draw_requests",
    "fit_logistic",
    "markdown_table",
    "not_estimable_as_vanished",
    "plant",
    "quick_regime",
    "random_arm_calibration",
    "read_axis",
    "run_calibration",
    "simulate_axis",
    "simulate_random_grids",
    "simulate_steer",
    "stratified_grouped_folds",
    "sweep_calibration",
    "sweep_table",
    "true_delta",
    "true_mon",
    "true_rates",
    "true_steer",
    "unsteered",
    "weighted_auroc",
]
