"""Losses, collator, evaluator and trainer glue; training-set building; multi-process training."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from sentence_transformers import CrossEncoder, SentenceTransformerTrainer, SentenceTransformerTrainingArguments

from workbench import data, evaluation, losses, models, training, training_sets, utils
from workbench.data import Collection

from helpers import reference_maxsim

ROWS = [
    {
        "query": "what is the capital of france",
        "positive": "paris is the capital of france",
        "negative": "berlin is the capital of germany",
    },
    {
        "query": "how do plants make energy",
        "positive": "photosynthesis turns light into sugar",
        "negative": "engines burn fuel to make energy",
    },
    {
        "query": "who painted the mona lisa",
        "positive": "leonardo da vinci painted the mona lisa",
        "negative": "picasso painted guernica",
    },
    {
        "query": "when did world war two end",
        "positive": "the second world war ended in 1945",
        "negative": "the first world war ended in 1918",
    },
] * 4


def fresh_colbert(minilm_path, seed=0):
    torch.manual_seed(seed)
    return models.ColBERT(model_name_or_path=minilm_path, device="cpu")


def training_args(output_dir, **overrides):
    settings = dict(
        output_dir=str(output_dir),
        num_train_epochs=1,
        per_device_train_batch_size=4,
        report_to=[],
        logging_steps=1,
        seed=0,
        data_seed=0,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    return SentenceTransformerTrainingArguments(**(settings | overrides))


def test_seed_readme_training_example_runs_with_workbench(minilm_path, tmp_path):
    model = fresh_colbert(minilm_path)
    dataset = Dataset.from_list(ROWS)
    train_dataset, eval_dataset = dataset.train_test_split(test_size=0.25, seed=21).values()
    train_loss = losses.Contrastive(model=model)
    args = training_args(tmp_path / "colbert-training", eval_strategy="steps", eval_steps=0.5, learning_rate=3e-5)
    dev_evaluator = evaluation.ColBERTTripletEvaluator(
        anchors=eval_dataset["query"], positives=eval_dataset["positive"], negatives=eval_dataset["negative"]
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        loss=train_loss,
        evaluator=dev_evaluator,
        data_collator=utils.ColBERTCollator(tokenize_fn=model.tokenize),
    )
    trainer.train()
    history = trainer.state.log_history
    assert all(math.isfinite(entry["loss"]) for entry in history if "loss" in entry)
    assert [entry for entry in history if "eval_accuracy" in entry], "the evaluator ran during training"
    # its accuracy is the share of triplets MaxSim orders right, recomputed here with the float64 loop
    queries, positives, negatives = embeddings_for(model, list(eval_dataset))
    expected = np.mean(
        [reference_maxsim(q, p) > reference_maxsim(q, n) for q, p, n in zip(queries, positives, negatives, strict=True)]
    )
    assert dev_evaluator(model)["accuracy"] == pytest.approx(expected)
    swapped = evaluation.ColBERTTripletEvaluator(
        anchors=eval_dataset["query"], positives=eval_dataset["negative"], negatives=eval_dataset["positive"]
    )
    assert swapped(model)["accuracy"] == pytest.approx(1 - expected), "no constant answer passes both"
    model.save_pretrained(str(tmp_path / "custom-colbert-model"))
    reloaded = models.ColBERT(model_name_or_path=str(tmp_path / "custom-colbert-model"), device="cpu")
    np.testing.assert_allclose(
        reloaded.encode(["paris"], is_query=True)[0], model.encode(["paris"], is_query=True)[0], atol=1e-6
    )


def test_training_without_colberts_collator_is_refused(minilm_colbert, tmp_path):
    trainer = SentenceTransformerTrainer(
        model=minilm_colbert,
        args=training_args(tmp_path),
        train_dataset=Dataset.from_list(ROWS),
        loss=losses.Contrastive(model=minilm_colbert),
    )
    with pytest.raises(ValueError, match=r"not marked as a query.*ColBERTCollator"):
        trainer.train()


def test_collator_marks_expands_and_stamps_tasks(minilm_colbert):
    collator = utils.ColBERTCollator(tokenize_fn=minilm_colbert.tokenize)
    batch = collator([{"query": "short", "positive": "a document", "scores": [1.0, 0.5]}] * 2)
    tokenizer = minilm_colbert.tokenizer
    assert tokenizer.convert_ids_to_tokens(batch["query_input_ids"][0])[:2] == ["[CLS]", "[Q]"]
    assert batch["query_input_ids"].shape[1] == 32
    assert tokenizer.convert_ids_to_tokens(batch["positive_input_ids"][0])[:2] == ["[CLS]", "[D]"]
    assert (batch["query_task"], batch["positive_task"]) == ("query", "document")
    assert batch["label"].tolist() == [[1.0, 0.5], [1.0, 0.5]]


def embeddings_for(model, rows):
    queries = model.encode([r["query"] for r in rows], is_query=True)
    positives = model.encode([r["positive"] for r in rows], is_query=False)
    negatives = model.encode([r["negative"] for r in rows], is_query=False)
    return queries, positives, negatives


def loss_value(model, loss, rows, labels=None):
    batch = utils.ColBERTCollator(tokenize_fn=model.tokenize)(rows)
    columns = [c for c in rows[0] if c not in ("label", "scores")]
    features = [
        {key.removeprefix(f"{c}_"): value for key, value in batch.items() if key.startswith(f"{c}_")} for c in columns
    ]
    model.eval()
    with torch.no_grad():
        return float(loss(features, batch.get("label") if labels is None else labels))


def test_contrastive_is_cross_entropy_over_in_batch_and_hard_negatives(minilm_colbert):
    rows = ROWS[:4]
    queries, positives, negatives = embeddings_for(minilm_colbert, rows)
    documents = positives + negatives
    scores = np.array([[reference_maxsim(q, d) for d in documents] for q in queries]) / 0.5
    expected = np.mean([np.log(np.exp(row).sum()) - row[i] for i, row in enumerate(scores)])
    value = loss_value(minilm_colbert, losses.Contrastive(model=minilm_colbert, temperature=0.5), rows)
    assert value == pytest.approx(expected, abs=1e-3)
    cached = loss_value(
        minilm_colbert, losses.CachedContrastive(model=minilm_colbert, temperature=0.5, mini_batch_size=2), rows
    )
    assert cached == pytest.approx(expected, abs=1e-3)


def test_distillation_is_kl_to_the_teacher_with_raw_or_normalised_student_scores(minilm_colbert):
    rows = [{"query": r["query"], "positive": r["positive"], "negative": r["negative"]} for r in ROWS[:3]]
    teacher = torch.tensor([[3.0, -1.0], [2.0, 0.5], [0.0, 1.0]])
    queries, positives, negatives = embeddings_for(minilm_colbert, rows)
    student = np.array(
        [
            [reference_maxsim(q, p) / len(q), reference_maxsim(q, n) / len(q)]
            for q, p, n in zip(queries, positives, negatives)
        ]
    )
    target = torch.softmax(teacher, dim=1).numpy()
    log_student = student - np.log(np.exp(student).sum(axis=1, keepdims=True))
    expected = np.mean(np.sum(target * (np.log(target) - log_student), axis=1))
    value = loss_value(
        minilm_colbert, losses.Distillation(model=minilm_colbert, normalize_scores=True), rows, labels=teacher
    )
    assert value == pytest.approx(expected, abs=1e-4)
    raw = np.array([[reference_maxsim(q, p), reference_maxsim(q, n)] for q, p, n in zip(queries, positives, negatives)])
    log_raw = raw - np.log(np.exp(raw).sum(axis=1, keepdims=True))
    expected_raw = np.mean(np.sum(target * (np.log(target) - log_raw), axis=1))
    value_raw = loss_value(minilm_colbert, losses.Distillation(model=minilm_colbert), rows, labels=teacher)
    assert value_raw == pytest.approx(expected_raw, abs=1e-3), "the default scores the student with raw MaxSim"


def test_kd_processing_joins_ids_with_texts():
    rows = {"query_id": ["q1"], "document_ids": [["d2", "d1", "d3"]], "scores": [[0.9, 0.1, 0.3]]}
    queries = Dataset.from_dict({"query_id": ["q1"], "text": ["the query"]})
    documents = {"d1": "one", "d2": "two", "d3": "three"}
    joined = utils.KDProcessing(queries=queries, documents=documents, n_ways=2).transform(rows)
    assert joined == {"query": ["the query"], "document_0": ["two"], "document_1": ["one"], "scores": [[0.9, 0.1]]}
    with pytest.raises(ValueError, match="needs columns"):
        utils.KDProcessing(queries=Dataset.from_dict({"id": ["q1"], "text": ["x"]}), documents=documents)
    dataset = utils.KDProcessing(queries=queries, documents=documents).dataset(Dataset.from_dict(rows))
    assert dataset.column_names == ["query", "document_0", "document_1", "document_2", "scores"]
    assert dataset[0] == {
        "query": "the query",
        "document_0": "two",
        "document_1": "one",
        "document_2": "three",
        "scores": [0.9, 0.1, 0.3],
    }


def test_the_same_seed_gives_the_same_loss_curve(minilm_path, tmp_path):
    curves = []
    for run in range(2):
        model = fresh_colbert(minilm_path)
        trainer = SentenceTransformerTrainer(
            model=model,
            args=training_args(tmp_path / f"run{run}", max_steps=3),
            train_dataset=Dataset.from_list(ROWS),
            loss=losses.Contrastive(model=model),
            data_collator=utils.ColBERTCollator(tokenize_fn=model.tokenize),
        )
        trainer.train()
        curves.append([entry["loss"] for entry in trainer.state.log_history if "loss" in entry])
    assert len(curves[0]) == 3 and curves[0] == curves[1]


def test_docstring_collection_is_real_split_by_module_and_consistent():
    train, test = training_sets.docstring_collection()
    assert len(train.queries) >= 300 and len(test.queries) >= 60

    def modules(collection):
        return {
            max((m for m in training_sets.DOCSTRING_MODULES if i.startswith(m + ".")), key=len)
            for i in collection.corpus
        }

    assert modules(train) and modules(test) and not modules(train) & modules(test), "a module feeds both splits"
    for collection in (train, test):
        for query_id, judged in collection.qrels.items():
            (document_id,) = judged
            assert document_id in collection.corpus and query_id in collection.queries
            assert collection.queries[query_id] not in collection.corpus[document_id], (
                "the query text must not be in its document"
            )
    assert not set(train.corpus) & set(test.corpus)


def test_bm25_negatives_are_never_relevant(tmp_path):
    train, _ = training_sets.docstring_collection()
    triplets = training_sets.bm25_negatives(train, n_negatives=2, seed=1)
    assert training_sets.triplet_columns(triplets) == ["query", "positive", "negative_1", "negative_2"]
    for row in triplets.select(range(50)):
        assert row["positive_id"] in train.qrels[row["query_id"]]
        assert not set(row["negative_ids"]) & set(train.qrels[row["query_id"]])
        assert row["negative_1"] == train.corpus[row["negative_ids"][0]]
    again = training_sets.bm25_negatives(train, n_negatives=2, seed=1)
    assert again["negative_ids"] == triplets["negative_ids"], "mining is reproducible"


def test_model_negatives_come_from_the_models_ranking(minilm_colbert):
    train, _ = training_sets.docstring_collection()
    small = Collection(
        "small",
        {d: train.corpus[d] for d in list(train.corpus)[:40]},
        {q: train.queries[q] for q in list(train.queries)[:40]},
        {q: train.qrels[q] for q in list(train.queries)[:40]},
    )
    triplets = training_sets.model_negatives(small, minilm_colbert, n_negatives=1, depth=3)
    documents = list(small.corpus)
    embeddings = minilm_colbert.encode([small.corpus[d] for d in documents], is_query=False)
    for row in triplets.select(range(5)):
        query = minilm_colbert.encode([row["query"]], is_query=True)[0]
        ranked = sorted(documents, key=lambda d: -reference_maxsim(query, embeddings[documents.index(d)]))
        top_non_relevant = [d for d in ranked if d not in small.qrels[row["query_id"]]][:3]
        assert row["negative_ids"][0] in top_non_relevant


def test_pseudo_queries_are_titles_or_spans_of_their_document():
    corpus = {"a": " ".join(f"w{i}" for i in range(40)), "b": "too short"}
    queries, qrels = training_sets.pseudo_queries(corpus, strategy="crop", seed=3)
    assert list(queries) == ["pq:a"] and qrels == {"pq:a": {"a": 1}}
    assert queries["pq:a"] in corpus["a"] and 5 <= len(queries["pq:a"].split()) <= 12
    titled, _ = training_sets.pseudo_queries(corpus, titles={"b": "B title"}, strategy="title")
    assert titled == {"pq:b": "B title"}


def test_teacher_scores_keep_the_positive_first(minilm_path, minilm_colbert):
    train, _ = training_sets.docstring_collection()
    triplets = training_sets.bm25_negatives(train, n_negatives=2).select(range(4))
    teacher = CrossEncoder(minilm_path, num_labels=1, device="cpu")  # untrained head: bookkeeping is what is tested
    rows, queries, documents = training_sets.teacher_scores(triplets, teacher)
    texts = dict(zip(documents["document_id"], documents["text"]))
    for row, triplet in zip(rows, triplets):
        assert row["document_ids"] == [triplet["positive_id"], *triplet["negative_ids"]]
        pairs = [(triplet["query"], texts[d]) for d in row["document_ids"]]
        direct = teacher.predict(pairs, activation_fn=torch.nn.Identity())
        np.testing.assert_allclose(row["scores"], direct, atol=1e-5)
    colbert_rows, _, _ = training_sets.teacher_scores(triplets, minilm_colbert)
    first = colbert_rows[0]
    q = minilm_colbert.encode([triplets[0]["query"]], is_query=True)[0]
    d = minilm_colbert.encode([texts[first["document_ids"][1]]], is_query=False)[0]
    assert first["scores"][1] == pytest.approx(reference_maxsim(q, d), abs=1e-3)


def test_teacher_scores_belong_to_their_documents_with_ten_or_more_negatives(minilm_path):
    """negative_10 sorts before negative_2 as a string: the columns must be read in numeric order."""
    train, _ = training_sets.docstring_collection()
    triplets = training_sets.bm25_negatives(train, n_negatives=11).select(range(2))
    assert training_sets.triplet_columns(triplets)[-2:] == ["negative_10", "negative_11"]
    teacher = CrossEncoder(minilm_path, num_labels=1, device="cpu")
    rows, _, documents = training_sets.teacher_scores(triplets, teacher)
    assert dict(zip(documents["document_id"], documents["text"])) == {
        d: train.corpus[d] for row in rows for d in row["document_ids"]
    }
    for row, triplet in zip(rows, triplets):
        direct = teacher.predict(
            [(triplet["query"], train.corpus[d]) for d in row["document_ids"]], activation_fn=torch.nn.Identity()
        )
        np.testing.assert_allclose(row["scores"], direct, atol=1e-5)


def test_two_process_training_under_torchrun(tmp_path):
    script = Path(__file__).with_name("ddp_train.py")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29533",
            str(script),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(r["world_size"] == 2 and r["finite"] and len(r["losses"]) >= 1 for r in reports)
    reloaded = models.ColBERT(model_name_or_path=str(tmp_path / "model"), device="cpu")
    assert reloaded.encode(["a query"], is_query=True)[0].shape == (32, 128)


def test_train_returns_the_loss_table_and_is_seeded(minilm_path, tmp_path):
    histories = []
    for attempt in range(2):
        model = fresh_colbert(minilm_path)
        histories.append(
            training.train(
                model,
                Dataset.from_list(ROWS),
                losses.Contrastive(model=model),
                steps=3,
                batch_size=2,
                logging_steps=1,
                output_dir=str(tmp_path / f"r{attempt}"),
            )
        )
    history = histories[0]
    assert history["step"].tolist() == [1, 2, 3]
    assert {"loss", "learning_rate"} <= set(history.columns) and (history["loss"] > 0).all()
    assert history.equals(histories[1])
    with pytest.raises(ValueError, match="steps must be at least 1"):
        training.train(
            model, Dataset.from_list(ROWS), losses.Contrastive(model=model), steps=0, output_dir=str(tmp_path)
        )


COLOURS = "red blue green yellow purple orange black white pink brown gray silver gold violet cyan maroon".split()
ANIMALS = "fox owl cat dog bear wolf frog duck goat lion mouse horse tiger eagle shark snake".split()


@pytest.fixture
def tiny_colbert(minilm_path, tmp_path):
    """A seeded, randomly initialised 2-layer BERT of width 64 with MiniLM's tokenizer: it knows no word yet."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=64,
        )
    ).save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    torch.manual_seed(0)
    return models.ColBERT(
        model_name_or_path=str(tmp_path / "tiny"), embedding_size=16, query_length=8, document_length=16, device="cpu"
    )


