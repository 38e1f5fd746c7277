"""Exact MaxSim speed: one query against every document of msmarco-dl19-5k.

    .venv/bin/python benchmarks/maxsim.py

answerai-colbert-small-v1 embeddings (356,900 document tokens of dimension 96) come from the
cache of benchmarks/common.py. Baseline in the same run, on the same arrays: Sentence
Transformers' `maxsim` (list of per-document tensors). Targets: at least 5x faster than it, and
at most 60 ms per query (PyLate 1.6.0 measured 809 ms on this machine's kind).
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
from sentence_transformers.util.similarity import maxsim

from workbench.measure import best_ms
from workbench.scores import colbert_scores

from common import cached_embeddings, emit, machine, require_shared

BASELINE_QUERIES = 8  # the baseline is slow; the median over a few queries is stable


def main() -> None:
    require_shared()
    _, _, queries, _, documents, _ = cached_embeddings("msmarco-dl19-5k")
    document_list = [documents[i] for i in range(len(documents))]
    document_tensors = [torch.from_numpy(d) for d in document_list]

    ours, baseline, largest_difference = [], [], 0.0
    for index in range(len(queries)):
        query = [queries[index]]
        milliseconds, our_scores = best_ms(lambda query=query: colbert_scores(query, documents), repeats=3)
        ours.append(milliseconds)
        if index < BASELINE_QUERIES:
            milliseconds, their_scores = best_ms(
                lambda query=query: maxsim([torch.from_numpy(query[0])], document_tensors), 1
            )
            baseline.append(milliseconds)
            largest_difference = max(largest_difference, float((our_scores - their_scores).abs().max()))
    list_input_ms, _ = best_ms(lambda: colbert_scores([queries[0]], document_list), repeats=3)
    all_queries = [queries[i] for i in range(len(queries))]
    batch_ms, _ = best_ms(lambda: colbert_scores(all_queries, documents), repeats=3)

    ours_ms, baseline_ms = statistics.median(ours), statistics.median(baseline)
    emit(
        {
            "benchmark": "exact MaxSim, one query against all documents",
            "collection": "msmarco-dl19-5k",
            "documents": len(documents),
            "document_tokens": int(documents.offsets[-1]),
            "dim": documents.dim,
            "query_tokens": int(queries.lengths[0]),
            "workbench_ms_per_query_packed": round(ours_ms, 1),
            "workbench_ms_per_query_list_input": round(list_input_ms, 1),
            "workbench_ms_per_query_all_queries_batched": round(batch_ms / len(queries), 1),
            "sentence_transformers_maxsim_ms_per_query": round(baseline_ms, 1),
            "speedup_vs_sentence_transformers": round(baseline_ms / ours_ms, 2),
            "gflops_per_second": round(
                2 * int(documents.offsets[-1]) * documents.dim * int(queries.lengths[0]) / ours_ms / 1e6, 1
            ),
            "max_abs_difference_vs_baseline": largest_difference,
            "targets": {"speedup_at_least": 5, "ms_per_query_at_most": 60, "pylate_1_6_0_ms": 809},
            "meets_targets": baseline_ms / ours_ms >= 5 and ours_ms <= 60,
            "machine": machine(),
            "threads": torch.get_num_threads(),
            "numpy": np.__version__,
        }
    )


if __name__ == "__main__":
    main()
