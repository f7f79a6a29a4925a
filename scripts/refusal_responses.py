r"""Greedy responses of a real model for hand-labelling refusals (the classifier's check set).

Examples:
  python scripts/refusal_responses.py                      # SmolLM2, writes the unlabelled set
  python scripts/refusal_responses.py --limit=16 --out=/tmp/r.jsonl

The prompts, the generation and the merge that keeps existing hand labels of unchanged
responses are `emojax.refusal_labels` (`write_labelled_set`); new or changed responses get
`refused: null` to be labelled by reading them.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from emojax import concepts
from emojax.refusal_labels import write_labelled_set
from emojax.workdir import run_main

_MODEL = flags.DEFINE_string("model", "smollm2-135m-instruct", "registered name or path.")
_OUT = flags.DEFINE_string(
    "out", str(concepts.DATA_DIR / "refusal_labels.jsonl"), "JSONL file to write (merged)."
)
_BATCH = flags.DEFINE_integer("batch", 30, "prompts per generate call.")
_NEW = flags.DEFINE_integer("max_new_tokens", 64, "greedy tokens per response.")
_LIMIT = flags.DEFINE_integer("limit", 0, "only the first N prompts (0 = all).")
_PARTS = flags.DEFINE_list("parts", ["dev", "heldout"], "parts of the labelled set to write.")


def main(argv):
    del argv
    n = write_labelled_set(
        _MODEL.value, _OUT.value, parts=_PARTS.value, batch=_BATCH.value,
        max_new_tokens=_NEW.value, limit=_LIMIT.value,
    )  # fmt: skip
    print(f"wrote {n} records to {Path(_OUT.value)}")


if __name__ == "__main__":
    run_main(main)