def test_contrastive_training_learns_a_toy_task(tiny_colbert, tmp_path):
    """Colour -> animal pairs drawn at random: only training can teach them, so loss and accuracy must move."""
    model = tiny_colbert
    animal = dict(zip(COLOURS, np.random.default_rng(0).permutation(ANIMALS), strict=True))
    rows = [
        {"query": colour, "positive": animal[colour], "negative": animal[COLOURS[(i + 1) % len(COLOURS)]]}
        for i, colour in enumerate(COLOURS)
    ]
    # accuracy against the animals of the next five colours (80 triplets), not just the hard negative trained on;
    # five, not all fifteen: each evaluation costs seconds on a busy 2-core machine
    triplets = [
        (colour, animal[colour], animal[COLOURS[(i + j) % len(COLOURS)]])
        for i, colour in enumerate(COLOURS)
        for j in range(1, 6)
    ]
    evaluator = evaluation.ColBERTTripletEvaluator(*map(list, zip(*triplets, strict=True)))
    loss = losses.Contrastive(model=model)
    loss_before, accuracy_before = loss_value(model, loss, rows), evaluator(model)["accuracy"]
    history = training.train(
        model,
        Dataset.from_list(rows),
        loss,
        steps=20,
        batch_size=16,
        learning_rate=3e-3,
        logging_steps=5,
        evaluator=evaluator,
        eval_steps=20,
        output_dir=str(tmp_path / "out"),
    )
    loss_after, accuracy_after = loss_value(model, loss, rows), evaluator(model)["accuracy"]
    # Margins, not digits: seeds 0-2 give about 3.5 -> 2.7 and 0.54-0.6 -> 0.91-1.0 on this machine.
    assert loss_after < loss_before - 0.4, (loss_before, loss_after)
    assert accuracy_after > accuracy_before + 0.25, (accuracy_before, accuracy_after)
    assert history["eval_accuracy"].iloc[-1] == pytest.approx(accuracy_after), "the evaluator saw the final model"


