"""One call that trains a ColBERT: Sentence Transformers' trainer with a seeded, notebook-friendly setup.

What goes in: a model, a ``datasets.Dataset`` the loss understands (``query, positive, negative_1..``
for :class:`~workbench.losses.Contrastive`; ``query_id, document_ids, scores`` joined by
:class:`~workbench.utils.KDProcessing` for :class:`~workbench.losses.Distillation`), the loss, and
the number of optimisation steps.

What comes out: the training log as a table (``step``, ``loss``, ``learning_rate``, and any
evaluator metrics), one row per logging step. Progress shows as one tqdm.auto bar (a widget in
Jupyter) with the running loss, instead of the trainer's HTML table with wall-clock times.

Example::

    from workbench import losses, models, training, training_sets

    train, _ = training_sets.docstring_collection()
    triplets = training_sets.bm25_negatives(train, n_negatives=1)
    model = models.load_model()
    history = training.train(model, triplets.select_columns(training_sets.triplet_columns(triplets)),
                             losses.Contrastive(model=model), steps=20, output_dir="runs/scratch")
"""

from __future__ import annotations

import pandas as pd
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from tqdm.auto import tqdm
from transformers import PrinterCallback, TrainerCallback

from workbench.utils import ColBERTCollator

__all__ = ["train"]


class _ProgressBar(TrainerCallback):
    def __init__(self, description: str) -> None:
        self.description = description
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, desc=self.description, unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}")

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


def train(
    model,
    dataset,
    loss,
    steps: int,
    output_dir: str,
    batch_size: int = 16,
    learning_rate: float = 3e-5,
    warmup_ratio: float = 0.1,
    logging_steps: int | None = None,
    seed: int = 0,
    evaluator=None,
    eval_steps: int | None = None,
    description: str = "training",
) -> pd.DataFrame:
    """Train ``model`` in place for ``steps`` steps; the log history as a DataFrame.

    ``logging_steps`` defaults to a tenth of the steps. With an ``evaluator`` (any Sentence
    Transformers evaluator, e.g. :class:`workbench.evaluation.ColBERTTripletEvaluator`), it runs
    every ``eval_steps`` (default: at the logging steps) and its metrics join the table.
    Checkpoints are not saved during training: save the model yourself (``model.save(path)``).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    if len(dataset) == 0:
        raise ValueError("The training dataset is empty.")
    logging_steps = logging_steps or max(steps // 10, 1)
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=int(warmup_ratio * steps),
        seed=seed,
        data_seed=seed,
        logging_steps=logging_steps,
        save_strategy="no",
        report_to=[],
        use_cpu=model.device.type == "cpu",
        disable_tqdm=True,
        eval_strategy="steps" if evaluator is not None else "no",
        eval_steps=eval_steps or logging_steps,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        loss=loss,
        evaluator=evaluator,
        data_collator=ColBERTCollator(tokenize_fn=model.tokenize),
    )
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_ProgressBar(description))
    trainer.train()
    history = pd.DataFrame(trainer.state.log_history)
    # One row per step: the trainer logs training and evaluation metrics as separate entries.
    history = history.groupby("step", as_index=False).first()
    keep = ["step", "loss", "learning_rate"] + [column for column in history.columns if column.startswith("eval_")]
    return history[[column for column in keep if column in history.columns]].dropna(subset=["loss"])
