"""Evidence that training works: all-MiniLM-L6-v2 turned into a ColBERT, before and after training.

    .venv/bin/python benchmarks/training.py [--steps 200] [--skip-distillation] [--skip-contrastive]
        [--normalize-student-scores]

Data: the embedded default set (standard-library docstrings, workbench.training_sets), train split
for training, held-out test split (other modules) for nDCG@10 with exact search.
1. Contrastive: BM25 hard negatives (1 per query), in-batch negatives, batch 16.
2. Distillation: the cross-encoder ms-marco-MiniLM-L-12-v2 (../shared/models, rebuilt with onnx into
   .cache/models) scores each query's positive and 4 BM25 negatives; KL loss, batch 8.
Both start from the same seeded, untrained ColBERT. Prints JSON: nDCG@10 before and after, steps, seconds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from workbench import evaluation, losses, training, training_sets, utils
from workbench.models import load_model

from common import ROOT, SHARED, emit, machine

TEACHER = SHARED / "models" / "ms-marco-MiniLM-L-12-v2"
TEACHER_CACHE = ROOT / ".cache" / "models" / "ms-marco-MiniLM-L-12-v2"


def fresh_model(seed: int = 0):
    return load_model(seed=seed)


def ndcg(model, collection) -> float:
    table, _ = evaluation.evaluate_collection(model, collection)
    return round(float(table["MaxSim_ndcg@10"].iloc[0]), 4)


def train(model, dataset, loss, steps: int, batch_size: int, output: str) -> float:
    started = time.perf_counter()
    training.train(model, dataset, loss, steps=steps, output_dir=output, batch_size=batch_size)
    return round(time.perf_counter() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--skip-distillation", action="store_true")
    parser.add_argument("--skip-contrastive", action="store_true")
    parser.add_argument(
        "--normalize-student-scores",
        action="store_true",
        help="Distillation(normalize_scores=True): student MaxSim divided by the query length (PyLate)",
    )
    options = parser.parse_args()
    train_split, test_split = training_sets.docstring_collection()
    report = {
        "benchmark": "training all-MiniLM-L6-v2 as a ColBERT on the docstring set",
        "train_queries": len(train_split.queries),
        "test_queries": len(test_split.queries),
        "machine": machine(),
    }
    baseline = ndcg(fresh_model(), test_split)
    report["untrained_ndcg@10"] = baseline

    if not options.skip_contrastive:
        triplets = training_sets.bm25_negatives(train_split, n_negatives=1)
        model = fresh_model()
        seconds = train(
            model,
            triplets.select_columns(training_sets.triplet_columns(triplets)),
            losses.Contrastive(model=model),
            options.steps,
            16,
            str(ROOT / ".cache" / "runs" / "contrastive"),
        )
        report["contrastive"] = {
            "steps": options.steps,
            "batch_size": 16,
            "seconds": seconds,
            "ndcg@10": ndcg(model, test_split),
        }

    if not options.skip_distillation:
        if not TEACHER_CACHE.exists():
            subprocess.run([sys.executable, str(TEACHER / "rebuild.py"), str(TEACHER_CACHE)], check=True)
        from sentence_transformers import CrossEncoder

        teacher = CrossEncoder(str(TEACHER_CACHE), device="cpu")
        started = time.perf_counter()
        rows, queries, documents = training_sets.teacher_scores(
            training_sets.bm25_negatives(train_split, n_negatives=4), teacher
        )
        scoring_seconds = round(time.perf_counter() - started, 1)
        dataset = utils.KDProcessing(queries=queries, documents=documents).dataset(rows)
        model = fresh_model()
        loss = losses.Distillation(model=model, normalize_scores=options.normalize_student_scores)
        seconds = train(model, dataset, loss, options.steps, 8, str(ROOT / ".cache" / "runs" / "distillation"))
        report["distillation"] = {
            "steps": options.steps,
            "batch_size": 8,
            "ways": 5,
            "seconds": seconds,
            "normalize_scores": loss.normalize_scores,
            "teacher_scoring_seconds": scoring_seconds,
            "ndcg@10": ndcg(model, test_split),
        }
    emit(report)


if __name__ == "__main__":
    main()
