"""Qdrant: documents served from Qdrant as multivectors, scored by Qdrant's own MaxSim.

Each document is one Qdrant point: its token embeddings are one multivector (comparator MAX_SIM,
distance DOT, so a score is the sum over query tokens of the best dot product, the MaxSim the
workbench computes), its id is kept in the payload, and the point id is ``uuid5`` of a fixed
namespace and the id, so any process maps an id to the same point. One class, three engines:

- a Qdrant server or cluster: ``url="http://localhost:6333"`` (qdrant-client; ``prefer_grpc=True`` for gRPC);
- qdrant-client's local mode: ``location=":memory:"`` (the default) or ``path="qdrant-data"``, exact
  search in numpy for tests and small corpora (qdrant-client warns above 20,000 points);
- Qdrant's engine in-process: ``engine="edge", path="qdrant-edge"`` (qdrant-edge-py), the server's
  storage, HNSW and quantisation without a server.

Both packages are the ``qdrant`` extra (``pip install "workbench[qdrant]"``), imported when an index
is opened. Example::

    from workbench import indexes, retrieve

    index = indexes.Qdrant(collection_name="msmarco", engine="edge", path="qdrant-edge", override=True)
    index.add_documents(documents_ids=["1", "2"], documents_embeddings=model.encode([...], is_query=False))
    retrieve.ColBERT(index=index).retrieve(queries_embeddings, k=10, subset=["1"])
    # [[{"id": "1", "score": 11.27}], ...]
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from workbench.indexes.base import Engine, check_positive
from workbench.indexes.store import IndexCorruptError, check_batch, document_ids_of
from workbench.scores import PackedEmbeddings, to_numpy

__all__ = ["NAMESPACE", "Qdrant", "point_id"]

# Fixed forever: a document id must map to the same point id in every process and every version.
NAMESPACE = uuid.UUID("5f3c1f6e-8f7a-4c55-9a43-3b0c7d1e2a90")
KIND = "workbench.indexes.Qdrant"  # the marker of a collection the workbench made (metadata or marker file)
MARKER_FILE = "workbench-qdrant.json"  # beside an edge shard's own files
VECTOR = "colbert"  # the named multivector field
HNSW = {"m": 16, "ef_construct": 100, "full_scan_threshold": 10_000}  # Qdrant's defaults
LOOKUP_BATCH = 1024  # point ids per existence or vector lookup
TRANSIENT_STATUS = (429, 500, 502, 503, 504)
QUANTIZATIONS = ("int8", "binary")
SWEEP = ({"hnsw_ef": 16}, {"hnsw_ef": 32}, {"hnsw_ef": 64}, {"hnsw_ef": 128}, {"hnsw_ef": 256}, {"exact": True})


def point_id(document_id: str) -> str:
    """The Qdrant point id (a UUID string) of a document id; the id itself is kept in the point's payload."""
    return str(uuid.uuid5(NAMESPACE, document_id))


def _require(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f'indexes.Qdrant needs {package}: pip install "workbench[qdrant]"') from error


