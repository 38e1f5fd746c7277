"""Document encoding speed per backend (workbench.backends), with parity against torch fp32.

    .venv/bin/python benchmarks/encode.py                       # 1,000 passages of msmarco-dl19-5k, 2 threads
    .venv/bin/python benchmarks/encode.py --parity              # + nDCG@10 on both collections (about 30 min)
    WORKBENCH_PYLATE_PYTHON=.venv-pylate/bin/python .venv/bin/python benchmarks/encode.py   # + PyLate 1.6.0

answerai-colbert-small-v1 encodes the first N passages of msmarco-dl19-5k with each backend (torch
fp32, ONNX Runtime fp32 and int8, OpenVINO fp32, OpenVINO's default precision and OpenVINO int8) at batch
size 32:
output tokens per second (after the skiplist; fastest of --repeats passes after a warm-up), load
seconds (export included), per-token cosine to torch fp32. With --parity each backend also encodes
both shared collections (5,000 documents each) and the nDCG@10 of exact search is compared with
torch fp32's (from the embedding cache of benchmarks/common.py). With a PyLate environment, PyLate
1.6.0 encodes the same texts in a subprocess and each backend's ratio to it is given; without one
that part is skipped and the JSON says so. Target: >= 2x PyLate's tokens/s with a backend whose
nDCG@10 is within 0.003 of torch fp32 on both collections.

The load average at the start and end is recorded: other work on the machine slows every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from workbench import backends, data, metrics, models
from workbench.measure import best_ms
from workbench.scores import colbert_scores, pack, top_k

from common import COLBERT, COLLECTIONS, cached_embeddings, emit, machine, require_shared

BACKENDS = {
    "torch fp32": ("torch", {}),
    "onnx fp32": ("onnx", {}),
    "onnx int8": ("onnx", {"quantize": "int8"}),
    "openvino fp32": ("openvino", {"precision": "fp32"}),
    "openvino default": ("openvino", {}),
    "openvino int8": ("openvino", {"quantize": "int8"}),
}
PARITY_TOLERANCE = 0.003  # nDCG@10 against torch fp32
TARGET_RATIO = 2.0  # tokens/s against PyLate 1.6.0
BATCH_SIZE = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=1000, help="passages of msmarco-dl19-5k to encode")
    parser.add_argument("--threads", type=int, default=2, help="threads of every backend (and of PyLate)")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes; the fastest counts")
    parser.add_argument("--parity", action="store_true", help="nDCG@10 on both collections per backend")
    args = parser.parse_args()
    require_shared()
    torch.set_num_threads(args.threads)  # the runtimes take torch's thread count (workbench.backends)
    corpus = data.load_beir(COLLECTIONS["msmarco-dl19-5k"]).corpus
    texts = [corpus[i] for i in list(corpus)[: args.passages]]
    provenance = machine()
    report = {
        "benchmark": "document encoding per backend, answerai-colbert-small-v1",
        "passages": len(texts),
        "threads": args.threads,
        "batch_size": BATCH_SIZE,
        "cpu_features": provenance["machine"]["cpu_features"],
        "openvino_int8_products": backends.int8_products(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "machine": provenance,
    }
    report["backends"] = measure_backends(texts, args)
    report["pylate"] = run_pylate(texts, args)
    compare(report["backends"], report["pylate"])
    if args.parity:
        report["target"] = target(report["backends"], report["pylate"])
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    emit(report)


def measure_backends(texts: list[str], args) -> dict:
    """Per backend: what ran (backends.describe), load seconds, speed, cosine to torch fp32, nDCG@10."""
    results, reference = {}, None
    for name, (backend, options) in BACKENDS.items():
        started = time.perf_counter()
        model = models.ColBERT(str(COLBERT), device="cpu", backend=backend, model_kwargs=options)
        entry = {"backend_info": model.backend_info, "load_seconds": round(time.perf_counter() - started, 1)}
        speed, embeddings = throughput(model, texts, args.repeats)
        if reference is None:  # torch fp32 comes first
            reference = embeddings
        entry.update(speed, cosine_to_torch_fp32=cosines(embeddings, reference))
        if args.parity:
            entry["ndcg@10"] = {c: parity(None if backend == "torch" else model, c) for c in COLLECTIONS}
        results[name] = entry
        print(f"{name}: {entry['tokens_per_second']} tokens/s", file=sys.stderr, flush=True)
    return results


def compare(results: dict, pylate: dict) -> None:
    """Add each backend's ratios to torch fp32 and PyLate, and its nDCG@10 deltas and parity flag."""
    reference = results["torch fp32"]
    if "tokens" in pylate:
        pylate["same_tokens_as_torch"] = pylate["tokens"] == reference["tokens"]
    for entry in results.values():
        entry["ratio_to_torch"] = round(entry["tokens_per_second"] / reference["tokens_per_second"], 2)
        if "tokens_per_second" in pylate:
            entry["ratio_to_pylate"] = round(entry["tokens_per_second"] / pylate["tokens_per_second"], 2)
        if "ndcg@10" in entry:
            for collection, result in entry["ndcg@10"].items():
                result["delta"] = round(result["value"] - reference["ndcg@10"][collection]["value"], 4)
            entry["parity"] = all(abs(result["delta"]) <= PARITY_TOLERANCE for result in entry["ndcg@10"].values())


