"""Run inside the PyLate environment (WORKBENCH_PYLATE_PYTHON): PyLate's Voyager index on cached embeddings.

python benchmarks/pylate_voyager.py EMBEDDINGS_NPZ INDEX_FOLDER [N [BUILDS]]
Indexes the first N documents (default: all) BUILDS times (default 1), each into a new index, and searches
the last with every query. Prints one JSON object: the fastest build's seconds, bytes on disk, ms per query
at k=10, and the results.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from pylate import indexes, retrieve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # workbench.measure is standard library only
from workbench.measure import best_ms, folder_bytes  # noqa: E402

stored = np.load(sys.argv[1])
folder = Path(sys.argv[2])
offsets, q_offsets = stored["document_offsets"], stored["query_offsets"]
document_tokens, query_tokens = stored["document_tokens"], stored["query_tokens"]  # each npz access re-reads the file
n = int(sys.argv[3]) if len(sys.argv) > 3 else len(offsets) - 1
builds = int(sys.argv[4]) if len(sys.argv) > 4 else 1
documents = [document_tokens[a:b] for a, b in zip(offsets[:n], offsets[1 : n + 1])]
queries = [query_tokens[a:b] for a, b in zip(q_offsets[:-1], q_offsets[1:])]
ids = [str(i) for i in stored["document_ids"][:n]]
build_seconds = float("inf")
for _ in range(builds):  # override=True: each build starts from an empty index
    started = time.perf_counter()
    index = indexes.Voyager(
        index_folder=str(folder), index_name="pylate", override=True, embedding_size=documents[0].shape[1]
    )
    index.add_documents(documents_ids=ids, documents_embeddings=documents)
    build_seconds = min(build_seconds, time.perf_counter() - started)
retriever = retrieve.ColBERT(index=index)
retriever.retrieve(queries_embeddings=queries[:2], k=10)
# best of three, as benchmarks/index.py does for workbench (best of five)
query_ms, results = best_ms(
    lambda: retriever.retrieve(queries_embeddings=queries, k=10), 3, per=len(queries), warm_up=False
)
print(
    json.dumps(
        {
            "build_seconds": build_seconds,
            "bytes_on_disk": folder_bytes(folder),
            "ms_per_query": query_ms,
            "results": [[{"id": hit["id"], "score": float(hit["score"])} for hit in hits] for hits in results],
        }
    )
)
