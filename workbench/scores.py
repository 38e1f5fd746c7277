"""Exact MaxSim (late-interaction) scoring, the hot path of rerank, exact search and evaluation.

``MaxSim(q, d) = sum_i max_j q_i . d_j`` over the query's tokens ``i`` and the document's tokens ``j``.

What goes in: embeddings in any of three forms, on either side:

- a list of ``[n_tokens_i, dim]`` arrays or tensors (variable lengths, what ``model.encode`` gives);
- a padded ``[n, max_tokens, dim]`` array or tensor with an optional ``[n, max_tokens]`` mask
  (True / 1 = a real token); masked tokens are dropped before scoring, so padding can never win a max;
- :class:`PackedEmbeddings`: all tokens in one contiguous ``[total_tokens, dim]`` array plus
  offsets. Pack a corpus once and score many query batches against it without copying it again.

What comes out: a float32 ``torch.Tensor`` of shape ``[n_queries, n_documents]``
(:func:`colbert_scores`) or ``[n_pairs]`` (:func:`colbert_scores_pairwise`). Accumulation is fp32
even for fp16 inputs.

How it is fast: documents are packed into one token matrix, cut into document-aligned chunks that
fit in cache; each chunk is one matrix product ``[chunk_tokens, query_tokens]`` followed by a
compiled pass (numba) that keeps each document's running max per query token and sums them per
query, in query-token order. There is no padding anywhere, so a corpus of mixed lengths costs
exactly its number of tokens.

Example (a doctest, run by ``tests/test_doctests.py``)::

    >>> import numpy as np
    >>> from workbench.scores import colbert_scores
    >>> queries = [np.eye(4, 8, dtype=np.float32)]
    >>> documents = [np.eye(2, 8, dtype=np.float32), np.eye(6, 8, dtype=np.float32)]
    >>> colbert_scores(queries, documents)
    tensor([[2., 4.]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import torch

__all__ = [
    "PackedEmbeddings",
    "pack",
    "colbert_scores",
    "colbert_scores_pairwise",
    "top_k",
    "ranked_ids",
    "tie_keys",
    "token_rows_of",
    "text_chunks",
    "cast",
    "to_numpy",
    "CHUNK_ELEMENTS",
    "MIN_CHUNK_TOKENS",
]

# Elements of one chunk's similarity block (document tokens x query tokens): about 1 MB of fp32,
# which keeps the block in L2/L3 while the reductions read it back.
CHUNK_ELEMENTS = 1 << 18
MIN_CHUNK_TOKENS = 256
# Scores that round to the same 16 float32 mantissa bits (about 5 significant digits) are tied.
# Float noise between CPUs (SIMD width, thread count, summation order) moves a float32 score in its
# last bits, and sorts and partitions order equal values differently by SIMD level; a tie is broken
# by position or id instead, so a choice made from scores is the same on every machine.
TIE_MASK, TIE_HALF = np.uint32(0xFFFFFF80), np.uint32(0x40)
# Two scores tied that way are less than 2**-16 of their size apart; twice that leaves room for the noise.
TIE_RELATIVE = 2.0**-15


@dataclass(frozen=True)
class PackedEmbeddings:
    """Token embeddings of many texts in one contiguous ``[total_tokens, dim]`` array.

    ``tokens[offsets[i]:offsets[i + 1]]`` are the tokens of text ``i``. Every text has at least one
    token. ``tokens`` may be fp16 (scored in fp32) or fp32, a numpy array or a memory map.
    """

    tokens: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        if self.tokens.ndim != 2:
            raise ValueError(f"tokens must be [total_tokens, dim], got shape {self.tokens.shape}.")
        if self.offsets.ndim != 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.tokens):
            raise ValueError("offsets must start at 0 and end at the number of tokens.")
        empty = np.flatnonzero(np.diff(self.offsets) <= 0)
        if len(empty):
            raise ValueError(f"Text {int(empty[0])} has no tokens: MaxSim needs at least one token per text.")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return self.tokens.shape[1]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.tokens[self.offsets[index] : self.offsets[index + 1]]

    def select(self, indices: Sequence[int] | np.ndarray) -> PackedEmbeddings:
        """A new packing of the texts at ``indices``, in that order (copies their tokens)."""
        indices = np.asarray(indices, dtype=np.int64)
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(self.offsets[indices + 1] - self.offsets[indices], out=offsets[1:])  # O(selected), not O(texts)
        return PackedEmbeddings(self.tokens[token_rows_of(self.offsets, indices)], offsets)


def token_rows_of(offsets: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Rows of the packed token matrix that belong to the texts at ``indices``, in that order."""
    lengths = offsets[indices + 1] - offsets[indices]
    starts = np.zeros(len(indices), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return np.repeat(offsets[indices] - starts, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def pack(embeddings: Any, mask: Any = None) -> PackedEmbeddings:
    """Pack embeddings given as a list, a padded 3D array/tensor (+ mask) or PackedEmbeddings.

    Raises ``ValueError`` naming the text's position when a (kept) token holds NaN or an infinite
    value: it would make every score of that text NaN. PackedEmbeddings are returned as they are.
    """
    if isinstance(embeddings, PackedEmbeddings):
        if mask is not None:
            raise ValueError("A mask goes with padded embeddings, not with PackedEmbeddings.")
        return embeddings
    if isinstance(embeddings, (np.ndarray, torch.Tensor)) and embeddings.ndim == 3:
        padded = to_numpy(embeddings)
        keep = np.ones(padded.shape[:2], dtype=bool) if mask is None else to_numpy(mask).astype(bool)
        if keep.shape != padded.shape[:2]:
            raise ValueError(f"mask has shape {keep.shape}, expected {padded.shape[:2]}.")
        offsets = np.zeros(len(padded) + 1, dtype=np.int64)
        np.cumsum(keep.sum(axis=1), out=offsets[1:])
        return _finite(PackedEmbeddings(np.ascontiguousarray(padded[keep]), offsets))
    if mask is not None:
        raise ValueError("A mask goes with a padded [n, max_tokens, dim] input, not with a list.")
    if isinstance(embeddings, (np.ndarray, torch.Tensor)) and embeddings.ndim == 2:
        embeddings = [embeddings]
    arrays = [to_numpy(item) for item in embeddings]
    if not arrays:
        return PackedEmbeddings(np.zeros((0, 0), dtype=np.float32), np.zeros(1, dtype=np.int64))
    for position, array in enumerate(arrays):
        if array.ndim != 2:
            raise ValueError(f"Embedding {position} has shape {array.shape}, expected [n_tokens, dim].")
        if array.shape[1] != arrays[0].shape[1]:
            raise ValueError(
                f"Embedding {position} has dimension {array.shape[1]}, embedding 0 has {arrays[0].shape[1]}."
            )
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([len(array) for array in arrays], out=offsets[1:])
    return _finite(PackedEmbeddings(np.concatenate(arrays), offsets))


def _finite(packed: PackedEmbeddings) -> PackedEmbeddings:
    """``packed``, checked for NaN and infinite values (which would turn scores into NaN)."""
    # One pass over the tokens, about the cost of the copy packing just made (7 ms for 34M fp32 values).
    finite = np.isfinite(packed.tokens)
    if finite.all():
        return packed
    row = int(np.flatnonzero(~finite.all(axis=1))[0])
    text = int(np.searchsorted(packed.offsets, row, side="right")) - 1
    raise ValueError(
        f"Embedding {text} holds NaN or infinite values (token {row - int(packed.offsets[text])}): "
        "its scores would be NaN; check the model or the input at that position."
    )


def colbert_scores(
    queries: Any,
    documents: Any,
    queries_mask: Any = None,
    documents_mask: Any = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """MaxSim of every query against every document: a ``[n_queries, n_documents]`` fp32 CPU tensor.

    ``device`` None or ``"cpu"``: numpy on the CPU. Any other torch device (``"cuda"``, ``"mps"``):
    the products and reductions run there, in fp32, and the scores come back to the CPU.
    """
    packed_queries = pack(queries, queries_mask)
    packed_documents = pack(documents, documents_mask)
    if len(packed_queries) == 0 or len(packed_documents) == 0:
        return torch.zeros(len(packed_queries), len(packed_documents))
    if packed_queries.dim != packed_documents.dim:
        raise ValueError(f"Queries have dimension {packed_queries.dim}, documents have {packed_documents.dim}.")
    if device is not None and torch.device(device).type != "cpu":
        return _colbert_scores_on(torch.device(device), packed_queries, packed_documents)
    query_tokens = np.ascontiguousarray(cast(packed_queries.tokens, np.float32))
    query_tensor = torch.from_numpy(query_tokens)
    tokens, offsets = packed_documents.tokens, packed_documents.offsets
    scores = np.empty((len(packed_queries), len(packed_documents)), dtype=np.float32)
    chunk_tokens = max(MIN_CHUNK_TOKENS, CHUNK_ELEMENTS // len(query_tokens))
    for first, last in text_chunks(offsets, chunk_tokens):
        start = offsets[first]
        block = tokens[start : offsets[last]]
        # [document tokens, query tokens]: a document's rows are contiguous, each as wide as the queries'
        # tokens, so the running max below reads memory in order (one query: 1.5x faster than numpy's
        # reduceat over the transposed product, measured with 192 fp16 documents of msmarco).
        if block.dtype == np.float32:
            similarities = block @ query_tokens.T
        else:
            # Upcast and multiply in torch: numpy's fp16 cast is slow, and a torch-cast block handed to
            # OpenBLAS would make the two thread pools spin against each other.
            similarities = (torch.from_numpy(np.ascontiguousarray(block)).float() @ query_tensor.T).numpy()
        _maxsim(similarities, offsets[first : last + 1] - start, packed_queries.offsets, scores[:, first:last])
    return torch.from_numpy(scores)


@numba.njit(cache=True, nogil=True)
def _maxsim(similarities, document_offsets, query_offsets, scores):  # pragma: no cover - compiled
    """``scores[q, d]``: the sum over query ``q``'s tokens of their max over document ``d``'s rows."""
    width = similarities.shape[1]
    best = np.empty(width, dtype=np.float32)
    for document in range(len(document_offsets) - 1):
        best[:] = similarities[document_offsets[document]]
        for token in range(document_offsets[document] + 1, document_offsets[document + 1]):
            row = similarities[token]
            for i in range(width):
                if row[i] > best[i]:
                    best[i] = row[i]
        for query in range(len(query_offsets) - 1):
            total = np.float32(0.0)
            for i in range(query_offsets[query], query_offsets[query + 1]):
                total += best[i]
            scores[query, document] = total


def _colbert_scores_on(
    device: torch.device, queries: PackedEmbeddings, documents: PackedEmbeddings, chunk_tokens: int = 1 << 16
) -> torch.Tensor:
    """:func:`colbert_scores` in torch on ``device``: scatter-max per document, index-add per query."""
    query_tokens = torch.from_numpy(cast(queries.tokens, np.float32)).to(device)
    query_of_token = torch.from_numpy(np.repeat(np.arange(len(queries)), np.diff(queries.offsets))).to(device)
    offsets = documents.offsets
    scores = torch.empty(len(queries), len(documents), device=device)
    for first, last in text_chunks(offsets, chunk_tokens):
        block = torch.from_numpy(cast(documents.tokens[offsets[first] : offsets[last]], np.float32)).to(device)
        document_of_token = torch.from_numpy(np.repeat(np.arange(last - first), np.diff(offsets[first : last + 1])))
        similarities = query_tokens @ block.T
        per_token_max = torch.full((len(query_tokens), last - first), -torch.inf, device=device).scatter_reduce_(
            1, document_of_token.to(device).expand_as(similarities), similarities, reduce="amax"
        )
        scores[:, first:last] = torch.zeros(len(queries), last - first, device=device).index_add_(
            0, query_of_token, per_token_max
        )
    return scores.cpu()


def tie_keys(scores: Any) -> np.ndarray:
    """``scores`` as float32 rounded to 16 mantissa bits: near-equal scores become equal.

    Monotone, and the same on every platform (integer operations on the bits, no float arithmetic).
    Round values such as 10.0 sit in the middle of their bucket, so noise on either side keeps them in it.
    """
    values = np.asarray(scores, dtype=np.float32)
    rounded = ((values.view(np.uint32) + TIE_HALF) & TIE_MASK).view(np.float32)
    return np.where(np.isfinite(values), rounded, values)


def top_k(scores: np.ndarray, k: int, positions: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row of ``scores``, the ``k`` best (positions, scores), best first; ties go to the earlier column.

    Scores equal under :func:`tie_keys` are tied, so the result is the same on every CPU.
    ``positions`` maps the columns of ``scores`` to document positions (a subset's), if given.
    """
    results = []
    k = min(k, scores.shape[1])
    if k == 0:
        return [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)) for _ in scores]
    for row in scores:
        keys = tie_keys(row)
        if k < len(row):
            # The k-th best key is one value whatever order a partition leaves equal keys in.
            threshold = np.partition(keys, len(keys) - k)[len(keys) - k]
            above, tied = np.flatnonzero(keys > threshold), np.flatnonzero(keys == threshold)
            best = np.concatenate([above, tied[: k - len(above)]])
        else:
            best = np.arange(len(row))
        best = best[np.lexsort((best, -keys[best]))]
        results.append((best if positions is None else positions[best], row[best]))
    return results


def ranked_ids(scores: dict[Any, float]) -> list[Any]:
    """The ids of ``{id: score}``, best first; scores equal under :func:`tie_keys` are ordered by id.

    Example::

        >>> from workbench.scores import ranked_ids
        >>> ranked_ids({"b": 2.0000001, "a": 2.0, "c": 3.0})
        ['c', 'a', 'b']
    """
    ids = list(scores)
    keys = tie_keys([scores[i] for i in ids])
    return [ids[j] for j in sorted(range(len(ids)), key=lambda j: (-keys[j], ids[j]))]


def colbert_scores_pairwise(
    queries: Any,
    documents: Any,
    queries_mask: Any = None,
    documents_mask: Any = None,
) -> torch.Tensor:
    """MaxSim of query ``i`` against document ``i`` for every ``i``: a ``[n_pairs]`` fp32 tensor."""
    packed_queries = pack(queries, queries_mask)
    packed_documents = pack(documents, documents_mask)
    if len(packed_queries) != len(packed_documents):
        raise ValueError(
            f"Pairwise scoring needs as many queries as documents: {len(packed_queries)} != {len(packed_documents)}."
        )
    scores = np.empty(len(packed_queries), dtype=np.float32)
    for index in range(len(packed_queries)):
        similarities = cast(packed_queries[index], np.float32) @ cast(packed_documents[index], np.float32).T
        scores[index] = similarities.max(axis=1).sum()
    return torch.from_numpy(scores)


def text_chunks(offsets: np.ndarray, chunk_tokens: int) -> list[tuple[int, int]]:
    """Text ranges ``[first, last)`` of about ``chunk_tokens`` tokens; a longer text stands alone."""
    targets = np.arange(chunk_tokens, offsets[-1], chunk_tokens)
    cuts = np.unique(np.searchsorted(offsets, targets, side="left"))
    bounds = np.concatenate([[0], cuts[(cuts > 0) & (cuts < len(offsets) - 1)], [len(offsets) - 1]])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def cast(array: np.ndarray, dtype) -> np.ndarray:
    """``array`` as ``dtype`` (itself when it already is): torch converts between fp16 and fp32 several
    times faster than numpy's ``astype``."""
    if array.dtype == dtype:
        return array
    return torch.from_numpy(np.ascontiguousarray(array)).to(getattr(torch, np.dtype(dtype).name)).numpy()


def to_numpy(array: Any) -> np.ndarray:
    """A numpy view or copy of a tensor (any device; bf16 as fp32) or array-like."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        if array.dtype == torch.bfloat16:
            array = array.float()
        return array.numpy()
    return np.asarray(array)
