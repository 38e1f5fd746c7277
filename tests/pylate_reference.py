"""Run inside the PyLate environment (not this project's): encode texts with PyLate, save an .npz.

python tests/pylate_reference.py MODEL_PATH TEXTS_JSON OUT_NPZ
TEXTS_JSON holds {"queries": [...], "documents": [...]}.
"""

import json
import sys

import numpy as np
from pylate import models

model_path, texts_path, out_path = sys.argv[1:4]
texts = json.load(open(texts_path))
model = models.ColBERT(model_name_or_path=model_path, device="cpu")
arrays = {}
for side, is_query in (("queries", True), ("documents", False)):
    for index, embedding in enumerate(model.encode(texts[side], is_query=is_query, convert_to_numpy=True)):
        arrays[f"{side}_{index}"] = np.asarray(embedding, dtype=np.float32)
np.savez(out_path, **arrays)
