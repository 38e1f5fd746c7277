"""runs.compare: one table across run folders, its numbers, its significance and its Markdown and LaTeX forms."""

import json
import math

import pytest
from scipy import stats

from workbench import comparison, metrics, runs

# Two datasets of different sizes, so that the unweighted mean over datasets differs from the query-weighted one.
SIZES = {"nano_a": 8, "nano_b": 4}
# Where the contrastive model ranks each query's grade-2 document, per run and dataset, and BM25 (None: not retrieved).
RANKS = {
    "base": {"nano_a": [3, 2, 4, 3, 5, 2, 3, 4], "nano_b": [2, 3, 2, 4]},
    "better": {"nano_a": [1, 1, 1, 2, 1, 1, 1, 1], "nano_b": [1, 1, 1, 2]},
}
BM25 = {"nano_a": [1, 2, None, 1, 6, 2, 1, 3], "nano_b": [1, 4, None, 2]}  # the same in every run


def qrels_of(dataset: str) -> dict:
    # Every query: one grade-2 document; even queries also a grade-1 one, odd ones a judged non-relevant one.
    return {
        f"{dataset}-q{i}": {f"{dataset}-q{i}-top": 2, f"{dataset}-q{i}-n0": 1 - i % 2} for i in range(SIZES[dataset])
    }


def ranking(query: str, rank: int | None, length: int = 12) -> dict:
    """A ranking with the grade-2 document at ``rank`` and the other judged one (``n0``) right after it
    (``rank`` None: ``n0`` first, the grade-2 document not retrieved)."""
    others = [f"{query}-n{k}" for k in range(1, length - 1)]
    judged = [f"{query}-top", f"{query}-n0"] if rank else [f"{query}-n0"]
    documents = others[: (rank or 1) - 1] + judged + others[(rank or 1) - 1 :]
    return {document: float(len(documents) - position) for position, document in enumerate(documents)}


def systems_of(label: str, dataset: str) -> dict:
    queries = list(qrels_of(dataset))
    systems = {
        "BM25": {query: ranking(query, rank) for query, rank in zip(queries, BM25[dataset])},
        "contrastive": {query: ranking(query, rank) for query, rank in zip(queries, RANKS[label][dataset])},
    }
    del systems["BM25"][queries[0]]  # a judged query BM25 did not answer counts 0
    return systems


def make_run(root, name, ranks_of=None, steps=30, datasets=tuple(SIZES), qrels=None) -> runs.Run:
    """A run folder ``root/name`` with the rankings of run ``ranks_of`` (default: ``name``) and a config.json."""
    run = runs.Run(root / name)
    for dataset in datasets:
        run.save_trec("evaluation", dataset, qrels or qrels_of(dataset), systems_of(ranks_of or name, dataset))
    configuration = runs.settings("quick", contrastive_steps=steps)
    config = {"profile": "quick", "configuration": configuration, "overrides": {"contrastive_steps": steps}}
    (run.path / runs.CONFIG).write_text(json.dumps(config), encoding="utf-8")
    return run


def reference_ndcg10(judgements: dict, scores: dict) -> float:
    """nDCG@10 with linear gains (trec_eval), written out: DCG of the top 10 over the ideal DCG."""
    ranked = sorted(scores, key=scores.get, reverse=True)[:10]
    dcg = sum(judgements.get(document, 0) / math.log2(rank + 2) for rank, document in enumerate(ranked))
    ideal = sorted(judgements.values(), reverse=True)[:10]
    return dcg / sum(grade / math.log2(rank + 2) for rank, grade in enumerate(ideal))


def reference_per_query(dataset: str, run: dict) -> list[float]:
    return [reference_ndcg10(judgements, run.get(query, {})) for query, judgements in sorted(qrels_of(dataset).items())]


@pytest.fixture
def two_runs(tmp_path):
    return make_run(tmp_path, "base", steps=30), make_run(tmp_path, "better", steps=300)


def test_the_differences_name_exactly_the_setting_that_differs(two_runs, tmp_path):
    table = runs.compare(two_runs).differences
    assert list(table.index) == ["contrastive_steps"]
    assert table.loc["contrastive_steps"].tolist() == [30, 300] and list(table.columns) == ["base", "better"]
    same = runs.compare([two_runs[0], make_run(tmp_path, "again", ranks_of="base")]).differences
    assert same.empty


