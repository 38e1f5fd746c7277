"""workbench.models.ColBERT: building from a base, loading checkpoints, encoding, saving."""

import json
import os
import string
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import MultiVectorEncoder

from workbench import models

from helpers import missing

QUERY = "what is the capital of france"
DOCUMENT = "paris is the capital of france"
LONG_TEXT = " ".join(f"word{i}, and more." for i in range(400))


def test_built_from_a_plain_base_with_pylates_defaults(minilm_colbert):
    model = minilm_colbert
    tokenizer = model.tokenizer
    for marker in ("[Q]", "[D]"):
        assert tokenizer.tokenize(marker) == [marker], f"{marker} must be one token of the vocabulary"
        assert tokenizer.convert_tokens_to_ids(marker) < model.transformer.model.get_input_embeddings().num_embeddings
    assert model.prompts == {"query": "[Q] ", "document": "[D] "}
    assert (model.query_length, model.document_length, model.get_embedding_dimension()) == (32, 180, 128)
    assert model.do_query_expansion and not model.attend_to_expansion_tokens
    assert model.skiplist_words == list(string.punctuation)


def test_query_is_marked_and_expanded_to_exactly_query_length(minilm_colbert):
    features = minilm_colbert.tokenize(["what is it"], is_query=True)
    tokens = minilm_colbert.tokenizer.convert_ids_to_tokens(features["input_ids"][0])
    assert tokens[:6] == ["[CLS]", "[Q]", "what", "is", "it", "[SEP]"]
    assert tokens[6:] == ["[MASK]"] * 26
    for text in ("what is it", LONG_TEXT):
        embedding = minilm_colbert.encode([text], is_query=True)[0]
        assert embedding.shape == (32, 128)


def test_documents_drop_punctuation_and_stop_at_document_length(minilm_colbert):
    text = "paris, is the capital of france!"
    pieces = minilm_colbert.tokenizer.tokenize(text)
    expected = 3 + sum(piece not in string.punctuation for piece in pieces)  # [CLS] [D] ... [SEP]
    assert minilm_colbert.encode([text], is_query=False)[0].shape == (expected, 128)
    long_embedding = minilm_colbert.encode([LONG_TEXT], is_query=False)[0]
    features = minilm_colbert.tokenize([LONG_TEXT], is_query=False)
    kept = [
        t
        for t in minilm_colbert.tokenizer.convert_ids_to_tokens(features["input_ids"][0])
        if t not in string.punctuation
    ]
    assert features["input_ids"].shape[1] == 180 and long_embedding.shape == (len(kept), 128)


