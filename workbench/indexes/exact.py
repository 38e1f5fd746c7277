"""Exact: brute-force MaxSim over every stored document. The ground truth, the right choice for
small corpora, and the smallest complete :class:`~workbench.indexes.base.Index`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from workbench.indexes.base import Index
from workbench.indexes.store import Snapshot
from workbench.scores import PackedEmbeddings, colbert_scores, top_k

__all__ = ["Exact"]


class Exact(Index):
    """Brute-force exact MaxSim over every stored document; the store is read into fp32 memory once
    per committed state.

    Args:
        index_folder, index_name: the index lives in ``index_folder/index_name``.
        override: start afresh, replacing the workbench index the folder holds (nothing else is deleted).
        dtype: ``"float16"`` (default) or ``"float32"`` storage on disk.
        embedding_size: optional check of the embeddings' dimension (otherwise taken from the first documents).
    """

    def __init__(
        self,
        index_folder: str | Path = "pylate-index",
        index_name: str = "index",
        override: bool = False,
        dtype: str = "float16",
        embedding_size: int | None = None,
    ) -> None:
        super().__init__(index_folder, index_name, override, embedding_size, payload=dtype)

    def search(
        self,
        queries: PackedEmbeddings,
        k: int,
        subset: np.ndarray | None = None,
        snapshot: Snapshot | None = None,
        device: str | None = None,
        **settings: Any,
    ):
        """Top ``k`` (positions in ``snapshot``, default the latest commit; scores) per query,
        scored on ``device`` (None: the CPU). Exact search has no settings."""
        self.settings(**settings)
        snapshot = self.snapshot() if snapshot is None else snapshot
        if "float32" not in snapshot.derived:
            packed = snapshot.embeddings()
            snapshot.derived["float32"] = PackedEmbeddings(np.asarray(packed.tokens, dtype=np.float32), packed.offsets)
        documents = snapshot.derived["float32"]
        if subset is not None:
            positions = np.flatnonzero(subset)
            return top_k(colbert_scores(queries, documents.select(positions), device=device).numpy(), k, positions)
        return top_k(colbert_scores(queries, documents, device=device).numpy(), k, None)
