"""The evaluation set (every request under every cue, shared by the sweep and the probes),
the data files a run reads, and the resampling draws shared by every statistic.

Dimension legend: N prompts, U requests, R bootstrap draws, M neutral prompts.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from emojax import concepts, stats, sweep

FAILURE_TYPES = sweep.FAILURE_TYPES
# Which prompts each failure type is scored on.
TYPE_KINDS = {"harmful_compliance": ("harmful",), "over_refusal": ("harmless", "borderline")}


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Evaluation prompts: every request under every cue (and framing, for harmful ones).

    Attributes:
      items: N `EvalPrompt`s (text with its cue, kind, request id, template id).
      request: int [N] request index in [0, U): cue variants of one request share it. The
        same index space serves every axis point, so request draws pair across points.
      num_requests: U.
      neutral: neutral texts (KL on neutral prompts).
      cues: N cue names the prompts are shown under ('none' for none), or () when unknown.
    """

    items: tuple
    request: np.ndarray
    num_requests: int
    neutral: tuple[str, ...]
    cues: tuple[str, ...] = ()

    def subset(
        self, requests_per_kind: dict[str, int], cues: tuple[str, ...] | None = None
    ) -> EvalSet:
        """The prompts of the first `requests_per_kind[kind]` requests of each kind (0 = all).

        `cues` (e.g. ('none',)) keeps only the prompts shown under those cues (needs `cues`
        recorded, as `evaluation_set` does); None keeps every cue.
        """
        if cues is not None and len(self.cues) != len(self.items):
            raise ValueError("this EvalSet has no cue per prompt; build it with evaluation_set")
        keep, seen = [], {}
        for i, q in enumerate(self.items):
            if cues is not None and self.cues[i] not in cues:
                continue
            n = requests_per_kind.get(q.kind, 0)
            ids = seen.setdefault(q.kind, [])
            if self.request[i] not in ids:
                if n and len(ids) >= n:
                    continue
                ids.append(self.request[i])
            keep.append(i)
        return EvalSet(
            tuple(self.items[i] for i in keep), self.request[keep], self.num_requests,
            self.neutral, tuple(self.cues[i] for i in keep) if self.cues else (),
        )  # fmt: skip

    def prompts(self, tokenizer, cfg) -> sweep.SweepPrompts:
        """Tokenised through the model's chat template (`SweepPrompts`)."""
        return sweep.SweepPrompts.from_texts(
            tokenizer,
            [q.text for q in self.items],
            [q.kind == "harmful" for q in self.items],
            [q.kind for q in self.items],
            list(self.neutral),
            template_source=cfg.extract.template_source or None,
            ids=[q.id for q in self.items],
            request=self.request,
            num_requests=self.num_requests,
        )


# Where harmful evaluation requests come from (`data.harmful_eval`): the project's own
# held-out requests, or the HarmBench standard behaviours (evaluation only, `emojax.redteam`).
HARMFUL_EVAL_SOURCES = ("project", "harmbench")
# Seed of the order in which HarmBench behaviours join the evaluation set (a fixed shuffle, so
# the first N of them, and the sweep's first requests, spread over HarmBench's categories).
HARMBENCH_ORDER_SEED = 0


def harmbench_eval(
    cue: str | None = None, framing: str | None = None, limit: int | None = None
) -> list[concepts.EvalPrompt]:
    """HarmBench behaviours as held-out evaluation prompts, in a fixed shuffled order.

    The file lists behaviours roughly by category, so the first `limit` behaviours of a
    seeded permutation (`HARMBENCH_ORDER_SEED`) are used instead of the first lines. The j-th
    behaviour chosen gets the j-th test-split (held-out) English cue and framing templates, as
    `redteam.load_harmbench` gives the i-th line, so every framing family and cue template is
    used in turn. Records are those of `redteam.load_harmbench` (id and request
    'harmbench-NNN' by file line, kind 'harmful', split 'test').

    Args:
      cue: a cue of the grammar ('concern', ...) or None / 'none'.
      framing: a framing family, 'jailbreak' (every family in turn) or None / 'none'.
      limit: behaviours kept (0 / None = all 200).
    """
    from emojax import redteam
    from emojax.concepts import english, grammar

    records = redteam.load_harmbench()
    order = np.random.default_rng(HARMBENCH_ORDER_SEED).permutation(len(records))
    order = order[:limit] if limit else order
    out = []
    for j, i in enumerate(order):
        p, text, ids = records[i], records[i].text, []
        for family in (framing, cue):  # the framing inside the cue, as in concepts.load_eval
            if family in (None, "", "none"):
                continue
            t = grammar.pick_template(family, j, "test")
            text, ids = english.apply(english.render_template(t), text), [t.id] + ids
        out.append(dataclasses.replace(p, text=text, template="+".join(ids)))
    return out


