"""Baselines to put next to a ColBERT in the same table: BM25 and a single-vector model.

Both return a run dict (query id -> {document id: score}, the top ``depth`` documents) for the
judged queries of a :class:`~workbench.data.Collection`, ready for :func:`workbench.metrics.evaluate`
and :func:`workbench.metrics.compare`.

Example::

    from workbench import baselines, data, metrics

    collection = data.load_beir("../shared/data/msmarco-dl19-5k")
    print(metrics.evaluate(collection.qrels, baselines.bm25_run(collection), prefix="BM25"))
"""

from __future__ import annotations

import numpy as np

from workbench.data import Collection
from workbench.scores import top_k

__all__ = ["bm25_run", "dense_run"]


def bm25_run(collection: Collection, depth: int = 100) -> dict:
    """BM25 (bm25s, English stopwords) over the corpus; near-tied documents ranked in corpus order."""
    import bm25s

    document_ids = collection.document_ids()
    query_ids = list(collection.judged_queries)
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(collection.texts(), stopwords="en", show_progress=False), show_progress=False)
    queries = bm25s.tokenize(
        [collection.queries[q] for q in query_ids], stopwords="en", return_ids=False, show_progress=False
    )
    run = {}
    for query_id, tokens in zip(query_ids, queries):
        # Every document's score, then one deterministic top-k: bm25s's own top-k orders tied
        # scores (documents of equal length and term counts) differently on each SIMD level.
        scores = retriever.get_scores(tokens) if tokens else np.zeros(len(document_ids), dtype=np.float32)
        [(positions, best)] = top_k(np.asarray(scores, dtype=np.float32)[None, :], depth)
        run[query_id] = {document_ids[j]: float(s) for j, s in zip(positions, best)}
    return run


def dense_run(model, collection: Collection, depth: int = 100, batch_size: int = 32) -> dict:
    """A single-vector ``SentenceTransformer`` (cosine similarity) over the corpus."""
    document_ids = collection.document_ids()
    query_ids = list(collection.judged_queries)
    documents = model.encode(
        collection.texts(), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    )
    queries = model.encode(
        [collection.queries[q] for q in query_ids],
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
    )
    return {
        q: {document_ids[j]: float(s) for j, s in zip(positions, best)}
        for q, (positions, best) in zip(query_ids, top_k(queries @ documents.T, depth))
    }
