"""Index scale: build time, memory, bytes and search speed/quality as the corpus grows, on synthetic
documents made of real token embeddings (answerai-colbert-small-v1 on msmarco-dl19-5k, cached).

    .venv/bin/python benchmarks/scale.py
    # the defaults: --tokens 1e6 3e6 1e7 --generators mix noise --indexes plaid-4 plaid-2 voyager
    .venv/bin/python benchmarks/scale.py --indexes voyager --tokens 2e5 --generators mix   # quick check

The real passages hold only 357k tokens, so larger corpora are synthesised from them:
  noise  document i is passage i mod 5000 plus Gaussian noise (sigma 0.03 per dimension), renormalised:
         every passage has many near-duplicates, the hard case for candidate generation.
  mix    three random spans (8-40 tokens) of three random passages after the first one's [CLS] token,
         same noise: real token statistics, no near-duplicates.
Documents come from a seeded generator in batches of 5,000, so neither the builder nor the ground
truth ever holds the corpus whole. The ground truth (exact fp32 MaxSim top-10 of the real queries, a
running top-10 merged batch by batch) is cached in .cache/scale/; nothing else large is kept.

Each (generator, size, index) is built in one fresh subprocess and searched in another, so a peak RSS
(VmHWM) belongs to one configuration and one phase. Reported: build seconds (add_documents only),
build and search peak RSS, bytes on disk per token, ms/query at k=10 (best of 3 passes after a
warm-up), overlap@10 with exact, a recall-against-latency sweep of search settings, and growth
exponents (slope of log cost against log tokens) to project to larger corpora. Peak RSS includes each
worker's baseline (Python, torch, and in the build worker the source passages; *_baseline_rss_gb),
so the memory above it gets its own exponent: project that one, then add the baseline back.
For a compressed index, a third worker scores every document exhaustively on its decoded tokens: the
"codec ceiling" is that top-10's overlap with exact, the most any search over those tokens can reach,
and "overlap with ceiling" is the search's overlap with it, what candidate generation loses on its own.
Output: JSON per configuration, Markdown tables, and .cache/scale/results.json.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import CACHE, ROOT, cached_embeddings, emit, machine, require_shared

COLLECTION = "msmarco-dl19-5k"
OUT = ROOT / ".cache" / "scale"
BATCH, SIGMA, SPAN = 5000, 0.03, (8, 40)
KINDS = {
    "plaid-4": ("PLAID", {"nbits": 4}),
    "plaid-2": ("PLAID", {"nbits": 2}),
    "plaid-8": ("PLAID", {"nbits": 8}),
    "voyager": ("Voyager", {}),
}
DEFAULT_KINDS = ["plaid-4", "plaid-2", "voyager"]
SWEEPS = {
    "PLAID": {"n_ivf_probe": (4, 8, 16), "n_full_scores": (256, 1024, 4096)},
    "Voyager": {"k_token": (8, 16, 32), "n_full_scores": (256, 1024, 4096)},
}
PROJECT_TO = 600e6  # tokens: the corpus size the growth exponents are projected to
GB = 2**30


# -- synthetic documents -------------------------------------------------------------------------


def rows_of(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Source rows of the consecutive segments ``[start, start + size)``."""
    return np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())


