"""Reranking: score each query's own candidate documents with exact MaxSim, in PyLate's shape.

What goes in: per query, the candidate document ids and their embeddings (as
``model.encode(..., is_query=False)`` gives them), and one embedding per query.

What comes out: per query, a list of ``{"id", "score"}``, best first.

Example::

    from workbench import rank

    reranked = rank.rerank(
        documents_ids=[["a", "b"], ["c", "a", "b"]],
        queries_embeddings=queries_embeddings,            # 2 queries
        documents_embeddings=documents_embeddings,        # [[emb_a, emb_b], [emb_c, emb_a, emb_b]]
    )
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workbench.scores import colbert_scores, pack, top_k

__all__ = ["rerank"]


def rerank(
    documents_ids: Sequence[Sequence[Any]],
    queries_embeddings: Any,
    documents_embeddings: Sequence[Sequence[Any]],
    device: str | None = None,
) -> list[list[dict[str, Any]]]:
    """Sort each query's candidates by exact MaxSim, scored on ``device`` (None: the CPU, as PyLate does)."""
    queries = pack(queries_embeddings)
    if not (len(queries) == len(documents_ids) == len(documents_embeddings)):
        raise ValueError(
            f"{len(queries)} queries, {len(documents_ids)} id lists and {len(documents_embeddings)} embedding lists: "
            "rerank needs one of each per query."
        )
    results = []
    for index, (ids, embeddings) in enumerate(zip(documents_ids, documents_embeddings)):
        if len(ids) != len(embeddings):
            raise ValueError(f"Query {index}: {len(ids)} document ids but {len(embeddings)} embeddings.")
        if not len(ids):
            results.append([])
            continue
        [(order, scores)] = top_k(colbert_scores([queries[index]], embeddings, device=device).numpy(), len(ids))
        results.append([{"id": ids[j], "score": float(s)} for j, s in zip(order, scores)])
    return results
