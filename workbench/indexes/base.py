"""The index contract: what every index does, so retrieval, evaluation, the recall sweep and the
plots work with any of them (Exact, Voyager, PLAID, or one of your own).

An index keeps documents in a crash-safe :class:`~workbench.indexes.store.TokenStore` (one writer,
lock-free readers, every commit atomic) and speaks PyLate's lifecycle::

    index = SomeIndex(index_folder="pylate-index", index_name="index", override=True)
    index.add_documents(documents_ids=["1", "2"], documents_embeddings=[...])  # any number of times
    index = SomeIndex(index_folder="pylate-index", index_name="index")      # reopen
    len(index); index.get_documents_embeddings(["1"]); index.remove_documents(["2"])

A subclass gives:

- ``search(queries, k, subset=None, snapshot=None, device=None, **settings)``: for each query of
  ``queries`` (:class:`~workbench.scores.PackedEmbeddings`), a pair ``(positions, scores)`` of its
  best ``k`` documents, best first, positions in ``snapshot`` (default: the latest commit), scores
  exact MaxSim, ties broken by position (:func:`~workbench.scores.top_k`). ``subset`` is a boolean
  mask over positions (:meth:`subset_mask`). ``settings`` override the index's search settings.
- ``search_settings``: a dict of the search-time knobs and their current values (``{}`` for Exact);
  :meth:`settings` validates a call's overrides against it.
- ``sweep``: settings from cheap to thorough, for :func:`workbench.retrieve.recall_latency`.
- optionally ``_derive(arrays) -> Additions``: what a commit of new documents adds (codes, centroids).

See :mod:`workbench.indexes.exact` for the smallest complete index.

An index whose documents live in an external engine (a Qdrant server, an embedded engine) has no
token store, no positions and no snapshots: it subclasses :class:`Engine` instead, whose contract is
in that class, and :class:`~workbench.retrieve.ColBERT` retrieves from either.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from workbench.indexes.store import Additions, Snapshot, TokenStore
from workbench.scores import PackedEmbeddings

__all__ = ["Engine", "Index", "check_positive"]


def check_positive(**values: Any) -> None:
    """ValueError naming the first of ``values`` that is neither None nor a positive integer."""
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _applied_settings(index: Index | Engine, overrides: dict[str, Any]) -> dict[str, Any]:
    """``index.search_settings`` with ``overrides`` (None: keep) applied. ValueError for a setting the index
    does not have, a value that is not a bool for a yes/no setting, or not a positive integer for the others."""
    unknown = [name for name, value in overrides.items() if value is not None and name not in index.search_settings]
    if unknown:
        known = ", ".join(index.search_settings) or "none"
        raise ValueError(f"{type(index).__name__} has no search setting {', '.join(unknown)} (its settings: {known}).")
    given = {name: value for name, value in overrides.items() if value is not None}
    switches = {name for name in given if isinstance(index.search_settings[name], bool)}
    for name in switches:
        if not isinstance(given[name], bool):
            raise ValueError(f"{name} must be True or False, got {given[name]!r}.")
    check_positive(**{name: value for name, value in given.items() if name not in switches})
    return {**index.search_settings, **given}


class Index:
    """Base of every index: the token store, the PyLate lifecycle, validation and lookups."""

    sweep: ClassVar[tuple[dict[str, int], ...]] = ({},)

    def __init__(
        self,
        index_folder: str | Path,
        index_name: str,
        override: bool = False,
        embedding_size: int | None = None,
        payload: str = "float16",
    ) -> None:
        """``payload``: how the store keeps tokens, ``"float16"``, ``"float32"`` or ``"residual"``
        (:mod:`workbench.indexes.codecs`)."""
        name = os.fspath(index_name)
        # The index is the folder index_folder/index_name, and override replaces what it holds: a name
        # that is empty, "." or a path would point it at index_folder itself or somewhere else.
        if name in ("", ".", "..") or any(sep and sep in name for sep in (os.sep, os.altsep)):
            raise ValueError(
                f"index_name must name one folder inside index_folder (not empty, '.', '..' or a path), "
                f"got {index_name!r}."
            )
        self.store = TokenStore(Path(index_folder) / name, dtype=payload, override=override, kind=type(self).__name__)
        if embedding_size is not None and self.store.dim is not None and self.store.dim != embedding_size:
            raise ValueError(f"The index holds {self.store.dim}-dimensional embeddings, not {embedding_size}.")
        self.embedding_size = embedding_size
        self.search_settings: dict[str, int] = {}

    # -- the contract a subclass fills in ------------------------------------------------------

    def search(
        self,
        queries: PackedEmbeddings,
        k: int,
        subset: np.ndarray | None = None,
        snapshot: Snapshot | None = None,
        device: str | None = None,
        **settings: int,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, ``(positions, scores)`` of its best ``k`` documents (see the module docstring)."""
        raise NotImplementedError

    def _derive(self, arrays: list[np.ndarray]) -> Additions:
        return Additions()

    # -- shared behaviour ----------------------------------------------------------------------

    def settings(self, **overrides: int | None) -> dict[str, int]:
        """The index's search settings with ``overrides`` (None: keep) applied; ValueError for a setting
        this index does not have or a value that is not a positive integer."""
        return _applied_settings(self, overrides)

    def __len__(self) -> int:
        return len(self.store)

    @property
    def dim(self) -> int | None:
        """The embedding dimension (None before the first documents)."""
        return self.store.dim

    @property
    def ids(self) -> list[str]:
        """Document ids of the latest state read, in position order."""
        return self.store.ids

    @property
    def nbytes(self) -> int:
        """Bytes on disk of the committed state (every file the manifest names, and the manifest)."""
        folder = self.store.folder
        return (
            sum((folder / file).stat().st_size for file in self.store.manifest["files"].values())
            + (folder / "manifest.json").stat().st_size
        )

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
        """The stored embeddings (fp32; decoded for a compressed index) of ``documents_ids``, or nested
        lists for nested ids (PyLate's form)."""
        if documents_ids and not isinstance(documents_ids[0], (str, int)):
            return [self.get_documents_embeddings(group) for group in documents_ids]
        snapshot = self.snapshot()
        packed = snapshot.documents(snapshot.positions(documents_ids))
        return [np.asarray(packed[p], dtype=np.float32) for p in range(len(packed))]

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


