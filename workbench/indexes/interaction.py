"""Centroid interaction: a document's approximate MaxSim when each of its tokens is replaced by its centroid.

PLAID ranks candidates this way (Santhanam et al., 2022): with ``table[c, i]`` the similarity of
query token ``i`` to centroid ``c``, document ``d`` scores ``sum_i max_{t in d} table[code[t], i]``.
It needs no token vectors, only each token's centroid number, and it sees every centroid a
document's tokens sit in, not only the few a query token probed.

A compiled loop (numba): numpy's gather of ``[query tokens, candidate tokens]`` and segmented max
writes and re-reads an array of 32 floats per candidate token, five to ten times the work here.
It releases the GIL, so queries run side by side in threads.

Example::

    >>> import numpy as np
    >>> from workbench.indexes.interaction import centroid_interaction
    >>> table = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], dtype=np.float32)  # [centroids, query tokens]
    >>> codes = np.array([0, 2, 1, 2], dtype=np.int32)  # document 0: tokens 0-1, document 1: tokens 2-3
    >>> centroid_interaction(table, codes, np.array([0, 2, 4]), np.array([1, 0])).round(2)
    array([1.3, 1.4], dtype=float32)
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["centroid_interaction", "nearest_in_columns"]


def centroid_interaction(
    table: np.ndarray, codes: np.ndarray, offsets: np.ndarray, documents: np.ndarray
) -> np.ndarray:
    """Centroid-interaction score (fp32) of each of ``documents``.

    Args:
        table: ``[centroids, query tokens]`` query-token similarity to every centroid (fp32).
        codes: centroid numbers, each document's in one run, in document order (any integer dtype; a memory
            map works): every token's, or each document's distinct ones (the same scores, read faster).
        offsets: ``[documents + 1]`` offsets of each document's run in ``codes``.
        documents: positions of the documents to score (each must hold at least one token).
    """
    table = np.ascontiguousarray(table, dtype=np.float32)
    scores = np.empty(len(documents), dtype=np.float32)
    _interaction(table, np.asarray(codes), np.asarray(offsets, dtype=np.int64), np.asarray(documents), scores)
    return scores


# No fastmath: the sum runs in query-token order, as numpy's ``sum(axis=0)`` over the same maxima does,
# so the scores (and the ranking they give) are the same on every CPU the loop compiles for.
@numba.njit(cache=True, nogil=True)
def _interaction(table, codes, offsets, documents, scores):  # pragma: no cover - compiled
    width = table.shape[1]
    best = np.empty(width, dtype=np.float32)
    for n in range(len(documents)):
        document = documents[n]
        best[:] = -np.inf
        for token in range(offsets[document], offsets[document + 1]):
            row = table[codes[token]]
            for i in range(width):
                if row[i] > best[i]:
                    best[i] = row[i]
        total = np.float32(0.0)
        for i in range(width):
            total += best[i]
        scores[n] = total


def nearest_in_columns(table: np.ndarray, k: int) -> np.ndarray:
    """``[k, columns]``: the rows of the ``k`` largest values of each column of ``table``, largest first;
    of equal values the earlier row. ``k`` must be at most the number of rows.

    One pass over ``table`` keeping each column's best ``k``: a few times faster than ``torch.topk``
    along the rows of a ``[centroids, query tokens]`` table, and the same on every CPU.
    """
    if not 0 < k <= len(table):
        raise ValueError(f"k must be between 1 and the {len(table)} rows, got {k}.")
    nearest = np.empty((k, table.shape[1]), dtype=np.int64)
    _nearest_in_columns(np.ascontiguousarray(table, dtype=np.float32), nearest)
    return nearest


@numba.njit(cache=True, nogil=True)
def _nearest_in_columns(table, nearest):  # pragma: no cover - compiled
    k, width = nearest.shape
    values = np.empty((k, width), dtype=np.float32)
    for j in range(k):  # the first k rows, sorted by insertion
        for i in range(width):
            value, place = table[j, i], j
            while place > 0 and values[place - 1, i] < value:
                values[place, i], nearest[place, i] = values[place - 1, i], nearest[place - 1, i]
                place -= 1
            values[place, i], nearest[place, i] = value, j
    for row in range(k, len(table)):
        for i in range(width):
            value = table[row, i]
            if value > values[k - 1, i]:
                place = k - 1
                while place > 0 and values[place - 1, i] < value:
                    values[place, i], nearest[place, i] = values[place - 1, i], nearest[place - 1, i]
                    place -= 1
                values[place, i], nearest[place, i] = value, row
