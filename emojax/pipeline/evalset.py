"""The evaluation set (every request under every cue, shared by the sweep and the probes),
the data files a run reads, and the resampling draws shared by every statistic.

Dimension legend: N prompts, U requests, R bootstrap draws, M neutral prompts.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from emojax import concepts, redteam, stats, sweep
from emojax.concepts import english, grammar

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


# Where harmful evaluation requests come from (`data.harmful_eval`: one name, or several
# pooled, "harmbench,strongreject,phrasing"): the project's own held-out requests, or the
# red-team sets fetched from the package registry (evaluation only, `emojax.redteam`).
HARMFUL_EVAL_SOURCES = ("project", *redteam.SOURCES)
# Where harmless and borderline requests come from (`data.benign_eval`): the project's
# grammar records, and / or its English-only over-refusal set (`concepts.overrefusal`).
BENIGN_EVAL_SOURCES = ("project", "overrefusal")
# Seed of the order in which HarmBench behaviours join the evaluation set (a fixed shuffle, so
# the first N of them, and the sweep's first requests, spread over HarmBench's categories).
HARMBENCH_ORDER_SEED = 0
# Each pooled source's fixed shuffle of its requests (None: file order, which the project's
# files and the over-refusal file already balance over domains).
SOURCE_ORDER_SEEDS: dict[str, int | None] = {
    "project": None, "harmbench": HARMBENCH_ORDER_SEED, "strongreject": 1, "phrasing": 2,
    "overrefusal": None,
}  # fmt: skip


def eval_sources(value, known: tuple[str, ...], key: str = "data.harmful_eval") -> tuple[str, ...]:
    """The source names of a config value: 'a', 'a,b' or a sequence; checked, each once."""
    names = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"{key} must name sources among {known}, not {value!r}")
    return names


def interleave(
    groups: dict[str, list[concepts.EvalPrompt]],
    limit: int | None = None,
    per_request: int | None = None,
) -> list[concepts.EvalPrompt]:
    """Prompts of the first `limit` requests (0 / None = all), taken from the sources in turn.

    Each source lists its requests (first appearance) in a fixed order: shuffled by its seed
    in SOURCE_ORDER_SEEDS, or as written. The sources give one request each in turn (dict
    order; a request another source gave already is skipped), so the first N requests spread
    over the sources. A request comes with its prompts together, from every source in dict
    order: all of them, or the first `per_request` (0 / None = all).
    """
    orders, prompts = [], {}
    for name, records in groups.items():
        requests = list(dict.fromkeys(r.request for r in records))
        seed = SOURCE_ORDER_SEEDS.get(name)
        if seed is not None:
            requests = [requests[i] for i in np.random.default_rng(seed).permutation(len(requests))]
        orders.append(iter(requests))
        for r in records:
            prompts.setdefault(r.request, []).append(r)
    chosen: dict[str, None] = {}
    while orders and not (limit and len(chosen) >= limit):
        for order in list(orders):
            request = next((q for q in order if q not in chosen), None)
            if request is None:
                orders.remove(order)
            elif not (limit and len(chosen) >= limit):
                chosen[request] = None
    return [r for q in chosen for r in prompts[q][: per_request or None]]


def _tenses_in_turn(records: list[concepts.EvalPrompt]) -> list[concepts.EvalPrompt]:
    """Phrasing records with each cluster's past and future lines alternating (first past,
    first future, second past, ...), so the first prompts of a request cover both tenses."""
    seen: dict[tuple[str, str], int] = {}
    rank = []
    for r in records:
        key = (r.request, r.id.rsplit("-", 1)[0])  # 'phrasing-past' / 'phrasing-future'
        rank.append(seen.setdefault(key, 0))
        seen[key] += 1
    return [r for _, r in sorted(zip(rank, records, strict=True), key=lambda x: x[0])]


def pooled_requests(
    kind: str,
    sources: tuple[str, ...],
    limit: int | None = None,
    *,
    per_request: int | None = None,
    split: str | None = "test",
    data_dir: str | None = None,
) -> list[concepts.EvalPrompt]:
    """The plain (English) prompts of the first `limit` requests of one kind, pooled over sources.

    Sources are those of HARMFUL_EVAL_SOURCES (kind 'harmful') or BENIGN_EVAL_SOURCES:
    'project' is `concepts.load_eval(kind, split, rendering='english')`, 'overrefusal'
    `concepts.overrefusal.load(kind)` (test split), the others `redteam.load_<source>()`.
    Request ids agree across sources and exact duplicates are kept once (`redteam.pool`),
    then `interleave` orders them in `sources` order, keeping `per_request` prompts of each
    request (0 / None = all; a phrasing cluster's tenses alternate).
    """
    fetched = tuple(s for s in sources if s in redteam.SOURCES)
    extra = {}
    for s in sources:
        if s == "project":
            extra[s] = concepts.load_eval(kind, split, data_dir=data_dir, rendering="english")
        elif s == "overrefusal":
            extra[s] = concepts.overrefusal.load(kind)
    groups = redteam.pool(fetched, extra)
    if "phrasing" in groups:
        groups["phrasing"] = _tenses_in_turn(groups["phrasing"])
    return interleave({s: groups[s] for s in sources}, limit, per_request)


def dress_in_turn(
    prompts: list[concepts.EvalPrompt], cue: str | None = None, framing: str | None = None
) -> list[concepts.EvalPrompt]:
    """The j-th prompt under the j-th test-split (held-out) English framing and cue templates
    ('jailbreak' cycles through the framing families), the framing inside the cue as in
    `concepts.load_eval`; `template` records the ids added."""
    out = []
    for j, p in enumerate(prompts):
        text, ids = p.text, []
        for family in (framing, cue):
            if family in (None, "", "none"):
                continue
            t = grammar.pick_template(family, j, "test")
            text, ids = english.apply(english.render_template(t), text), [t.id] + ids
        out.append(dataclasses.replace(p, text=text, template="+".join(ids)))
    return out


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
    return dress_in_turn(pooled_requests("harmful", ("harmbench",), limit), cue, framing)


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
    is written. `cfg.data.harmful_eval` is where the harmful requests come from: 'project'
    (default), or sources of HARMFUL_EVAL_SOURCES pooled ('harmbench', or
    'harmbench,strongreject,phrasing': `pooled_requests`, each request's prompts under the
    held-out templates in turn, `dress_in_turn`); `cfg.data.benign_eval` likewise for harmless
    and borderline ones ('project' default, or 'project,overrefusal'). The limits count
    requests, so a cluster of rephrasings is one request with all its prompts, or with the
    first `cfg.data.prompts_per_request` of them (0 / absent = all).
    """
    split = split or cfg.probes.split
    d = cfg.data
    rendering = d.get("rendering", "zoo")
    harmful = eval_sources(d.get("harmful_eval", "project"), HARMFUL_EVAL_SOURCES)
    benign = eval_sources(d.get("benign_eval", "project"), BENIGN_EVAL_SOURCES, "data.benign_eval")
    for key, names in (("harmful_eval", harmful), ("benign_eval", benign)):
        if names != ("project",) and rendering != "english":
            raise ValueError(
                f"data.{key}={','.join(names)!r} is English text: set data.rendering='english'"
            )
    items, cues = [], []
    for kind in cfg.probes.kinds:
        framings = (None,) + (tuple(d.get("framings", ())) if kind == "harmful" else ())
        limit = _requests_per_kind(cfg, kind)
        sources = {"harmful": harmful, "harmless": benign, "borderline": benign}.get(kind)
        pooled = None
        if sources not in (None, ("project",)):
            pooled = pooled_requests(
                kind, sources, limit, per_request=int(d.get("prompts_per_request", 0)) or None,
                split=split, data_dir=d.dir or None,
            )  # fmt: skip
        for cue in d.cues:
            for framing in framings:
                if pooled is not None:
                    new = dress_in_turn(pooled, cue, framing)
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
    a subset), harmful / harmless for the refusal layer selection, and neutral; the fetched
    red-team files of `data.harmful_eval` ('harmbench', 'strongreject', 'phrasing_past',
    'phrasing_future') and the over-refusal file of `data.benign_eval` ('overrefusal'). A
    malformed file, an unknown cue or a missing `data.dir` fails here, before any model work.
    """
    d = cfg.data
    refusal = ("harmful", "harmless") if "refusal" in (*d.emotions, *d.controls) else ()
    files = concepts.data_files(d, kinds=(*cfg.probes.kinds, *refusal, "neutral"))
    harmful = eval_sources(d.get("harmful_eval", "project"), HARMFUL_EVAL_SOURCES)
    if "harmful" in cfg.probes.kinds:
        files.update(redteam.data_files(harmful))  # fetched once, sha256-checked
    benign = eval_sources(d.get("benign_eval", "project"), BENIGN_EVAL_SOURCES, "data.benign_eval")
    if "overrefusal" in benign and {"harmless", "borderline"} & set(cfg.probes.kinds):
        files.update(concepts.overrefusal.data_files())
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
