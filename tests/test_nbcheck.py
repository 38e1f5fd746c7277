"""The notebook check (workbench.nbcheck): what may move between machines passes, a regression does not."""

import copy
import textwrap

import nbformat
import pandas as pd
import pytest

from workbench.nbcheck import Tolerances, compare_cells

from helpers import ROOT

pytest_plugins = ["pytester"]
TOLERANCES = Tolerances.load(ROOT / "nbconfig" / "tolerances.yaml")


def _cell(*outputs):
    return nbformat.v4.new_code_cell("x", outputs=list(outputs), execution_count=1)


def _frame(frame: pd.DataFrame):
    return nbformat.v4.new_output(
        "execute_result", data={"text/html": frame._repr_html_(), "text/plain": repr(frame)}, execution_count=1
    )


def _text(text: str):
    return nbformat.v4.new_output("execute_result", data={"text/plain": text}, execution_count=1)


def _failures(expected, actual):
    return compare_cells(expected, actual, TOLERANCES)[0]


def _committed(name: str, execution_count: int):
    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    return next(cell for cell in notebook.cells if cell.get("execution_count") == execution_count)


def test_a_metric_passes_within_its_tolerance_and_fails_beyond_it():
    metrics = pd.DataFrame({"ndcg@10": [0.628], "documents": [853]}, index=["contrastive"])
    committed = _cell(_frame(metrics))
    assert _failures(committed, _cell(_frame(metrics.assign(**{"ndcg@10": 0.640})))) == []
    failures = _failures(committed, _cell(_frame(metrics.assign(**{"ndcg@10": 0.678}))))
    assert len(failures) == 1 and "beyond retrieval metrics (absolute 0.02)" in failures[0]
    assert _failures(committed, _cell(_frame(metrics.assign(documents=852)))), "counts are exact"


def test_numbers_no_rule_names_are_exact_and_so_are_texts_and_columns():
    statistics = pd.DataFrame({"words per query": [11.21]}, index=["docstrings"])
    committed = _cell(_frame(statistics))
    assert _failures(committed, _cell(_frame(statistics.assign(**{"words per query": 11.22}))))
    assert _failures(committed, _cell(_frame(statistics.rename(index={"docstrings": "docstring"}))))
    assert _failures(committed, _cell(_frame(statistics.rename(columns={"words per query": "words"}))))
    assert _failures(committed, _cell(_frame(pd.concat([statistics, statistics]))))
    assert _failures(_cell(_text("['re.split', 're.findall']")), _cell(_text("['re.findall', 're.split']")))


def test_text_before_a_number_is_its_context():
    committed = _cell(_text("{'untrained ndcg@10': 0.4671,\n 'triplets': 690,\n 'score': 18.79}"))
    assert _failures(committed, _cell(_text("{'untrained ndcg@10': 0.4771,\n 'triplets': 690,\n 'score': 18.9}"))) == []
    assert _failures(committed, _cell(_text("{'untrained ndcg@10': 0.4971,\n 'triplets': 690,\n 'score': 18.79}")))
    assert _failures(committed, _cell(_text("{'untrained ndcg@10': 0.4671,\n 'triplets': 691,\n 'score': 18.79}")))


def test_near_tied_documents_may_swap_but_a_different_ranking_fails():
    hits = pd.DataFrame({"document": ["a", "b", "c"], "score": [15.41, 15.40, 12.0]})
    committed = _cell(_frame(hits))
    swapped = hits.assign(document=["b", "a", "c"])
    failures, tolerated = compare_cells(committed, _cell(_frame(swapped)), TOLERANCES)
    assert failures == [] and any("near tie" in line for line in tolerated)
    far = hits.assign(document=["c", "b", "a"], score=[15.41, 15.40, 14.0])
    assert _failures(committed, _cell(_frame(far))), "a score beyond its tolerance fails the row"


def test_timings_progress_bars_and_run_folders_are_not_results():
    committed = _cell(
        nbformat.v4.new_output("stream", name="stdout", text="run folder: runs/20261123-231919\n"),
        _text("Encoding:  10%|#  | 1/10 [00:01<00:09]"),
        _text("build 1.17 s, query 6.64 ms"),
    )
    fresh = _cell(
        nbformat.v4.new_output("stream", name="stdout", text="run folder: "),
        nbformat.v4.new_output("stream", name="stdout", text="runs/20261201-101010\n"),
        _text("Encoding:  90%|#########  | 9/10 [00:09<00:01]"),
        _text("build 2.5 s, query 12.1 ms"),
    )
    assert _failures(committed, fresh) == []