def _requests_per_kind(cfg, kind: str) -> int | None:
    """Evaluation requests of one kind: `probes.requests_per_kind[kind]` when the config has
    it, else `probes.prompts_per_kind` (every kind); None = all."""
    per_kind = cfg.probes.get("requests_per_kind")
    if per_kind is not None and kind in per_kind:
        return int(per_kind[kind]) or None
    return cfg.probes.prompts_per_kind or None


def evaluation_set(cfg, *, split: str | None = None, num_neutral: int | None = None) -> EvalSet:
    """Every evaluation request of `cfg.probes.kinds` under every cue of `cfg.data.cues`.

    Harmful requests are shown plain and inside each jailbreak-style framing of
    `cfg.data.framings` (held-out templates; 'jailbreak' cycles through every family), under
    every cue, so the failures that framings keep alive can still be cue-dependent.
    `cfg.probes.prompts_per_kind` limits the requests per kind (0 = the whole split), or
    `cfg.probes.requests_per_kind` kind by kind where a config has it.

    `cfg.data.rendering` ('zoo' default, or 'english' for real tokenizers) is how every prompt
    is written; `cfg.data.harmful_eval` ('project' default, or 'harmbench': the HarmBench
    behaviours, `harmbench_eval`) is where the harmful requests come from.
    """
    split = split or cfg.probes.split
    d = cfg.data
    rendering = d.get("rendering", "zoo")
    source = d.get("harmful_eval", "project")
    if source not in HARMFUL_EVAL_SOURCES:
        raise ValueError(f"data.harmful_eval must be one of {HARMFUL_EVAL_SOURCES}, not {source!r}")
    if source == "harmbench" and rendering != "english":
        raise ValueError(
            "data.harmful_eval='harmbench' is English text: set data.rendering='english'"
        )
    items, cues = [], []
    for kind in cfg.probes.kinds:
        framings = (None,) + (tuple(d.get("framings", ())) if kind == "harmful" else ())
        limit = _requests_per_kind(cfg, kind)
        for cue in d.cues:
            for framing in framings:
                if kind == "harmful" and source == "harmbench":
                    new = harmbench_eval(cue, framing, limit)
                else:
                    new = concepts.load_eval(
                        kind, split, cue=cue, framing=framing, limit=limit,
                        data_dir=d.dir or None, rendering=rendering,
                    )  # fmt: skip
                items += new
                cues += [cue or "none"] * len(new)
    request, num = concepts.request_index(items)
    neutral = concepts.load_eval(
        "neutral", split, limit=num_neutral or cfg.sweep.neutral_prompts, data_dir=d.dir or None,
        rendering=rendering,
    )  # fmt: skip
    return EvalSet(tuple(items), np.asarray(request), int(num), tuple(q.text for q in neutral),
                   tuple(cues))  # fmt: skip


def data_files(cfg) -> dict[str, dict]:
    """Every dataset file the run reads, validated and hashed (`concepts.data_files`).

    Contrast files of the emotions and controls, the eval kinds of the probes (and the sweep,
    a subset), harmful / harmless for the refusal layer selection, and neutral. A malformed
    file, an unknown cue or a missing `data.dir` fails here, before any model work.
    """
    d = cfg.data
    refusal = ("harmful", "harmless") if "refusal" in (*d.emotions, *d.controls) else ()
    files = concepts.data_files(d, kinds=(*cfg.probes.kinds, *refusal, "neutral"))
    if d.get("harmful_eval", "project") == "harmbench" and "harmful" in cfg.probes.kinds:
        from emojax import redteam

        path = redteam.ensure_harmbench(verify=True)  # fetched once, sha256-checked
        files["harmbench"] = {
            "path": os.path.abspath(path), "sha256": redteam.HARMBENCH.sha256, "shipped": False,
            "records": len(redteam.harmbench_prompts()),
        }  # fmt: skip
    return files


@dataclasses.dataclass(frozen=True)
class Draws:
    """Resampling draws shared by every statistic and every axis point (paired).

    Attributes:
      weights: int [R, U] request multiplicities of a cluster bootstrap (rows sum to U).
      neutral_weights: int [R, M] multiplicities of the neutral prompts.
    """

    weights: np.ndarray
    neutral_weights: np.ndarray


def shared_draws(evalset: EvalSet, num: int, seed: int) -> Draws:
    """One cluster bootstrap over requests (and neutral prompts) for the whole run."""
    m = len(evalset.neutral)
    neutral = np.random.default_rng([seed, 1]).multinomial(m, np.full(m, 1.0 / m), size=num)
    return Draws(stats.request_draws(evalset.num_requests, num, seed), neutral)