def throughput(model, texts: list[str], repeats: int) -> tuple[dict, list[np.ndarray]]:
    """Output tokens per second encoding ``texts`` as documents, and the embeddings."""
    model.encode(texts[:64], is_query=False, batch_size=BATCH_SIZE)  # warm-up: thread pools, compiled shapes
    milliseconds, embeddings = best_ms(
        lambda: model.encode(texts, is_query=False, batch_size=BATCH_SIZE), repeats=repeats, warm_up=False
    )
    tokens = sum(len(embedding) for embedding in embeddings)
    speed = {
        "tokens": tokens,
        "seconds": round(milliseconds / 1000, 2),
        "tokens_per_second": round(tokens * 1000 / milliseconds),
    }
    return speed, embeddings


def cosines(embeddings: list[np.ndarray], reference: list[np.ndarray]) -> dict:
    """Per-token cosine (the embeddings are L2-normalised) to the reference, when token counts match."""
    if [len(e) for e in embeddings] != [len(r) for r in reference]:
        return {"same_token_counts": False}
    values = np.concatenate([np.sum(e * r, axis=1) for e, r in zip(embeddings, reference)])
    return {"same_token_counts": True, "mean": round(float(values.mean()), 6), "min": round(float(values.min()), 6)}


def parity(model, collection_name: str) -> dict:
    """nDCG@10 of exact search on a shared collection: torch fp32 from the cache (``model`` None), else encoded."""
    collection, query_ids, queries, document_ids, documents, _ = cached_embeddings(collection_name)
    result = {}
    if model is not None:
        queries = pack(model.encode([collection.queries[i] for i in query_ids], is_query=True, batch_size=BATCH_SIZE))
        started = time.perf_counter()
        texts = [collection.corpus[i] for i in document_ids]
        documents = pack(model.encode(texts, is_query=False, batch_size=BATCH_SIZE))
        result["corpus_tokens_per_second"] = round(int(documents.offsets[-1]) / (time.perf_counter() - started))
    top = top_k(colbert_scores([queries[i] for i in range(len(queries))], documents).numpy(), 100)
    run = {
        query_id: {document_ids[j]: float(s) for j, s in zip(positions.tolist(), values.tolist())}
        for query_id, (positions, values) in zip(query_ids, top)
    }
    row = metrics.evaluate(collection.qrels, run, metrics=[("ndcg@10", "ndcg@10")], prefix="").iloc[0]
    return {"value": round(float(row["ndcg@10"]), 4), **result}


def run_pylate(texts: list[str], args) -> dict:
    python = os.environ.get("WORKBENCH_PYLATE_PYTHON")
    if not python or not Path(python).exists():
        print("No PyLate environment (WORKBENCH_PYLATE_PYTHON; `make pylate-env`): skipped.", file=sys.stderr)
        return {"skipped": "WORKBENCH_PYLATE_PYTHON not set or not found"}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "texts.json"
        path.write_text(json.dumps(texts), encoding="utf-8")
        output = subprocess.run(
            [
                python,
                str(Path(__file__).with_name("pylate_encode.py")),
                str(COLBERT),
                str(path),
                str(args.threads),
                str(args.repeats),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    measured = json.loads(output.stdout.strip().splitlines()[-1])
    return {
        **measured,
        "seconds": round(measured["seconds"], 2),
        "tokens_per_second": round(measured["tokens_per_second"]),
        "version": "pylate 1.6.0",
    }


def target(backends: dict, pylate: dict) -> dict:
    """The fastest backend that meets parity, and whether it is >= TARGET_RATIO x PyLate."""
    meeting = {name: entry for name, entry in backends.items() if entry["parity"]}
    best = max(meeting, key=lambda name: meeting[name]["tokens_per_second"])
    ratio = meeting[best].get("ratio_to_pylate")
    return {
        "fastest_with_parity": best,
        "ratio_to_pylate": ratio,
        "met": None if ratio is None else ratio >= TARGET_RATIO,
        "rule": f">= {TARGET_RATIO}x PyLate's tokens/s, nDCG@10 within {PARITY_TOLERANCE} of torch fp32 on both",
    }


if __name__ == "__main__":
    main()