class Qdrant(Engine):
    """ColBERT documents in a Qdrant collection, searched by Qdrant (see the module docstring).

    Args:
        collection_name: the collection (a shard folder ``path/collection_name`` for the edge engine).
        url: a Qdrant server or cluster, e.g. ``"http://localhost:6333"`` or a Qdrant Cloud URL.
        api_key: the server's API key (Qdrant Cloud).
        path: qdrant-client's local mode on disk, or, with ``engine="edge"``, the folder of the edge shards.
        location: anything else ``QdrantClient(location=)`` takes; with none of url, path and location:
            ``":memory:"``, local mode in memory.
        engine: ``"client"`` (qdrant-client: server, cluster or local mode) or ``"edge"`` (qdrant-edge-py,
            Qdrant's engine in this process; needs ``path``).
        override: delete the collection and start afresh; only a collection the workbench made (marked by
            its metadata, or a marker file beside an edge shard) is deleted, any other is refused.
        embedding_size: create the collection now with this dimension (otherwise at the first documents)
            and check an existing one has it.
        hnsw: False: no graph on the multivector field (``m=0``), every search is exact MaxSim in the
            engine. True (Qdrant's defaults, ``m=16, ef_construct=100``) or a dict of HNSW settings
            (``m``, ``ef_construct``, ``full_scan_threshold``, ``on_disk``...): a graph over documents,
            searched approximately unless ``exact=True``.
        on_disk: keep the original vectors on disk (memory-mapped) instead of in RAM.
        quantization: ``"int8"`` (scalar) or ``"binary"``, a quantised copy of the multivector field kept in
            RAM for search, the originals rescoring; or the engine's own quantisation config object.
        batch_size: documents per upsert request (a REST request must stay under the server's 32 MB limit:
            a 300-token, 128-dimension document is about 0.8 MB of JSON).
        timeout: seconds per request to a server.
        retries: attempts after the first for a request that fails on the connection or the server's load
            (timeouts, 429, 5xx), with exponential backoff; a bad request (other 4xx) raises at once.
        client_kwargs: passed to ``QdrantClient`` (``prefer_grpc``, ``https``, ``headers``...).

    ``hnsw``, ``on_disk`` and ``quantization`` set up a new collection; a reopened one keeps its own,
    and ``hnsw`` then only sets whether a search is exact by default. Local mode records them but
    always searches exactly, from RAM. Opening a server that does not
    answer raises ConnectionError naming it, at once (no retries). A server marks the collection in
    its metadata, which needs Qdrant 1.16 or later. The edge engine has no background optimizer:
    ``add_documents`` runs it before returning (merging segments, building the graph of new ones).

    Search settings: ``exact`` (True: MaxSim over every document, bypassing the graph) and ``hnsw_ef``
    (candidates the graph search keeps); ``retrieve(..., hnsw_ef=256)`` overrides them per call.
    """

    def __init__(
        self,
        collection_name: str = "workbench",
        url: str | None = None,
        api_key: str | None = None,
        path: str | Path | None = None,
        location: str | None = None,
        engine: str = "client",
        override: bool = False,
        embedding_size: int | None = None,
        hnsw: bool | dict[str, Any] = False,
        on_disk: bool = False,
        quantization: str | Any | None = None,
        batch_size: int = 32,
        timeout: int = 60,
        retries: int = 3,
        **client_kwargs: Any,
    ) -> None:
        check_positive(embedding_size=embedding_size, batch_size=batch_size, timeout=timeout)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, got {retries!r}.")
        if not isinstance(hnsw, (bool, dict)):
            raise ValueError(f"hnsw must be True, False or a dict of HNSW settings, got {hnsw!r}.")
        if isinstance(quantization, str) and quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, None or the engine's own config object.")
        graph = isinstance(hnsw, dict) or hnsw
        if engine == "edge":
            if path is None or url is not None or location is not None or api_key is not None or client_kwargs:
                raise ValueError("engine='edge' takes path= (the folder of its shards) and no server arguments.")
            self._engine = _Edge(collection_name, Path(path))
        elif engine == "client":
            self._engine = _Client(collection_name, url, api_key, path, location, timeout, retries, client_kwargs)
        else:
            raise ValueError(f"engine must be 'client' or 'edge', got {engine!r}.")
        self.collection_name = collection_name
        self.batch_size = batch_size
        self._layout = {
            "hnsw": {**HNSW, **hnsw} if isinstance(hnsw, dict) else HNSW if hnsw else {**HNSW, "m": 0},  # m=0: none
            "on_disk": on_disk,
            "quantization": quantization,
        }
        self.search_settings: dict[str, Any] = {"exact": not graph, "hnsw_ef": 128}
        self.sweep = SWEEP if graph else ({},)
        try:
            self._open(override, embedding_size)
        except BaseException:
            self._engine.close()  # a local-mode folder or an edge shard stays locked while open
            raise

    def _open(self, override: bool, embedding_size: int | None) -> None:
        exists, ours, dim = self._engine.describe()
        if exists and not ours:
            raise IndexCorruptError(
                f"Collection {self.collection_name!r} at {self._engine.where} was not made by the workbench: it is "
                "neither opened nor deleted (override=True replaces only the workbench's). Choose another name."
            )
        if exists and override:
            self._engine.drop()
            dim = None
        if dim is not None and embedding_size is not None and dim != embedding_size:
            raise ValueError(f"The collection holds {dim}-dimensional embeddings, not {embedding_size}.")
        self.dim: int | None = dim
        if dim is None and embedding_size is not None:
            self._create(embedding_size)

    # -- lifecycle ------------------------------------------------------------------------------

    def add_documents(
        self,
        documents_ids: Sequence[str],
        documents_embeddings: Sequence[Any],
        show_progress_bar: bool = True,
        **_: Any,
    ) -> Qdrant:
        """Upsert documents (ids unique and new; one ``[n_tokens, dim]`` embedding each), ``batch_size``
        per request. Every check runs before anything is written; a request that still fails after its
        retries leaves the earlier batches in the collection (remove them, or add the rest)."""
        ids = document_ids_of(documents_ids)
        arrays = self._checked(ids, documents_embeddings)
        points = [point_id(i) for i in ids]
        existing = self._existing(points)
        already = [i for i, p in zip(ids, points) if p in existing]
        if already:
            raise ValueError(f"Document ids already in the index: {already[:5]} (remove them first).")
        if self.dim is None:
            self._create(arrays[0].shape[1])
        with tqdm(total=len(ids), desc="Qdrant upsert", unit="document", disable=not show_progress_bar) as bar:
            for start in range(0, len(ids), self.batch_size):
                batch = slice(start, start + self.batch_size)
                self._engine.upsert(points[batch], arrays[batch], ids[batch])
                bar.update(len(points[batch]))
        self._engine.settle()
        return self

    def remove_documents(self, documents_ids: Sequence[str]) -> Qdrant:
        """Delete documents by id; every id must be in the index (KeyError naming the others, nothing deleted)."""
        ids = document_ids_of(documents_ids)
        if len(set(ids)) != len(ids):
            raise ValueError("Duplicate ids in the removal list.")
        points = self._known(ids)
        for start in range(0, len(points), LOOKUP_BATCH):
            self._engine.delete(points[start : start + LOOKUP_BATCH])
        return self

    def get_documents_embeddings(self, documents_ids: Sequence[str] | Sequence[Sequence[str]]) -> list:
        """The stored embeddings (fp32) of ``documents_ids``, or nested lists for nested ids (PyLate's form)."""
        if documents_ids and not isinstance(documents_ids[0], (str, int)):
            return [self.get_documents_embeddings(group) for group in documents_ids]
        points = self._known(document_ids_of(documents_ids))
        vectors = {}
        for start in range(0, len(points), LOOKUP_BATCH):
            vectors.update(self._engine.vectors(points[start : start + LOOKUP_BATCH]))
        return [np.asarray(vectors[p], dtype=np.float32) for p in points]

    def __len__(self) -> int:
        return 0 if self.dim is None else self._engine.count()

    @property
    def ids(self) -> list[str]:
        """Every document id, in the engine's point order (not insertion order): a full scroll of the
        collection, one request per 10,000 documents, so for checks rather than a hot path."""
        return [] if self.dim is None else self._engine.ids()

    def close(self) -> None:
        """Flush and release the engine (an edge shard, a local-mode folder, a server connection)."""
        self._engine.close()

    # -- search ---------------------------------------------------------------------------------

    def search(
        self, queries: PackedEmbeddings, k: int, subset: Sequence[str] | None = None, **settings: Any
    ) -> list[tuple[list[str], np.ndarray]]:
        """Per query, ``(ids, MaxSim scores)`` of its best ``k`` documents as Qdrant ranks them, best
        first; ``subset``: only these ids (each must be in the index) may be returned."""
        settings = self.settings(**settings)
        if self.dim is None:
            return [([], np.zeros(0)) for _ in range(len(queries))]
        allowed = None if subset is None else self._known(document_ids_of(subset))
        hits = self._engine.search([queries[i] for i in range(len(queries))], k, allowed, settings)
        return [([i for i, _ in found], np.array([s for _, s in found], dtype=np.float64)) for found in hits]

    # -- helpers --------------------------------------------------------------------------------

    def _create(self, dim: int) -> None:
        self._engine.create(dim, **self._layout)
        self.dim = dim

    def _checked(self, ids: list[str], embeddings: Sequence[Any]) -> list[np.ndarray]:
        """The embeddings as fp32 ``[n_tokens, dim]`` arrays (what Qdrant stores), after every index's checks."""
        check_batch(ids, embeddings)
        arrays, dim = [], self.dim
        for identifier, embedding in zip(ids, embeddings):
            array = np.asarray(to_numpy(embedding), dtype=np.float32)
            if array.ndim != 2 or len(array) == 0:
                raise ValueError(
                    f"Embedding of document {identifier!r} has shape {array.shape}; expected [n_tokens > 0, dim]."
                )
            if dim is not None and array.shape[1] != dim:
                holder = "the index holds" if self.dim is not None else "the first of this call has"
                raise ValueError(f"The embedding of {identifier!r} has dimension {array.shape[1]}; {holder} {dim}.")
            if not np.isfinite(array).all():  # beyond fp32's range the cast made it infinite
                raise ValueError(f"Embedding of document {identifier!r} contains NaN or infinite values (in fp32).")
            arrays.append(array)
            dim = array.shape[1]
        return arrays

    def _existing(self, points: list[str]) -> set[str]:
        if self.dim is None:
            return set()
        found: set[str] = set()
        for start in range(0, len(points), LOOKUP_BATCH):
            found |= self._engine.existing(points[start : start + LOOKUP_BATCH])
        return found

    def _known(self, ids: list[str]) -> list[str]:
        """The point ids of ``ids``; KeyError naming the ids the index does not hold."""
        points = [point_id(i) for i in ids]
        found = self._existing(points)
        unknown = [i for i, p in zip(ids, points) if p not in found]
        if unknown:
            raise KeyError(f"Unknown document ids: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}.")
        return points


