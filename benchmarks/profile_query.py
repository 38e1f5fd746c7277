"""Where a query's time goes in workbench's Voyager search, on the first N passages of msmarco-dl19-5k.

    .venv/bin/python benchmarks/profile_query.py                       # 1,000 and 5,000 passages, defaults
    .venv/bin/python benchmarks/profile_query.py --documents 1000 --k-token 32 --n-full-scores 256 --threads 1

The 50 queries are retrieved as benchmarks/index.py retrieves them (one ColBERT.retrieve call, k=10),
with each phase's function wrapped in a time.perf_counter timer. The wall clock of a retrieval:

- centroid lookup: above EXACT_CENTROIDS centroids, every query token's nearest centroids in the
  HNSW graph (voyager.Index.query), for all queries at once; below it, the lookup is per-query work;
- per-query work: what the search's threads (torch's thread count) do for each query, below;
- search, Python: the rest of Voyager.search (settings, snapshot, thread pool);
- retrieve, Python: the rest of ColBERT.retrieve (packing, batches, ids, result dicts).

The per-query work, summed over the threads (each runs whole queries):

- centroid product: voyager.centroid_table, the query's similarity to every centroid;
- nearest centroids: nearest_in_columns, each query token's k_token nearest (up to EXACT_CENTROIDS);
- candidate gathering: Postings.touched, the documents with a token in a probed centroid;
- centroid interaction: centroid_interaction, the candidates ranked by it;
- token gathering: Snapshot.documents, the n_full_scores best candidates' tokens read from the store;
- exact rescoring: colbert_scores, exact MaxSim of those (fp16 to fp32, products, maxima, sums);
- top-k: top_k over the interaction and the exact scores;
- Python: the rest of a query's work.

Prints JSON: per size, ms per query and share of each phase in the fastest of --repeats passes (after a
warm-up), with the 1-minute load average: other work on the machine stretches every phase.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import ExitStack
from functools import wraps

import torch
import voyager

from workbench import indexes, retrieve
from workbench.indexes import centroids, store
from workbench.indexes import voyager as voyager_index
from workbench.scores import PackedEmbeddings

from common import cached_embeddings, emit, require_shared

# (phase, object, attribute): the function doing the phase, as Voyager.search calls it.
WORK = (
    ("centroid product", voyager_index, "centroid_table"),
    ("nearest centroids", voyager_index, "nearest_in_columns"),
    ("candidate gathering", centroids.Postings, "touched"),
    ("centroid interaction", voyager_index, "centroid_interaction"),
    ("token gathering", store.Snapshot, "documents"),
    ("exact rescoring", voyager_index, "colbert_scores"),
    ("top-k", voyager_index, "top_k"),
)
WALL = (
    ("centroid lookup", voyager.Index, "query"),
    ("per-query work", voyager_index, "_per_query"),
    ("search", voyager_index.Voyager, "search"),
    ("retrieve", retrieve.ColBERT, "retrieve"),
)


def timed(seconds: dict, phase: str, function):
    @wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - started  # one += per thread is atomic

    return wrapper


def timed_queries(seconds: dict, per_query):
    """``_per_query`` with each query's work timed as well (summed over the threads)."""

    @wraps(per_query)
    def wrapper(function, n_queries):
        return per_query(timed(seconds, "query", function), n_queries)

    return wrapper


def shares(phases: dict, total: float, n_queries: int) -> dict:
    return {
        phase: {"ms_per_query": round(value * 1000 / n_queries, 3), "share": round(value / total, 3)}
        for phase, value in phases.items()
    }


def profile(index, queries, repeats: int, **settings) -> dict:
    """Per-phase ms per query of the fastest of ``repeats`` retrievals of every query."""
    retriever = retrieve.ColBERT(index)
    seconds: dict[str, float] = {}
    with ExitStack() as restore:
        for phase, owner, name in WORK + WALL:
            original = getattr(owner, name)
            restore.callback(setattr, owner, name, original)
            setattr(owner, name, timed(seconds, phase, original))
        voyager_index._per_query = timed_queries(seconds, voyager_index._per_query)
        passes = []
        for _ in range(repeats + 1):  # the first pass warms up (thread pools, page cache, the snapshot's graph)
            seconds.clear()
            retriever.retrieve(queries, k=10, **settings)
            passes.append(dict(seconds))
    best = min(passes[1:], key=lambda p: p["retrieve"])
    wall = {
        "centroid lookup": best.get("centroid lookup", 0.0),
        "per-query work": best["per-query work"],
        "search, Python": best["search"] - best.get("centroid lookup", 0.0) - best["per-query work"],
        "retrieve, Python": best["retrieve"] - best["search"],
    }
    work = {phase: best.get(phase, 0.0) for phase, _, _ in WORK}
    work["Python"] = best["query"] - sum(work.values())
    n = len(queries)
    return {
        "ms_per_query": round(best["retrieve"] * 1000 / n, 3),
        "wall_clock": shares(wall, best["retrieve"], n),
        f"per_query_work_summed_over_{torch.get_num_threads()}_threads": shares(work, best["query"], n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--k-token", type=int, default=None, help="default: the index's")
    parser.add_argument("--n-full-scores", type=int, default=None, help="default: the index's")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    require_shared()
    _, _, packed_queries, document_ids, packed_documents, _ = cached_embeddings("msmarco-dl19-5k")
    queries = [packed_queries[i] for i in range(len(packed_queries))]
    settings = {"k_token": args.k_token, "n_full_scores": args.n_full_scores}
    report = {"torch_threads": torch.get_num_threads(), "load_average_1min": round(os.getloadavg()[0], 2)}
    for n in args.documents:
        offsets = packed_documents.offsets[: n + 1]
        documents = PackedEmbeddings(packed_documents.tokens[: offsets[-1]], offsets)
        with tempfile.TemporaryDirectory(prefix="workbench-profile-") as folder:
            index = indexes.Voyager(index_folder=folder, index_name="index")
            index.add_documents(document_ids[:n], [documents[i] for i in range(n)])
            report[f"{n} documents"] = {
                "settings": index.settings(**settings),
                **profile(index, queries, args.repeats, **settings),
            }
            index.close()
    report["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    emit(report)


if __name__ == "__main__":
    main()
