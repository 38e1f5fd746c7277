"""Shared by the benchmark scripts: the real assets and an embedding cache (git-ignored .cache/)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WORKBENCH_SHARED", ROOT.parent / "shared"))
COLBERT = SHARED / "models" / "answerai-colbert-small-v1"
COLLECTIONS = {name: SHARED / "data" / name for name in ("msmarco-dl19-5k", "dbpedia-entity-5k")}
CACHE = ROOT / ".cache" / "embeddings"


def require_shared() -> None:
    if not COLBERT.is_dir():
        raise SystemExit(f"The benchmarks need the real assets in {SHARED} (set WORKBENCH_SHARED).")


def cached_embeddings(collection_name: str, model=None):
    """Query and document embeddings of a shared collection with answerai-colbert-small-v1.

    Computed once (minutes on a CPU) and kept in .cache/embeddings/<collection>.npz.
    Returns (collection, query_ids, query PackedEmbeddings, document ids, document PackedEmbeddings, seconds
    spent encoding documents or None when cached).
    """
    from workbench import data, models
    from workbench.scores import PackedEmbeddings, pack

    collection = data.load_beir(COLLECTIONS[collection_name])
    path = CACHE / f"{collection_name}.npz"
    if path.exists():
        stored = np.load(path, allow_pickle=False)
        queries = PackedEmbeddings(stored["query_tokens"], stored["query_offsets"])
        documents = PackedEmbeddings(stored["document_tokens"], stored["document_offsets"])
        return collection, list(stored["query_ids"]), queries, list(stored["document_ids"]), documents, None
    model = model or models.ColBERT(str(COLBERT), device="cpu")
    query_ids, document_ids = list(collection.queries), list(collection.corpus)
    queries = pack(model.encode([collection.queries[i] for i in query_ids], is_query=True, batch_size=32))
    started = time.perf_counter()
    documents = pack(
        model.encode(
            [collection.corpus[i] for i in document_ids], is_query=False, batch_size=32, show_progress_bar=True
        )
    )
    seconds = time.perf_counter() - started
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(
        partial,
        query_ids=np.array(query_ids),
        query_tokens=queries.tokens,
        query_offsets=queries.offsets,
        document_ids=np.array(document_ids),
        document_tokens=documents.tokens,
        document_offsets=documents.offsets,
    )
    partial.rename(path)
    return collection, query_ids, queries, document_ids, documents, seconds


def machine() -> dict:
    """What the figures were measured on and with (workbench.provenance): versions, commit, CPU features, precision."""
    from workbench.provenance import describe

    return describe()


def emit(result: dict) -> None:
    print(json.dumps(result, indent=2))
