"""Batched linear monitoring probes and the incremental monitoring value of emotion features.

A probe is L2-regularised logistic regression fitted by damped Newton (IRLS) steps. Every
probe of an analysis (feature set x layer x refit-bootstrap resample x fold x regularisation
value) is fitted in one jitted program.

* `emojax.probes.fit`: one probe (`fit_logistic`, `predict_logits`) and the likelihood-ratio
  test of nested probes; the module docstring gives the loss and its scikit-learn ``C``.
* `emojax.probes.crossval`: folds (stratified, grouped by request) and nested CV of many
  probes at once (`cross_validate`).
* `emojax.probes.features`: projections, the policy logit and residual components stacked
  into feature sets (`build_feature_sets`).
* `emojax.probes.scan`: the per-layer monitoring scan (`monitor`, `monitor_arrays`).
* `emojax.probes.monitoring_value`: Δ_mon per failure type and its random-direction null
  (`delta_mon`, `delta_mon_null`).
* `emojax.probes.shift`: the finetuning-shift monitor (`finetune_shift`).
* `emojax.probes.bench`: every probe in one program against a scikit-learn loop.
* `emojax.probes.run`: the `scripts/probes.py` run into a work directory; it sits above
  `emojax.pipeline`, so this package does not import it.

Dimension letters: N prompts, L layers, D model, P (padded) features, S feature sets,
G probe groups (= S * L), B refit-bootstrap resamples, K folds, R regularisation values,
M bootstrap resamples, U requests.
"""

from emojax.probes.bench import bench_probes
from emojax.probes.crossval import (
    DEFAULT_L2_GRID,
    CrossValidated,
    cross_validate,
    stratified_folds,
    stratified_grouped_folds,
)
from emojax.probes.features import (
    CONTROLS,
    EMOTIONS,
    FEATURE_SET_NAMES,
    POLICY_LOGIT,
    FeatureSets,
    build_feature_sets,
    feature_sets_from_projections,
    project,
    residual_components,
)
from emojax.probes.fit import LogisticFit, fit_logistic, likelihood_ratio_test, predict_logits
from emojax.probes.monitoring_value import (
    delta_mon,
    delta_mon_null,
    monitor_features,
    null_p_value,
)
from emojax.probes.scan import MonitorArrays, MonitorResult, monitor, monitor_arrays
from emojax.probes.shift import finetune_shift, projection_shift

__all__ = [
    "CONTROLS",
    "DEFAULT_L2_GRID",
    "EMOTIONS",
    "FEATURE_SET_NAMES",
    "POLICY_LOGIT",
    "CrossValidated",
    "FeatureSets",
    "LogisticFit",
    "MonitorArrays",
    "MonitorResult",
    "bench_probes",
    "build_feature_sets",
    "cross_validate",
    "delta_mon",
    "delta_mon_null",
    "feature_sets_from_projections",
    "finetune_shift",
    "fit_logistic",
    "likelihood_ratio_test",
    "monitor",
    "monitor_arrays",
    "monitor_features",
    "null_p_value",
    "predict_logits",
    "project",
    "projection_shift",
    "residual_components",
    "stratified_folds",
    "stratified_grouped_folds",
]
