"""Token-level MaxSim, its pictures and the search widget."""

import matplotlib
import numpy as np
import pandas as pd
import pytest

from workbench import explain, indexes, plots, widgets

from helpers import reference_maxsim

matplotlib.use("Agg")

QUERY = "capital of france"
DOCUMENT = "Paris, the capital of France, lies on the Seine!"


def test_token_matches_are_the_scored_embeddings_with_their_tokens(minilm_colbert):
    matches = explain.token_matches(minilm_colbert, QUERY, DOCUMENT)
    query = minilm_colbert.encode([QUERY], is_query=True)[0]
    document = minilm_colbert.encode([DOCUMENT], is_query=False)[0]
    assert matches.similarities.shape == (len(query), len(document))
    assert len(matches.query_tokens) == minilm_colbert.query_length == len(query)
    assert matches.query_tokens[:2] == ["[CLS]", "[Q]"] and matches.query_tokens[-1] == "[MASK]"
    assert matches.document_tokens[:2] == ["[CLS]", "[D]"]
    assert "," not in matches.document_tokens and "!" not in matches.document_tokens, "skiplisted punctuation"
    assert matches.score == pytest.approx(reference_maxsim(query, document), rel=1e-5)
    assert matches.contributions.sum() == pytest.approx(matches.score)


def test_each_query_word_finds_itself_in_the_document(minilm_colbert):
    table = explain.token_matches(minilm_colbert, QUERY, DOCUMENT).table()
    words = table[table["query token"].isin(["capital", "france"])]
    assert words["matched document token"].tolist() == ["capital", "france"]
    # each row is its query token's best dot product, recomputed from the encoded texts in float64
    query = minilm_colbert.encode([QUERY], is_query=True)[0].astype(np.float64)
    document = minilm_colbert.encode([DOCUMENT], is_query=False)[0].astype(np.float64)
    similarities = query @ document.T
    np.testing.assert_allclose(table["similarity"], similarities.max(axis=1), atol=1e-5)
    # the matched position holds that best value (compared as values: near-ties may pick either token)
    chosen = similarities[np.arange(len(query)), table["position"].to_numpy()]
    np.testing.assert_allclose(chosen, similarities.max(axis=1), atol=1e-5)


def test_heatmap_draws_the_similarities_and_outlines_each_rows_match(minilm_colbert):
    matches = explain.token_matches(minilm_colbert, QUERY, DOCUMENT)
    figure = plots.maxsim_heatmap(matches)
    axes = figure.axes[0]
    assert np.allclose(axes.images[0].get_array(), matches.similarities)
    outlined = sorted((int(p.get_y() + 0.5), int(p.get_x() + 0.5)) for p in axes.patches)
    assert outlined == list(enumerate(matches.best.tolist()))
    assert [t.get_text() for t in axes.get_yticklabels()] == matches.query_tokens


def test_loss_curve_has_one_line_per_history():
    histories = {
        "a": pd.DataFrame({"step": [1, 2, 3], "loss": [3.0, 2.0, 1.5]}),
        "b": pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.5]}),
    }
    axes = plots.loss_curve(histories).axes[0]
    assert [line.get_label() for line in axes.get_lines()] == ["a", "b"]
    assert axes.get_lines()[0].get_ydata().tolist() == [3.0, 2.0, 1.5]
    with pytest.raises(ValueError, match="'step' and 'loss'"):
        plots.loss_curve({"c": pd.DataFrame({"loss": [1.0]})})


def test_metric_bars_put_each_value_in_its_group():
    table = pd.DataFrame(
        {"dataset": ["x", "x", "y", "y"], "model": ["m1", "m2", "m1", "m2"], "ndcg@10": [0.1, 0.2, 0.3, 0.4]}
    )
    axes = plots.metric_bars(table, "ndcg@10").axes[0]
    heights = sorted(round(bar.get_height(), 6) for bar in axes.patches)
    assert heights == [0.1, 0.2, 0.3, 0.4]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["x", "y"]
    with pytest.raises(ValueError, match="no 'mrr@10' column"):
        plots.metric_bars(table, "mrr@10")


def test_recall_latency_plots_the_sweep_in_latency_order():
    sweep = pd.DataFrame(
        {"k_token": [8, 1], "n_full_scores": [256, 32], "ms_per_query": [5.0, 1.0], "recall@10": [1.0, 0.7]}
    )
    axes = plots.recall_latency(sweep, exact_ms_per_query=9.0).axes[0]
    line = axes.get_lines()[0]
    assert line.get_xdata().tolist() == [1.0, 5.0] and line.get_ydata().tolist() == [0.7, 1.0]
    assert [t.get_text() for t in axes.texts] == ["1/32", "8/256"]


@pytest.fixture
def demo(minilm_colbert, tmp_path):
    documents = {
        "paris": DOCUMENT,
        "plants": "Photosynthesis turns sunlight into sugar in green plants.",
        "mona": "The Mona Lisa was painted by Leonardo da Vinci.",
    }
    index = indexes.Exact(index_folder=tmp_path, index_name="demo", override=True)
    index.add_documents(list(documents), minilm_colbert.encode(list(documents.values()), is_query=False))
    return widgets.SearchDemo(minilm_colbert, index, documents, {"paris": "Paris"}, k=2)


def test_typing_a_query_lists_the_best_documents_and_explains_the_first(demo, minilm_colbert):
    demo.query.value = "who painted the mona lisa"  # what pressing Enter in the box does
    assert demo.hits["id"].tolist()[0] == "mona" and len(demo.hits) == 2
    assert "Mona Lisa" in demo.results.value and "<table" in demo.results.value
    assert demo.choice.value == "mona" and len(demo.choice.options) == 2
    assert demo.heatmap.value[:4] == b"\x89PNG"
    expected = explain.token_matches(minilm_colbert, "who painted the mona lisa", demo.documents["mona"]).score
    assert demo.matches.score == pytest.approx(expected)
    assert demo.hits["score"].iloc[0] == pytest.approx(expected, abs=0.02), "index scores are fp16 MaxSim"


def test_choosing_another_result_redraws_the_heatmap(demo):
    demo.query.value = "capital of france"
    first_picture = demo.heatmap.value
    other = demo.hits["id"].iloc[1]
    demo.choice.value = other
    assert demo.heatmap.value != first_picture
    assert demo.matches.document_tokens[1] == "[D]" and demo.hits["title"].iloc[0] == "Paris"


def test_search_then_explain_explains_the_last_search_without_the_box(demo, minilm_colbert):
    hits = demo.search("who painted the mona lisa")
    matches = demo.explain(hits["id"].iloc[0])
    assert (
        demo.query.value == ""
        and matches.query_tokens
        == explain.token_matches(minilm_colbert, "who painted the mona lisa", demo.documents["mona"]).query_tokens
    )
    assert demo.heatmap.value[:4] == b"\x89PNG"


def test_the_demo_rejects_what_it_cannot_search(demo, minilm_colbert):
    with pytest.raises(ValueError, match="empty"):
        demo.search("   ")
    with pytest.raises(ValueError, match="Search first"):
        demo.explain("paris")
    demo.query.value = "mona lisa"
    with pytest.raises(KeyError, match="nowhere"):
        demo.explain("nowhere")
    with pytest.raises(ValueError, match="k must be"):
        widgets.SearchDemo(minilm_colbert, demo.retriever.index, demo.documents, k=0)
