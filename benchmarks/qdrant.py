"""indexes.Qdrant next to the workbench's own indexes on msmarco-dl19-5k (answerai-colbert-small-v1 embeddings, cached).

    .venv/bin/python benchmarks/qdrant.py

Contenders: qdrant-client's local mode (exact, in memory), Qdrant's engine in-process (qdrant-edge)
without a graph (exact MaxSim in the engine) and with an HNSW graph over documents (m=16,
ef_construct=100; searched at hnsw_ef 64 and 256), and the workbench's Exact (fp32), Voyager and
PLAID (nbits=4) at their defaults. For each: build seconds (every upsert, and the edge engine's
optimizer), megabytes on disk (none for local mode, which is in memory), ms per query at k=10 (best
of 3 passes after a warm-up; 1 pass for local mode, about half a second per query) and overlap@10
with exact search's top 10.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from workbench import indexes, retrieve

from common import cached_embeddings, emit, machine, require_shared

K = 10
SETTINGS = {"Qdrant edge (HNSW)": ({"hnsw_ef": 64}, {"hnsw_ef": 256})}  # the others: their defaults


def contenders(folder: Path) -> dict:
    """name -> (a function creating the empty index, a function of the built index giving its bytes on disk)."""
    edge = {"engine": "edge", "path": folder / "edge", "override": True}

    def store_bytes(index):
        return index.nbytes

    def shard_bytes(index):
        # allocated, not apparent: Qdrant preallocates its write-ahead log and storage files
        files = [path for path in (folder / "edge" / index.collection_name).rglob("*") if path.is_file()]
        return sum(path.stat().st_blocks * 512 for path in files)

    return {
        "Exact (fp32)": (lambda: indexes.Exact(folder, "exact", override=True, dtype="float32"), store_bytes),
        "Voyager": (lambda: indexes.Voyager(folder, "voyager", override=True), store_bytes),
        "PLAID nbits=4": (lambda: indexes.PLAID(folder, "plaid", override=True), store_bytes),
        "Qdrant local mode (exact)": (lambda: indexes.Qdrant(location=":memory:"), lambda index: None),
        "Qdrant edge (exact)": (lambda: indexes.Qdrant("exact", **edge), shard_bytes),
        "Qdrant edge (HNSW)": (lambda: indexes.Qdrant("hnsw", hnsw=True, **edge), shard_bytes),
    }


def main() -> None:
    require_shared()
    _, _, queries, document_ids, documents, _ = cached_embeddings("msmarco-dl19-5k")
    embeddings = [documents[i] for i in range(len(documents))]
    reference = [[hit["id"] for hit in hits] for hits in retrieve.exact(queries, documents, document_ids, k=K)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="workbench-qdrant-bench-") as folder:
        for name, (create, bytes_of) in contenders(Path(folder)).items():
            started = time.perf_counter()
            index = create()
            index.add_documents(document_ids, embeddings)
            build_seconds = time.perf_counter() - started
            size = bytes_of(index)  # after every write: the edge engine has flushed, truncating its log
            repeats = 1 if "local mode" in name else 3
            for setting in SETTINGS.get(name, ({},)):
                ms, results = retrieve.timed_retrieve(retrieve.ColBERT(index), queries, K, repeats, **setting)
                rows.append(
                    {
                        "index": name + "".join(f", {key} {value}" for key, value in setting.items()),
                        "build_seconds": round(build_seconds, 2),
                        "megabytes": None if size is None else round(size / 1e6, 1),
                        "ms_per_query": round(ms, 2),
                        f"overlap@{K}": round(retrieve.recall_at(results, reference, K), 4),
                    }
                )
            index.close()
    emit(
        {
            "benchmark": "indexes.Qdrant and the workbench's indexes on msmarco-dl19-5k",
            "documents": len(documents),
            "document_tokens": int(documents.offsets[-1]),
            "queries": len(queries),
            "rows": rows,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
