"""Retrieval over an index, in PyLate's shape.

What goes in: any :class:`~workbench.indexes.Index` (Exact, Voyager, PLAID or your own) and query
embeddings (a list of ``[n_tokens, dim]`` arrays, as ``model.encode(..., is_query=True)`` gives, or a
padded tensor).

What comes out: per query, a list of ``{"id": document id, "score": MaxSim}``, best first. One call
reads one committed state of the index, even while another process adds or removes documents.

Example::

    from workbench import indexes, retrieve

    retriever = retrieve.ColBERT(index=index)
    scores = retriever.retrieve(queries_embeddings=queries_embeddings, k=10)
    # [[{"id": "3", "score": 11.27}, {"id": "1", "score": 10.30}, ...], ...]

:func:`exact` ranks in-memory embeddings by exact MaxSim without an index (the ground truth).
:func:`search_collection` runs a model's search of a :class:`~workbench.data.Collection` (its judged
queries over its corpus, :func:`encode_corpus` encoding the corpus) and returns a ranx-ready run.
:func:`recall_latency` sweeps the search settings of any index (its own ``sweep``, or yours): recall
of the exact top-k against milliseconds per query (the curve ``workbench.plots.recall_latency`` draws), and
:func:`compare_indexes` builds several indexes and measures bytes, build time, latency and recall.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from workbench import indexes, metrics
from workbench.data import Collection
from workbench.indexes.base import check_positive
from workbench.indexes.voyager import Voyager
from workbench.measure import best_ms
from workbench.scores import colbert_scores, pack, top_k

__all__ = [
    "ColBERT",
    "SWEEP",
    "compare_indexes",
    "encode_corpus",
    "exact",
    "recall_at",
    "recall_latency",
    "search_collection",
    "timed_retrieve",
]


class ColBERT:
    """Top-k retrieval of documents for queries from ``index``."""

    def __init__(self, index) -> None:
        self.index = index

    def retrieve(
        self,
        queries_embeddings: Any,
        k: int = 10,
        k_token: int | None = None,
        batch_size: int = 64,
        subset: Sequence[str] | None = None,
        n_full_scores: int | None = None,
        device: str | None = None,
        **settings: int | None,
    ) -> list[list[dict[str, Any]]]:
        """The ``k`` best documents per query.

        Args:
            queries_embeddings: one ``[n_tokens, dim]`` embedding per query.
            k: documents per query.
            k_token: Voyager's centroids looked up per query token.
            batch_size: queries whose tokens go to the index in one call.
            subset: only these document ids may be returned (filtering).
            n_full_scores: candidates per query scored exactly (Voyager) or by full centroid
                interaction (PLAID).
            device: where exact MaxSim runs (``"cuda"``, ``"mps"``); None: the CPU, as in PyLate.
            settings: any other search setting of the index (PLAID's ``n_ivf_probe``).

        Search settings the index does not have, and values that are not positive integers, raise
        ValueError naming the index's settings; None keeps the index's own value.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        check_positive(batch_size=batch_size)
        settings = {"k_token": k_token, "n_full_scores": n_full_scores, **settings}
        settings = {name: value for name, value in settings.items() if value is not None}
        self.index.settings(**settings)
        queries = pack(queries_embeddings)
        # One committed state for the whole call: the mask, every batch's positions and the ids they
        # map to all come from it, whatever another process commits meanwhile.
        snapshot = self.index.snapshot()
        if len(queries) and snapshot.dim is not None and queries.dim != snapshot.dim:
            raise ValueError(f"Queries have dimension {queries.dim}, the index holds {snapshot.dim}.")
        if not snapshot.ids:
            return [[] for _ in range(len(queries))]
        mask = self.index.subset_mask(subset, snapshot)
        results = []
        for start in range(0, len(queries), batch_size):
            batch = queries.select(range(start, min(start + batch_size, len(queries))))
            for positions, scores in self.index.search(
                batch, k, subset=mask, snapshot=snapshot, device=device, **settings
            ):
                results.append([{"id": snapshot.ids[p], "score": float(s)} for p, s in zip(positions, scores)])
        return results


def exact(
    queries_embeddings: Any,
    documents_embeddings: Any,
    document_ids: Sequence[str],
    k: int = 10,
    device: str | None = None,
) -> list[list[dict[str, Any]]]:
    """The ``k`` best documents per query by exact MaxSim over every document, in memory.

    The ground truth an index is measured against, without writing one: ``documents_embeddings``
    are ``document_ids``' embeddings in the same order (a list, a padded tensor or
    :class:`~workbench.scores.PackedEmbeddings`). Same output as :meth:`ColBERT.retrieve`; scored on
    ``device`` (None: the CPU).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    documents = pack(documents_embeddings)
    if len(documents) != len(document_ids):
        raise ValueError(f"{len(documents)} document embeddings for {len(document_ids)} document ids.")
    scores = colbert_scores(queries_embeddings, documents, device=device).numpy()
    return [
        [{"id": document_ids[p], "score": float(s)} for p, s in zip(positions, row)]
        for positions, row in top_k(scores, k)
    ]


def search_collection(
    model,
    collection: Collection,
    depth: int = 100,
    batch_size: int = 32,
    show_progress_bar: bool = False,
    index: str | type = "exact",
    documents_embeddings: Sequence[Any] | None = None,
) -> dict:
    """The run (query id -> {document id: MaxSim}) of the judged queries over the whole corpus.

    ``index="exact"`` (default) scores every document with exact MaxSim in memory. Any other kind
    (``"voyager"``, ``"plaid"``, a name in :data:`workbench.indexes.KINDS`, or an
    :class:`~workbench.indexes.Index` subclass, built with its defaults) is built in a temporary
    folder and retrieved from. ``documents_embeddings`` (the corpus encoded by ``model``, in corpus
    order) skips encoding it.
    """
    is_exact = indexes.kind_of(index) is indexes.Exact  # an unknown kind fails here, before any encoding
    document_ids = collection.document_ids()
    query_ids = list(collection.judged_queries)
    documents = documents_embeddings
    if documents is None:
        documents = encode_corpus(model, collection, batch_size, show_progress_bar)
    elif len(documents) != len(document_ids):
        raise ValueError(f"{len(documents)} document embeddings for a corpus of {len(document_ids)}.")
    queries = model.encode([collection.queries[q] for q in query_ids], is_query=True, batch_size=batch_size)
    if is_exact:
        return metrics.run_from_results(query_ids, exact(queries, documents, document_ids, k=depth))
    with tempfile.TemporaryDirectory(prefix="workbench-eval-") as folder:
        built = indexes.make(index, folder, "index")
        built.add_documents(document_ids, documents)
        run = metrics.run_from_results(query_ids, ColBERT(built).retrieve(queries, k=depth))
        built.close()
    return run


def encode_corpus(model, collection: Collection, batch_size: int = 32, show_progress_bar: bool = False) -> list:
    """The collection's documents encoded by ``model``, in corpus order (:meth:`~workbench.data.Collection.texts`)."""
    return model.encode(collection.texts(), is_query=False, batch_size=batch_size, show_progress_bar=show_progress_bar)


# Voyager's (k_token, n_full_scores) pairs from cheap to thorough, kept for older callers; every
# index now carries its own sweep (Voyager.sweep holds these).
SWEEP = tuple((s["k_token"], s["n_full_scores"]) for s in Voyager.sweep)


def recall_latency(
    index,
    queries_embeddings: Any,
    reference: Sequence[Sequence[str]],
    k: int = 10,
    settings: Sequence[dict[str, int] | tuple[int, int]] | None = None,
    repeats: int = 3,
) -> pd.DataFrame:
    """Recall of the exact top-``k`` against milliseconds per query, for each search setting.

    ``reference``: per query, the ids exact MaxSim ranks in its top ``k`` (what a perfect index
    returns). ``settings``: dicts of search settings (default: the index's own ``sweep``; Voyager's
    ``(k_token, n_full_scores)`` pairs are accepted too). Each setting is timed ``repeats`` times
    after a warm-up and keeps its fastest pass (timings on a shared machine are noisy upwards).
    One row per setting: its values, ``ms_per_query`` and ``recall@k``.
    """
    retriever = ColBERT(index)
    queries = pack(queries_embeddings)
    if len(reference) != len(queries):
        raise ValueError(f"{len(reference)} reference lists for {len(queries)} queries.")
    settings = index.sweep if settings is None else settings
    settings = [s if isinstance(s, dict) else {"k_token": s[0], "n_full_scores": s[1]} for s in settings]
    rows = []
    for setting in tqdm(settings, desc="search settings"):
        ms_per_query, results = timed_retrieve(retriever, queries, k, repeats, **setting)
        rows.append({**setting, "ms_per_query": ms_per_query, f"recall@{k}": recall_at(results, reference, k)})
    return pd.DataFrame(rows)


def compare_indexes(
    contenders: Mapping[str, Callable[[], Any]],
    document_ids: Sequence[str],
    documents_embeddings: Any,
    queries_embeddings: Any,
    reference: Sequence[Sequence[str]],
    k: int = 10,
    repeats: int = 3,
) -> pd.DataFrame:
    """Build each index and measure it at its default settings: one row per contender.

    ``contenders`` maps a display name to a function that creates an empty index (any
    :class:`~workbench.indexes.Index`); each is filled with ``documents_embeddings`` in one call and
    timed on ``queries_embeddings`` as :func:`recall_latency` times a setting. Columns: build
    seconds, megabytes and bytes per token on disk (every committed file), ms per query, recall@k
    of ``reference`` (the exact top-k ids per query).
    """
    documents = pack(documents_embeddings)
    queries = pack(queries_embeddings)
    rows = {}
    for name, create in tqdm(contenders.items(), desc="indexes"):
        started = time.perf_counter()
        index = create()
        index.add_documents(document_ids, [documents[i] for i in range(len(documents))])
        build_seconds = time.perf_counter() - started
        ms_per_query, results = timed_retrieve(ColBERT(index), queries, k, repeats)
        rows[name] = {
            "build_seconds": build_seconds,
            "megabytes": index.nbytes / 1e6,
            "bytes per token": index.nbytes / len(documents.tokens),
            "ms_per_query": ms_per_query,
            f"recall@{k}": recall_at(results, reference, k),
        }
        index.close()
    return pd.DataFrame.from_dict(rows, orient="index")


def timed_retrieve(retriever: ColBERT, queries, k: int, repeats: int, **settings) -> tuple[float, list]:
    """(fastest of ``repeats`` passes in ms per query after a warm-up, the results): timings on a shared
    machine are noisy upwards, so the best pass is the one closest to the cost."""
    queries = pack(queries)
    retriever.retrieve(queries.select(range(min(2, len(queries)))), k=k, **settings)
    return best_ms(
        lambda: retriever.retrieve(queries, k=k, **settings), repeats, per=max(len(queries), 1), warm_up=False
    )


def recall_at(results: Sequence[Sequence[dict]], reference: Sequence[Sequence[str]], k: int) -> float:
    """Mean fraction of each query's reference top ``k`` that ``results`` found."""
    return float(
        np.mean(
            [
                len({hit["id"] for hit in hits} & set(truth[:k])) / min(k, len(truth) or 1)
                for hits, truth in zip(results, reference)
            ]
        )
    )