def test_a_missing_figure_an_extra_output_or_an_error_fails():
    figure = nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"})
    assert _failures(_cell(figure), _cell(_text("<Figure>")))
    assert _failures(_cell(_text("1")), _cell(_text("1"), _text("2")))
    error = nbformat.v4.new_output("error", ename="KeyError", evalue="'x'", traceback=["KeyError: 'x'"])
    assert "raised KeyError" in _failures(_cell(_text("1")), _cell(error))[0]


def test_markdown_table_cells_take_their_column_and_row_as_context():
    card = "| Metric | docstrings |\n|:--|--:|\n| MaxSim_ndcg@10 | {} |\n| words | {} |\n"
    markdown = lambda *values: nbformat.v4.new_output(  # noqa: E731
        "execute_result", data={"text/markdown": card.format(*values), "text/plain": "<Markdown>"}, execution_count=1
    )
    assert _failures(_cell(markdown("0.6280", "3.5")), _cell(markdown("0.6350", "3.5"))) == []
    assert _failures(_cell(markdown("0.6280", "3.5")), _cell(markdown("0.6780", "3.5")))
    assert _failures(_cell(markdown("0.6280", "3.5")), _cell(markdown("0.6280", "3.6")))


def test_the_committed_notebooks_catch_a_metric_off_by_005_and_a_training_step_that_does_nothing():
    """Perturbations of the real committed outputs of notebooks 02 and 06."""
    pivot = _committed("06_nanobeir_evaluation", 3)
    assert _failures(pivot, pivot) == []
    off = copy.deepcopy(pivot)
    html = off.outputs[-1]["data"]["text/html"]
    first = html.index("<td>") + len("<td>")
    value = float(html[first : html.index("</td>", first)])
    off.outputs[-1]["data"]["text/html"] = html[:first] + f"{value + 0.05:.3f}" + html[html.index("</td>", first) :]
    assert any("beyond retrieval metrics" in line for line in _failures(pivot, off))

    comparison = _committed("02_contrastive_training", 5)
    untrained_only = copy.deepcopy(comparison)
    table = untrained_only.outputs[-1]["data"]["text/html"]
    rows = table.split("<tr>")
    # Training that does nothing: the "contrastive" row shows the untrained model's values.
    untrained, contrastive = next(r for r in rows if "untrained" in r), next(r for r in rows if ">contrastive<" in r)
    untrained_only.outputs[-1]["data"]["text/html"] = table.replace(
        contrastive, untrained.replace("untrained", "contrastive")
    )
    assert any("beyond retrieval metrics" in line for line in _failures(comparison, untrained_only))


def test_a_tolerance_without_a_reason_is_refused(tmp_path):
    path = tmp_path / "tolerances.yaml"
    path.write_text("tolerances:\n  - {name: metrics, where: ndcg, absolute: 0.5}\n")
    with pytest.raises(ValueError, match="needs a 'why'"):
        Tolerances.load(path)


def test_the_plugin_executes_a_notebook_and_fails_on_a_regression(pytester, monkeypatch):
    """End to end: the committed output says ndcg@10 0.600; a fresh run off by 0.01 passes, by 0.05 fails."""
    source = textwrap.dedent("""
        import os
        import pandas as pd
        pd.DataFrame({"ndcg@10": [0.600 + float(os.environ.get("NBCHECK_DELTA", "0"))]}, index=["model"])
    """)
    frame = pd.DataFrame({"ndcg@10": [0.600]}, index=["model"])
    cell = nbformat.v4.new_code_cell(
        source,
        execution_count=1,
        outputs=[
            nbformat.v4.new_output(
                "execute_result", data={"text/html": frame._repr_html_(), "text/plain": repr(frame)}, execution_count=1
            )
        ],
    )
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), pytester.path / "metric.ipynb")
    tolerances = str(ROOT / "nbconfig" / "tolerances.yaml")
    monkeypatch.setenv("NBCHECK_DELTA", "0.01")
    passed = pytester.runpytest_subprocess("--nbcheck", "--nbcheck-tolerances", tolerances, "metric.ipynb")
    passed.assert_outcomes(passed=1)
    passed.stdout.fnmatch_lines(["*nbcheck: 1 differences within their stated tolerance*", "*0.6 -> 0.61 within*"])
    monkeypatch.setenv("NBCHECK_DELTA", "0.05")
    result = pytester.runpytest_subprocess("--nbcheck", "--nbcheck-tolerances", tolerances, "metric.ipynb")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*expected 0.6, got 0.65, beyond retrieval metrics*"])