def documents(generator: str, target_tokens: int, source, seed: int = 0):
    """Batches ``(ids, [n_tokens, dim] float32 arrays)`` of synthetic documents until ``target_tokens``."""
    tokens, offsets = source.tokens, source.offsets
    lengths, made, n_tokens = np.diff(offsets), 0, 0
    first = np.array([1, 0, 0])  # the first passage's [CLS] is placed on its own, its span starts after it
    for batch in itertools.count():
        rng = np.random.default_rng([seed, batch])  # a batch depends on nothing before it
        if generator == "noise":
            passages = np.arange(made, made + BATCH) % len(lengths)
            starts, sizes = offsets[passages][:, None], lengths[passages][:, None]
        elif generator == "mix":
            passages = rng.integers(0, len(lengths), size=(BATCH, 3))
            available = lengths[passages] - first
            spans = np.minimum(rng.integers(SPAN[0], SPAN[1] + 1, size=(BATCH, 3)), available)
            skip = (rng.random((BATCH, 3)) * (available - spans + 1)).astype(np.int64) + first
            starts = np.concatenate([offsets[passages[:, :1]], offsets[passages] + skip], axis=1)
            sizes = np.concatenate([np.ones((BATCH, 1), dtype=np.int64), spans], axis=1)
        else:
            raise ValueError(f"Unknown generator {generator!r}.")
        ends = n_tokens + np.cumsum(sizes.sum(axis=1))
        keep = min(BATCH, int(np.searchsorted(ends, target_tokens)) + 1)  # stop at the target
        rows = rows_of(starts[:keep].ravel(), sizes[:keep].ravel())
        block = tokens[rows] + SIGMA * rng.standard_normal((len(rows), tokens.shape[1]), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        yield [f"d{i}" for i in range(made, made + keep)], np.split(block, ends[: keep - 1] - n_tokens)
        made, n_tokens = made + keep, int(ends[keep - 1])
        if n_tokens >= target_tokens:
            return


def running_top10(queries, batches) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exact MaxSim top-10 (positions, scores) per query over ``batches`` of ``(first position, documents)``."""
    from workbench.scores import colbert_scores, top_k

    best = [(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))] * len(queries)
    for first, batch in batches:
        scores = colbert_scores(queries, batch).numpy()
        new = first + np.arange(scores.shape[1])
        # The running top-10 comes first: it holds earlier positions, so ties still go to the earlier document.
        best = [
            top_k(np.concatenate([kept, row])[None], 10, np.concatenate([positions, new]))[0]
            for (positions, kept), row in zip(best, scores)
        ]
    return best


def ground_truth(generator: str, target: int, source, queries, seed: int) -> Path:
    """Exact MaxSim top-10 per query over the whole synthetic corpus, streamed; cached as JSON."""
    path = OUT / f"truth-{generator}-{target}-seed{seed}-q{len(queries)}.json"
    if path.exists():
        return path
    started, counts = time.perf_counter(), {"documents": 0, "tokens": 0}

    def batches():
        for ids, arrays in documents(generator, target, source, seed):
            yield counts["documents"], arrays
            counts["documents"] += len(ids)
            counts["tokens"] += sum(map(len, arrays))

    best = running_top10(queries, batches())
    truth = {
        "generator": generator,
        "target_tokens": target,
        "seed": seed,
        **counts,
        "seconds": round(time.perf_counter() - started, 1),
        "top10": [[f"d{p}" for p in positions] for positions, _ in best],
        "scores": [[round(float(s), 5) for s in kept] for _, kept in best],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(truth))
    return path


# -- workers (fresh processes: one configuration's memory each) -----------------------------------


def memory() -> dict:
    """VmRSS and VmHWM (peak RSS) of this process in GB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: round(int(fields[key].split()[0]) * 1024 / GB, 3) for key in ("VmRSS", "VmHWM")}


def cached(*keys: str) -> list[np.ndarray]:
    # Only the arrays asked for are read (an npz member is loaded on access), which keeps baselines small.
    stored = np.load(CACHE / f"{COLLECTION}.npz")
    return [stored[key] for key in keys]


