"""ranx-based metrics against values computed by hand."""

import math

import pytest

from workbench import metrics

# q1's ranking: d2 (grade 0), d1 (grade 1), d4 (unjudged), d3 (grade 2).
QRELS = {"q1": {"d1": 1, "d2": 0, "d3": 2}}
RUN = {"q1": {"d2": 3.0, "d1": 2.0, "d4": 1.0, "d3": 0.5}}


def test_seed_metric_names_and_order():
    table = metrics.evaluate(QRELS, RUN)
    assert list(table.columns) == [
        "MaxSim_accuracy@1",
        "MaxSim_accuracy@3",
        "MaxSim_accuracy@5",
        "MaxSim_accuracy@10",
        "MaxSim_precision@1",
        "MaxSim_precision@3",
        "MaxSim_precision@5",
        "MaxSim_precision@10",
        "MaxSim_recall@1",
        "MaxSim_recall@3",
        "MaxSim_recall@5",
        "MaxSim_recall@10",
        "MaxSim_ndcg@10",
        "MaxSim_mrr@10",
        "MaxSim_map@100",
    ]


def test_hand_computed_values_with_linear_gains():
    row = metrics.evaluate(QRELS, RUN).iloc[0]
    dcg = 1 / math.log2(3) + 2 / math.log2(5)  # d1 at rank 2 (gain 1), d3 at rank 4 (gain 2)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    expected = {
        "accuracy@1": 0,
        "accuracy@3": 1,
        "accuracy@10": 1,
        "precision@1": 0,
        "precision@3": 1 / 3,
        "precision@5": 2 / 5,
        "precision@10": 2 / 10,
        "recall@1": 0,
        "recall@3": 1 / 2,
        "recall@5": 1,
        "mrr@10": 1 / 2,
        "map@100": (1 / 2 + 2 / 4) / 2,
        "ndcg@10": dcg / ideal,
    }
    for name, value in expected.items():
        assert row[f"MaxSim_{name}"] == pytest.approx(value, abs=1e-6), name


def test_relevance_level_two_applies_to_binary_metrics_not_ndcg():
    base = metrics.evaluate(QRELS, RUN).iloc[0]
    strict = metrics.evaluate(QRELS, RUN, relevance_level=2).iloc[0]
    assert strict["MaxSim_precision@5"] == pytest.approx(1 / 5)  # only d3 (grade 2) is relevant
    assert strict["MaxSim_mrr@10"] == pytest.approx(1 / 4)
    assert strict["MaxSim_ndcg@10"] == pytest.approx(base["MaxSim_ndcg@10"])


def test_unjudged_queries_are_left_out_and_missing_runs_score_zero():
    qrels = {**QRELS, "q2": {"d9": 1}, "q3": {"d1": 0}}  # q3 has no positive judgement
    table = metrics.evaluate(qrels, RUN, prefix="", name="bm25")
    assert table.index.tolist() == ["bm25"]
    assert table.loc["bm25", "mrr@10"] == pytest.approx((1 / 2 + 0) / 2)
    scores = metrics.per_query(qrels, RUN, "mrr@10")
    assert scores.to_dict() == pytest.approx({"q1": 0.5, "q2": 0.0})


def test_retrieve_results_become_a_run_and_mismatched_runs_are_refused():
    run = metrics.run_from_results(["q1"], [[{"id": "d1", "score": 2.0}, {"id": 7, "score": 1}]])
    assert run == {"q1": {"d1": 2.0, "7": 1.0}}
    with pytest.raises(ValueError, match="wrong qrels"):
        metrics.evaluate(QRELS, {"other": {"d1": 1.0}})
    with pytest.raises(ValueError, match="nothing to evaluate"):
        metrics.evaluate({"q1": {"d1": 0}}, RUN)


def test_judged_queries_missing_from_the_run_count_as_zero_or_are_skipped_on_request():
    qrels = {**QRELS, "q2": {"d9": 1}, "q3": {"d1": 0}}  # q2 is judged and not in RUN; q3 has no positive
    # RUN ranks q1's first relevant document second: MRR 1/2; q2 scores 0 when counted.
    assert metrics.evaluate(qrels, RUN, missing="zero").iloc[0]["MaxSim_mrr@10"] == pytest.approx((1 / 2 + 0) / 2)
    assert metrics.evaluate(qrels, RUN, missing="skip").iloc[0]["MaxSim_mrr@10"] == pytest.approx(1 / 2)
    assert metrics.per_query(qrels, RUN, "mrr@10", missing="skip").to_dict() == pytest.approx({"q1": 0.5})
    with pytest.raises(ValueError, match="missing must be one of"):
        metrics.evaluate(qrels, RUN, missing="drop")
    with pytest.raises(ValueError, match="holds none of the queries"):
        metrics.evaluate(qrels, {"q3": {"d1": 1.0}}, missing="skip")


@pytest.mark.parametrize(
    "run",
    [
        {"q1": {"d1": math.nan, "d2": math.nan, "d3": math.nan}},  # all NaN: ranked in dict order, nDCG 1.0
        {"q1": {"d2": 3.0, "d1": math.nan}},
    ],
)
def test_a_nan_score_is_refused_naming_query_and_document(run):
    with pytest.raises(ValueError, match=r"document 'd\d' for query 'q1' is NaN"):
        metrics.evaluate(QRELS, run)
    with pytest.raises(ValueError, match="is NaN"):
        metrics.compare(QRELS, {"a": RUN, "b": run})


def test_a_run_saved_under_a_name_with_spaces_reads_back_and_ids_with_spaces_are_refused(tmp_path):
    run = {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d3": 0.5}}
    metrics.save_run(run, tmp_path / "run.trec", name="BM25 + ColBERT rerank")
    assert metrics.load_run(tmp_path / "run.trec") == run
    assert (tmp_path / "run.trec").read_text().split("\n")[0].split()[-1] == "BM25_+_ColBERT_rerank"
    with pytest.raises(ValueError, match="white space"):
        metrics.save_run({"q 1": {"d1": 1.0}}, tmp_path / "bad.trec")
    assert not (tmp_path / "bad.trec").exists()
