"""Voyager: an HNSW graph over token centroids for candidates, exact MaxSim from the token store for scores.

Indexing every token in an HNSW graph (PyLate's way) costs a graph node per token: minutes to
build and more bytes than the tokens themselves. Here the tokens are clustered instead (spherical
k-means, about ``CENTROIDS_PER_ROOT * sqrt(tokens)`` centroids), each token keeps the id of its
centroid. Per query, one product gives every query token's similarity to every centroid; a query
token's ``k_token`` nearest centroids come from it (above ``EXACT_CENTROIDS`` centroids from a Voyager
HNSW graph over them, stored with the index only then) and every document with a token in one of
them is a candidate. Candidates are ranked by centroid interaction (PLAID's: MaxSim with each document
token replaced by its centroid, :mod:`~workbench.indexes.interaction`), and the ``n_full_scores``
best are scored exactly from the token store.

The centroids are trained on a bounded sample of the first documents added, and retrained, with
every token re-assigned chunk by chunk, whenever the index has grown fourfold since: memory stays
bounded by the sample and a chunk, not the corpus.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.indexes.base import Index, check_positive
from workbench.indexes.centroids import (
    Postings,
    assign,
    default_centroid_count,
    sample_rows,
    spherical_kmeans,
    stored_then_new,
)
from workbench.indexes.interaction import centroid_interaction, nearest_in_columns
from workbench.indexes.store import DTYPES, Additions, Snapshot
from workbench.scores import PackedEmbeddings, cast, colbert_scores, top_k

__all__ = ["EXACT_CENTROIDS", "RETRAIN_GROWTH", "Voyager", "centroid_table", "centroids_of", "kmeans_sample_size"]

RETRAIN_GROWTH = 4  # retrain the centroids once the index holds this many times the tokens they saw
# About 8 * sqrt(tokens) centroids (PyLate's PLAID takes 16, this project's PLAID 4), trained on a sample
# of 16 tokens each. Measured on msmarco-dl19, 50 queries, k_token 8, n_full_scores 192 (the index's sweep;
# benchmarks/candidates.py): overlap@10 with exact search 0.992 at 1,000 passages (2,048 centroids; 1,024,
# sampled at 32 tokens each, gave 0.980) and 0.990 at 5,000 (4,096; 2,048 gave 0.988).
CENTROIDS_PER_ROOT = 8
SAMPLE_PER_CENTROID = 16  # k-means sample: this many tokens per centroid, at least MIN_SAMPLE ...
MIN_SAMPLE = 16384
# ... and above MIN_SAMPLE at most this fraction of the tokens. k-means costs iterations x sample x centroids
# products, the assignment of every token afterwards tokens x centroids: a sample of 16 per centroid at
# 1,000 msmarco passages is 45 % of the tokens, and its k-means took twice the assignment's time. Capped, the
# build took 0.42 s instead of 0.63-0.89 s; overlap@10 at the defaults, means over seeds 0-3 (benchmarks/
# index.py's collections, 1,000 / 5,000 passages): msmarco-dl19 0.990 / 0.991 against 0.991 / 0.991 uncapped,
# dbpedia-entity 0.970 / 0.9745 against 0.976 / 0.9745 (seeds spread 0.956-0.98 there). 8 per centroid
# everywhere lost 0.008 at 5,000 dbpedia passages.
MAX_SAMPLE_FRACTION = 0.25
# PLAID's count is 4. Three gave the same overlap@10 at both sizes of both collections (means over four seeds,
# within 0.001), two lost 0.0035 at 5,000 dbpedia passages; each iteration is a ninth of a 5,000-passage build.
KMEANS_ITERATIONS = 3
# Up to this many centroids, a query token's nearest ones come from the product with every centroid that
# centroid interaction needs anyway: exact, and faster than the graph (at 1,024 centroids the graph's search
# took 0.8 ms per 32-token query on two threads, the product 0.14). Above it they come from the graph.
EXACT_CENTROIDS = 8192


class Voyager(Index):
    """Voyager HNSW over token centroids for candidates, exact MaxSim from the token store for scores.

    Args:
        index_folder, index_name: the index lives in ``index_folder/index_name``.
        override: start afresh, replacing the workbench index the folder holds (nothing else is deleted).
        embedding_size: optional check (PyLate's argument); by default the dimension comes from the
            first documents added, so any model's embeddings fit.
        M, ef_construction: HNSW graph degree and build depth (saved with the index).
        ef_search: HNSW search depth (a search-time setting; used above ``EXACT_CENTROIDS`` centroids).
        storage_data_type: ``"float32"``, ``"float8"`` or ``"e4m3"`` for the centroid vectors.
        n_centroids: centroids to train (default: about ``8 * sqrt(tokens)``, a power of two).
        k_token: centroids looked up per query token (default 4; PyLate calls its per-token depth ``k_token`` too).
        n_full_scores: candidates per query scored exactly (default 192), the best by centroid interaction.
        dtype: ``"float16"`` (default) or ``"float32"`` token storage.
        seed: seed of the k-means sampling and initialisation and of the HNSW graph's levels.
    """

    sweep = tuple(
        {"k_token": k_token, "n_full_scores": n_full_scores}
        for k_token, n_full_scores in (
            (1, 32),
            (2, 64),
            (4, 64),
            (4, 128),
            (4, 192),
            (8, 128),
            (8, 192),
            (8, 256),
            (32, 512),
        )
    )

    def __init__(
        self,
        index_folder: str | Path = "pylate-index",
        index_name: str = "index",
        override: bool = False,
        embedding_size: int | None = None,
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 64,
        storage_data_type: str = "float32",
        n_centroids: int | None = None,
        k_token: int = 4,
        n_full_scores: int = 192,
        dtype: str = "float16",
        seed: int = 0,
    ) -> None:
        import voyager

        storage_types = {
            "float32": voyager.StorageDataType.Float32,
            "float8": voyager.StorageDataType.Float8,
            "e4m3": voyager.StorageDataType.E4M3,
        }
        if storage_data_type.lower() not in storage_types:
            raise ValueError(f"storage_data_type must be one of {sorted(storage_types)}, got {storage_data_type!r}.")
        check_positive(
            M=M,
            ef_construction=ef_construction,
            ef_search=ef_search,
            k_token=k_token,
            n_full_scores=n_full_scores,
            n_centroids=n_centroids,
        )
        super().__init__(index_folder, index_name, override, embedding_size, payload=dtype)
        saved = self.store.extra.get("voyager_parameters", {})
        self.parameters = {
            "M": M,
            "ef_construction": ef_construction,
            "storage_data_type": storage_data_type.lower(),
            "n_centroids": n_centroids,
            "seed": seed,
            **saved,
        }
        self.ef_search = ef_search
        self.search_settings = {"k_token": k_token, "n_full_scores": n_full_scores}
        self._storage_types = storage_types

    @property
    def k_token(self) -> int:
        return self.search_settings["k_token"]

    @property
    def n_full_scores(self) -> int:
        return self.search_settings["n_full_scores"]

    # -- building --------------------------------------------------------------------------------

    def _derive(self, arrays: list[np.ndarray]) -> Additions:
        # Assigned from the values the store keeps (fp16 by default), as a retrain re-assigns them.
        new_tokens = cast(cast(np.concatenate(arrays), DTYPES[self.store.dtype]), np.float32)
        stored = self.store.snapshot.n_tokens
        total = stored + len(new_tokens)
        trained_on = self.store.extra.get("centroids_trained_on", 0)
        centroids = centroids_of(self.store.snapshot)
        if centroids is not None and total < RETRAIN_GROWTH * trained_on:
            return Additions(side={"codes": assign(new_tokens, centroids)})
        count = min(self.parameters["n_centroids"] or default_centroid_count(total, CENTROIDS_PER_ROOT), total)
        seed = self.parameters["seed"]
        rows = sample_rows(total, kmeans_sample_size(count, total), seed)
        sample = stored_then_new(rows, stored, lambda old: self.store.tokens[old], new_tokens)
        centroids = spherical_kmeans(sample, count, iterations=KMEANS_ITERATIONS, seed=seed)

        def codes_of_every_token():
            for chunk in self.store.rows(["tokens"]):
                yield {"codes": assign(chunk["tokens"], centroids)}
            yield {"codes": assign(new_tokens, centroids)}

        return Additions(
            rewrite=codes_of_every_token,
            # Up to EXACT_CENTROIDS the search never reads the graph: an empty file, not a stale one.
            files={
                "centroids": centroids.tobytes(),
                "voyager": self._graph(centroids).as_bytes() if len(centroids) > EXACT_CENTROIDS else b"",
            },
            extra={"centroids_trained_on": total, "voyager_parameters": self.parameters},
        )

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

    def _searcher(self, snapshot: Snapshot) -> Postings:
        """The postings of ``snapshot``, its centroids kept beside them as a tensor (built once per commit)."""
        if "postings" not in snapshot.derived:
            snapshot.derived["centroids"] = torch.from_numpy(centroids_of(snapshot).copy())
            snapshot.derived["postings"] = Postings(
                snapshot.side["codes"], snapshot.offsets, len(snapshot.derived["centroids"])
            )
        return snapshot.derived["postings"]

    def _graph_of(self, snapshot: Snapshot):
        """The HNSW graph over the centroids of ``snapshot``: the stored one, or built (the same, for the
        same seed) when the index has at most ``EXACT_CENTROIDS`` centroids and stores none."""
        if "graph" not in snapshot.derived:
            import voyager

            # Loaded from the snapshot's bytes: the graph file on disk may be replaced meanwhile.
            stored = snapshot.contents.get("voyager")
            snapshot.derived["graph"] = (
                voyager.Index.load(io.BytesIO(stored)) if stored else self._graph(centroids_of(snapshot).copy())
            )
        return snapshot.derived["graph"]

    # -- searching -------------------------------------------------------------------------------

    def search(
        self,
        queries: PackedEmbeddings,
        k: int,
        subset: np.ndarray | None = None,
        snapshot: Snapshot | None = None,
        device: str | None = None,
        **settings: int | None,
    ):
        """Top ``k`` (positions in ``snapshot``, default the latest commit; scores) per query.
        ``k_token`` and ``n_full_scores`` (positive integers) override the index's settings; the
        exact scoring runs on ``device`` (None: the CPU)."""
        check_positive(k=k)
        settings = self.settings(**settings)
        snapshot = self.snapshot() if snapshot is None else snapshot
        n_full_scores = max(settings["n_full_scores"], k)
        if subset is not None and subset.sum() <= n_full_scores:
            # A small enough subset is scored whole: exact, and cheaper than looking for candidates.
            positions = np.flatnonzero(subset)
            return top_k(colbert_scores(queries, snapshot.documents(positions), device=device).numpy(), k, positions)
        postings = self._searcher(snapshot)
        centroids = snapshot.derived["centroids"]
        k_token = min(settings["k_token"], len(centroids))
        query_tokens = np.array(queries.tokens, dtype=np.float32)  # a copy: torch takes writable arrays only
        if len(centroids) > EXACT_CENTROIDS:
            neighbours, _ = self._graph_of(snapshot).query(
                query_tokens, k=k_token, query_ef=max(self.ef_search, k_token)
            )

        def best(index: int) -> tuple[np.ndarray, np.ndarray]:
            rows = slice(queries.offsets[index], queries.offsets[index + 1])
            table = centroid_table(query_tokens[rows], centroids)
            probed = nearest_in_columns(table, k_token) if len(centroids) <= EXACT_CENTROIDS else neighbours[rows]
            candidates = postings.touched(probed, subset, at_least=k)
            if len(candidates) > n_full_scores:
                interaction = centroid_interaction(
                    table, postings.document_centroids, postings.document_offsets, candidates
                )
                # Documents whose tokens share centroids can tie exactly; top_k breaks ties by position,
                # the same way on every CPU (a bare argpartition picks among them by SIMD level).
                [(chosen, _)] = top_k(interaction[None, :], n_full_scores)
                candidates = candidates[np.sort(chosen)]
            exact = colbert_scores([query_tokens[rows]], snapshot.documents(candidates), device=device).numpy()
            return top_k(exact, k, candidates)[0]

        return _per_query(best, len(queries))


def kmeans_sample_size(n_centroids: int, n_tokens: int) -> int:
    """Tokens to train ``n_centroids`` on out of ``n_tokens``: ``SAMPLE_PER_CENTROID`` per centroid, at most
    ``MAX_SAMPLE_FRACTION`` of the tokens, at least ``MIN_SAMPLE`` (or every token, when fewer)."""
    return min(n_tokens, max(MIN_SAMPLE, min(n_centroids * SAMPLE_PER_CENTROID, int(n_tokens * MAX_SAMPLE_FRACTION))))


def centroid_table(query: np.ndarray, centroids: torch.Tensor) -> np.ndarray:
    """``[centroids, query tokens]``: each query token's similarity to every centroid (one product)."""
    return (centroids @ torch.from_numpy(query).T).numpy()


def _per_query(function: Callable[[int], Any], n_queries: int) -> list:
    """``[function(i) for i in range(n_queries)]``, whole queries shared among torch's threads.

    One query's work is a few small products (a millisecond each): split across threads, every
    operation ends at a barrier where the threads spin until the slowest arrives, and on a busy
    machine that wait costs more than the product (measured with one of two cores taken by another
    process: 11 ms per query instead of 5). Each thread here runs single-threaded operations on
    queries of its own instead: no barrier until the last query.

    numpy's BLAS gets one thread meanwhile, for the same reason: an fp32 index's rescoring products run
    there (:func:`~workbench.scores.colbert_scores`), and with a pool of threads per product the queries'
    products fought for the cores (``dtype="float32"``, 1,000 msmarco passages, 2 cores: 3.1 ms per
    query, 1.9-2.2 with one BLAS thread; fp16 2.0-2.3). The limit is the process's while the search runs.
    """
    threads = torch.get_num_threads()
    try:
        with (
            _blas_threads().limit(limits=1, user_api="blas"),
            ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool,
        ):
            return list(pool.map(function, range(n_queries)))
    finally:
        torch.set_num_threads(threads)  # the workers' setting is also torch's default for threads started later


@functools.cache
def _blas_threads():
    """The BLAS libraries loaded when the first search ran, numpy's among them (loaded with numpy), to limit
    their threads. Finding them reads every loaded library (0.8 ms here): once per process, not per search."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def centroids_of(snapshot: Snapshot) -> np.ndarray | None:
    """The centroids a committed state holds (None before the first documents)."""
    raw = snapshot.contents.get("centroids")
    return None if raw is None else np.frombuffer(raw, dtype=np.float32).reshape(-1, snapshot.dim)