def build(args) -> dict:
    from workbench import indexes
    from workbench.measure import folder_bytes
    from workbench.scores import PackedEmbeddings

    source = PackedEmbeddings(*cached("document_tokens", "document_offsets"))
    name, settings = KINDS[args.index]
    baseline, started = memory()["VmRSS"], time.perf_counter()
    index = getattr(indexes, name)(index_folder=args.folder, index_name="index", override=True, seed=0, **settings)
    seconds, n_tokens = 0.0, 0
    for ids, arrays in documents(args.generator, args.tokens, source, args.seed):
        added = time.perf_counter()  # generating documents is not building the index
        index.add_documents(documents_ids=ids, documents_embeddings=arrays)
        seconds += time.perf_counter() - added
        n_tokens += sum(map(len, arrays))
    peak = memory()["VmHWM"]
    getattr(index, "close", lambda: None)()  # release the writer lock for the search worker
    size = folder_bytes(args.folder)
    return {
        "build_seconds": round(seconds, 2),
        "build_wall_seconds": round(time.perf_counter() - started, 2),
        "build_peak_rss_gb": peak,
        "build_baseline_rss_gb": baseline,
        "build_rss_above_baseline_gb": round(peak - baseline, 3),
        "bytes_on_disk": size,
        "bytes_per_token": round(size / n_tokens, 2),
    }


def ceiling(args) -> dict:
    """The codec's ceiling: exhaustive MaxSim over the index's own decoded tokens, streamed. Its top-10
    (written to ``args.folder``/ceiling.json for the search worker) separates what the compression loses
    from what candidate generation loses."""
    from workbench import indexes
    from workbench.scores import PackedEmbeddings

    tokens, offsets = cached("query_tokens", "query_offsets")
    queries = PackedEmbeddings(tokens[: offsets[args.queries]], offsets[: args.queries + 1])
    truth = json.loads(Path(args.truth).read_text())["top10"]
    started = time.perf_counter()
    snapshot = getattr(indexes, KINDS[args.index][0])(index_folder=args.folder, index_name="index").snapshot()
    step = 5000
    best = running_top10(
        queries,
        (
            (first, snapshot.documents(np.arange(first, min(first + step, len(snapshot.ids)))))
            for first in range(0, len(snapshot.ids), step)
        ),
    )
    top10 = [[snapshot.ids[p] for p in positions] for positions, _ in best]
    Path(args.folder, "ceiling.json").write_text(json.dumps(top10))
    return {
        "ceiling_overlap@10": round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top10, truth)])), 4),
        "ceiling_seconds": round(time.perf_counter() - started, 1),
    }


def timed(retriever, queries, truth, **settings) -> tuple[float, float, list]:
    """Best ms/query of 3 passes after a warm-up pass, overlap@10 with the exact top-10, and the results."""
    from workbench.measure import best_ms

    ms, results = best_ms(lambda: retriever.retrieve(queries_embeddings=queries, k=10, **settings), 3, per=len(queries))
    return round(ms, 2), overlap_with(results, truth), results


def overlap_with(results, top10s) -> float:
    return round(
        float(np.mean([len({hit["id"] for hit in hits} & set(top)) / 10 for hits, top in zip(results, top10s)])), 4
    )


def search(args) -> dict:
    from workbench import indexes, retrieve

    tokens, offsets = cached("query_tokens", "query_offsets")
    queries = [tokens[offsets[i] : offsets[i + 1]] for i in range(args.queries)]
    truth = json.loads(Path(args.truth).read_text())["top10"]
    name, _ = KINDS[args.index]
    baseline, started = memory()["VmRSS"], time.perf_counter()
    index = getattr(indexes, name)(index_folder=args.folder, index_name="index")
    retrieve.ColBERT(index).retrieve(queries_embeddings=queries[:1], k=10)  # a cold start reads the index in
    cold = time.perf_counter() - started
    ms, overlap, results = timed(retrieve.ColBERT(index), queries, truth)
    peak = memory()["VmHWM"]
    report = {
        "search_peak_rss_gb": peak,
        "search_baseline_rss_gb": baseline,
        "search_rss_above_baseline_gb": round(peak - baseline, 3),
        "open_and_first_query_seconds": round(cold, 2),
        "ms_per_query": ms,
        "overlap@10": overlap,
        "sweep": [],
    }
    decoded = Path(args.folder, "ceiling.json")
    ceiling = json.loads(decoded.read_text()) if decoded.exists() else None
    if ceiling:  # what the search stages lose, apart from the compression
        report["overlap@10_with_ceiling"] = overlap_with(results, ceiling)
    # A setting retrieve() takes goes there; any other is a constructor setting, so the index is reopened with it.
    parameters = inspect.signature(retrieve.ColBERT.retrieve).parameters
    anything = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    grid = SWEEPS[name]
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        at_open = {k: v for k, v in setting.items() if not anything and k not in parameters}
        try:
            opened = (
                getattr(indexes, name)(index_folder=args.folder, index_name="index", **at_open) if at_open else index
            )
            ms, overlap, results = timed(
                retrieve.ColBERT(opened), queries, truth, **{k: v for k, v in setting.items() if k not in at_open}
            )
            report["sweep"].append(
                {
                    **setting,
                    "ms_per_query": ms,
                    "overlap@10": overlap,
                    **({"overlap@10_with_ceiling": overlap_with(results, ceiling)} if ceiling else {}),
                }
            )
        except Exception as error:  # an index API in flux should cost one row, not the run
            report["sweep"].append({**setting, "error": repr(error)})
    report["sweep_peak_rss_gb"] = memory()["VmHWM"]
    return report


