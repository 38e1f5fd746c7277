"""Exact-search quality of answerai-colbert-small-v1 against PyLate 1.6.0's published figures.

    .venv/bin/python benchmarks/parity.py

For both collections in ../shared/data: encode (cached), score every query against every document
with exact MaxSim, keep the top 100, and score with ranx (trec_eval conventions). Reference figures
are PyLate 1.6.0 on the same checkpoint, measured on this machine's kind (../shared/README.md).
"""

from __future__ import annotations

import time

from workbench import metrics
from workbench.scores import colbert_scores, top_k

from common import COLLECTIONS, cached_embeddings, emit, machine, require_shared

PYLATE_REFERENCE = {
    "msmarco-dl19-5k": {"ndcg@10": 0.8268, "mrr@10": 1.0000, "map@100": 0.8351, "recall@100": 0.8407},
    "dbpedia-entity-5k": {"ndcg@10": 0.5099, "mrr@10": 0.7977, "map@100": 0.5062, "recall@100": 0.9562},
}
TOLERANCE = 0.002  # on nDCG@10
METRICS = [(name, name) for name in ("ndcg@10", "mrr@10", "map@100", "recall@100")]


def main() -> None:
    require_shared()
    report = {"benchmark": "exact search parity with PyLate 1.6.0", "machine": machine(), "collections": {}}
    for name in COLLECTIONS:
        collection, query_ids, queries, document_ids, documents, encode_seconds = cached_embeddings(name)
        started = time.perf_counter()
        scores = colbert_scores([queries[i] for i in range(len(queries))], documents).numpy()
        top = top_k(scores, 100)
        search_seconds = time.perf_counter() - started
        run = {
            query_id: {document_ids[j]: float(s) for j, s in zip(positions.tolist(), values.tolist())}
            for query_id, (positions, values) in zip(query_ids, top)
        }
        row = metrics.evaluate(collection.qrels, run, metrics=METRICS, prefix="").iloc[0]
        ours = {metric: round(float(row[metric]), 4) for metric, _ in METRICS}
        reference = PYLATE_REFERENCE[name]
        entry = {
            "judged_queries": len(collection.judged_queries),
            "workbench": ours,
            "pylate_1_6_0": reference,
            "difference": {m: round(ours[m] - reference[m], 4) for m in ours},
            "ndcg@10_within_tolerance": abs(ours["ndcg@10"] - reference["ndcg@10"]) <= TOLERANCE,
            "exact_search_ms_per_query": round(search_seconds * 1000 / len(queries), 1),
        }
        if encode_seconds is not None:
            entry["document_tokens_per_second"] = round(int(documents.offsets[-1]) / encode_seconds)
        report["collections"][name] = entry
    emit(report)


if __name__ == "__main__":
    main()
