"""Paraphrase clusters: which texts ask for the same request, from the words they share.

A request is the unit of every resampling (`concepts.request_index`), so texts that ask for
one thing (a behaviour rephrased in the past and in the future tense, a prompt copied from
one benchmark into another) must share a request id. This module tells that from the texts
alone, by fixed rules (no model, no randomness):

  * `normalise` is the key of an exact duplicate: lower case, words only ("Write a poem!" and
    "write a poem" are one text);
  * `content_words` keeps the words that say what is asked: function words, tense and time
    words ("How was X done in the past?", "How will X be done in the coming years?") and
    generic verbs go, common suffixes are stripped;
  * `tfidf` weights content words by inverse document frequency (rows L2-normalised);
  * `average_linkage` clusters texts by cosine similarity (UPGMA: two groups merge while the
    mean cosine between their members is at least `1 - max_distance`);
  * `best_links` pairs each cluster with the closest text of another set, when the cosine of
    the cluster's centroid with it reaches a threshold;
  * `unite_requests` gives texts found to ask for one request one request id, and keeps one
    copy of an exact duplicate.

Merging two different requests only widens an interval (conservative); splitting one request
in two narrows it, so the thresholds of `emojax.redteam` lean towards merging.

Dimension legend: N texts, W content words, K clusters, M candidate texts.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from emojax.concepts.schema import EvalPrompt

# Words that do not say what is asked: function words, tense and time words, generic verbs.
STOP_WORDS: frozenset[str] = frozenset(
    """
    a an the of to in on for and or by with without from into at as is are was were be been
    being will would could should can may might must shall did do does done doing had has
    have having how what why which who whom whose when where that this these those it its
    their they them there here i me my you your we our us he she his her him s t not no nor
    so if than then such some any all other more most many much very also about over under
    up out off again once only own same too just both each few between through during before
    after above below until while against because whether either
    past future coming years year ago early late earlier later century centuries decade
    decades era eras times time historically history historical nowadays today modern
    upcoming ahead next new days day present ever previously formerly era
    people individuals individual someone somebody one ones person persons others
    used use using make made making create created creating write written writing wrote
    explain explained provide provided give given gave describe described go going went
    way ways might potentially likely possibly typically often commonly
    """.split()
)
# A decade or an ordinal century ("1990s", "20th") is a time word too.
_TIME_TOKEN = re.compile(r"^(?:\d{4}s|\d{1,2}(?:st|nd|rd|th))$")
_SUFFIXES = ("ing", "ed", "es", "s", "ly", "ions", "ion", "ers", "er")


def normalise(text: str) -> str:
    """The exact-duplicate key of a text: its words, lower case, single spaces."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower().replace("\\n", " ")))


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> list[str]:
    """The stemmed content words of a text, in order (see the module docstring)."""
    return [
        _stem(w)
        for w in normalise(text).split()
        if w not in STOP_WORDS and not _TIME_TOKEN.match(w)
    ]