def test_values_are_the_metric_over_judged_queries_and_the_mean_is_unweighted(two_runs):
    table = runs.compare(two_runs).table
    assert list(table.columns) == ["nano_a", "nano_b", "mean"]
    assert list(table.index) == [(system, run) for system in ("BM25", "contrastive") for run in ("base", "better")]
    for (system, label), row in table.iterrows():
        for dataset in SIZES:
            expected = reference_per_query(dataset, systems_of(label, dataset)[system])
            assert row[dataset] == pytest.approx(sum(expected) / len(expected), abs=1e-9)
            ranx = metrics.evaluate(qrels_of(dataset), systems_of(label, dataset)[system])["MaxSim_ndcg@10"].item()
            assert row[dataset] == pytest.approx(ranx, abs=1e-12)
        assert row["mean"] == pytest.approx((row["nano_a"] + row["nano_b"]) / 2, abs=1e-12)
    pooled = (table["nano_a"] * SIZES["nano_a"] + table["nano_b"] * SIZES["nano_b"]) / sum(SIZES.values())
    assert (abs(pooled - table["mean"]) > 1e-3).all(), "the fixture must tell the two means apart"
    # A card's metric name works too: accuracy@1 is the share of queries with the grade-2 document first.
    accuracy = runs.compare(two_runs, metric="accuracy@1").table
    assert accuracy.loc[("contrastive", "better"), "nano_a"] == pytest.approx(7 / 8)


def test_student_p_values_are_scipy_paired_t_tests_on_the_per_query_values(two_runs):
    result = runs.compare(two_runs)
    for dataset in SIZES:
        better = reference_per_query(dataset, systems_of("better", dataset)["contrastive"])
        base = reference_per_query(dataset, systems_of("base", dataset)["contrastive"])
        expected = stats.ttest_rel(better, base).pvalue
        assert result.pvalues.loc[("contrastive", "better"), dataset] == pytest.approx(expected, rel=1e-9)
        assert expected < 0.05
    assert result.pvalues.loc[("BM25", "better")].tolist()[:2] == [1.0, 1.0]  # equal on every query
    assert result.pvalues.xs("base", level="run").isna().all().all()  # the baseline is not tested against itself
    assert result.pvalues["mean"].isna().all()


def test_fisher_is_an_exact_randomisation_test_on_few_queries_and_tukey_is_scipys(two_runs):
    # Every query improves, so only the all-kept and all-flipped sign patterns are as extreme: p = 2 / 2^n.
    fisher = runs.compare(two_runs, test="fisher").pvalues.loc[("contrastive", "better")]
    assert fisher["nano_a"] == pytest.approx(2 / 2**8) and fisher["nano_b"] == pytest.approx(2 / 2**4)
    tukey = runs.compare(two_runs, test="tukey").pvalues.loc[("contrastive", "better"), "nano_a"]
    better = reference_per_query("nano_a", systems_of("better", "nano_a")["contrastive"])
    base = reference_per_query("nano_a", systems_of("base", "nano_a")["contrastive"])
    assert tukey == pytest.approx(stats.tukey_hsd(base, better).pvalue[1, 0], rel=1e-9)


def test_bonferroni_multiplies_by_the_number_of_tests_in_the_table(two_runs):
    plain = runs.compare(two_runs).pvalues
    corrected = runs.compare(two_runs, correction="bonferroni")
    tests = 2 * 2  # two systems on two datasets, one run against the baseline
    expected = (plain * tests).clip(upper=1.0)
    assert corrected.pvalues.equals(expected) and "Bonferroni-corrected over the table's 4 tests" in corrected.legend()