def run_worker(*arguments: str) -> dict:
    # stderr (progress bars, tracebacks) goes straight to the console; the result is stdout's last line.
    output = subprocess.run([sys.executable, __file__, *arguments], stdout=subprocess.PIPE, text=True)
    if output.returncode:
        return {"error": f"worker {arguments[1]} exited with status {output.returncode}"}
    return json.loads(output.stdout.strip().splitlines()[-1])


# -- the run --------------------------------------------------------------------------------------


def markdown(headers: list[str], rows: list[list]) -> None:
    from workbench.utils import markdown_table

    print(markdown_table(headers, rows))


COLUMNS = {
    "generator": "generator",
    "index": "index",
    "documents": "documents",
    "tokens": "tokens",
    "build s": "build_seconds",
    "build peak RSS GB": "build_peak_rss_gb",
    "search peak RSS GB": "search_peak_rss_gb",
    "bytes/token": "bytes_per_token",
    "ms/query": "ms_per_query",
    "overlap@10": "overlap@10",
    "codec ceiling": "ceiling_overlap@10",
    "overlap with ceiling": "overlap@10_with_ceiling",
}
# The baseline (interpreter, torch, source passages) dominates small sizes and flattens a slope fitted on
# peak RSS, so the memory above it gets its own exponent: that is the part that grows with the corpus.
GROWTH = {
    "build s": "build_seconds",
    "build RSS": "build_peak_rss_gb",
    "search RSS": "search_peak_rss_gb",
    "ms/query": "ms_per_query",
    "build RSS - baseline": "build_rss_above_baseline_gb",
    "search RSS - baseline": "search_rss_above_baseline_gb",
}


