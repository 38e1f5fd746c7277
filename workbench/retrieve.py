"""Retrieval over an index, in PyLate's shape.

What goes in: any :class:`~workbench.indexes.Index` (Exact, Voyager, PLAID or your own) or
:class:`~workbench.indexes.Engine` (Qdrant), and query embeddings (a list of ``[n_tokens, dim]``
arrays, as ``model.encode(..., is_query=True)`` gives, or a padded tensor).

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
:func:`index_corpus` streams a corpus of any size into any index, chunk by chunk, in one process or several.
"""

from __future__ import annotations

import inspect
import itertools
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from workbench import indexes, metrics
from workbench.data import Collection
from workbench.indexes.base import check_positive
from workbench.indexes.store import document_ids_of
from workbench.indexes.voyager import Voyager
from workbench.measure import best_ms
from workbench.scores import TIE_RELATIVE, colbert_scores, pack, top_k

__all__ = [
    "ColBERT",
    "SWEEP",
    "compare_indexes",
    "encode_corpus",
    "exact",
    "index_corpus",
    "rankings_agree",
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
            device: where exact MaxSim runs (``"cuda"``, ``"mps"``); None: the CPU, as in PyLate. An
                :class:`~workbench.indexes.Engine` (Qdrant) scores in its engine and ignores it.
            settings: any other search setting of the index (PLAID's ``n_ivf_probe``, Qdrant's ``hnsw_ef``).

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
        if isinstance(self.index, indexes.Engine):
            return self._retrieve_from_engine(queries, k, batch_size, subset, settings)
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

    def _retrieve_from_engine(self, queries, k: int, batch_size: int, subset, settings: dict) -> list[list[dict]]:
        """The same results from an :class:`~workbench.indexes.Engine`: it keeps the documents and their
        ids, so there is no snapshot to read, and its search returns ids rather than positions."""
        if len(queries) and self.index.dim is not None and queries.dim != self.index.dim:
            raise ValueError(f"Queries have dimension {queries.dim}, the index holds {self.index.dim}.")
        results = []
        for start in range(0, len(queries), batch_size):
            batch = queries.select(range(start, min(start + batch_size, len(queries))))
            for ids, scores in self.index.search(batch, k, subset=subset, **settings):
                results.append([{"id": i, "score": float(s)} for i, s in zip(ids, scores)])
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


def rankings_agree(
    results: Sequence[Sequence[dict]], reference: Sequence[Sequence[dict]], atol: float = 1e-4
) -> pd.DataFrame:
    """Whether two searches ranked each query alike: one row per query.

    Columns: ``same order`` (the same ids in the same order), ``same up to ties`` (where the ids differ,
    the two scores at that rank are tied: within ``atol``, or within ``TIE_RELATIVE`` of their size,
    the width over which :func:`~workbench.scores.top_k` treats scores as equal and orders them by
    position), and ``largest score difference`` (between the two scores of each document both lists
    hold). Both inputs are :meth:`ColBERT.retrieve`'s shape; :func:`exact` gives the reference.
    """
    if len(results) != len(reference):
        raise ValueError(f"{len(results)} result lists against {len(reference)} reference lists.")
    rows = []
    for hits, truth in zip(results, reference):
        if len(hits) != len(truth):
            rows.append({"same order": False, "same up to ties": False, "largest score difference": np.inf})
            continue
        ids_equal = [hit["id"] == true["id"] for hit, true in zip(hits, truth)]
        tied = [
            abs(hit["score"] - true["score"]) <= max(atol, TIE_RELATIVE * abs(true["score"]))
            for hit, true in zip(hits, truth)
        ]
        true_scores = {true["id"]: true["score"] for true in truth}
        gaps = [abs(hit["score"] - true_scores[hit["id"]]) for hit in hits if hit["id"] in true_scores]
        rows.append(
            {
                "same order": all(ids_equal),
                "same up to ties": all(equal or tie for equal, tie in zip(ids_equal, tied)),
                "largest score difference": max(gaps, default=0.0),
            }
        )
    return pd.DataFrame(rows)


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


def index_corpus(
    model,
    documents: Mapping[str | int, str] | Iterable[tuple[str | int, str]],
    index,
    chunk_size: int = 10_000,
    batch_size: int = 32,
    pool: dict | None = None,
    device: str | list[str] | None = None,
    show_progress_bar: bool = True,
):
    """Encode a corpus chunk by chunk and add each chunk to ``index``: for corpora too big for memory.

    What goes in: ``documents``, a mapping id -> text or an iterable of ``(id, text)`` pairs (a
    generator is read lazily, ``chunk_size`` pairs at a time), and ``index``, anything with
    ``add_documents(documents_ids=, documents_embeddings=)`` (Exact, Voyager, PLAID, Qdrant...). Each
    chunk is encoded as documents (``batch_size`` texts per forward pass) and added in one call, so
    one chunk's texts and embeddings are held at a time, and the ids seen (to refuse a duplicate).
    ``pool`` (``model.start_multi_process_pool(...)``) or a device list (``device=["cuda:0", "cuda:1"]``)
    encodes in several processes; a device list starts one pool for the whole corpus. (On CPUs, start
    workers with ``OMP_NUM_THREADS`` = cores / workers: otherwise their threads fight over the cores.)

    What comes out: ``index``, holding the corpus.

    Each chunk is checked before it is encoded: pairs, ids (str or int, once in the whole corpus),
    non-empty str texts. A bad document raises before its chunk is written; the chunks before it
    stay in the index (each ``add_documents`` commits), and the error says how many.

    Example::

        from workbench import indexes, models, retrieve

        model = models.load_model()  # the embedded all-MiniLM-L6-v2 ColBERT, offline
        corpus = ((f"d{i}", f"document number {i}") for i in range(1000))  # e.g. lines of a file
        index = indexes.Exact(index_folder="corpus-index", override=True)
        retrieve.index_corpus(model, corpus, index, chunk_size=256)  # on two GPUs: device=["cuda:0", "cuda:1"]
        len(index)  # 1000
    """
    check_positive(chunk_size=chunk_size, batch_size=batch_size)
    if isinstance(documents, (str, bytes)):
        raise TypeError("documents must be a mapping id -> text or an iterable of (id, text) pairs, not a string.")
    # A device list given to every encode call would start and stop a pool per chunk.
    own_pool = pool is None and isinstance(device, list) and len(device) > 0
    if own_pool:
        pool, device = model.start_multi_process_pool(device), None
    total = len(documents) if isinstance(documents, Sized) else None
    # An index with a bar of its own (Qdrant's upserts) would draw one more bar per chunk under this one.
    has_bar = "show_progress_bar" in inspect.signature(index.add_documents).parameters
    quiet = {"show_progress_bar": False} if has_bar else {}
    try:
        with tqdm(total=total, desc="Indexing documents", unit="document", disable=not show_progress_bar) as bar:
            for ids, texts in _checked_chunks(documents, chunk_size):
                embeddings = model.encode(
                    texts, is_query=False, batch_size=batch_size, show_progress_bar=False, pool=pool, device=device
                )
                index.add_documents(documents_ids=ids, documents_embeddings=embeddings, **quiet)
                bar.update(len(ids))
    finally:
        if own_pool:
            model.stop_multi_process_pool(pool)
    return index


def _checked_chunks(documents, chunk_size: int):
    """``(ids, texts)`` of at most ``chunk_size`` documents at a time, each chunk checked when it is read."""
    pairs = iter(documents.items() if isinstance(documents, Mapping) else documents)
    seen: set[str] = set()
    while chunk := list(itertools.islice(pairs, chunk_size)):
        # Every earlier chunk was added before this one was read, which is what the errors report.
        where = f"in the chunk from document {len(seen)}; the {len(seen)} before it are in the index"
        for pair in chunk:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"documents must give (id, text) pairs, got {pair!r:.80} ({where}).")
        try:
            ids = document_ids_of([identifier for identifier, _ in chunk])
        except ValueError as error:
            raise ValueError(f"{error} ({where})") from None
        for identifier, (_, text) in zip(ids, chunk):
            if not isinstance(text, str):
                raise TypeError(f"Document {identifier!r} has a {type(text).__name__} text, not str ({where}).")
            if not text.strip():
                raise ValueError(f"Document {identifier!r} has an empty text: it has no tokens to embed ({where}).")
            if identifier in seen:
                raise ValueError(f"Document id {identifier!r} appears twice in the corpus ({where}).")
            seen.add(identifier)
        yield ids, [text for _, text in chunk]
