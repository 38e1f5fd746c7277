"""PLAID: residual-compressed tokens, searched by centroid interaction, scored by exact MaxSim on
decompressed candidates (Santhanam et al., 2022). No full-precision copy of the tokens is kept.

Storage (:class:`~workbench.indexes.codecs.ResidualCodec`): each token keeps the id of its nearest
centroid and an ``nbits``-per-dimension bucketed residual: ``2 + dim * nbits / 8`` bytes per token
(50 B at dimension 96 and nbits=4, 26 B at nbits=2), plus the centroids.

Search, all query tokens of a batch at once:

1. centroid scores: every query token against every centroid (one matrix product);
2. candidates: the documents with a token in one of each query token's ``n_ivf_probe`` best
   centroids, ranked by a pruned centroid interaction (a document's score sums, per query token,
   its best probed centroid) to keep the ``n_full_scores`` best;
3. full centroid interaction: those candidates scored with every token's centroid (each token's
   similarity replaced by its centroid's); the best ``max(k, n_full_scores // 4)`` go on;
4. exact MaxSim on their decompressed tokens gives the top ``k``.

Building streams: each :meth:`add_documents` batch is encoded with the current codec. The codec
(centroids and buckets) is trained on a bounded sample of the first batch and retrained, with every
stored token decoded and re-encoded chunk by chunk, whenever the corpus has grown fourfold since, so
memory follows the batch and the sample, not the corpus. A retrain re-encodes decoded tokens: a
second quantisation, whose error the benchmark's overlap figures include.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workbench.indexes.base import Index, check_positive
from workbench.indexes.centroids import Postings, default_centroid_count, sample_rows, stored_then_new
from workbench.indexes.codecs import ResidualCodec, check_layout, codec_of
from workbench.indexes.interaction import centroid_interaction
from workbench.indexes.store import Additions, Snapshot
from workbench.scores import PackedEmbeddings, colbert_scores, text_chunks, top_k

__all__ = ["PLAID"]

RETRAIN_GROWTH = 4
MAX_SAMPLE = 1 << 20  # k-means sample cap (tokens): 400 MB of fp32 at dimension 96
EXACT_FRACTION = 4  # exact MaxSim on the best n_full_scores // EXACT_FRACTION, as fast-plaid does
SCORE_BLOCK = 1 << 23  # query-token x centroid scores held at once (32 MB of fp32), whatever the batch size


class PLAID(Index):
    """A compressed index: centroid codes and n-bit residuals, PLAID's search.

    Args:
        index_folder, index_name: the index lives in ``index_folder/index_name``.
        override: start afresh, replacing the workbench index the folder holds (nothing else is deleted).
        embedding_size: optional check of the embeddings' dimension.
        nbits: bits per dimension of the residual (1, 2, 4 or 8; default 4).
        kmeans_niters: k-means iterations when the centroids are (re)trained (default 4).
        max_points_per_centroid: k-means sample size per centroid (default 256, at most 2**20 tokens in all).
        n_samples_kmeans: k-means sample size in tokens (overrides the above).
        n_centroids: centroids to train (default about ``4 * sqrt(tokens)``, a power of two).
        n_ivf_probe: centroids probed per query token (a search setting, default 8).
        n_full_scores: candidates scored by full centroid interaction; a quarter of them are
            decompressed and scored exactly (a search setting, default 1024).
        seed: seed of the k-means sample and initialisation.

    The build parameters (nbits, kmeans_niters, sample sizes, n_centroids, seed) are saved with the
    index; reopening it keeps the saved ones.
    """

    sweep = tuple(
        {"n_ivf_probe": probes, "n_full_scores": full}
        for probes, full in ((1, 128), (2, 256), (4, 256), (4, 512), (8, 512), (8, 1024), (16, 1024), (16, 2048))
    )

    def __init__(
        self,
        index_folder: str | Path = "pylate-index",
        index_name: str = "index",
        override: bool = False,
        embedding_size: int | None = None,
        nbits: int = 4,
        kmeans_niters: int = 4,
        max_points_per_centroid: int = 256,
        n_samples_kmeans: int | None = None,
        n_centroids: int | None = None,
        n_ivf_probe: int = 8,
        n_full_scores: int = 1024,
        seed: int = 0,
    ) -> None:
        check_positive(
            kmeans_niters=kmeans_niters,
            max_points_per_centroid=max_points_per_centroid,
            n_samples_kmeans=n_samples_kmeans,
            n_centroids=n_centroids,
            n_ivf_probe=n_ivf_probe,
            n_full_scores=n_full_scores,
        )
        check_layout(embedding_size or 8, nbits)
        super().__init__(index_folder, index_name, override, embedding_size, payload="residual")
        saved = self.store.extra.get("plaid_parameters", {})
        self.parameters = {
            "nbits": nbits,
            "kmeans_niters": kmeans_niters,
            "max_points_per_centroid": max_points_per_centroid,
            "n_samples_kmeans": n_samples_kmeans,
            "n_centroids": n_centroids,
            "seed": seed,
            **saved,
        }
        self.search_settings = {"n_ivf_probe": n_ivf_probe, "n_full_scores": n_full_scores}

    @property
    def nbits(self) -> int:
        return self.parameters["nbits"]

    # -- building --------------------------------------------------------------------------------

    def _derive(self, arrays: list[np.ndarray]) -> Additions:
        check_layout(arrays[0].shape[1], self.nbits)
        new_tokens = np.concatenate(arrays).astype(np.float32)
        snapshot = self.store.snapshot
        total = snapshot.n_tokens + len(new_tokens)
        old = codec_of(snapshot) if snapshot.n_tokens else None
        if old is not None and total < RETRAIN_GROWTH * self.store.extra["centroids_trained_on"]:
            return Additions(side=old.encode(new_tokens))
        parameters = self.parameters
        count = min(parameters["n_centroids"] or default_centroid_count(total), total)
        sample_size = parameters["n_samples_kmeans"] or min(count * parameters["max_points_per_centroid"], MAX_SAMPLE)
        rows = sample_rows(total, sample_size, parameters["seed"])
        sample = stored_then_new(rows, snapshot.n_tokens, lambda stored: old.decode(snapshot, stored), new_tokens)
        codec = ResidualCodec.train(sample, count, self.nbits, parameters["kmeans_niters"], parameters["seed"])
        del sample

        def every_token_encoded():
            if old is not None:
                for chunk in self.store.rows(["codes", "residuals"]):
                    yield codec.encode(old.decode_arrays(chunk["codes"], chunk["residuals"]))
            yield codec.encode(new_tokens)

        return Additions(
            rewrite=every_token_encoded,
            files=codec.files(),
            extra={"codec": codec.metadata(), "centroids_trained_on": total, "plaid_parameters": parameters},
        )

    # -- searching -------------------------------------------------------------------------------

    def _postings(self, snapshot: Snapshot) -> Postings:
        if "postings" not in snapshot.derived:
            snapshot.derived["postings"] = Postings(
                snapshot.side["codes"], snapshot.offsets, len(codec_of(snapshot).centroids)
            )
        return snapshot.derived["postings"]

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
        ``n_ivf_probe`` and ``n_full_scores`` override the index's settings; the exact scoring of
        decompressed candidates runs on ``device`` (None: the CPU)."""
        check_positive(k=k)
        settings = self.settings(**settings)
        snapshot = self.snapshot() if snapshot is None else snapshot
        n_full_scores = max(settings["n_full_scores"], k)
        n_exact = max(k, n_full_scores // EXACT_FRACTION)
        if subset is not None and subset.sum() <= n_exact:
            positions = np.flatnonzero(subset)  # scored whole: exact, and cheaper than finding candidates
            return top_k(colbert_scores(queries, snapshot.documents(positions), device=device).numpy(), k, positions)
        codec, postings = codec_of(snapshot), self._postings(snapshot)
        query_tokens = np.asarray(queries.tokens, dtype=np.float32)
        n_probe = min(settings["n_ivf_probe"], len(codec.centroids))
        results = []
        for first, last in text_chunks(queries.offsets, max(1, SCORE_BLOCK // len(codec.centroids))):
            block_start = queries.offsets[first]
            centroid_scores = query_tokens[block_start : queries.offsets[last]] @ codec.centroids.T
            for index in range(first, last):
                rows = slice(queries.offsets[index] - block_start, queries.offsets[index + 1] - block_start)
                scores = centroid_scores[rows]
                probes = np.argpartition(-scores, n_probe - 1, axis=1)[:, :n_probe]
                candidates = postings.candidates(
                    probes, np.take_along_axis(scores, probes, axis=1), subset, n_full_scores, at_least=k
                )
                interaction = centroid_interaction(
                    scores.T, postings.document_centroids, postings.document_offsets, candidates
                )
                [(best, _)] = top_k(interaction[None, :], n_exact)
                chosen = candidates[np.sort(best)]
                query = query_tokens[queries.offsets[index] : queries.offsets[index + 1]]
                exact = colbert_scores([query], snapshot.documents(chosen), device=device).numpy()
                results.extend(top_k(exact, k, chosen))
        return results