def test_train_test_keeps_test_queries_apart_and_searches_every_document():
    train, test = training_sets.train_test("docstrings")
    assert not set(train.queries) & set(test.queries)
    assert set(train.corpus) < set(test.corpus), "training documents are the test queries' distractors"
    assert all(test.titles[d] for d in test.corpus)


def test_train_test_splits_other_data_by_query_id_and_crops_come_from_relevant_documents(tmp_path):
    corpus = {f"d{i}": f"document {i} talks about topic number {i} and nothing else at all today" for i in range(40)}
    queries = {f"q{i}": f"topic {i}" for i in range(40)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(40)}
    data.save_beir(Collection("tiny", corpus, queries, qrels), tmp_path / "tiny")
    train, test = training_sets.train_test(str(tmp_path / "tiny"))
    again_train, again_test = training_sets.train_test(str(tmp_path / "tiny"))
    assert set(test.queries) == set(again_test.queries), "the split does not move between runs"
    assert set(train.queries) | set(test.queries) == set(queries) and not set(train.queries) & set(test.queries)
    assert 0 < len(test.queries) < 20 and train.corpus == test.corpus == corpus
    crops = training_sets.cropped_collection(test, seed=1)
    assert crops.name == "tiny-crops" and crops.corpus == corpus
    for query_id, text in crops.queries.items():
        (relevant,) = crops.qrels[query_id]
        assert text in corpus[relevant] and relevant in {d for q in test.qrels for d in test.qrels[q]}
    with pytest.raises(ValueError, match="test_fraction"):
        training_sets.train_test("docstrings", test_fraction=1.5)


def test_load_teacher_tells_a_cross_encoder_from_a_colbert(minilm_path, minilm_colbert, tmp_path):
    CrossEncoder(minilm_path, num_labels=1, device="cpu").save(str(tmp_path / "cross"))
    minilm_colbert.save(str(tmp_path / "colbert"))
    assert isinstance(training_sets.load_teacher(str(tmp_path / "cross")), CrossEncoder)
    assert isinstance(training_sets.load_teacher(str(tmp_path / "colbert")), models.ColBERT)


def test_the_docstring_set_is_the_same_in_a_notebook_kernel_and_a_script():
    import nbformat
    from nbclient import NotebookClient

    source = (
        "import json\nfrom workbench import training_sets\n"
        "print(json.dumps([sorted(c.corpus) for c in training_sets.docstring_collection()]))"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    NotebookClient(notebook, kernel_name="python3", extra_arguments=["--log-level=ERROR"]).execute()
    in_kernel = json.loads(notebook.cells[0].outputs[0].text)
    assert in_kernel == [sorted(c.corpus) for c in training_sets.docstring_collection()]