# -- the engines: one small interface, the same calls to qdrant-client and to qdrant-edge -----------


class _Client:
    """qdrant-client: a server or cluster (``url``), or local mode (``location=":memory:"``, ``path``)."""

    def __init__(self, name, url, api_key, path, location, timeout, retries, client_kwargs) -> None:
        client = _require("qdrant_client", "qdrant-client")
        self.models = _require("qdrant_client.models", "qdrant-client")
        if url is None and path is None and location is None:
            location = ":memory:"  # QdrantClient() alone would look for a server on localhost
        self.name, self.retries = name, retries
        self.local = location == ":memory:" or path is not None
        self.where = url or location or f"path={path}"
        self.client = client.QdrantClient(
            location=location,
            url=url,
            api_key=api_key,
            path=None if path is None else str(path),
            timeout=timeout,
            **client_kwargs,
        )

    def call(self, method: str, *args, **kwargs):
        """``client.method(...)``, retried with exponential backoff (0.5 s, 1 s, 2 s...) on transient errors."""
        for attempt in range(self.retries + 1):
            try:
                return getattr(self.client, method)(*args, **kwargs)
            except Exception as error:
                if not _transient(error):
                    raise
                if attempt == self.retries:
                    raise ConnectionError(
                        f"Qdrant at {self.where} failed {method} {attempt + 1} times: {_cause(error)}"
                    ) from error
                time.sleep(getattr(error, "retry_after_s", None) or 0.5 * 2**attempt)

    def describe(self) -> tuple[bool, bool, int | None]:
        """(the collection exists, the workbench made it, its dimension). The first request: it fails fast."""
        try:
            exists = self.client.collection_exists(self.name)
        except Exception as error:
            if _transient(error):
                raise ConnectionError(
                    f"Cannot reach Qdrant at {self.where} ({_cause(error)}): is the server running, and are url= "
                    "and api_key= right?"
                ) from error
            raise
        if not exists:
            return False, False, None
        config = self.call("get_collection", self.name).config
        if (config.metadata or {}).get("made_by") != KIND:
            return True, False, None
        return True, True, config.params.vectors[VECTOR].size

    def create(self, dim: int, hnsw: dict, on_disk: bool, quantization) -> None:
        m = self.models
        shorthand = {
            "int8": m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, always_ram=True)),
            "binary": m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=True)),
        }
        params = m.VectorParams(
            size=dim,
            distance=m.Distance.DOT,
            multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
            hnsw_config=m.HnswConfigDiff(**hnsw),
            on_disk=on_disk,
            quantization_config=shorthand[quantization] if isinstance(quantization, str) else quantization,
        )
        self.call("create_collection", self.name, vectors_config={VECTOR: params}, metadata={"made_by": KIND})

    def drop(self) -> None:
        self.call("delete_collection", self.name)

    def upsert(self, points: list[str], arrays: list[np.ndarray], ids: list[str]) -> None:
        structs = [
            self.models.PointStruct(id=p, vector={VECTOR: a.tolist()}, payload={"id": i})
            for p, a, i in zip(points, arrays, ids)
        ]
        self.call("upsert", self.name, points=structs, wait=True)  # upserts are idempotent: safe to retry

    def settle(self) -> None:
        """Nothing to wait for: a server indexes in the background, and searches meanwhile are exact."""

    def delete(self, points: list[str]) -> None:
        self.call("delete", self.name, points_selector=self.models.PointIdsList(points=points), wait=True)

    def existing(self, points: list[str]) -> set[str]:
        return {str(r.id) for r in self.call("retrieve", self.name, ids=points, with_payload=False)}

    def vectors(self, points: list[str]) -> dict[str, Any]:
        return {
            str(r.id): r.vector[VECTOR] for r in self.call("retrieve", self.name, ids=points, with_vectors=[VECTOR])
        }

    def count(self) -> int:
        return self.call("count", self.name, exact=True).count

    def ids(self) -> list[str]:
        ids, offset = [], None
        while True:
            records, offset = self.call("scroll", self.name, limit=10_000, offset=offset, with_payload=["id"])
            ids += [r.payload["id"] for r in records]
            if offset is None:
                return ids

    def search(self, queries: list[np.ndarray], k: int, allowed: list[str] | None, settings: dict):
        m = self.models
        where = None if allowed is None else m.Filter(must=[m.HasIdCondition(has_id=allowed)])
        # Local mode is always exact and warns that search params have no effect: it gets none. A quantised
        # copy finds candidates, and the originals score them: the scores stay MaxSim.
        rescored = m.QuantizationSearchParams(rescore=True)
        params = None if self.local else m.SearchParams(**settings, quantization=rescored)
        requests = [
            m.QueryRequest(query=q.tolist(), using=VECTOR, limit=k, filter=where, params=params, with_payload=["id"])
            for q in queries
        ]
        answers = self.call("query_batch_points", self.name, requests=requests)
        return [[(p.payload["id"], p.score) for p in answer.points] for answer in answers]

    def close(self) -> None:
        self.client.close()


