"""PLAID against exact search on real embeddings: both shared collections, answerai-colbert-small-v1.

    .venv/bin/python benchmarks/plaid.py

For nbits 4 and 2: build seconds, bytes per token on disk, nDCG@10 next to exact search's (targets:
within 0.005 at nbits=4, 0.01 at nbits=2), and a recall-against-latency table over ``n_ivf_probe``
and ``n_full_scores`` (overlap@10 with the exact top 10, ms per query at k=10, best of 3 passes).
"""

from __future__ import annotations

import tempfile
import time

from workbench import indexes, metrics, retrieve

from common import cached_embeddings, emit, machine, require_shared

TARGETS = {4: 0.005, 2: 0.01}


def ndcg_at_10(collection, query_ids, results) -> float:
    judged = [(q, hits) for q, hits in zip(query_ids, results) if q in collection.judged_qrels]
    run = metrics.run_from_results([q for q, _ in judged], [hits for _, hits in judged])
    return float(metrics.evaluate(collection.judged_qrels, run, metrics=[("ndcg@10", "ndcg@10")], prefix="").iloc[0, 0])


def main() -> None:
    require_shared()
    report = {"machine": machine(), "collections": {}}
    for name in ("msmarco-dl19-5k", "dbpedia-entity-5k"):
        collection, query_ids, queries, document_ids, documents, _ = cached_embeddings(name)
        exact = retrieve.exact(queries, documents, document_ids, k=100)
        reference = [[hit["id"] for hit in hits[:10]] for hits in exact]
        exact_ndcg = ndcg_at_10(collection, query_ids, exact)
        rows = {"exact ndcg@10": round(exact_ndcg, 4)}
        with tempfile.TemporaryDirectory(prefix="workbench-plaid-") as folder:
            for nbits, target in TARGETS.items():
                started = time.perf_counter()
                index = indexes.PLAID(index_folder=folder, index_name=f"nbits-{nbits}", override=True, nbits=nbits)
                index.add_documents(document_ids, [documents[i] for i in range(len(documents))])
                build_seconds = time.perf_counter() - started
                ndcg = ndcg_at_10(collection, query_ids, retrieve.ColBERT(index).retrieve(queries, k=100))
                sweep = retrieve.recall_latency(index, queries, reference, k=10)
                rows[f"nbits={nbits}"] = {
                    "build_seconds": round(build_seconds, 2),
                    "bytes_per_token": round(index.nbytes / len(documents.tokens), 1),
                    "ndcg@10": round(ndcg, 4),
                    "ndcg@10 - exact": round(ndcg - exact_ndcg, 4),
                    "within target": abs(ndcg - exact_ndcg) <= target,
                    "sweep": sweep.round(3).to_dict(orient="records"),
                }
                index.close()
        report["collections"][name] = rows
    emit(report)


if __name__ == "__main__":
    main()
