"""Ranking metrics on ranx, named as the PyLate model cards name them.

What goes in: ``qrels`` (query id -> {document id: grade}) and a ``run`` (query id -> {document id:
score}), as dicts, ranx ``Qrels``/``Run``, or the ``retrieve`` output shape (query id -> list of
``{"id", "score"}``) through :func:`run_from_results`.

What comes out: :func:`evaluate` gives a one-row pandas table with the seed metric set,
``MaxSim_accuracy@1`` ... ``MaxSim_map@100`` (the prefix is a parameter).

Conventions are trec_eval's, as ranx implements them: nDCG uses linear gains (the grade itself), and a
document is relevant when its grade is >= 1 (:func:`workbench.data.is_relevant`). TREC Deep Learning
counts grade >= 2 as relevant for binary metrics: pass ``relevance_level=2`` and every metric but nDCG
uses that level. Queries with no judgement of grade >= 1 are left out, as trec_eval leaves them out.
A judged query missing from the run scores 0 on every metric by default (``missing="zero"``,
trec_eval's ``-c``, as ranx does, so a run cannot gain by skipping hard queries); ``missing="skip"``
averages over the judged queries the run holds (trec_eval without ``-c``; BEIR's
``EvaluateRetrieval``). A collection's own metrics (:func:`workbench.evaluation.evaluate_collection`)
are computed on ``collection.judged_qrels``, the judged queries that have a text, so both choices
agree there. A NaN score raises ``ValueError``: it has no rank.

ranx compiles its kernels with numba on first use (cached on disk by numba): once per process, never
per call.

Example (a doctest, run by ``tests/test_doctests.py``)::

    >>> from workbench import metrics
    >>> qrels = {"q1": {"d1": 1, "d2": 0}}
    >>> run = {"q1": {"d2": 2.0, "d1": 1.0}}
    >>> table = metrics.evaluate(qrels, run)
    >>> table[["MaxSim_mrr@10", "MaxSim_ndcg@10"]].round(4).iloc[0].tolist()   # the relevant one is 2nd
    [0.5, 0.6309]
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd

from workbench.data import is_relevant

__all__ = [
    "MISSING",
    "PRIMARY_METRIC",
    "SEED_METRICS",
    "SIMILARITY",
    "check_trec_ids",
    "comparable",
    "compare",
    "evaluate",
    "fuse",
    "load_run",
    "per_query",
    "run_from_results",
    "save_run",
]

# (name in the card, ranx metric); the order is the seed cards' order.
SEED_METRICS = [
    ("accuracy@1", "hit_rate@1"),
    ("accuracy@3", "hit_rate@3"),
    ("accuracy@5", "hit_rate@5"),
    ("accuracy@10", "hit_rate@10"),
    ("precision@1", "precision@1"),
    ("precision@3", "precision@3"),
    ("precision@5", "precision@5"),
    ("precision@10", "precision@10"),
    ("recall@1", "recall@1"),
    ("recall@3", "recall@3"),
    ("recall@5", "recall@5"),
    ("recall@10", "recall@10"),
    ("ndcg@10", "ndcg@10"),
    ("mrr@10", "mrr@10"),
    ("map@100", "map@100"),
]
PRIMARY_METRIC = "ndcg@10"
MISSING = ("zero", "skip")  # what to do with judged queries missing from a run; see the module docstring
SIMILARITY = "MaxSim"  # the prefix of metric names in PyLate's cards


def evaluate(
    qrels: Mapping[str, Mapping[str, int]] | Any,
    run: Mapping[str, Mapping[str, float]] | Any,
    metrics: Sequence[tuple[str, str]] = SEED_METRICS,
    prefix: str = SIMILARITY,
    relevance_level: int = 1,
    name: str | None = None,
    missing: str = "zero",
) -> pd.DataFrame:
    """Score a run against qrels: a one-row table, one column per metric (``<prefix>_<metric>``).

    ``metrics`` is a list of (display name, ranx metric) pairs; ``name`` labels the row. Metrics are
    means over the queries with a judgement of grade >= 1. A judged query the run does not hold
    counts as 0 with ``missing="zero"`` (the default, trec_eval's ``-c``) or is left out with
    ``missing="skip"`` (trec_eval's default, BEIR's). Raises ``ValueError`` on a NaN score.
    """
    qrels_ranx, run_ranx = comparable(qrels, run, missing)
    ranx_names = [_with_level(ranx_name, relevance_level) for _, ranx_name in metrics]
    values = _ranx_evaluate(qrels_ranx, run_ranx, ranx_names)
    columns = [f"{prefix}_{display}" if prefix else display for display, _ in metrics]
    return pd.DataFrame([[float(values[metric]) for metric in ranx_names]], columns=columns, index=[name or "run"])


def per_query(
    qrels: Mapping[str, Mapping[str, int]] | Any,
    run: Mapping[str, Mapping[str, float]] | Any,
    metric: str = PRIMARY_METRIC,
    relevance_level: int = 1,
    missing: str = "zero",
) -> pd.Series:
    """One ranx metric per judged query, as a Series indexed by query id (``missing``: see :func:`evaluate`)."""
    qrels_ranx, run_ranx = comparable(qrels, run, missing)
    ranx_name = _with_level(metric, relevance_level)
    _ranx_evaluate(qrels_ranx, run_ranx, [ranx_name])
    return pd.Series(dict(run_ranx.scores[ranx_name]), name=metric).sort_index()


def comparable(qrels: Any, run: Any, missing: str = "zero"):
    """ranx Qrels and Run over the same queries: those with a judgement of grade >= 1 (and, with
    ``missing="skip"``, in the run; with ``"zero"`` a query missing from the run gets an empty ranking)."""
    from ranx import Qrels, Run

    if missing not in MISSING:
        raise ValueError(f"missing must be one of {MISSING}, got {missing!r}.")
    qrels_dict = qrels.to_dict() if isinstance(qrels, Qrels) else qrels
    run_dict = run.to_dict() if isinstance(run, Run) else run
    judged = {
        query_id: {doc_id: int(grade) for doc_id, grade in judgements.items()}
        for query_id, judgements in qrels_dict.items()
        if any(is_relevant(grade) for grade in judgements.values())
    }
    if not judged:
        raise ValueError("No query has a judgement of grade >= 1: there is nothing to evaluate.")
    unknown = set(run_dict) - set(qrels_dict)
    if unknown and not set(run_dict) & set(qrels_dict):
        raise ValueError(
            f"None of the run's query ids appear in the qrels (e.g. {sorted(unknown)[:3]}): wrong qrels file?"
        )
    if missing == "skip":
        judged = {query_id: judgements for query_id, judgements in judged.items() if query_id in run_dict}
        if not judged:
            raise ValueError("The run holds none of the queries with a judgement of grade >= 1: nothing to evaluate.")
    # An empty ranking becomes a single zero-score placeholder: ranx needs a document per query.
    placeholder = {"\x00no-result": 0.0}
    ranked = {query_id: dict(run_dict.get(query_id) or placeholder) for query_id in judged}
    for query_id, scores in ranked.items():
        # NaN compares false with everything, so it would rank in dict order and score as if ranked well.
        for document_id, score in scores.items():
            if math.isnan(score):
                raise ValueError(f"The run's score of document {document_id!r} for query {query_id!r} is NaN.")
    return Qrels(judged), Run(ranked)


def run_from_results(query_ids: Sequence[str], results: Sequence[Sequence[Mapping[str, Any]]]) -> dict:
    """``retrieve`` output (per query a list of ``{"id", "score"}``) -> a run dict."""
    if len(query_ids) != len(results):
        raise ValueError(f"{len(query_ids)} query ids but {len(results)} result lists.")
    return {
        str(query_id): {str(hit["id"]): float(hit["score"]) for hit in hits}
        for query_id, hits in zip(query_ids, results)
    }


def _with_level(ranx_name: str, relevance_level: int) -> str:
    # nDCG keeps every grade as gain (trec_eval); the level applies to binary metrics only.
    if relevance_level == 1 or ranx_name.startswith("ndcg"):
        return ranx_name
    return f"{ranx_name}-l{relevance_level}"


def _ranx_evaluate(qrels, run, metric_names: list[str]) -> dict[str, float]:
    from ranx import evaluate as ranx_evaluate

    with _quiet_numba():
        values = ranx_evaluate(qrels, run, metric_names, make_comparable=True)
    return values if isinstance(values, dict) else {metric_names[0]: values}


def compare(
    qrels: Mapping[str, Mapping[str, int]],
    runs: Mapping[str, Mapping[str, Mapping[str, float]]],
    metrics: Sequence[str] = ("ndcg@10", "mrr@10", "map@100", "recall@100"),
    baseline: str | None = None,
    test: str = "student",
    max_p: float = 0.05,
    relevance_level: int = 1,
) -> pd.DataFrame:
    """Paired significance tests between runs (ranx ``compare``), as a table a reader can paste.

    One row per run and a column per metric, plus ``significant vs <baseline>`` listing the
    metrics on which the run differs from ``baseline`` (default: the first run) with p < ``max_p``
    (``test``: ``"student"`` paired t-test, ``"fisher"`` randomisation, ``"tukey"``).
    A judged query missing from a run counts as 0 (trec_eval's ``-c``): paired tests need the same
    queries in every run.
    """
    from ranx import compare as ranx_compare

    names = list(runs)
    baseline = baseline or names[0]
    if baseline not in runs:
        raise ValueError(f"baseline {baseline!r} is not one of the runs {names}.")
    qrels_ranx = None
    ranx_runs = []
    for name in names:
        qrels_ranx, run = comparable(qrels, runs[name])
        run.name = name
        ranx_runs.append(run)
    ranx_metrics = [_with_level(metric, relevance_level) for metric in metrics]
    with _quiet_numba():
        report = ranx_compare(qrels_ranx, ranx_runs, ranx_metrics, stat_test=test, max_p=max_p, rounding_digits=4)
    table = pd.DataFrame(
        {
            name: {metric: report.results[name][ranx_name] for metric, ranx_name in zip(metrics, ranx_metrics)}
            for name in names
        }
    ).T
    column = f"significant vs {baseline} (p<{max_p})"
    table[column] = [
        ""
        if name == baseline
        else ", ".join(
            metric
            for metric, ranx_name in zip(metrics, ranx_metrics)
            if report.comparisons[name, baseline][ranx_name]["significant"]
        )
        or "none"
        for name in names
    ]
    return table


def fuse(
    runs: Sequence[Mapping[str, Mapping[str, float]]],
    method: str = "rrf",
    norm: str = "min-max",
    params: dict | None = None,
) -> dict:
    """Fuse runs (ranx ``fuse``: ``"rrf"``, ``"wsum"``, ``"combsum"``, ...) into one run dict."""
    from ranx import Run
    from ranx import fuse as ranx_fuse

    with _quiet_numba():
        fused = ranx_fuse([Run(dict(run)) for run in runs], norm=norm, method=method, params=params)
    return {query_id: dict(scores) for query_id, scores in fused.to_dict().items()}


def check_trec_ids(run: Mapping[str, Mapping[str, Any]]) -> None:
    """ValueError for the first query or document id of ``run`` that is empty or holds white space:
    TREC files are split on white space, so no reader could split it back."""
    for query_id, scores in run.items():
        for identifier in (query_id, *scores):
            if not str(identifier) or re.search(r"\s", str(identifier)):
                raise ValueError(f"Id {identifier!r} is empty or holds white space, which a TREC run cannot hold.")


def save_run(run: Mapping[str, Mapping[str, float]], path: str, name: str = "workbench") -> None:
    """Write a run in TREC format (``qid Q0 docid rank score tag``).

    The format is split on white space: the run tag is ``name`` with each run of white space made
    ``_`` ("BM25 + ColBERT" -> "BM25_+_ColBERT"), and ids holding white space are refused before
    anything is written (no reader could split them back).
    """
    from ranx import Run

    check_trec_ids(run)
    ranx_run = Run(dict(run), name=re.sub(r"\s+", "_", name.strip()) or "workbench")
    ranx_run.save(str(path), kind="trec")


def load_run(path: str) -> dict:
    """Read a TREC-format run into a run dict."""
    from ranx import Run

    return {query_id: dict(scores) for query_id, scores in Run.from_file(str(path), kind="trec").to_dict().items()}


@contextmanager
def _quiet_numba():
    """ranx casts its uint64 counters to int64 inside numba: harmless, and noisy in notebooks."""
    from numba.core.errors import NumbaTypeSafetyWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaTypeSafetyWarning)
        yield
