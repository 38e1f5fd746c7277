"""Run inside the PyLate environment (WORKBENCH_PYLATE_PYTHON): PyLate's document encoding speed.

python benchmarks/pylate_encode.py MODEL_PATH TEXTS_JSON THREADS REPEATS
Prints one JSON object: output tokens (after PyLate's skiplist), the fastest of REPEATS passes in
seconds, tokens per second. Warm-up and batch size as benchmarks/encode.py's.
"""

import json
import sys
from pathlib import Path

import torch
from pylate import models

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # workbench.measure is standard library only
from workbench.measure import best_ms  # noqa: E402

model_path, texts_path, threads, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
texts = json.loads(Path(texts_path).read_text(encoding="utf-8"))
model = models.ColBERT(model_name_or_path=model_path, device="cpu")
model.encode(texts[:64], is_query=False, batch_size=32)  # warm-up: thread pools, allocator
milliseconds, embeddings = best_ms(
    lambda: model.encode(texts, is_query=False, batch_size=32), repeats=repeats, warm_up=False
)
tokens = sum(len(embedding) for embedding in embeddings)
print(json.dumps({"tokens": tokens, "seconds": milliseconds / 1000, "tokens_per_second": tokens * 1000 / milliseconds}))