def test_embeddings_are_unit_vectors_and_numpy_by_default(minilm_colbert):
    embeddings = minilm_colbert.encode([QUERY, DOCUMENT], is_query=False)
    assert all(isinstance(e, np.ndarray) for e in embeddings)
    norms = np.linalg.norm(np.concatenate(embeddings), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_sentence_transformers_entry_points_agree_with_is_query(minilm_colbert):
    np.testing.assert_array_equal(
        minilm_colbert.encode_query([QUERY], convert_to_numpy=True)[0], minilm_colbert.encode([QUERY], is_query=True)[0]
    )
    np.testing.assert_array_equal(
        minilm_colbert.encode_document([DOCUMENT], convert_to_numpy=True)[0],
        minilm_colbert.encode([DOCUMENT], is_query=False)[0],
    )


def test_custom_sizes(minilm_path):
    torch.manual_seed(0)
    model = models.ColBERT(
        minilm_path, embedding_size=64, query_length=16, document_length=12, do_query_expansion=True, device="cpu"
    )
    assert model.encode([QUERY], is_query=True)[0].shape == (16, 64)
    assert model.encode([LONG_TEXT], is_query=False)[0].shape[0] <= 12
    unexpanded = models.ColBERT(minilm_path, do_query_expansion=False, skiplist_words=[], device="cpu")
    assert unexpanded.encode(["short query"], is_query=True)[0].shape[0] == 5  # [CLS] [Q] short query [SEP]


def test_save_and_reload_is_lossless_and_loads_in_plain_multivector_encoder(minilm_colbert, tmp_path):
    texts = [DOCUMENT, "berlin, is the capital of germany."]
    before_docs = minilm_colbert.encode(texts, is_query=False)
    before_query = minilm_colbert.encode([QUERY], is_query=True)
    minilm_colbert.save_pretrained(str(tmp_path / "saved"))

    reloaded = models.ColBERT(str(tmp_path / "saved"), device="cpu")
    assert (reloaded.query_length, reloaded.document_length, reloaded.prompts) == (32, 180, minilm_colbert.prompts)
    for a, b in zip(before_docs, reloaded.encode(texts, is_query=False)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(before_query[0], reloaded.encode([QUERY], is_query=True)[0])

    plain = MultiVectorEncoder(str(tmp_path / "saved"), device="cpu")
    for a, b in zip(before_docs, plain.encode_document(texts, convert_to_numpy=True)):
        np.testing.assert_array_equal(a, b)


def test_pool_factor_pools_documents_and_keeps_the_first_token(minilm_colbert):
    text = " ".join(f"token{i}" for i in range(60))
    full = minilm_colbert.encode([text], is_query=False)[0]
    pooled = minilm_colbert.encode([text], is_query=False, pool_factor=2)[0]
    assert len(pooled) == 1 + (len(full) - 1) // 2
    np.testing.assert_allclose(pooled[0], full[0], atol=1e-6)
    assert minilm_colbert.encode([QUERY], is_query=True, pool_factor=2)[0].shape[0] == 32, "queries are never pooled"


def test_bad_calls_raise_before_encoding(minilm_colbert, answerai_path):
    with pytest.raises(ValueError, match="Text 1 is empty"):
        minilm_colbert.encode(["fine", "  "], is_query=False)
    with pytest.raises(ValueError, match="contradicts"):
        minilm_colbert.encode([QUERY], is_query=True, task="document")
    with pytest.raises(ValueError, match="pool_factor"):
        minilm_colbert.encode([DOCUMENT], is_query=False, pool_factor=0.5)
    with pytest.raises(ValueError, match="projects to 96 dimensions"):
        models.ColBERT(answerai_path, embedding_size=128, device="cpu")


def test_pylate_checkpoint_loads_as_saved(answerai):
    assert answerai.prompts == {"query": "[unused0]", "document": "[unused1]"}
    assert (answerai.query_length, answerai.document_length, answerai.get_embedding_dimension()) == (32, 300, 96)
    assert answerai.skiplist_words == list(string.punctuation)


def test_reference_score_of_answerai_colbert_small(answerai):
    # Reference from ../shared/README.md: 31.46 for this checkpoint (PyLate 1.6.0 gives 31.4620 here).
    query = answerai.encode([QUERY], is_query=True)[0]
    document = answerai.encode([DOCUMENT], is_query=False)[0]
    score = float((query @ document.T).max(axis=1).sum())
    assert score == pytest.approx(31.46, abs=0.01)


PARITY_TEXTS = {
    "queries": [QUERY, "who wrote the origin of species?", " ".join(["long query"] * 30)],
    "documents": [
        DOCUMENT,
        "Fahrenheit Scale-Daniel Gabriel Fahrenheit (1686–1736), a German physicist; he invented it in 1709!",
        LONG_TEXT,
        "<dbpedia:Oceanic_Airlines> an airline that appears in a TV show",
    ],
}


def test_embeddings_equal_pylates_for_the_same_checkpoint(answerai, answerai_path, tmp_path):
    pylate_python = os.environ.get("WORKBENCH_PYLATE_PYTHON")
    if not pylate_python or not Path(pylate_python).exists():
        missing("No PyLate environment: run `make pylate-env` (make test builds it) to compare against PyLate 1.6.0.")
    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps(PARITY_TEXTS))
    out = tmp_path / "pylate.npz"
    script = Path(__file__).with_name("pylate_reference.py")
    subprocess.run(
        [pylate_python, str(script), answerai_path, str(texts_path), str(out)],
        check=True,
        capture_output=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    reference = np.load(out)
    for side, is_query in (("queries", True), ("documents", False)):
        ours = answerai.encode(PARITY_TEXTS[side], is_query=is_query)
        for index, embedding in enumerate(ours):
            theirs = reference[f"{side}_{index}"]
            assert embedding.shape == theirs.shape, f"{side} {index}: token count differs from PyLate"
            np.testing.assert_allclose(embedding, theirs, atol=1e-4)


def test_the_embedded_default_model_already_ranks_matching_texts_first():
    # Query i is about document i; MaxSim of the seeded, untrained model (base encoder plus a random
    # projection, which roughly keeps dot products) must already see that.
    from workbench.scores import colbert_scores

    queries = ["what is the capital of france", "how do plants make energy from sunlight", "who painted the mona lisa"]
    documents = [
        "Paris is the capital and largest city of France.",
        "Photosynthesis converts light energy into chemical energy stored in sugars.",
        "The Mona Lisa is a portrait painted by Leonardo da Vinci.",
    ]
    model = models.load_model(seed=0)
    assert model.model_card_data.base_model == models.DEFAULT_BASE
    scores = colbert_scores(model.encode(queries, is_query=True), model.encode(documents, is_query=False)).numpy()
    assert scores.argmax(axis=1).tolist() == [0, 1, 2]
    again = models.load_model(seed=0).encode(documents[:1], is_query=False)[0]
    assert np.array_equal(again, model.encode(documents[:1], is_query=False)[0]), "same seed, same projection"


def test_encoding_with_a_progress_bar_gives_the_same_embeddings(minilm_colbert):
    texts = [f"document number {i} says {'word ' * (i % 7)}" for i in range(11)]
    plain = minilm_colbert.encode(texts, is_query=False, batch_size=2)
    with_bar = minilm_colbert.encode(texts, is_query=False, batch_size=2, show_progress_bar=True)
    assert len(with_bar) == len(plain) == 11
    for a, b in zip(plain, with_bar):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)


def test_batches_hold_texts_of_one_length_in_tokens_and_come_back_in_input_order(minilm_colbert, monkeypatch):
    # Characters and tokens disagree here: a spaced-out text has many short tokens, a long word few.
    texts = ["a b c d e f g h i j", "internationalization", "x y", "photosynthesis is", "p q r s t u v", "cat"] * 2
    alone = [minilm_colbert.encode([text], is_query=False)[0] for text in texts]
    lengths = [minilm_colbert.tokenize([text], is_query=False)["attention_mask"].shape[1] for text in texts]
    descending = sorted(lengths, reverse=True)
    expected_widths = [max(descending[start : start + 4]) for start in range(0, len(texts), 4)]
    widths, preprocess = [], minilm_colbert.preprocess

    def recording(batch, **kwargs):
        features = preprocess(batch, **kwargs)
        widths.append(features["attention_mask"].shape[1])
        return features

    monkeypatch.setattr(minilm_colbert, "preprocess", recording)
    batched = minilm_colbert.encode(iter(texts), is_query=False, batch_size=4)
    assert widths == expected_widths, "each batch pads only to the longest of texts of about its length"
    assert len(batched) == len(texts)
    for one, many in zip(alone, batched):
        assert one.shape == many.shape and np.allclose(one, many, atol=1e-5)


def test_token_length_order_is_by_tokens_then_input_order_in_any_chunking(minilm_colbert):
    texts = ["x y", "internationalization", "a b c d e f", "x y", "cat", "photosynthesis is a word"]
    counts = [len(minilm_colbert.tokenizer.tokenize(text)) for text in texts]
    expected = sorted(range(len(texts)), key=lambda i: (-counts[i], i))
    for chunk in (1, 2, 4, 100):
        assert models.token_length_order(minilm_colbert.tokenizer, texts, 64, chunk=chunk).tolist() == expected
    capped = models.token_length_order(minilm_colbert.tokenizer, texts, max_length=2)
    assert capped.tolist() == list(range(len(texts))), "beyond max_length every text is as long as the next"


def test_is_query_must_be_a_boolean(minilm_colbert):
    with pytest.raises(TypeError, match="is_query must be True or False"):
        minilm_colbert.encode(["a text"], is_query="False")


def test_a_truncated_config_is_named(minilm_path, tmp_path):
    import shutil

    broken = shutil.copytree(minilm_path, tmp_path / "broken")
    config = broken / "config.json"
    config.write_text(config.read_text()[:100])
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        models.ColBERT(model_name_or_path=str(broken), device="cpu")


def test_a_missing_model_says_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError) as raised:
        models.ColBERT(model_name_or_path="runs/none/models/contrastive", device="cpu")
    message = str(raised.value)
    assert str(tmp_path / "runs/none/models/contrastive") in message and "hub" in message


