"""Token centroids: spherical k-means on a sample, assignment in chunks, and the inverted lists
(centroid -> documents) that both Voyager and PLAID search through.

k-means and assignment run on faiss (``faiss-cpu``): its flat inner-product search is a blocked
BLAS product with a running arg-max, about 20 % faster than numpy's ``argmax(x @ c.T)`` here and
without its ``[chunk, centroids]`` score matrix; its k-means is the same Lloyd iteration with
empty clusters split instead of left behind. faiss bundles its own OpenMP runtime beside torch's;
:func:`_faiss` gives it torch's thread count so the two do not oversubscribe the cores.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from workbench.scores import token_rows_of, top_k

__all__ = ["Postings", "assign", "default_centroid_count", "sample_rows", "spherical_kmeans", "stored_then_new"]

ASSIGN_CHUNK = 1 << 16  # vectors converted to fp32 and assigned at a time


def _faiss():
    import faiss
    import torch

    faiss.omp_set_num_threads(torch.get_num_threads())
    return faiss


def default_centroid_count(n_tokens: int, per_root: int = 4) -> int:
    """About ``per_root * sqrt(n_tokens)`` rounded to a power of two, at most a quarter of the tokens."""
    if n_tokens < 4:
        return 1
    return int(max(1, min(2 ** round(math.log2(per_root * math.sqrt(n_tokens))), n_tokens // 4)))


def sample_rows(n_rows: int, size: int, seed: int) -> np.ndarray:
    """``min(size, n_rows)`` distinct row numbers out of ``n_rows``, sorted (reads of a memory map stay sequential)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=min(size, n_rows), replace=False))


def spherical_kmeans(sample: np.ndarray, k: int, iterations: int = 8, seed: int = 0) -> np.ndarray:
    """``k`` unit-norm centroids (fp32) of the unit-norm vectors ``sample`` (cosine k-means, faiss)."""
    faiss = _faiss()
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    k = min(k, len(sample))
    kmeans = faiss.Kmeans(
        sample.shape[1],
        k,
        niter=iterations,
        seed=seed,
        spherical=True,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=max(1, -(-len(sample) // k)),
    )
    kmeans.train(sample)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def assign(vectors: np.ndarray, centroids: np.ndarray, chunk: int = ASSIGN_CHUNK) -> np.ndarray:
    """Index of the most similar centroid (inner product) for every vector (int32), in chunks: ``vectors``
    may be an fp16 memory map of any length."""
    faiss = _faiss()
    flat = faiss.IndexFlatIP(centroids.shape[1])
    flat.add(np.ascontiguousarray(centroids, dtype=np.float32))
    codes = np.empty(len(vectors), dtype=np.int32)
    for start in range(0, len(vectors), chunk):
        block = np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32)
        codes[start : start + len(block)] = flat.search(block, 1)[1][:, 0]
    return codes


def stored_then_new(
    rows: np.ndarray, n_stored: int, read_stored: Callable[[np.ndarray], np.ndarray], new_tokens: np.ndarray
) -> np.ndarray:
    """fp32 tokens at ``rows`` of the stored tokens (read by ``read_stored``) followed by ``new_tokens``:
    how a retrain samples the whole corpus without holding it."""
    old = rows[rows < n_stored]
    fresh = new_tokens[rows[rows >= n_stored] - n_stored]
    return np.concatenate([np.asarray(read_stored(old), dtype=np.float32), fresh]) if len(old) else fresh


class Postings:
    """For every centroid, the documents with a token assigned to it, and for every document, the distinct
    centroids of its tokens (two CSR layouts of the same (centroid, document) pairs)."""

    def __init__(self, codes: np.ndarray, offsets: np.ndarray, n_centroids: int) -> None:
        self.n_documents = len(offsets) - 1
        n_documents = max(self.n_documents, 1)
        # One int64 key per token, sorted and deduplicated in place: about three token-length arrays at the
        # peak, which is what opening a 10M-token index costs. Document-major first: centroid interaction
        # reads each distinct centroid of a document once (about 0.6 of its tokens on msmarco passages).
        width = max(n_centroids, 1)
        pairs = np.repeat(np.arange(self.n_documents, dtype=np.int64), np.diff(offsets)) * width
        pairs += np.asarray(codes, dtype=np.int64)
        pairs.sort()
        if len(pairs):
            pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]
        small = np.int32 if max(n_documents, n_centroids) < 2**31 else np.int64
        self.document_centroids = (pairs % width).astype(small)
        self.document_offsets = np.searchsorted(pairs // width, np.arange(self.n_documents + 1))
        pairs = self.document_centroids.astype(np.int64) * n_documents
        pairs += np.repeat(np.arange(self.n_documents, dtype=np.int64), np.diff(self.document_offsets))
        pairs.sort()
        self.documents = (pairs % n_documents).astype(small)
        pairs //= n_documents
        self.offsets = np.searchsorted(pairs, np.arange(n_centroids + 1))

    def touched(self, centroids: np.ndarray, subset: np.ndarray | None, at_least: int = 1) -> np.ndarray:
        """Positions of the documents with a token in one of ``centroids`` (any shape), in position order.

        With ``subset``, only its documents; when fewer than ``at_least`` of them are touched, the whole
        subset is returned instead: a filtered search still finds ``k`` documents when the subset has them.
        """
        probed = np.unique(centroids).astype(np.int64)
        present = np.zeros(self.n_documents, dtype=bool)
        present[self.documents[token_rows_of(self.offsets, probed)]] = True
        if subset is not None:
            present &= subset
        touched = np.flatnonzero(present)
        if subset is not None and len(touched) < at_least:
            return np.flatnonzero(subset)
        return touched

    def candidates(
        self, neighbours: np.ndarray, similarities: np.ndarray, subset: np.ndarray | None, limit: int, at_least: int = 1
    ) -> np.ndarray:
        """The ``limit`` documents with the best approximate MaxSim for one query, in position order.

        When the probed centroids hold fewer than ``at_least`` documents of ``subset``, the whole
        subset is returned instead: a filtered search still finds ``k`` documents when the subset has them.

        ``neighbours`` and ``similarities`` are ``[query_tokens, probes]``: each query token's
        nearest centroids. A document's approximate score sums, over query tokens, the best
        similarity of a probed centroid it has a token in, or else the token's lowest probed
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
        if subset is not None and len(unique) < at_least:
            return np.flatnonzero(subset)
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