def summarise(results: list[dict]) -> list[dict]:
    """Print the tables; return the growth exponents per (generator, index) measured at 2+ sizes."""
    missing = lambda r: "skipped" if "skipped" in r else "error" if "error" in r else "-"  # noqa: E731
    markdown(list(COLUMNS), [[r.get(key, missing(r)) for key in COLUMNS.values()] for r in results])
    sweeps = [(r, s) for r in results for s in r.get("sweep", [])]
    if sweeps:
        print("\nSearch settings (recall against latency):\n")
        measured = ("ms_per_query", "overlap@10", "overlap@10_with_ceiling", "error")
        markdown(
            ["generator", "index", "tokens", "setting", "ms/query", "overlap@10", "overlap with ceiling"],
            [
                [
                    r["generator"],
                    r["index"],
                    r["tokens"],
                    " ".join(f"{k}={v}" for k, v in s.items() if k not in measured),
                    s.get("ms_per_query", s.get("error")),
                    s.get("overlap@10", "-"),
                    s.get("overlap@10_with_ceiling", "-"),
                ]
                for r, s in sweeps
            ],
        )
    groups = {}
    for r in results:
        if all(key in r for key in GROWTH.values()):
            groups.setdefault((r["generator"], r["index"]), []).append(r)
    growth = []
    for (generator, kind), group in groups.items():
        if len({r["tokens"] for r in group}) < 2:
            continue
        x, largest = np.log([r["tokens"] for r in group]), max(group, key=lambda r: r["tokens"])
        slopes = {name: float(np.polyfit(x, np.log([r[key] for r in group]), 1)[0]) for name, key in GROWTH.items()}
        projected = {
            name: largest[key] * (PROJECT_TO / largest["tokens"]) ** slopes[name]  # from the largest size
            for name, key in GROWTH.items()
        }
        growth.append(
            {
                "generator": generator,
                "index": kind,
                "sizes": len(group),
                "exponents": slopes,
                "projected_tokens": PROJECT_TO,
                "projected": projected,
            }
        )
    if growth:
        print(f"\nGrowth exponents, slope of log(cost) against log(tokens) (→ projected at {PROJECT_TO:.0e} tokens):\n")
        markdown(
            ["generator", "index", "sizes", *GROWTH],
            [
                [
                    g["generator"],
                    g["index"],
                    g["sizes"],
                    *(f"{g['exponents'][n]:.2f} (→ {g['projected'][n]:.3g})" for n in GROWTH),
                ]
                for g in growth
            ],
        )
    return growth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    count = lambda text: int(float(text))  # noqa: E731  (accepts 1e6)
    parser.add_argument("--tokens", type=count, nargs="+", default=[10**6, 3 * 10**6, 10**7])
    parser.add_argument("--generators", nargs="+", choices=["mix", "noise"], default=["mix", "noise"])
    parser.add_argument("--indexes", nargs="+", choices=list(KINDS), default=DEFAULT_KINDS)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    # Internal: what the parent hands its worker subprocesses.
    parser.add_argument("--worker", choices=["build", "ceiling", "search"], help=argparse.SUPPRESS)
    for option in ("--generator", "--index", "--folder", "--truth"):
        parser.add_argument(option, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.tokens = args.tokens[0]
        print(json.dumps({"build": build, "ceiling": ceiling, "search": search}[args.worker](args)))
        return

    require_shared()
    started = time.perf_counter()
    from workbench import indexes

    _, _, queries, _, source, _ = cached_embeddings(COLLECTION)
    queries = queries.select(range(args.queries))
    info = machine()
    results = []
    for generator, target in itertools.product(args.generators, args.tokens):
        truth_path = ground_truth(generator, target, source, queries, args.seed)
        truth = json.loads(truth_path.read_text())
        for kind in args.indexes:
            result = {
                "generator": generator,
                "index": kind,
                "documents": truth["documents"],
                "tokens": truth["tokens"],
                "ground_truth_seconds": truth["seconds"],
            }
            if not hasattr(indexes, KINDS[kind][0]):
                result["skipped"] = f"workbench.indexes has no {KINDS[kind][0]} yet"
            else:
                folder = tempfile.mkdtemp(prefix="workbench-scale-")
                shared = [
                    "--generator",
                    generator,
                    "--index",
                    kind,
                    "--folder",
                    folder,
                    "--tokens",
                    str(target),
                    "--seed",
                    str(args.seed),
                    "--queries",
                    str(args.queries),
                    "--truth",
                    str(truth_path),
                ]
                try:
                    result.update(run_worker("--worker", "build", *shared))
                    if "error" not in result and KINDS[kind][0] == "PLAID":  # fp16 tokens have no codec loss to bound
                        result.update(run_worker("--worker", "ceiling", *shared))
                    if "error" not in result:
                        result.update(run_worker("--worker", "search", *shared))
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
            emit(result)
            results.append(result)
    growth = summarise(results)
    seconds = round(time.perf_counter() - started, 1)
    print(f"\n{len(results)} configurations in {seconds} s")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(
        json.dumps(
            {
                "benchmark": "index scale on synthetic documents of real token embeddings",
                "machine": info,
                "arguments": {k: v for k, v in vars(args).items() if v is not None},
                "seconds": seconds,
                "results": results,
                "growth": growth,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
