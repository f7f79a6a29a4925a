"""Builds (or reuses) the safety-tuned SmolLM2 and prints its held-out evaluation.

The registered recipe (`emojax.safety_model.RECIPE`) is what `emojax.load_model(
"smollm2-135m-safety")` builds on first use; this script runs that build with its progress
on stderr, or reads the cached result, and prints the instruct-vs-tuned table and the wall
time per stage. Overriding the recipe needs another --name (the registered name always
holds the registered recipe).

Examples:
  python scripts/tune_safety.py                                   # build once, then reuse
  python scripts/tune_safety.py --name=smollm2-135m-safety-s160 --steps=160
"""

from __future__ import annotations

import dataclasses
import json

from absl import app, flags

from emojax import safety_model
from emojax.workdir import run_main

_NAME = flags.DEFINE_string("name", safety_model.NAME, "model name (a directory in the cache).")
_STEPS = flags.DEFINE_integer("steps", None, "override the recipe's tuning steps.")
_FRACTION = flags.DEFINE_float("harmful_fraction", None, "override the harmful batch share.")
_LR = flags.DEFINE_float("learning_rate", None, "override the peak learning rate.")
_ANSWERS = flags.DEFINE_integer("n_answers", None, "override the number of own answers.")
_JSON = flags.DEFINE_bool("json", False, "print the whole evaluation report as JSON.")


def recipe_from_flags() -> safety_model.SafetyRecipe:
    spec = {k: f.value for k, f in (("steps", _STEPS), ("harmful_fraction", _FRACTION),
                                    ("learning_rate", _LR)) if f.value is not None}  # fmt: skip
    recipe = dataclasses.replace(
        safety_model.RECIPE, spec=dataclasses.replace(safety_model.RECIPE.spec, **spec)
    )
    if _ANSWERS.value is not None:
        recipe = dataclasses.replace(recipe, n_answers=_ANSWERS.value)
    if recipe != safety_model.RECIPE and _NAME.value == safety_model.NAME:
        raise app.UsageError(f"a changed recipe needs its own --name (not {safety_model.NAME})")
    return recipe


def main(argv: list[str]) -> None:
    del argv
    path = safety_model.ensure_safety_model(_NAME.value, recipe=recipe_from_flags())
    report = safety_model.read_eval(path)
    if _JSON.value:
        print(json.dumps(report, indent=2))
        return
    print(f"{path}\n\n{safety_model.format_table(report)}\n")
    stages = ", ".join(
        f"{k} {v:.0f} s" + (" (cached)" if report["cached"].get(k) else "")
        for k, v in report["seconds"].items()
    )
    print(f"wall time per stage: {stages}; {report['tune_steps_run']} tuning steps run")


if __name__ == "__main__":
    run_main(main)
