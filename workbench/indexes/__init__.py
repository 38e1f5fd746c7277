"""Indexes of document token embeddings, behind one contract (:class:`Index`; :class:`Engine` for an external engine).

- :class:`Exact`: brute-force MaxSim over every document; the ground truth.
- :class:`Voyager`: an HNSW graph over token centroids for candidates, exact MaxSim from fp16 tokens.
- :class:`PLAID`: residual-compressed tokens (no full-precision copy), PLAID's centroid interaction.
- :class:`Qdrant`: documents served by Qdrant (a server or cluster, its local mode, or its engine
  in-process) as multivectors; an :class:`Engine`, which keeps documents outside a token store.

All four speak PyLate's surface::

    from workbench import indexes

    index = indexes.PLAID(index_folder="pylate-index", index_name="index", override=True)
    index.add_documents(documents_ids=["1", "2"], documents_embeddings=model.encode([...], is_query=False))
    index = indexes.PLAID(index_folder="pylate-index", index_name="index")  # reopen later
    len(index); index.get_documents_embeddings(["1"]); index.remove_documents(["2"])

A search reads one committed state (a :class:`~workbench.indexes.store.Snapshot`) from start to
end: pass ``snapshot=index.snapshot()`` to ``search`` and ``subset_mask`` to keep several calls on
the same commit while another process writes (``retrieve.ColBERT`` does). To add an index, subclass
:class:`Index` (see :mod:`workbench.indexes.base`) and register it in :data:`KINDS`.
"""

from workbench.indexes.base import Engine, Index, check_positive
from workbench.indexes.centroids import Postings, assign, default_centroid_count, spherical_kmeans
from workbench.indexes.exact import Exact
from workbench.indexes.plaid import PLAID
from workbench.indexes.qdrant import Qdrant
from workbench.indexes.store import IndexCorruptError, IndexLockedError
from workbench.indexes.voyager import RETRAIN_GROWTH, Voyager, centroids_of

__all__ = [
    "KINDS",
    "PLAID",
    "RETRAIN_GROWTH",
    "Engine",
    "Exact",
    "Index",
    "IndexCorruptError",
    "IndexLockedError",
    "Postings",
    "Qdrant",
    "Voyager",
    "assign",
    "centroids_of",
    "check_positive",
    "default_centroid_count",
    "kind_of",
    "make",
    "spherical_kmeans",
]

KINDS: dict[str, type[Index]] = {"exact": Exact, "voyager": Voyager, "plaid": PLAID}


def kind_of(kind: "str | type[Index]") -> type[Index]:
    """The index class ``kind`` names: a key of :data:`KINDS` (any case) or an :class:`Index` subclass."""
    if isinstance(kind, str):
        if kind.lower() not in KINDS:
            raise ValueError(f"Unknown index kind {kind!r}; known: {', '.join(KINDS)} (or pass an Index subclass).")
        return KINDS[kind.lower()]
    if not (isinstance(kind, type) and issubclass(kind, Index)):
        raise ValueError(f"index must be a name in {sorted(KINDS)} or an Index subclass, got {kind!r}.")
    return kind


def make(kind: "str | type[Index]", index_folder, index_name: str, **parameters) -> Index:
    """A new (override) index of ``kind`` (see :func:`kind_of`) in ``index_folder/index_name``."""
    return kind_of(kind)(index_folder=index_folder, index_name=index_name, override=True, **parameters)
