"""Indexes of document token embeddings: :class:`Voyager` (fast, approximate candidates, exact
scores) and :class:`Exact` (brute force, the ground truth).

Both keep every token in one durable :class:`~workbench.store.TokenStore` (fp16 by default) and
speak PyLate's surface::

    from workbench import indexes

    index = indexes.Voyager(index_folder="pylate-index", index_name="index", override=True)
    index.add_documents(documents_ids=["1", "2"], documents_embeddings=model.encode([...], is_query=False))
    index = indexes.Voyager(index_folder="pylate-index", index_name="index")  # reopen later
    len(index); index.get_documents_embeddings(["1"]); index.remove_documents(["2"])

How :class:`Voyager` finds candidates. Indexing every token in an HNSW graph (PyLate's way) costs a
graph node per token: minutes to build and more bytes than the tokens themselves. Here the tokens
are clustered instead (spherical k-means, about ``4 * sqrt(tokens)`` centroids), each token keeps
the id of its centroid, and a Voyager HNSW graph indexes the centroids (``M``,
``ef_construction``, ``ef_search`` and ``storage_data_type`` are its parameters). A query token
looks up its ``k_token`` nearest centroids in that graph (all tokens of a query batch in one call);
every document with a token in one of them is a candidate, ranked by an approximate MaxSim in which
a token's similarity is replaced by its centroid's. The ``n_full_scores`` best candidates are then
scored exactly from the token store. The centroids are trained on the first documents added and
retrained, with every token re-assigned, whenever the index has grown fourfold since.

A search reads one committed state (a :class:`~workbench.store.Snapshot`) from start to end: pass
``snapshot=index.snapshot()`` to :meth:`search` and :meth:`subset_mask` to keep several calls on
the same commit while another process writes (``retrieve.ColBERT`` does).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from workbench.scores import PackedEmbeddings, colbert_scores, pack, token_rows_of, top_k
from workbench.store import IndexLockedError, Snapshot, TokenStore

__all__ = ["Exact", "IndexLockedError", "Voyager"]

RETRAIN_GROWTH = 4  # retrain the centroids once the index holds this many times the tokens they saw


def check_positive(**values: Any) -> None:
    """ValueError naming the first of ``values`` that is neither None nor a positive integer."""
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


class _Index:
    """What both indexes share: the token store, the PyLate lifecycle, validation and lookups."""

    def __init__(self, index_folder: str | Path, index_name: str, override: bool, dtype: str,
                 embedding_size: int | None) -> None:
        name = os.fspath(index_name)
        # The index is the folder index_folder/index_name, and override replaces what it holds: a name
        # that is empty, "." or a path would point it at index_folder itself or somewhere else.
        if name in ("", ".", "..") or any(sep and sep in name for sep in (os.sep, os.altsep)):
            raise ValueError(f"index_name must name one folder inside index_folder (not empty, '.', '..' or a path), "
                             f"got {index_name!r}.")
        self.store = TokenStore(Path(index_folder) / name, dtype=dtype, override=override, kind=type(self).__name__)
        if embedding_size is not None and self.store.dim is not None and self.store.dim != embedding_size:
            raise ValueError(f"The index holds {self.store.dim}-dimensional embeddings, not {embedding_size}.")
        self.embedding_size = embedding_size

    def __len__(self) -> int:
        return len(self.store)

    def add_documents(self, documents_ids: Sequence[str], documents_embeddings: Sequence[Any], **_: Any):
        """Append documents (ids unique and new; one ``[n_tokens, dim]`` embedding each) and commit."""
        if self.embedding_size is not None and self.store.dim is None:
            dims = {np.shape(e)[-1] for e in documents_embeddings}
            if dims != {self.embedding_size}:
                raise ValueError(f"The index was created for dimension {self.embedding_size}, got {sorted(dims)}.")
        self.store.append(documents_ids, documents_embeddings, derive=self._derive)
        return self

    def remove_documents(self, documents_ids: Sequence[str]):
        """Remove documents by id (all must exist) and commit."""
        self.store.remove(documents_ids)
        return self

    def get_documents_embeddings(self, documents_ids: Sequence[str] | Sequence[Sequence[str]]) -> list:
        """The stored embeddings (fp32) of ``documents_ids``, or nested lists for nested ids (PyLate's form)."""
        snapshot = self.snapshot()
        if documents_ids and not isinstance(documents_ids[0], (str, int)):
            return [self.get_documents_embeddings(group) for group in documents_ids]
        packed = snapshot.embeddings()
        return [np.asarray(packed[p], dtype=np.float32) for p in snapshot.positions(documents_ids)]

    def close(self) -> None:
        """Release the writer lock; the index stays readable."""
        self.store.close()

    def subset_mask(self, subset: Sequence[str] | None, snapshot: Snapshot | None = None) -> np.ndarray | None:
        """Boolean mask over the positions of ``snapshot`` (default: the latest read) of the ids in ``subset``."""
        if subset is None:
            return None
        snapshot = self.store.snapshot if snapshot is None else snapshot
        mask = np.zeros(len(snapshot.ids), dtype=bool)
        mask[snapshot.positions(subset)] = True
        return mask

    def refresh(self) -> None:
        """Pick up what another process committed since this index was read."""
        self.store.refresh()

    def snapshot(self) -> Snapshot:
        """The latest committed state, to hand to :meth:`search` and :meth:`subset_mask`."""
        self.refresh()
        return self.store.snapshot

    def _derive(self, arrays: list[np.ndarray]) -> dict:
        return {}


class Exact(_Index):
    """Brute-force exact MaxSim over every stored document: the ground truth, and the right
    choice for small corpora. The store is read into fp32 memory once per committed state.

    Args:
        index_folder, index_name: the index lives in ``index_folder/index_name``.
        override: start afresh, replacing the workbench index the folder holds (nothing else is deleted).
        dtype: ``"float16"`` (default) or ``"float32"`` storage on disk.
        embedding_size: optional check of the embeddings' dimension (otherwise taken from the first documents).
    """

    def __init__(self, index_folder: str | Path = "pylate-index", index_name: str = "index", override: bool = False,
                 dtype: str = "float16", embedding_size: int | None = None) -> None:
        super().__init__(index_folder, index_name, override, dtype, embedding_size)

    def search(self, queries: PackedEmbeddings, k: int, subset: np.ndarray | None = None,
               snapshot: Snapshot | None = None, device: str | None = None, **_: Any):
        """Top ``k`` (positions in ``snapshot``, default the latest commit; scores) per query,
        scored on ``device`` (None: the CPU)."""
        snapshot = self.snapshot() if snapshot is None else snapshot
        if "float32" not in snapshot.derived:
            packed = snapshot.embeddings()
            snapshot.derived["float32"] = PackedEmbeddings(np.asarray(packed.tokens, dtype=np.float32), packed.offsets)
        documents = snapshot.derived["float32"]
        if subset is not None:
            positions = np.flatnonzero(subset)
            return top_k(colbert_scores(queries, documents.select(positions), device=device).numpy(), k, positions)
        return top_k(colbert_scores(queries, documents, device=device).numpy(), k, None)


class Voyager(_Index):
    """Voyager HNSW over token centroids for candidates, exact MaxSim from the token store for scores.

    Args:
        index_folder, index_name: the index lives in ``index_folder/index_name``.
        override: start afresh, replacing the workbench index the folder holds (nothing else is deleted).
        embedding_size: optional check (PyLate's argument); by default the dimension comes from the
            first documents added, so any model's embeddings fit.
        M, ef_construction: HNSW graph degree and build depth (saved with the index).
        ef_search: HNSW search depth (a search-time setting).
        storage_data_type: ``"float32"``, ``"float8"`` or ``"e4m3"`` for the centroid vectors.
        n_centroids: centroids to train (default: about ``4 * sqrt(tokens)``, a power of two).
        k_token: centroids looked up per query token (default 8; PyLate calls its per-token depth ``k_token`` too).
        n_full_scores: candidates per query scored exactly (default 256).
        dtype: ``"float16"`` (default) or ``"float32"`` token storage.
        seed: seed of the k-means sampling and initialisation and of the HNSW graph's levels.
    """

    def __init__(self, index_folder: str | Path = "pylate-index", index_name: str = "index", override: bool = False,
                 embedding_size: int | None = None, M: int = 16, ef_construction: int = 200, ef_search: int = 64,
                 storage_data_type: str = "float32", n_centroids: int | None = None, k_token: int = 8,
                 n_full_scores: int = 256, dtype: str = "float16", seed: int = 0) -> None:
        import voyager

        storage_types = {"float32": voyager.StorageDataType.Float32, "float8": voyager.StorageDataType.Float8,
                         "e4m3": voyager.StorageDataType.E4M3}
        if storage_data_type.lower() not in storage_types:
            raise ValueError(f"storage_data_type must be one of {sorted(storage_types)}, got {storage_data_type!r}.")
        check_positive(M=M, ef_construction=ef_construction, ef_search=ef_search, k_token=k_token,
                       n_full_scores=n_full_scores)
        super().__init__(index_folder, index_name, override, dtype, embedding_size)
        saved = self.store.extra.get("voyager_parameters", {})
        self.parameters = {"M": M, "ef_construction": ef_construction, "storage_data_type": storage_data_type.lower(),
                           "n_centroids": n_centroids, "seed": seed, **saved}
        self.ef_search, self.k_token, self.n_full_scores = ef_search, k_token, n_full_scores
        self._storage_types = storage_types

    # -- building --------------------------------------------------------------------------------

    def _derive(self, arrays: list[np.ndarray]) -> dict:
        new_tokens = np.concatenate(arrays).astype(np.float32)
        total = len(self.store.tokens) + len(new_tokens)
        trained_on = self.store.extra.get("centroids_trained_on", 0)
        if self._centroids is not None and total < RETRAIN_GROWTH * trained_on:
            return {"side": {"codes": assign(new_tokens, self._centroids)}}
        stored = np.asarray(self.store.tokens, dtype=np.float32).reshape(-1, new_tokens.shape[1])
        everything = np.concatenate([stored, new_tokens])
        count = self.parameters["n_centroids"] or default_centroid_count(total)
        centroids = spherical_kmeans(everything, min(count, total), seed=self.parameters["seed"])
        graph = self._graph(centroids)
        return {
            "replace_side": {"codes": assign(everything, centroids)},
            "files": {"centroids": centroids.astype(np.float32).tobytes(), "voyager": graph.as_bytes()},
            "extra": {"centroids_trained_on": total, "voyager_parameters": self.parameters},
        }

    def _graph(self, centroids: np.ndarray):
        import voyager

        graph = voyager.Index(
            voyager.Space.InnerProduct,
            num_dimensions=centroids.shape[1],
            M=self.parameters["M"],
            ef_construction=self.parameters["ef_construction"],
            random_seed=self.parameters["seed"],
            storage_data_type=self._storage_types[self.parameters["storage_data_type"]],
        )
        # Parallel insertion links the graph in thread-timing order, so every build (and every
        # recall figure measured on it) would differ; the few thousand centroids take well under a second serially.
        graph.add_items(centroids, num_threads=1)
        return graph

    @property
    def _centroids(self) -> np.ndarray | None:
        """The centroids of the latest state read (None before the first documents)."""
        return centroids_of(self.store.snapshot)

    def _searcher(self, snapshot: Snapshot):
        """The HNSW graph and postings of ``snapshot`` (built once per committed state)."""
        if "graph" not in snapshot.derived:
            import voyager

            # Loaded from the snapshot's bytes: the graph file on disk may be replaced meanwhile.
            snapshot.derived["graph"] = voyager.Index.load(io.BytesIO(snapshot.contents["voyager"]))
            snapshot.derived["postings"] = Postings(snapshot.side["codes"], snapshot.offsets,
                                                    len(centroids_of(snapshot)))
        return snapshot.derived["graph"], snapshot.derived["postings"]

    # -- searching -------------------------------------------------------------------------------

    def search(self, queries: PackedEmbeddings, k: int, subset: np.ndarray | None = None,
               k_token: int | None = None, n_full_scores: int | None = None, snapshot: Snapshot | None = None,
               device: str | None = None, **_: Any):
        """Top ``k`` (positions in ``snapshot``, default the latest commit; scores) per query.
        ``k_token`` and ``n_full_scores`` (positive integers) override the index's settings; the
        exact scoring runs on ``device`` (None: the CPU)."""
        check_positive(k=k, k_token=k_token, n_full_scores=n_full_scores)
        snapshot = self.snapshot() if snapshot is None else snapshot
        documents = snapshot.embeddings()
        n_full_scores = max(n_full_scores or self.n_full_scores, k)
        if subset is not None and subset.sum() <= n_full_scores:
            # A small enough subset is scored whole: exact, and cheaper than looking for candidates.
            positions = np.flatnonzero(subset)
            return top_k(colbert_scores(queries, documents.select(positions), device=device).numpy(), k, positions)
        graph, postings = self._searcher(snapshot)
        k_token = min(k_token or self.k_token, len(centroids_of(snapshot)))
        query_tokens = np.asarray(queries.tokens, dtype=np.float32)
        neighbours, distances = graph.query(query_tokens, k=k_token, query_ef=max(self.ef_search, k_token))
        similarities = 1.0 - distances  # Voyager's inner-product distance is 1 - dot
        results = []
        for index in range(len(queries)):
            rows = slice(queries.offsets[index], queries.offsets[index + 1])
            candidates = postings.candidates(neighbours[rows], similarities[rows], subset, n_full_scores)
            exact = colbert_scores([query_tokens[rows]], documents.select(candidates), device=device).numpy()
            results.extend(top_k(exact, k, candidates))
        return results


class Postings:
    """For every centroid, the documents with a token assigned to it (CSR arrays)."""

    def __init__(self, codes: np.ndarray, offsets: np.ndarray, n_centroids: int) -> None:
        self.n_documents = len(offsets) - 1
        n_documents = max(self.n_documents, 1)
        document_of_token = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
        pairs = np.unique(codes.astype(np.int64) * n_documents + document_of_token)
        self.documents = pairs % n_documents
        self.offsets = np.searchsorted(pairs // n_documents, np.arange(n_centroids + 1))

    def candidates(self, neighbours: np.ndarray, similarities: np.ndarray, subset: np.ndarray | None,
                   limit: int) -> np.ndarray:
        """The ``limit`` documents with the best approximate MaxSim for one query.

        ``neighbours`` and ``similarities`` are ``[query_tokens, k_token]``: each query token's
        nearest centroids. A document's approximate score sums, over query tokens, the best
        similarity of a looked-up centroid it has a token in, or else the token's lowest looked-up
        similarity (its real best token is no closer than that, or it would sit in a nearer centroid).
        """
        flat = neighbours.reshape(-1).astype(np.int64)
        rows = token_rows_of(self.offsets, flat)
        documents = self.documents[rows]
        sizes = self.offsets[flat + 1] - self.offsets[flat]
        query_token = np.repeat(np.repeat(np.arange(len(neighbours)), neighbours.shape[1]), sizes)
        similarity = np.repeat(similarities.reshape(-1), sizes)
        if subset is not None:
            keep = subset[documents]
            documents, query_token, similarity = documents[keep], query_token[keep], similarity[keep]
        present = np.bincount(documents, minlength=self.n_documents) > 0
        unique = np.flatnonzero(present)
        if len(unique) <= limit:
            return unique
        slot = np.empty(self.n_documents, dtype=np.int64)  # document position -> row of `approximate`
        slot[unique] = np.arange(len(unique))
        width = len(neighbours)
        approximate = np.tile(similarities.min(axis=1), len(unique))
        np.maximum.at(approximate, slot[documents] * width + query_token, similarity)
        # Documents that meet the same centroids tie exactly; top_k breaks ties by position, the
        # same way on every CPU (a bare argpartition picks among them by SIMD level).
        [(best, _)] = top_k(approximate.reshape(-1, width).sum(axis=1)[None, :], limit)
        return unique[np.sort(best)]


def centroids_of(snapshot: Snapshot) -> np.ndarray | None:
    """The Voyager centroids a committed state holds (None before the first documents)."""
    raw = snapshot.contents.get("centroids")
    return None if raw is None else np.frombuffer(raw, dtype=np.float32).reshape(-1, snapshot.dim)


def default_centroid_count(n_tokens: int) -> int:
    """About ``4 * sqrt(n_tokens)`` rounded to a power of two, at most a quarter of the tokens."""
    if n_tokens < 4:
        return 1
    return int(max(1, min(2 ** round(math.log2(4 * math.sqrt(n_tokens))), n_tokens // 4)))


def spherical_kmeans(vectors: np.ndarray, k: int, iterations: int = 8, seed: int = 0,
                     sample_per_centroid: int = 32) -> np.ndarray:
    """``k`` unit-norm centroids of unit-norm ``vectors`` (cosine k-means on a random sample)."""
    rng = np.random.default_rng(seed)
    sample_size = min(len(vectors), max(k * sample_per_centroid, 16384))
    sample = vectors[np.sort(rng.choice(len(vectors), size=sample_size, replace=False))]
    centroids = sample[rng.choice(len(sample), size=k, replace=False)].copy()
    for _ in range(iterations):
        labels = assign(sample, centroids)
        counts = np.bincount(labels, minlength=k)
        filled = counts > 0  # an empty cluster keeps its previous centroid
        starts = np.cumsum(counts) - counts
        sums = np.add.reduceat(sample[np.argsort(labels, kind="stable")], starts[filled], axis=0)
        centroids[filled] = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    return centroids.astype(np.float32)


def assign(vectors: np.ndarray, centroids: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Index of the most similar centroid for every vector (int32)."""
    codes = np.empty(len(vectors), dtype=np.int32)
    for start in range(0, len(vectors), chunk):
        codes[start : start + chunk] = np.argmax(vectors[start : start + chunk] @ centroids.T, axis=1)
    return codes