def tfidf(texts: Sequence[str], fit: Sequence[str] | None = None) -> np.ndarray:
    """float [N, W] TF-IDF rows of `texts` (L2-normalised; a row without words is 0).

    Args:
      texts: the texts to weigh.
      fit: the texts that define the vocabulary's document frequencies (default `texts`);
        a word of `texts` that no text of `fit` holds gets the largest weight.
    """
    words = [content_words(t) for t in texts]
    fit_words = words if fit is None else [content_words(t) for t in fit]
    df = Counter(w for ws in fit_words for w in set(ws))
    vocab = {w: i for i, w in enumerate(sorted({w for ws in words for w in ws}))}
    x = np.zeros((len(texts), len(vocab)))
    n = len(fit_words)
    for i, ws in enumerate(words):
        for w, count in Counter(ws).items():
            x[i, vocab[w]] = count * math.log((1 + n) / (1 + df.get(w, 0)))
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def average_linkage(x_NxW: np.ndarray, max_distance: float) -> np.ndarray:
    """int [N] cluster labels in [0, K), numbered by first member, of average-linkage clustering.

    Two groups merge while the mean cosine similarity between their members is at least
    `1 - max_distance` (the closest pair first; ties go to the lowest indices), as
    `scipy.cluster.hierarchy.linkage(x, 'average', 'cosine')` cut at `max_distance`.

    Args:
      x_NxW: L2-normalised rows (`tfidf`).
      max_distance: the largest mean cosine distance inside a cluster, in [0, 2].
    """
    n = len(x_NxW)
    sim = x_NxW @ x_NxW.T
    np.fill_diagonal(sim, -np.inf)
    size = np.ones(n)
    alive = np.ones(n, dtype=bool)
    parent = np.arange(n)
    best = sim.argmax(axis=1) if n > 1 else np.zeros(n, dtype=int)
    threshold = 1.0 - max_distance
    while alive.sum() > 1:
        rows = np.flatnonzero(alive)
        a = rows[np.argmax(sim[rows, best[rows]])]
        b = best[a]
        if sim[a, b] < threshold - 1e-12:
            break
        a, b = min(a, b), max(a, b)
        merged = (size[a] * sim[a] + size[b] * sim[b]) / (size[a] + size[b])
        sim[a], sim[:, a] = merged, merged
        sim[b], sim[:, b] = -np.inf, -np.inf
        sim[a, a] = -np.inf
        size[a] += size[b]
        alive[b] = False
        parent[parent == b] = a
        # Rows whose best partner was a or b, and row a, look again; others may now prefer a.
        stale = alive & ((best == a) | (best == b))
        stale[a] = True
        for i in np.flatnonzero(stale):
            best[i] = sim[i].argmax()
        better = alive & (sim[:, a] > sim[np.arange(n), best])
        best[better] = a
    _, labels = np.unique(parent, return_inverse=True)
    first = {}
    for lab in labels:
        first.setdefault(int(lab), len(first))
    return np.array([first[int(lab)] for lab in labels], dtype=np.int32)


def best_links(
    x_NxW: np.ndarray, labels: np.ndarray, y_MxW: np.ndarray, threshold: float
) -> dict[int, int]:
    """{cluster: candidate} for every cluster whose closest candidate reaches `threshold`.

    The similarity of cluster k and candidate m is the cosine between the L2-normalised mean
    of the cluster's rows and row m of `y_MxW` (same columns as `x_NxW`).
    """
    if not len(y_MxW):
        return {}
    out = {}
    for k in range(int(labels.max()) + 1 if len(labels) else 0):
        centroid = x_NxW[labels == k].mean(axis=0)
        norm = np.linalg.norm(centroid)
        if norm == 0:
            continue
        sims = y_MxW @ (centroid / norm)
        m = int(np.argmax(sims))
        if sims[m] >= threshold:
            out[k] = m
    return out


def unite_requests(
    groups: Sequence[Sequence[EvalPrompt]], links: Iterable[tuple[str, str]] = ()
) -> list[list[EvalPrompt]]:
    """The groups (e.g. one per source) with one request id for texts that ask for one thing.

    A text whose `normalise` key an earlier record holds (earlier group, or earlier in its
    group) is an exact duplicate: it is dropped and its request joins the earlier record's.
    Each pair of request ids in `links` joins too. A joined set keeps the id of its earliest
    request (groups in order, then records in order), so adding a later group never renames
    the requests of an earlier one.

    Returns:
      The groups in order, each record with its united `request`, duplicates left out.
    """
    rank: dict[str, int] = {}
    for g in groups:
        for r in g:
            rank.setdefault(r.request, len(rank))
    parent = {q: q for q in rank}

    def root(q: str) -> str:
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    def join(a: str, b: str) -> None:
        a, b = root(a), root(b)
        if a != b:
            a, b = sorted((a, b), key=rank.__getitem__)
            parent[b] = a

    first: dict[str, str] = {}
    kept: list[list[EvalPrompt]] = []
    for g in groups:
        kept.append([])
        for r in g:
            key = normalise(r.text)
            if key in first:
                join(first[key], r.request)
                continue
            first[key] = r.request
            kept[-1].append(r)
    for a, b in links:
        join(a, b)
    return [[dataclasses.replace(r, request=root(r.request)) for r in g] for g in kept]
