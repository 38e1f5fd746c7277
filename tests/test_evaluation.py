"""Evaluators, baselines, significance, fusion, TREC runs and model cards."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from test_data import write_beir

from workbench import baselines, cards, evaluation, losses, metrics, models, utils
from workbench.data import Collection

from helpers import reference_maxsim

CORPUS = {
    "d1": "paris is the capital and largest city of france",
    "d2": "photosynthesis converts light energy into chemical energy in plants",
    "d3": "leonardo da vinci painted the mona lisa in florence",
    "d4": "berlin is the capital of germany",
    "d5": "the second world war ended in 1945",
}
QUERIES = {
    "q1": "capital of france",
    "q2": "how plants use light",
    "q3": "who painted the mona lisa",
    "q4": "no judgement",
}
QRELS = {"q1": {"d1": 1, "d4": 0}, "q2": {"d2": 2}, "q3": {"d3": 1}, "q4": {"d5": 0}}


@pytest.fixture
def toy():
    return Collection("toy", dict(CORPUS), dict(QUERIES), {q: dict(j) for q, j in QRELS.items()})


def test_evaluate_collection_ranks_by_exact_maxsim(minilm_colbert, toy):
    table, run = evaluation.evaluate_collection(minilm_colbert, toy)
    assert set(run) == {"q1", "q2", "q3"}, "only queries with a positive judgement are evaluated"
    query = minilm_colbert.encode([QUERIES["q1"]], is_query=True)[0]
    documents = minilm_colbert.encode(list(CORPUS.values()), is_query=False)
    expected = {d: reference_maxsim(query, e) for d, e in zip(CORPUS, documents)}
    assert run["q1"] == pytest.approx(expected, abs=1e-3)
    assert table.index.tolist() == ["toy"] and 0 <= table.loc["toy", "MaxSim_ndcg@10"] <= 1
    voyager_table, voyager_run = evaluation.evaluate_collection(minilm_colbert, toy, index="voyager")
    assert voyager_run["q1"] == pytest.approx(expected, abs=2e-2)  # fp16 token store


def test_ir_evaluator_follows_the_sentence_transformers_contract(minilm_colbert, toy):
    evaluator = evaluation.PyLateInformationRetrievalEvaluator(
        queries=QUERIES, corpus=CORPUS, relevant_docs={"q1": ["d1"], "q2": ["d2"]}, name="pairs"
    )
    results = evaluator(minilm_colbert)
    assert evaluator.primary_metric == "pairs_MaxSim_ndcg@10" and evaluator.primary_metric in results
    assert results["pairs_MaxSim_ndcg@10"] == pytest.approx(evaluator.table.loc["pairs", "MaxSim_ndcg@10"])
    assert len(results) == 15


def test_nanobeir_evaluator_on_local_folders_gives_per_dataset_rows_and_the_mean(minilm_colbert, tmp_path):
    first = write_beir(
        tmp_path / "NanoOne",
        [{"_id": k, "text": v} for k, v in CORPUS.items()],
        [{"_id": k, "text": v} for k, v in QUERIES.items()],
        "q1\td1\t1\nq2\td2\t1\n",
    )
    second = write_beir(
        tmp_path / "NanoTwo",
        [{"_id": k, "text": v} for k, v in CORPUS.items()],
        [{"_id": k, "text": v} for k, v in QUERIES.items()],
        "q3\td3\t1\n",
    )
    evaluator = evaluation.NanoBEIREvaluator(dataset_names=[str(first), str(second)])
    results = evaluator(minilm_colbert)
    assert evaluator.table.index.tolist() == ["NanoOne", "NanoTwo", "NanoBEIR_mean"]
    assert evaluator.table.shape[1] == 15
    mean = (results["NanoOne_MaxSim_ndcg@10"] + results["NanoTwo_MaxSim_ndcg@10"]) / 2
    assert results[evaluator.primary_metric] == pytest.approx(mean)
    assert evaluator.primary_metric == "NanoBEIR_mean_MaxSim_ndcg@10"


def test_baselines_rank_the_obvious_document_first(toy, minilm_path):
    bm25 = baselines.bm25_run(toy)
    assert max(bm25["q1"], key=bm25["q1"].get) == "d1" and max(bm25["q3"], key=bm25["q3"].get) == "d3"
    dense = baselines.dense_run(SentenceTransformer(minilm_path, device="cpu"), toy)
    assert [max(dense[q], key=dense[q].get) for q in ("q1", "q2", "q3")] == ["d1", "d2", "d3"]


def test_compare_marks_significance_and_fusion_and_trec_round_trip(tmp_path):
    qrels = {f"q{i}": {"good": 1} for i in range(30)}
    strong = {f"q{i}": {"good": 2.0, "bad": 1.0} for i in range(30)}
    # weak ranks the good document second for 25 queries and first for 5
    weak = {f"q{i}": ({"bad": 2.0, "good": 1.0} if i < 25 else {"good": 2.0, "bad": 1.0}) for i in range(30)}
    table = metrics.compare(qrels, {"strong": strong, "weak": weak}, metrics=["mrr@10"])
    assert table.loc["strong", "mrr@10"] == pytest.approx(1.0)
    assert table.loc["weak", "mrr@10"] == pytest.approx((25 * 0.5 + 5 * 1.0) / 30)
    assert table.loc["weak", "significant vs strong (p<0.05)"] == "mrr@10"
    fused = metrics.fuse([strong, weak], method="rrf")
    assert fused["q0"]["good"] == pytest.approx(fused["q0"]["bad"])  # ranks 1+2 against 2+1
    metrics.save_run(strong, tmp_path / "run.trec", name="strong")
    first_line = (tmp_path / "run.trec").read_text().splitlines()[0].split()
    assert first_line[1] == "Q0" and first_line[3] == "1" and first_line[5] == "strong"
    assert metrics.load_run(tmp_path / "run.trec") == strong


def test_card_of_a_trained_model_carries_the_evaluators_numbers(minilm_path, tmp_path, toy):
    torch.manual_seed(0)
    model = models.ColBERT(model_name_or_path=minilm_path, device="cpu")
    rows = [
        {"query": QUERIES[q], "positive": CORPUS[next(iter(QRELS[q]))], "negative": CORPUS["d5"]}
        for q in ("q1", "q2", "q3")
    ] * 4
    evaluator = evaluation.ColBERTInformationRetrievalEvaluator(toy)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_train_batch_size=4,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        eval_strategy="steps",
        eval_steps=2,
        logging_steps=1,
    )
    SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(rows),
        loss=losses.Contrastive(model=model),
        evaluator=evaluator,
        data_collator=utils.ColBERTCollator(tokenize_fn=model.tokenize),
    ).train()
    returned = evaluator(model)
    model.save_pretrained(str(tmp_path / "trained"))
    card = (tmp_path / "trained" / "README.md").read_text()
    matter = cards.front_matter(card)
    (result,) = matter["model-index"][0]["results"]
    assert result["dataset"]["name"] == "toy"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {
        key.removeprefix("toy_"): value for key, value in returned.items()
    }
    assert "generated_from_trainer" in matter["tags"] and matter["pipeline_tag"] == "sentence-similarity"
    for section in (
        "## Model details",
        "### Architecture",
        "## Usage",
        "## Evaluation",
        "### Training dataset",
        "### Non-default hyperparameters",
        "### Training logs",
        "### Framework versions",
        "## Citation",
    ):
        assert section in card, section
    assert f"| **MaxSim_ndcg@10** | **{returned['toy_MaxSim_ndcg@10']:.4f}** |" in card


def test_card_renders_for_a_converted_checkpoint_without_training(answerai):
    card = cards.render_card(answerai, model_id="answerai-colbert-small-v1")
    matter = cards.front_matter(card)
    assert "model-index" not in matter and "generated_from_trainer" not in matter["tags"]
    assert "- **Document length:** 300 tokens" in card and "- **Output dimensionality:** 96 per token" in card
    assert "No training was recorded" in card and "No evaluation was recorded" in card


def test_evaluate_models_lines_up_colberts_and_bm25_per_dataset(minilm_colbert, toy):
    other = Collection("toy2", dict(CORPUS), {"q1": "capital of germany"}, {"q1": {"d4": 1}})
    results = evaluation.evaluate_models({"BM25": evaluation.BM25, "colbert": minilm_colbert}, [toy, other])
    assert results[["dataset", "model"]].values.tolist() == [
        ["toy", "BM25"],
        ["toy", "colbert"],
        ["toy2", "BM25"],
        ["toy2", "colbert"],
    ]
    bm25 = metrics.evaluate(toy.qrels, baselines.bm25_run(toy), prefix="")
    assert results.iloc[0]["ndcg@10"] == pytest.approx(bm25["ndcg@10"].iloc[0])
    exact, _ = evaluation.evaluate_collection(minilm_colbert, toy)
    assert results.iloc[1]["ndcg@10"] == pytest.approx(exact["MaxSim_ndcg@10"].iloc[0])

    card_table = evaluation.model_table(results, "colbert")
    assert list(card_table.index) == ["toy", "toy2", "mean"]
    assert card_table.loc["mean", "MaxSim_ndcg@10"] == pytest.approx(card_table["MaxSim_ndcg@10"][:2].mean())
    assert "**MaxSim_ndcg@10**" in cards.render_card(minilm_colbert, evaluations={"retrieval": card_table})
    with pytest.raises(ValueError, match="No results for model 'absent'"):
        evaluation.model_table(results, "absent")


class WordModel:
    """A stand-in ColBERT: one token per word, one-hot over a vocabulary, so MaxSim counts shared words."""

    def __init__(self, vocabulary):
        self.column = {word: i for i, word in enumerate(vocabulary)}

    def encode(self, texts, is_query=True, **_):
        embeddings = []
        for text in texts:
            words = text.split()
            tokens = np.zeros((len(words), len(self.column)), np.float32)
            for row, word in enumerate(words):
                tokens[row, self.column[word]] = 1
            embeddings.append(tokens)
        return embeddings


def test_judged_queries_without_text_are_left_out_of_a_collections_metrics():
    corpus = {"d1": "paris france", "d2": "plants grow", "d3": "green plants here", "d4": "berlin"}
    queries = {"q1": "paris", "q2": "green plants"}
    # q1 finds d1 first (1 shared word against 0); q2 finds d3 (2 words) before its relevant d2 (1 word).
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, **{f"gone{i}": {"d1": 1} for i in range(6)}}  # six without text
    collection = Collection("subset", corpus, queries, qrels)
    model = WordModel(sorted({w for text in [*corpus.values(), *queries.values()] for w in text.split()}))
    expected_ndcg = (1 + 1 / math.log2(3)) / 2  # BEIR's mean over q1 and q2; 0.204 if the six counted as 0
    with pytest.warns(UserWarning, match="6 judged queries have no text"):
        table, run = evaluation.evaluate_collection(model, collection)
    assert set(run) == {"q1", "q2"}
    assert table.loc["subset", "MaxSim_ndcg@10"] == pytest.approx(expected_ndcg)
    assert table.loc["subset", "MaxSim_mrr@10"] == pytest.approx((1 + 1 / 2) / 2)
    with pytest.warns(UserWarning, match="6 judged queries have no text"):
        results = evaluation.evaluate_models({"words": model}, [collection])
    assert results.loc[0, "ndcg@10"] == pytest.approx(expected_ndcg)
