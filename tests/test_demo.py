"""The main job of `make run` at this stage."""

import subprocess
import sys

from workbench import demo


def test_each_query_scores_its_matching_document_highest(minilm_colbert):
    # The demo's texts are written so that query i is about document i; MaxSim on the seeded,
    # untrained model must already see that (a random projection keeps dot products roughly).
    table = demo.score_table(minilm_colbert, demo.QUERIES, demo.DOCUMENTS)
    assert table.shape == (3, 3)
    assert [row.argmax() for row in table.to_numpy()] == [0, 1, 2]
    assert (table.to_numpy() <= 32 + 1e-3).all(), "a MaxSim of unit vectors is at most the query length"


def test_main_job_prints_the_score_table():
    result = subprocess.run([sys.executable, "-m", "workbench.demo"], capture_output=True, text=True, check=True)
    assert "MaxSim scores" in result.stdout
    assert "what is the capital of france" in result.stdout and "doc 2" in result.stdout
