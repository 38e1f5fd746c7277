"""Token payloads: how a store keeps token embeddings and turns them back into fp32.

- ``"float16"`` / ``"float32"``: the token matrix itself, memory-mapped (Exact, Voyager). The store
  reads it directly; no codec object is needed.
- ``"residual"``: PLAID's compression (:class:`ResidualCodec`). Each token keeps the id of its
  nearest centroid and, per dimension, ``nbits`` bits that say in which bucket of the residual
  distribution (token minus centroid) its value falls. Decoding adds the bucket's weight to the
  centroid. At dimension 96 a token costs ``2 + 96 * nbits / 8`` bytes (uint16 codes up to 65,536
  centroids): 26 B at nbits=2, 50 B at nbits=4, against 192 B in fp16.

Example::

    codec = ResidualCodec.train(sample, n_centroids=256, nbits=4)
    arrays = codec.encode(tokens)              # {"codes": [n], "residuals": [n, 48]}
    approx = codec.decode_arrays(arrays["codes"], arrays["residuals"])
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from workbench.indexes.centroids import assign, spherical_kmeans

__all__ = ["NBITS", "ResidualCodec", "codec_of"]

NBITS = (1, 2, 4, 8)
ENCODE_CHUNK = 1 << 16
BUCKET_SAMPLE = 1 << 16  # tokens whose residuals set the bucket cutoffs and weights


@dataclass(frozen=True, eq=False)
class ResidualCodec:
    """Centroid id plus an ``nbits``-per-dimension bucketed residual, for every token."""

    centroids: np.ndarray  # [n_centroids, dim] fp32
    cutoffs: np.ndarray  # [2**nbits - 1] bucket boundaries of residual values
    weights: np.ndarray  # [2**nbits] the value each bucket decodes to
    nbits: int
    normalise: bool  # decoded tokens are renormalised (the codec was trained on unit-norm tokens)

    @classmethod
    def train(
        cls, sample: np.ndarray, n_centroids: int, nbits: int = 4, iterations: int = 4, seed: int = 0
    ) -> ResidualCodec:
        """Fit centroids (spherical k-means) and the residual buckets (quantiles) on ``sample``."""
        check_layout(sample.shape[1], nbits)
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        centroids = spherical_kmeans(sample, n_centroids, iterations=iterations, seed=seed)
        head = sample[:BUCKET_SAMPLE]
        residuals = (head - centroids[assign(head, centroids)]).ravel()
        levels = 2**nbits
        cutoffs = np.quantile(residuals, np.arange(1, levels) / levels).astype(np.float32)
        weights = np.quantile(residuals, (np.arange(levels) + 0.5) / levels).astype(np.float32)
        normalise = bool(np.abs(np.linalg.norm(head, axis=1) - 1).max() < 1e-3)
        return cls(centroids, cutoffs, weights, nbits, normalise)

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(np.uint16 if len(self.centroids) <= 1 << 16 else np.int32)

    def encode(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """``{"codes": [n], "residuals": [n, dim * nbits / 8] uint8}`` for ``tokens`` (any float dtype)."""
        dim = self.centroids.shape[1]
        per_byte = 8 // self.nbits
        codes = np.empty(len(tokens), dtype=self.code_dtype)
        packed = np.empty((len(tokens), dim // per_byte), dtype=np.uint8)
        for start in range(0, len(tokens), ENCODE_CHUNK):
            block = np.asarray(tokens[start : start + ENCODE_CHUNK], dtype=np.float32)
            block_codes = assign(block, self.centroids)
            buckets = np.searchsorted(self.cutoffs, block - self.centroids[block_codes]).astype(np.uint8)
            buckets = buckets.reshape(len(block), -1, per_byte)
            shifts = (self.nbits * np.arange(per_byte - 1, -1, -1)).astype(np.uint8)
            codes[start : start + len(block)] = block_codes
            packed[start : start + len(block)] = np.bitwise_or.reduce(buckets << shifts, axis=2)
        return {"codes": codes, "residuals": packed}

    def decode_arrays(self, codes: np.ndarray, residuals: np.ndarray) -> np.ndarray:
        """fp32 tokens from their codes and packed residuals."""
        # One gather of whole byte words (all the weights one byte decodes to) beats a gather per value.
        words = np.take(self._byte_words, np.asarray(residuals).view(np.ndarray))
        tokens = words.view(np.float32).reshape(len(codes), self.centroids.shape[1])
        tokens += np.take(self.centroids, np.asarray(codes).view(np.ndarray), axis=0)
        if self.normalise:
            tokens /= np.maximum(np.sqrt(np.einsum("ij,ij->i", tokens, tokens)), 1e-12)[:, None]
        return tokens

    def decode(self, snapshot, token_rows: np.ndarray) -> np.ndarray:
        """fp32 tokens at ``token_rows`` of a committed ``snapshot``."""
        return self.decode_arrays(snapshot.side["codes"][token_rows], snapshot.side["residuals"][token_rows])

    @cached_property
    def _byte_words(self) -> np.ndarray:
        """For each of the 256 byte values, the fp32 weights it decodes to, as one opaque word."""
        per_byte = 8 // self.nbits
        shifts = self.nbits * np.arange(per_byte - 1, -1, -1)
        buckets = (np.arange(256)[:, None] >> shifts) & (2**self.nbits - 1)
        table = np.ascontiguousarray(self.weights[buckets], dtype=np.float32)
        return table.view(np.dtype((np.void, 4 * per_byte))).ravel()

    def files(self) -> dict[str, bytes]:
        """The codec's state, as the files a store commits."""
        buckets = np.concatenate([self.cutoffs, self.weights]).astype(np.float32)
        return {"centroids": self.centroids.astype(np.float32).tobytes(), "buckets": buckets.tobytes()}

    def metadata(self) -> dict:
        return {"nbits": self.nbits, "normalise": self.normalise}

    @classmethod
    def from_files(cls, contents: dict[str, bytes], dim: int, metadata: dict) -> ResidualCodec:
        nbits = int(metadata["nbits"])
        buckets = np.frombuffer(contents["buckets"], dtype=np.float32)
        levels = 2**nbits
        return cls(
            np.frombuffer(contents["centroids"], dtype=np.float32).reshape(-1, dim),
            buckets[: levels - 1],
            buckets[levels - 1 :],
            nbits,
            bool(metadata["normalise"]),
        )


def check_layout(dim: int, nbits: int) -> None:
    """ValueError unless ``nbits`` is one of :data:`NBITS` and a token's bits fill whole bytes."""
    if nbits not in NBITS:
        raise ValueError(f"nbits must be one of {NBITS}, got {nbits!r}.")
    if dim % (8 // nbits):
        raise ValueError(
            f"Embeddings of dimension {dim} do not pack into bytes at nbits={nbits}: "
            f"the dimension must be a multiple of {8 // nbits}."
        )


def codec_of(snapshot) -> ResidualCodec:
    """The residual codec a committed state was encoded with (built once per state)."""
    if "codec" not in snapshot.derived:
        snapshot.derived["codec"] = ResidualCodec.from_files(
            snapshot.contents, snapshot.dim, snapshot.manifest["extra"]["codec"]
        )
    return snapshot.derived["codec"]
