"""Retrieval over an index, in PyLate's shape.

What goes in: an index (:class:`~workbench.indexes.Voyager` or :class:`~workbench.indexes.Exact`)
and query embeddings (a list of ``[n_tokens, dim]`` arrays, as ``model.encode(..., is_query=True)``
gives, or a padded tensor).

What comes out: per query, a list of ``{"id": document id, "score": MaxSim}``, best first.

Example::

    from workbench import indexes, retrieve

    retriever = retrieve.ColBERT(index=index)
    scores = retriever.retrieve(queries_embeddings=queries_embeddings, k=10)
    # [[{"id": "3", "score": 11.27}, {"id": "1", "score": 10.30}, ...], ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workbench.scores import pack


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
    ) -> list[list[dict[str, Any]]]:
        """The ``k`` best documents per query.

        Args:
            queries_embeddings: one ``[n_tokens, dim]`` embedding per query.
            k: documents per query.
            k_token: candidate lists per query token (Voyager: centroids looked up per token).
            batch_size: queries whose tokens go to the index in one call.
            subset: only these document ids may be returned (filtering).
            n_full_scores: candidates per query scored exactly (Voyager).
            device: accepted for PyLate compatibility; scoring runs on the CPU.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        queries = pack(queries_embeddings)
        self.index.refresh()
        if len(queries) and self.index.store.dim is not None and queries.dim != self.index.store.dim:
            raise ValueError(f"Queries have dimension {queries.dim}, the index holds {self.index.store.dim}.")
        if len(self.index) == 0:
            return [[] for _ in range(len(queries))]
        mask = self.index.subset_mask(subset)
        ids = self.index.store.ids
        results = []
        for start in range(0, len(queries), batch_size):
            batch = queries.select(range(start, min(start + batch_size, len(queries))))
            for positions, scores in self.index.search(batch, k, subset=mask, k_token=k_token, n_full_scores=n_full_scores):
                results.append([{"id": ids[p], "score": float(s)} for p, s in zip(positions, scores)])
        return results