def test_loaders_leave_the_device_to_the_ecosystem_unless_told(minilm_path, tmp_path, monkeypatch):
    """None reaches Sentence Transformers, which takes CUDA, else MPS, else the CPU; the quick profile says CPU."""
    from sentence_transformers import CrossEncoder

    from workbench import runs, training_sets

    devices = []
    original = MultiVectorEncoder.__init__

    def recording(self, *args, device=None, **kwargs):
        devices.append(device)
        original(self, *args, device=device, **kwargs)

    monkeypatch.setattr(MultiVectorEncoder, "__init__", recording)
    models.load_model(minilm_path)
    monkeypatch.setenv("WORKBENCH_RUNS", str(tmp_path))
    runs.start_run().load_model(minilm_path)
    training_sets.load_teacher(minilm_path)
    assert devices == [None, None, None]
    recorded = []
    monkeypatch.setattr(CrossEncoder, "__init__", lambda self, *args, device=None, **kwargs: recorded.append(device))
    config = Path(minilm_path) / "config.json"
    cross_encoder = tmp_path / "cross"
    cross_encoder.mkdir()
    (cross_encoder / "config.json").write_text(
        json.dumps({**json.loads(config.read_text()), "architectures": ["BertForSequenceClassification"]})
    )
    training_sets.load_teacher(str(cross_encoder))
    assert recorded == [None]
    assert runs.settings("quick")["device"] == "cpu" and runs.settings("full")["device"] is None