class Engine:
    """Base of indexes whose documents live in an external engine, which keeps their ids and tokens.

    A subclass gives PyLate's lifecycle, with the same checks as :class:`Index` (nothing is written when
    a check fails):

    - ``add_documents(documents_ids, documents_embeddings)``: ids (str or int, kept as str) unique and
      not in the index, one ``[n_tokens, dim]`` embedding each, one dimension throughout;
    - ``remove_documents(documents_ids)``: every id must be in the index (KeyError otherwise);
    - ``get_documents_embeddings(documents_ids)``: fp32 arrays, nested lists for nested ids;
    - ``len(index)``, ``dim`` (None before the first documents) and ``close()``;
    - ``search(queries, k, subset=None, **settings)``: for each query of ``queries``
      (:class:`~workbench.scores.PackedEmbeddings`), a pair ``(ids, scores)`` of its best ``k``
      documents, best first, scores MaxSim; ``subset``: only these ids may be returned;
    - ``search_settings`` and ``sweep`` as an :class:`Index` has them; :meth:`settings` validates.

    :class:`~workbench.retrieve.ColBERT` turns those pairs into PyLate's output. See
    :class:`workbench.indexes.Qdrant`.
    """

    sweep: ClassVar[tuple[dict[str, Any], ...]] = ({},)
    search_settings: dict[str, Any]

    def search(
        self, queries: PackedEmbeddings, k: int, subset: Sequence[str] | None = None, **settings: Any
    ) -> list[tuple[list[str], np.ndarray]]:
        """Per query, ``(ids, scores)`` of its best ``k`` documents (see the class docstring)."""
        raise NotImplementedError

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The search settings with ``overrides`` (None: keep) applied; ValueError for a setting this index
        does not have, or a value of the wrong kind (a bool for a yes/no setting, else a positive integer)."""
        return _applied_settings(self, overrides)