def test_markdown_bolds_each_systems_best_and_daggers_only_significant_differences(two_runs):
    result = runs.compare(two_runs, labels=["base", "better"])
    text = result.to_markdown()
    lines = text.splitlines()
    assert lines[0] == "| system | run | nano_a | nano_b | mean |"
    contrastive_base, contrastive_better = lines[4], lines[5]
    value = result.table.loc[("contrastive", "better"), "nano_a"]
    assert f"**{value:.3f}**†" in contrastive_better and contrastive_better.startswith("|  | better |")
    assert "**" not in contrastive_base and "†" not in contrastive_base
    mean = result.table.loc[("contrastive", "better"), "mean"]
    assert contrastive_better.endswith(f"| **{mean:.3f}** |"), "the mean is not tested: no dagger"
    # BM25 is the same in both runs: both bold (a tie), neither daggered.
    assert lines[2].startswith("| BM25 | base |") and "†" not in lines[2] + lines[3]
    assert lines[2].count("**") == lines[3].count("**") == 6
    assert "Student's t-test" in text and "baseline (base) at p < 0.05" in text
    assert "ndcg@10" in text.splitlines()[-1] and "no multiple-comparison correction" in text
    assert result._repr_markdown_() == text


def test_latex_is_booktabs_with_bold_best_daggers_and_escaped_names(two_runs):
    result = runs.compare(two_runs, labels=["base", "better_10%"])
    latex = result.to_latex()
    assert latex.index(r"\toprule") < latex.index(r"\midrule") < latex.index(r"\bottomrule")
    assert latex.count(r"\midrule") == 2  # under the header, then between the two systems
    assert r"System & Run & nano\_a & nano\_b & mean \\" in latex and "nano_a" not in latex
    assert r"better\_10\%" in latex
    value = result.table.loc[("contrastive", "better_10%"), "nano_b"]
    assert rf"\textbf{{{value:.3f}}}$^{{\dagger}}$" in latex
    assert latex.startswith(r"\begin{table}") and r"\caption{ndcg@10;" in latex and "$p < 0.05$" in latex
    tabular = result.to_latex(caption=False)
    assert tabular.startswith(r"\begin{tabular}{llrrr}") and tabular.rstrip().endswith(r"\end{tabular}")


def test_clear_errors(two_runs, tmp_path):
    base, better = two_runs
    with pytest.raises(ValueError, match="at least 2 runs, got 1"):
        runs.compare([base])
    with pytest.raises(ValueError, match=r"Systems \['ColBERT'\] are not in every run.*'BM25', 'contrastive'"):
        runs.compare(two_runs, systems=["ColBERT"])
    with pytest.raises(ValueError, match="Unknown metric 'ndgc@10'"):
        runs.compare(two_runs, metric="ndgc@10")
    for baseline in ("nope", 2):
        with pytest.raises(ValueError, match="baseline must be a run's index"):
            runs.compare(two_runs, baseline=baseline)
    with pytest.raises(ValueError, match="labels must name each of the 2 runs once"):
        runs.compare(two_runs, labels=["same", "same"])
    with pytest.raises(ValueError, match="test must be one of"):
        runs.compare(two_runs, test="wilcoxon")
    with pytest.raises(runs.MissingStepError, match="trec/retrieval is missing: notebooks/05_retrieval_and_rerank"):
        runs.compare(two_runs, part="retrieval")
    only_a = make_run(tmp_path, "only_a", ranks_of="base", datasets=["nano_a"])
    only_b = make_run(tmp_path, "only_b", ranks_of="base", datasets=["nano_b"])
    with pytest.raises(ValueError, match=r"No dataset is in every run: \{'only_a': \['nano_a'\], 'only_b'"):
        runs.compare([only_a, only_b])
    rejudged = make_run(tmp_path, "rejudged", ranks_of="base", datasets=["nano_b"], qrels=qrels_of("nano_a"))
    with (
        pytest.warns(UserWarning, match="nano_a"),
        pytest.raises(ValueError, match="qrels of dataset 'nano_b' differ between runs 'base' and 'rejudged'"),
    ):
        runs.compare([base, rejudged])


def test_datasets_not_in_every_run_are_left_out_with_a_warning(two_runs, tmp_path):
    fewer = make_run(tmp_path, "fewer", ranks_of="better", datasets=["nano_a"])
    with pytest.warns(UserWarning, match=r"Datasets \['nano_b'\] are not in every run"):
        result = runs.compare([str(two_runs[0].path), str(fewer.path)], baseline="fewer")
    assert list(result.table.columns) == ["nano_a", "mean"] and result.baseline == "fewer"
    assert result.pvalues.xs("base", level="run")["nano_a"].notna().all()
    assert isinstance(result, comparison.Comparison)
