"""The evaluation table for the note: answerai-colbert-small-v1 next to BM25 and all-MiniLM-L6-v2.

    .venv/bin/python benchmarks/evaluation.py

On both collections in ../shared/data: exact MaxSim search (cached embeddings), BM25 (bm25s),
all-MiniLM-L6-v2 as a single-vector model (cosine), and the RRF fusion of BM25 and ColBERT.
Metrics with ranx (trec_eval conventions); a paired t-test of every run against ColBERT
(p < 0.05). Runs are saved in TREC format in .cache/runs/. Prints Markdown tables and JSON.
"""

from __future__ import annotations

import pandas as pd
from sentence_transformers import SentenceTransformer

from workbench import baselines, metrics, retrieve
from workbench.models import default_model_path

from common import CACHE, COLLECTIONS, cached_embeddings, emit, require_shared

METRICS = ["ndcg@10", "mrr@10", "map@100", "recall@100"]


def main() -> None:
    require_shared()
    dense_model = SentenceTransformer(default_model_path(), device="cpu")
    runs_folder = CACHE.parent / "runs"
    runs_folder.mkdir(parents=True, exist_ok=True)
    report = {}
    for name in COLLECTIONS:
        collection, query_ids, queries, document_ids, documents, _ = cached_embeddings(name)
        judged = set(collection.judged_queries)
        results = retrieve.exact(queries, documents, document_ids, k=100)
        colbert = {q: ranked for q, ranked in metrics.run_from_results(query_ids, results).items() if q in judged}
        runs = {
            "ColBERT (answerai-colbert-small-v1)": colbert,
            "BM25 (bm25s)": baselines.bm25_run(collection),
            "all-MiniLM-L6-v2 (single vector)": baselines.dense_run(dense_model, collection),
        }
        runs["RRF(BM25, ColBERT)"] = metrics.fuse([runs["BM25 (bm25s)"], colbert], method="rrf")
        for run_name, run in runs.items():
            metrics.save_run(run, runs_folder / f"{name}.{run_name.split()[0].lower()}.trec", name=run_name.split()[0])
        table = metrics.compare(collection.qrels, runs, metrics=METRICS)
        print(f"\n### {name} ({len(judged)} judged queries)\n")
        print(table.to_markdown(floatfmt=".4f"))
        report[name] = {
            run: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            for run, row in table.to_dict(orient="index").items()
        }
    emit(report)


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
