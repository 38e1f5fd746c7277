"""Retrieval over an index, in PyLate's shape.

What goes in: an index (:class:`~workbench.indexes.Voyager` or :class:`~workbench.indexes.Exact`)
and query embeddings (a list of ``[n_tokens, dim]`` arrays, as ``model.encode(..., is_query=True)``
gives, or a padded tensor).

What comes out: per query, a list of ``{"id": document id, "score": MaxSim}``, best first. One call
reads one committed state of the index, even while another process adds or removes documents.

Example::

    from workbench import indexes, retrieve

    retriever = retrieve.ColBERT(index=index)
    scores = retriever.retrieve(queries_embeddings=queries_embeddings, k=10)
    # [[{"id": "3", "score": 11.27}, {"id": "1", "score": 10.30}, ...], ...]

:func:`exact` ranks in-memory embeddings by exact MaxSim without an index (the ground truth).
:func:`recall_latency` sweeps the search settings of an index: recall of the exact top-k
against milliseconds per query (the curve ``workbench.plots.recall_latency`` draws).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from workbench.indexes import check_positive
from workbench.scores import colbert_scores, pack, top_k


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
            device: where exact MaxSim runs (``"cuda"``, ``"mps"``); None: the CPU, as in PyLate.

        ``k_token``, ``batch_size`` and ``n_full_scores`` must be positive integers (ValueError).
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        check_positive(k_token=k_token, batch_size=batch_size, n_full_scores=n_full_scores)
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
            for positions, scores in self.index.search(batch, k, subset=mask, k_token=k_token,
                                                       n_full_scores=n_full_scores, snapshot=snapshot,
                                                       device=device):
                results.append([{"id": snapshot.ids[p], "score": float(s)} for p, s in zip(positions, scores)])
        return results


def exact(queries_embeddings: Any, documents_embeddings: Any, document_ids: Sequence[str], k: int = 10,
          device: str | None = None) -> list[list[dict[str, Any]]]:
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
    return [[{"id": document_ids[p], "score": float(s)} for p, s in zip(positions, row)]
            for positions, row in top_k(scores, k)]


# (k_token, n_full_scores) pairs from cheap to thorough; the index defaults are (8, 256).
SWEEP = ((1, 32), (2, 64), (4, 64), (4, 128), (8, 128), (8, 256), (16, 256), (16, 512), (32, 512))


def recall_latency(index, queries_embeddings: Any, reference: Sequence[Sequence[str]], k: int = 10,
                   settings: Sequence[tuple[int, int]] = SWEEP, repeats: int = 3) -> pd.DataFrame:
    """Recall of the exact top-``k`` against milliseconds per query, for each search setting.

    ``reference``: per query, the ids exact MaxSim ranks in its top ``k`` (what a perfect index
    returns). Each setting is timed ``repeats`` times after a warm-up and keeps its fastest pass
    (timings on a shared machine are noisy upwards). One row per ``(k_token, n_full_scores)``.
    """
    retriever = ColBERT(index)
    queries = pack(queries_embeddings)
    if len(reference) != len(queries):
        raise ValueError(f"{len(reference)} reference lists for {len(queries)} queries.")
    rows = []
    for k_token, n_full_scores in tqdm(settings, desc="search settings"):
        retriever.retrieve(queries.select(range(min(2, len(queries)))), k=k, k_token=k_token, n_full_scores=n_full_scores)
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            results = retriever.retrieve(queries, k=k, k_token=k_token, n_full_scores=n_full_scores)
            timings.append((time.perf_counter() - started) * 1000 / max(len(queries), 1))
        recall = np.mean([len({hit["id"] for hit in hits} & set(truth[:k])) / min(k, len(truth) or 1)
                          for hits, truth in zip(results, reference)])
        rows.append({"k_token": k_token, "n_full_scores": n_full_scores, "ms_per_query": min(timings),
                     f"recall@{k}": float(recall)})
    return pd.DataFrame(rows)
