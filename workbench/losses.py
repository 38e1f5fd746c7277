"""Training losses for ColBERT models: PyLate's names on Sentence Transformers' multi-vector losses.

What goes in: a batch from :class:`workbench.utils.ColBERTCollator`: the first column is the query
(marked and expanded), the others documents (marked); for :class:`Distillation`, the teacher's
scores as the label (one row of scores per query, one per document column).

What comes out: a scalar loss. Every loss checks the batch first: a query column that lacks the
query marker or the expansion, or a document column that lacks the document marker, means the
batch was tokenised by a collator that does not know ColBERT, and training on it would silently
learn a different model; that raises a ValueError naming the fix.

Example::

    from workbench import losses, models, utils

    model = models.ColBERT(model_name_or_path="sentence-transformers/all-MiniLM-L6-v2")
    train_loss = losses.Contrastive(model=model)
    collator = utils.ColBERTCollator(tokenize_fn=model.tokenize)
    # SentenceTransformerTrainer(model=model, loss=train_loss, data_collator=collator, ...)

Defaults and differences from PyLate are in each class's docstring.
"""

from __future__ import annotations

from functools import partial

from sentence_transformers.multi_vector_encoder.losses import (
    CachedMultiVectorMultipleNegativesRankingLoss,
    MultiVectorDistillKLDivLoss,
    MultiVectorMultipleNegativesRankingLoss,
)
from sentence_transformers.multi_vector_encoder.scoring import colbert_kd_scores

__all__ = ["Contrastive", "CachedContrastive", "Distillation", "check_colbert_features"]


def check_colbert_features(model, sentence_features) -> None:
    """Raise if the batch was not tokenised as ColBERT queries and documents."""
    tokenizer = model.tokenizer
    expected = [("query", model.query_prefix)] + [("document", model.document_prefix)] * (len(sentence_features) - 1)
    for position, (features, (role, prefix)) in enumerate(zip(sentence_features, expected)):
        marker = prefix.strip()
        if not marker:
            continue
        marker_id = tokenizer.convert_tokens_to_ids(marker)
        input_ids = features["input_ids"]
        if input_ids.shape[1] < 2 or not bool((input_ids[:, 1] == marker_id).all()):
            raise ValueError(
                f"Column {position} of the batch is not marked as a {role} ({marker!r} missing): it was tokenised "
                "without ColBERT's markers. Pass data_collator=utils.ColBERTCollator(tokenize_fn=model.tokenize) "
                "to the trainer."
            )
        if role == "query" and model.do_query_expansion and input_ids.shape[1] != model.query_length:
            raise ValueError(
                f"The query column has {input_ids.shape[1]} tokens, not query_length={model.query_length}: the "
                "query expansion was dropped. Pass data_collator=utils.ColBERTCollator(tokenize_fn=model.tokenize)."
            )


class _Checked:
    """Mixin: validate the batch's ColBERT tokenisation, then compute the loss."""

    def forward(self, sentence_features, labels=None):
        sentence_features = list(sentence_features)
        # Under DDP the trainer hands the loss a wrapped model; the ColBERT is its .module.
        check_colbert_features(getattr(self.model, "module", self.model), sentence_features)
        return super().forward(sentence_features, labels)


class Contrastive(_Checked, MultiVectorMultipleNegativesRankingLoss):
    """Contrastive loss with in-batch negatives and any number of hard-negative columns.

    Input columns: (query, positive) or (query, positive, negative_1, ..., negative_n).
    For every query the positive must out-score every other document of the batch (all positives
    and negatives of all queries): cross-entropy over MaxSim scores divided by ``temperature``.

    Args:
        model: a :class:`workbench.models.ColBERT`.
        temperature: divides the scores before the softmax (default 1.0, as PyLate).
        gather_across_devices: under DDP, score every query against the documents of all processes.
        mini_batch_size: rows per forward pass while embedding (memory), None for one pass.

    Differences from PyLate: none in the maths (MaxSim, cross-entropy, temperature 1.0); the
    implementation is Sentence Transformers' ``MultiVectorMultipleNegativesRankingLoss``.
    """

    def __init__(
        self, model, temperature: float = 1.0, gather_across_devices: bool = False, mini_batch_size: int | None = None
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        super().__init__(
            model, scale=1.0 / temperature, gather_across_devices=gather_across_devices, mini_batch_size=mini_batch_size
        )
        self.temperature = temperature


class CachedContrastive(_Checked, CachedMultiVectorMultipleNegativesRankingLoss):
    """:class:`Contrastive` with GradCache: batches far larger than memory allows, same gradients.

    Embeds the batch in chunks of ``mini_batch_size`` without gradients, computes the loss and the
    gradient with respect to the embeddings, then re-embeds chunk by chunk with gradients.

    Args:
        model: a :class:`workbench.models.ColBERT`.
        temperature: as in :class:`Contrastive` (default 1.0).
        mini_batch_size: rows per forward pass (default 32, as PyLate).
        gather_across_devices: as in :class:`Contrastive`.
        show_progress_bar: a bar over the mini-batches.
    """

    def __init__(
        self,
        model,
        temperature: float = 1.0,
        mini_batch_size: int = 32,
        gather_across_devices: bool = False,
        show_progress_bar: bool = False,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        super().__init__(
            model,
            scale=1.0 / temperature,
            mini_batch_size=mini_batch_size,
            gather_across_devices=gather_across_devices,
            show_progress_bar=show_progress_bar,
        )
        self.temperature = temperature


class Distillation(_Checked, MultiVectorDistillKLDivLoss):
    """Knowledge distillation: KL divergence from the teacher's score distribution to the student's.

    Input columns: (query, document_1, ..., document_n) and a label holding the teacher's n scores
    per query (:class:`workbench.utils.KDProcessing` builds such rows from PyLate-style
    ``(query_id, document_ids, scores)`` datasets).

    Args:
        model: a :class:`workbench.models.ColBERT`.
        normalize_scores: divide each student score by its query's token count before the softmax
            (PyLate's ``normalize_scores``). Default False, unlike PyLate: with a cross-encoder
            teacher whose logits span about +-10, student scores squeezed into [-1, 1] cannot follow
            it, and on the docstring benchmark the normalised student got worse (nDCG@10 0.645 ->
            0.637) while the raw one learned (0.645 -> 0.696); see benchmarks/training.py.
        temperature: softmax temperature on both sides (default 1.0).
        mini_batch_size: rows per forward pass while embedding, None for one pass.
    """

    def __init__(
        self, model, normalize_scores: bool = False, temperature: float = 1.0, mini_batch_size: int | None = None
    ) -> None:
        super().__init__(
            model,
            similarity_fct=partial(colbert_kd_scores, length_normalize=normalize_scores),
            temperature=temperature,
            mini_batch_size=mini_batch_size,
        )
        self.normalize_scores = normalize_scores
