"""How well two candidate rankings keep the exact top 10, by centroid count, on msmarco-dl19-5k.

    .venv/bin/python benchmarks/candidates.py                          # 1,000 and 5,000 passages
    .venv/bin/python benchmarks/candidates.py --documents 1000 --centroids 1024 2048 4096

The Voyager index ranks the documents of its probed centroids by centroid interaction, then scores
the best ``n_full_scores`` of them exactly. The exact scoring costs most of a query's time
(``benchmarks/profile_query.py``), so the fewer candidates a ranking needs for overlap@10 >= 0.99,
the faster the query. This script measures two rankings of the same candidates (every document with a
token in one of each query token's ``k_token`` nearest centroids):

- ``probed`` (``Postings.candidates``; PLAID's first, pruned stage, and this index's ranking until
  it took the other): per query token, the best similarity of a probed centroid the document has a
  token in, or else the token's lowest probed similarity;
- ``every centroid`` (``centroid_interaction``, the index's ranking): per query token, the best
  similarity of any centroid the document has a token in (PLAID's full centroid interaction).

For each, the overlap@10 with exact search (fp32, every document) after exact rescoring of its best
n documents. The ceiling is exact search over the index's fp16 tokens (what any rescoring can
reach). Also printed: each index's build seconds, which grow with the centroids (k-means and
assignment). Centroid counts: by default half the index's default count, that count, and twice it.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from workbench import indexes
from workbench.indexes.centroids import default_centroid_count
from workbench.indexes.interaction import centroid_interaction, nearest_in_columns
from workbench.indexes.voyager import CENTROIDS_PER_ROOT, centroid_table
from workbench.scores import PackedEmbeddings, colbert_scores, top_k

from common import cached_embeddings, emit, machine, require_shared

RESCORED = (64, 96, 128, 192, 256)
K_TOKENS = (4, 8)


def top10(scores: np.ndarray, positions: np.ndarray | None = None) -> list[set]:
    return [set(best.tolist()) for best, _ in top_k(scores, 10, positions)]


def overlap(found: list[set], truth: list[set]) -> float:
    return round(float(np.mean([len(a & b) / 10 for a, b in zip(found, truth)])), 4)


def measure(n: int, n_centroids: int, queries, packed, truth) -> dict:
    offsets = packed.offsets[: n + 1]
    with tempfile.TemporaryDirectory(prefix="workbench-candidates-") as folder:
        started = time.perf_counter()
        index = indexes.Voyager(index_folder=folder, index_name="index", n_centroids=n_centroids)
        index.add_documents([str(i) for i in range(n)], [packed[i] for i in range(n)])
        build_seconds = time.perf_counter() - started
        snapshot = index.snapshot()
        postings = index._searcher(snapshot)
        centroids = snapshot.derived["centroids"]
        codes = np.asarray(snapshot.side["codes"])
        report = {"centroids": len(centroids), "build_seconds": round(build_seconds, 2)}
        for k_token in K_TOKENS:
            found = {("probed", r): [] for r in RESCORED} | {("every centroid", r): [] for r in RESCORED}
            n_candidates = []
            for query in queries:
                table = centroid_table(query, centroids)
                nearest = nearest_in_columns(table, k_token)
                neighbours, similarities = nearest.T, np.take_along_axis(table, nearest, axis=0).T
                everyone = postings.touched(nearest, None)
                n_candidates.append(len(everyone))
                approximate = centroid_interaction(table, codes, offsets, everyone)
                for rescored in RESCORED:
                    by_probes = postings.candidates(neighbours, similarities, None, rescored)
                    [(best, _)] = top_k(approximate[None, :], rescored)
                    for name, chosen in (("probed", by_probes), ("every centroid", np.sort(everyone[best]))):
                        exact = colbert_scores([query], snapshot.documents(chosen)).numpy()
                        found[name, rescored] += top10(exact, chosen)
            report[f"k_token {k_token}"] = {
                "candidates_per_query": round(float(np.mean(n_candidates)), 1),
                **{
                    name: {f"rescored {r}": overlap(found[name, r], truth) for r in RESCORED}
                    for name in ("probed", "every centroid")
                },
            }
        index.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument(
        "--centroids", type=int, nargs="+", default=None, help="default: half the index's count, it, twice it"
    )
    args = parser.parse_args()
    require_shared()
    _, _, packed_queries, _, packed_documents, _ = cached_embeddings("msmarco-dl19-5k")
    queries = [np.array(packed_queries[i], dtype=np.float32) for i in range(len(packed_queries))]
    report = {"benchmark": "candidate rankings on the first N passages of msmarco-dl19-5k", "machine": machine()}
    for n in args.documents:
        offsets = packed_documents.offsets[: n + 1]
        fp32 = PackedEmbeddings(packed_documents.tokens[: offsets[-1]], offsets)
        fp16 = PackedEmbeddings(np.asarray(fp32.tokens, dtype=np.float16), offsets)
        truth = top10(colbert_scores(queries, fp32).numpy())
        default = default_centroid_count(int(offsets[-1]), CENTROIDS_PER_ROOT)
        counts = args.centroids or [default // 2, default, 2 * default]
        report[f"{n} documents"] = {
            "tokens": int(offsets[-1]),
            "ceiling: exact search over fp16 tokens": overlap(top10(colbert_scores(queries, fp16).numpy()), truth),
            "indexes": [measure(n, count, queries, fp32, truth) for count in counts],
        }
    emit(report)


if __name__ == "__main__":
    main()
