"""Where a Voyager build's time goes, on the first N passages of msmarco-dl19-5k.

    .venv/bin/python benchmarks/profile_build.py                    # 1,000 and 5,000 passages
    .venv/bin/python benchmarks/profile_build.py --documents 1000 --builds 5

Each build is what benchmarks/index.py times (index creation and add_documents into an empty folder),
with two phases timed by wrapping the functions Voyager calls:

- k-means: centroids.spherical_kmeans on the sample (voyager.kmeans_sample_size tokens);
- assignment: centroids.assign, every token's nearest centroid;
- store and the rest: fp16 storage, the codes, writing and committing the files.

Prints JSON: per size, tokens, centroids, k-means sample, and the seconds of each phase in the fastest of
--builds builds, with the 1-minute load average: other work on the machine stretches every phase.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from contextlib import ExitStack

import faiss  # noqa: F401  (loaded before a build is timed, as benchmarks/index.py does)
import torch

from workbench import indexes
from workbench.indexes import voyager as voyager_index
from workbench.scores import PackedEmbeddings

from common import cached_embeddings, emit, require_shared
from profile_query import timed

PHASES = (("k-means", "spherical_kmeans"), ("assignment", "assign"))


def profile_build(document_ids, documents, builds: int) -> dict:
    """Seconds per phase of the fastest of ``builds`` builds of a Voyager index over ``documents``."""
    seconds: dict[str, float] = {}
    passes = []
    with ExitStack() as restore, tempfile.TemporaryDirectory(prefix="workbench-profile-") as folder:
        for _, name in PHASES:
            original = getattr(voyager_index, name)
            restore.callback(setattr, voyager_index, name, original)
            setattr(voyager_index, name, timed(seconds, name, original))
        for _ in range(builds):
            seconds.clear()
            started = time.perf_counter()
            index = indexes.Voyager(index_folder=folder, index_name="index", override=True)
            index.add_documents(documents_ids=document_ids, documents_embeddings=documents)
            total = time.perf_counter() - started
            centroids = len(indexes.centroids_of(index.snapshot()))
            tokens = index.snapshot().n_tokens
            index.close()
            passes.append({"build": total, **{phase: seconds.get(name, 0.0) for phase, name in PHASES}})
    best = min(passes, key=lambda p: p["build"])
    best["store and the rest"] = best["build"] - sum(best[phase] for phase, _ in PHASES)
    return {
        "tokens": tokens,
        "centroids": centroids,
        "kmeans_sample": voyager_index.kmeans_sample_size(centroids, tokens),
        "seconds": {phase: round(value, 3) for phase, value in best.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--builds", type=int, default=3, help="builds per size; the fastest is reported")
    args = parser.parse_args()
    if args.builds < 1:
        raise SystemExit(f"--builds must be at least 1, got {args.builds}.")
    require_shared()
    _, _, _, document_ids, packed_documents, _ = cached_embeddings("msmarco-dl19-5k")
    if max(args.documents) > len(document_ids) or min(args.documents) < 1:
        raise SystemExit(f"--documents must be between 1 and {len(document_ids)}, got {args.documents}.")
    report = {"torch_threads": torch.get_num_threads(), "load_average_1min": round(os.getloadavg()[0], 2)}
    for n in args.documents:
        offsets = packed_documents.offsets[: n + 1]
        documents = PackedEmbeddings(packed_documents.tokens[: offsets[-1]], offsets)
        report[f"{n} documents"] = profile_build(document_ids[:n], [documents[i] for i in range(n)], args.builds)
    report["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    emit(report)


if __name__ == "__main__":
    main()