class _Edge:
    """qdrant-edge: one shard per collection in ``path/collection_name``, a marker file beside its own files."""

    def __init__(self, name: str, path: Path) -> None:
        self.q = _require("qdrant_edge", "qdrant-edge-py")
        self.folder = path / name
        self.where = str(self.folder)
        self.shard = None

    def describe(self) -> tuple[bool, bool, int | None]:
        if not self.folder.is_dir() or not any(self.folder.iterdir()):
            return False, False, None
        marker = self.folder / MARKER_FILE
        made = json.loads(marker.read_text()) if marker.is_file() else {}
        if made.get("made_by") != KIND:
            return True, False, None
        self.shard = self.q.EdgeShard.load(str(self.folder))
        return True, True, made["dim"]

    def create(self, dim: int, hnsw: dict, on_disk: bool, quantization) -> None:
        q = self.q
        shorthand = {  # Pinned: the quantised copy stays in RAM (always_ram, by its new name)
            "int8": q.ScalarQuantizationConfig(type=q.ScalarType.Int8, memory=q.Memory.Pinned),
            "binary": q.BinaryQuantizationConfig(memory=q.Memory.Pinned),
        }
        params = q.EdgeVectorParams(
            size=dim,
            distance=q.Distance.Dot,
            multivector_config=q.MultiVectorConfig(q.MultiVectorComparator.MaxSim),
            hnsw_config=q.HnswIndexConfig(**hnsw),
            memory=q.Memory.Cold if on_disk else None,
            quantization_config=shorthand[quantization] if isinstance(quantization, str) else quantization,
        )
        self.shard = q.EdgeShard.create(str(self.folder), q.EdgeConfig(vectors={VECTOR: params}))
        (self.folder / MARKER_FILE).write_text(json.dumps({"made_by": KIND, "dim": dim}))

    def drop(self) -> None:
        self.close()
        shutil.rmtree(self.folder)

    def upsert(self, points: list[str], arrays: list[np.ndarray], ids: list[str]) -> None:
        points = [self.q.Point(id=p, vector={VECTOR: a}, payload={"id": i}) for p, a, i in zip(points, arrays, ids)]
        self.shard.update(self.q.UpdateOperation.upsert_points(points))

    def settle(self) -> None:
        """Run the optimizers now (there is no background service): merge segments, build the HNSW graph;
        then flush, which writes the segments and truncates the write-ahead log (half the bytes on disk)."""
        self.shard.optimize()
        self.shard.flush()

    def delete(self, points: list[str]) -> None:
        self.shard.update(self.q.UpdateOperation.delete_points(points))

    def existing(self, points: list[str]) -> set[str]:
        return {str(r.id) for r in self.shard.retrieve(points, with_payload=False, with_vector=False)}

    def vectors(self, points: list[str]) -> dict[str, Any]:
        return {str(r.id): r.vector[VECTOR] for r in self.shard.retrieve(points, with_payload=False, with_vector=True)}

    def count(self) -> int:
        return self.shard.count(self.q.CountRequest(exact=True))

    def ids(self) -> list[str]:
        ids, offset = [], None
        while True:
            records, offset = self.shard.scroll(self.q.ScrollRequest(offset=offset, limit=10_000, with_payload=True))
            ids += [r.payload["id"] for r in records]
            if offset is None:
                return ids

    def search(self, queries: list[np.ndarray], k: int, allowed: list[str] | None, settings: dict):
        q = self.q
        where = None if allowed is None else q.Filter(must=[q.HasIdCondition(set(allowed))])
        requests = [
            q.QueryRequest(
                limit=k,
                query=q.Query.Nearest(np.asarray(query, dtype=np.float32), using=VECTOR),
                filter=where,
                params=q.SearchParams(**settings, quantization=q.QuantizationSearchParams(rescore=True)),
                with_payload=True,
            )
            for query in queries
        ]
        return [
            [(p.payload["id"], p.score) for p in found]
            for found in self.shard.query_batch(q.QueryBatchRequest(requests))
        ]

    def close(self) -> None:
        if self.shard is not None:
            self.shard.flush()
            self.shard.close()
            self.shard = None


def _transient(error: Exception) -> bool:
    """Worth retrying: the connection, a timeout or the server's load (429, 5xx), not the request itself."""
    import grpc
    import httpx
    from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(error, ResourceExhaustedResponse):
        return True
    if isinstance(error, UnexpectedResponse):
        return error.status_code in TRANSIENT_STATUS
    if isinstance(error, ResponseHandlingException):  # qdrant-client wraps httpx's errors (and parse errors) in it
        return isinstance(error.source, httpx.TransportError)
    if isinstance(error, grpc.RpcError):
        codes = grpc.StatusCode
        return error.code() in (codes.UNAVAILABLE, codes.DEADLINE_EXCEEDED, codes.RESOURCE_EXHAUSTED)
    return False


def _cause(error: Exception) -> str:
    """One line on what failed."""
    source = getattr(error, "source", error)  # a ResponseHandlingException's own str() is empty
    if callable(getattr(source, "details", None)):  # a gRPC error: its str() is a multi-line dump
        return f"gRPC {source.code().name}: {source.details()}"
    return f"{type(source).__name__}: {source}"
