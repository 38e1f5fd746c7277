"""Indexes, retrieval and rerank: PyLate's surface, lifecycle, validation, durability."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from index_writer import BATCH, SPARSE_TOKENS, embeddings_for, sparse_embedding

from workbench import indexes, rank, retrieve
from workbench.store import IndexCorruptError, IndexLockedError

from helpers import reference_maxsim, unit


@pytest.fixture
def corpus():
    rng = np.random.default_rng(3)
    ids = [f"doc{i}" for i in range(300)]
    embeddings = [unit(rng, int(n)) for n in rng.integers(3, 40, size=300)]
    queries = [unit(rng, 8) for _ in range(12)]
    return ids, embeddings, queries


def reference_top(queries, ids, embeddings, k):
    """Ranking by the plain reference MaxSim loop."""
    tops = []
    for query in queries:
        scores = [reference_maxsim(query, d) for d in embeddings]
        order = np.argsort(scores)[::-1][:k]
        tops.append([(ids[j], scores[j]) for j in order])
    return tops


def test_seed_readme_snippet_runs_with_a_96_dimension_model(answerai, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippet writes ./pylate-index
    model = answerai
    index = indexes.Voyager(index_folder="pylate-index", index_name="index", override=True)
    retriever = retrieve.ColBERT(index=index)
    documents_ids = ["1", "2", "3"]
    documents = ["document 1 text", "document 2 text", "document 3 text"]
    documents_embeddings = model.encode(documents, batch_size=32, is_query=False, show_progress_bar=True)
    index.add_documents(documents_ids=documents_ids, documents_embeddings=documents_embeddings)
    queries_embeddings = model.encode(
        ["query for document 3", "query for document 1"], batch_size=32, is_query=True, show_progress_bar=True
    )
    scores = retriever.retrieve(queries_embeddings=queries_embeddings, k=10)

    assert len(scores) == 2 and all(len(hits) == 3 for hits in scores)
    for query, hits in zip(queries_embeddings, scores):
        expected = sorted(
            ((i, reference_maxsim(query, d)) for i, d in zip(documents_ids, documents_embeddings)), key=lambda p: -p[1]
        )
        assert [hit["id"] for hit in hits] == [i for i, _ in expected]
        for hit, (_, score) in zip(hits, expected):
            assert hit["score"] == pytest.approx(score, abs=2e-2)  # fp16 storage
    reopened = indexes.Voyager(index_folder="pylate-index", index_name="index")
    assert retrieve.ColBERT(index=reopened).retrieve(queries_embeddings=queries_embeddings, k=10) == scores


@pytest.mark.parametrize("kind", [indexes.Exact, indexes.Voyager])
def test_top_k_matches_the_reference_maxsim(kind, corpus, tmp_path):
    ids, embeddings, queries = corpus
    index = kind(index_folder=tmp_path, index_name="i", override=True, dtype="float32")
    index.add_documents(ids, embeddings)
    settings = {"k_token": 16} if kind is indexes.Voyager else {}  # Exact has no search settings
    results = retrieve.ColBERT(index).retrieve(queries, k=5, **settings)
    expected = reference_top(queries, ids, embeddings, 5)
    overlap = np.mean([len({h["id"] for h in got} & {i for i, _ in want}) / 5 for got, want in zip(results, expected)])
    assert overlap >= (1.0 if kind is indexes.Exact else 0.9)
    if kind is indexes.Exact:
        for got, want in zip(results, expected):
            assert [h["score"] for h in got] == pytest.approx([s for _, s in want], abs=1e-4)


def test_exact_search_in_memory_matches_the_reference_maxsim(corpus):
    ids, embeddings, queries = corpus
    results = retrieve.exact(queries, embeddings, ids, k=5)
    for got, want in zip(results, reference_top(queries, ids, embeddings, 5)):
        assert [h["id"] for h in got] == [i for i, _ in want]
        assert [h["score"] for h in got] == pytest.approx([s for _, s in want], abs=1e-4)
    with pytest.raises(ValueError, match="299 document embeddings for 300 document ids"):
        retrieve.exact(queries, embeddings[1:], ids, k=5)


def test_lifecycle_append_reopen_remove_override(corpus, tmp_path):
    ids, embeddings, queries = corpus
    index = indexes.Voyager(index_folder=tmp_path, index_name="i", override=True)
    index.add_documents(ids[:100], embeddings[:100])
    index.add_documents(ids[100:], embeddings[100:])  # a second call appends (and retrains: 3x growth is not 4x)
    assert len(index) == 300
    stored = index.get_documents_embeddings(["doc5", "doc250"])
    np.testing.assert_allclose(stored[0], embeddings[5], atol=1e-3)
    np.testing.assert_allclose(stored[1], embeddings[250], atol=1e-3)
    nested = index.get_documents_embeddings([["doc1"], ["doc2", "doc3"]])
    assert [len(group) for group in nested] == [1, 2]
    before = retrieve.ColBERT(index).retrieve(queries, k=10)
    index.close()

    reopened = indexes.Voyager(index_folder=tmp_path, index_name="i")
    assert len(reopened) == 300
    assert retrieve.ColBERT(reopened).retrieve(queries, k=10) == before

    removed = {hit["id"] for hit in before[0][:3]}
    reopened.remove_documents(sorted(removed))
    assert len(reopened) == 297
    after = retrieve.ColBERT(reopened).retrieve(queries, k=10)
    assert not removed & {hit["id"] for hit in after[0]}
    with pytest.raises(KeyError, match="Unknown document ids"):
        reopened.get_documents_embeddings(sorted(removed))
    reopened.close()

    fresh = indexes.Voyager(index_folder=tmp_path, index_name="i", override=True)
    assert len(fresh) == 0 and retrieve.ColBERT(fresh).retrieve(queries[:2], k=3) == [[], []]


def test_centroids_are_retrained_when_the_index_grows_fourfold(corpus, tmp_path):
    ids, embeddings, _ = corpus
    index = indexes.Voyager(index_folder=tmp_path, index_name="i", override=True)
    index.add_documents(ids[:20], embeddings[:20])
    first = index.store.extra["centroids_trained_on"]
    index.add_documents(ids[20:40], embeddings[20:40])
    assert index.store.extra["centroids_trained_on"] == first, "2x growth keeps the centroids"
    index.add_documents(ids[40:], embeddings[40:])
    assert index.store.extra["centroids_trained_on"] == sum(len(e) for e in embeddings)
    assert len(index.store.side_array("codes")) == sum(len(e) for e in embeddings)


def test_subset_filtering(corpus, tmp_path):
    ids, embeddings, queries = corpus
    index = indexes.Voyager(index_folder=tmp_path, index_name="i", override=True, n_full_scores=64)
    index.add_documents(ids, embeddings)
    retriever = retrieve.ColBERT(index)
    small = ids[10:20]  # smaller than n_full_scores: scored whole
    large = ids[::2]  # larger: filtered candidates
    for subset in (small, large):
        for hits in retriever.retrieve(queries, k=5, subset=subset):
            assert len(hits) == 5 and {h["id"] for h in hits} <= set(subset)
    expected = reference_top(queries, small, [embeddings[ids.index(i)] for i in small], 5)
    got = retriever.retrieve(queries, k=5, subset=small)
    assert [[h["id"] for h in hits] for hits in got] == [[i for i, _ in want] for want in expected]
    with pytest.raises(KeyError, match="Unknown document ids"):
        retriever.retrieve(queries, k=5, subset=["nope"])


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "writer.lock"}


def test_bad_input_is_refused_before_anything_is_written(corpus, tmp_path):
    ids, embeddings, _ = corpus
    index = indexes.Voyager(index_folder=tmp_path, index_name="i", override=True)
    index.add_documents(ids[:50], embeddings[:50])
    before = snapshot(tmp_path / "i")
    nan = embeddings[60].copy()
    nan[0, 0] = np.nan
    cases = [
        (["a", "a"], embeddings[60:62], "appears twice"),
        (["doc3"], embeddings[60:61], "already in the index"),
        (["a"], [np.ones((3, 16), np.float32)], "dimension 16; the index holds 32"),
        (["a"], [nan], "NaN"),
        (["a", "b"], embeddings[60:61], "2 document ids but 1 embeddings"),
        (["a"], [np.ones((0, 32), np.float32)], "n_tokens > 0"),
    ]
    for bad_ids, bad_embeddings, message in cases:
        with pytest.raises(ValueError, match=message):
            index.add_documents(bad_ids, bad_embeddings)
    with pytest.raises(KeyError, match="Unknown document ids"):
        index.remove_documents(["doc3", "missing"])
    assert snapshot(tmp_path / "i") == before and len(index) == 50
    with pytest.raises(ValueError, match="holds 32-dimensional"):
        indexes.Voyager(index_folder=tmp_path, index_name="i", embedding_size=128)


def test_a_second_writer_is_refused(corpus, tmp_path):
    ids, embeddings, queries = corpus
    writer = indexes.Voyager(index_folder=tmp_path, index_name="i", override=True)
    writer.add_documents(ids[:50], embeddings[:50])
    other = indexes.Voyager(index_folder=tmp_path, index_name="i")
    assert len(retrieve.ColBERT(other).retrieve(queries[:1], k=3)[0]) == 3, "readers need no lock"
    with pytest.raises(IndexLockedError, match="one writer at a time"):
        other.add_documents(ids[50:60], embeddings[50:60])
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from workbench import indexes; "
            "indexes.Voyager(index_folder=sys.argv[1], index_name='i').remove_documents(['doc1'])",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert child.returncode != 0 and "IndexLockedError" in child.stderr
    writer.add_documents(ids[50:60], embeddings[50:60])  # `other` has not seen these yet
    writer.close()
    other.add_documents(ids[60:70], embeddings[60:70])
    assert len(other) == 70, "a writer must build on the latest commit, not on what it read earlier"
    assert len(indexes.Voyager(index_folder=tmp_path, index_name="i")) == 70


def test_reader_sees_commits_of_another_writer(corpus, tmp_path):
    ids, embeddings, queries = corpus
    writer = indexes.Exact(index_folder=tmp_path, index_name="i", override=True)
    writer.add_documents(ids[:10], embeddings[:10])
    reader = indexes.Exact(index_folder=tmp_path, index_name="i")
    writer.add_documents(ids[10:20], embeddings[10:20])
    assert len(retrieve.ColBERT(reader).retrieve(queries[:1], k=50)[0]) == 20
    assert len(reader) == 20


def assert_last_committed_state(folder: Path, minimum_batches: int) -> int:
    """Reopen after a crash: whole batches only, none reported lost, contents intact, searchable."""
    index = indexes.Voyager(index_folder=folder, index_name="index")
    batches = len(index) // BATCH
    assert len(index) % BATCH == 0, "a half-written batch is visible"
    assert batches >= minimum_batches, "a reported commit was lost"
    for batch in (0, batches - 1):
        stored = index.get_documents_embeddings([f"{batch}-0", f"{batch}-{BATCH - 1}"])
        expected = embeddings_for(batch)
        np.testing.assert_allclose(stored[0], expected[0], atol=1e-3)
        np.testing.assert_allclose(stored[1], expected[-1], atol=1e-3)
    assert retrieve.ColBERT(index).retrieve([embeddings_for(0)[3]], k=1)[0][0]["id"] == "0-3"
    index.close()
    return batches


def run_writer(folder: Path, start_batch: int, *crash_at: int) -> subprocess.Popen:
    script = Path(__file__).with_name("index_writer.py")
    return subprocess.Popen(
        [sys.executable, str(script), str(folder), str(start_batch), *map(str, crash_at)],
        stdout=subprocess.PIPE,
        text=True,
    )


def committed_batches(child: subprocess.Popen, wanted: int, timeout: float = 60) -> list[int]:
    reported, deadline = [], time.monotonic() + timeout
    while len(reported) < wanted and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        if line.startswith("committed"):
            reported.append(int(line.split()[1]))
    return reported


def test_writers_killed_at_every_write_of_add_documents_lose_nothing(tmp_path):
    """A writer dies halfway through each file write of an add (and just before its commit)."""
    batches = 0
    torn_states = 0
    for crash_at in range(1, 8):
        child = run_writer(tmp_path, batches, crash_at)
        reported = committed_batches(child, 2)
        child.wait(timeout=60)
        assert child.returncode == -signal.SIGKILL and len(reported) == 1
        manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
        sizes_past_commit = any(
            (tmp_path / "index" / file).stat().st_size > manifest["sizes"][name]
            for name, file in manifest["files"].items()
        )
        strays = (
            set(os.listdir(tmp_path / "index")) - set(manifest["files"].values()) - {"manifest.json", "writer.lock"}
        )
        torn_states += bool(sizes_past_commit or strays)
        batches = assert_last_committed_state(tmp_path, batches + 1)
    assert torn_states >= 4, "the crashes should have left torn writes behind for the next writer to clean"


def test_writers_killed_by_sigkill_at_random_moments_lose_nothing(tmp_path):
    rng = np.random.default_rng(11)
    batches = 0
    for attempt in range(5):
        child = run_writer(tmp_path, batches)
        reported = committed_batches(child, 1 + attempt % 3)
        time.sleep(float(rng.uniform(0.0, 0.05)))  # land somewhere inside the next add_documents
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert reported, "the writer committed nothing in 60 s"
        batches = assert_last_committed_state(tmp_path, batches + len(reported))


def test_searches_during_add_and_remove_churn_each_see_one_commit(tmp_path):
    """Another process adds and removes documents while this one searches: every hit must be a
    document of one committed state with that document's own exact score (its embedding is a
    function of its id), and a base document's own tokens must find it first, scoring exactly
    SPARSE_TOKENS. Mixing two commits gives IndexError, or ids of the wrong positions."""
    base = [f"base-{i}" for i in range(20)]  # 160 tokens: the churn's growth retrains the centroids once
    writer = indexes.Voyager(index_folder=tmp_path, index_name="index", override=True)
    writer.add_documents(base, [sparse_embedding(i) for i in base])
    writer.close()
    reader = retrieve.ColBERT(indexes.Voyager(index_folder=tmp_path, index_name="index"))
    child = run_writer(tmp_path, "churn")
    errors, wrong, states, searches = [], [], set(), 0
    try:
        assert committed_batches(child, 1), "the churn writer committed nothing in 60 s"
        deadline = time.monotonic() + 45  # a bound against hanging, not a timing assertion
        while (searches < 500 or len(states) < 20) and time.monotonic() < deadline:
            target = base[searches % len(base)]
            query = sparse_embedding(target)
            searches += 1
            try:
                hits = reader.retrieve([query], k=5)[0]
            except Exception as error:  # every failure counts, whatever its type
                errors.append(repr(error))
                continue
            states.add(reader.index.store.manifest["next_file"])
            if hits[0] != {"id": target, "score": SPARSE_TOKENS} or any(
                hit["score"] != reference_maxsim(query, sparse_embedding(hit["id"])) for hit in hits
            ):
                wrong.append(hits)
    finally:
        child.kill()
        child.wait()
    assert searches >= 500 and len(states) >= 20, f"{searches} searches over {len(states)} commits"
    assert not errors, f"{len(errors)} of {searches} searches failed: {errors[:3]}"
    assert not wrong, f"{len(wrong)} of {searches} searches returned wrong ids or scores: {wrong[:2]}"


def test_damaged_indexes_are_named(corpus, tmp_path):
    ids, embeddings, _ = corpus
    index = indexes.Voyager(index_folder=tmp_path, index_name="i", override=True)
    index.add_documents(ids[:30], embeddings[:30])
    index.close()
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    tokens = tmp_path / "i" / manifest["files"]["tokens"]
    tokens.write_bytes(tokens.read_bytes()[:100])
    with pytest.raises(IndexCorruptError, match="the manifest commits"):
        indexes.Voyager(index_folder=tmp_path, index_name="i")
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "something.bin").write_bytes(b"x")
    with pytest.raises(IndexCorruptError, match="no manifest.json"):
        indexes.Exact(index_folder=tmp_path, index_name="stray")


def test_rerank_orders_each_querys_candidates(corpus):
    ids, embeddings, queries = corpus
    candidates = [[ids[0], ids[5], ids[9]], [ids[2]], []]
    candidate_embeddings = [[embeddings[0], embeddings[5], embeddings[9]], [embeddings[2]], []]
    result = rank.rerank(
        documents_ids=candidates, queries_embeddings=queries[:3], documents_embeddings=candidate_embeddings
    )
    expected = sorted(
        ((i, reference_maxsim(queries[0], e)) for i, e in zip(candidates[0], candidate_embeddings[0])),
        key=lambda pair: -pair[1],
    )
    assert [h["id"] for h in result[0]] == [i for i, _ in expected]
    assert [h["score"] for h in result[0]] == pytest.approx([s for _, s in expected], abs=1e-5)
    assert result[1] == [{"id": ids[2], "score": pytest.approx(reference_maxsim(queries[1], embeddings[2]), abs=1e-5)}]
    assert result[2] == []
    with pytest.raises(ValueError, match="one of each per query"):
        rank.rerank(
            documents_ids=candidates[:2], queries_embeddings=queries[:3], documents_embeddings=candidate_embeddings
        )


def test_recall_latency_measures_each_setting_against_the_exact_top_k(corpus, tmp_path):
    ids, embeddings, queries = corpus
    index = indexes.Voyager(index_folder=tmp_path, index_name="i", override=True, dtype="float32")
    index.add_documents(ids, embeddings)
    reference = [[i for i, _ in top] for top in reference_top(queries, ids, embeddings, 10)]
    settings = [(1, 10), (4, 64), (64, 300)]
    sweep = retrieve.recall_latency(index, queries, reference, k=10, settings=settings, repeats=1)
    assert list(zip(sweep["k_token"], sweep["n_full_scores"])) == settings
    assert (sweep["ms_per_query"] > 0).all()
    # Scoring every document exactly (n_full_scores >= corpus) finds the whole exact top 10.
    assert sweep["recall@10"].iloc[-1] == 1.0
    # Each row is its own setting's search: recall recomputed here from that setting's hits.
    for (k_token, n_full_scores), recall in zip(settings, sweep["recall@10"], strict=True):
        hits = retrieve.ColBERT(index).retrieve(queries, k=10, k_token=k_token, n_full_scores=n_full_scores)
        found = np.mean(
            [len({hit["id"] for hit in got} & set(want)) / 10 for got, want in zip(hits, reference, strict=True)]
        )
        assert recall == pytest.approx(found), (k_token, n_full_scores)
    with pytest.raises(ValueError, match="reference lists"):
        retrieve.recall_latency(index, queries, reference[:3], k=10, settings=settings)


def test_the_same_documents_and_seed_build_the_same_index(corpus, tmp_path):
    """A rebuilt index must search identically, or recall figures (and the notebooks' outputs) drift."""
    ids, embeddings, queries = corpus
    built = []
    for name in ("first", "second"):
        index = indexes.Voyager(index_folder=tmp_path, index_name=name, seed=7)
        index.add_documents(ids, embeddings)
        results = retrieve.ColBERT(index).retrieve(queries, k=10, k_token=2, n_full_scores=10)
        graph = index._graph_of(index.snapshot()).as_bytes()  # built on demand: this index stores none
        built.append((index.store.file_path("centroids").read_bytes() + graph, results))
        index.close()
    assert built[0][0] == built[1][0]
    assert built[0][1] == built[1][1]


def test_candidates_that_tie_are_chosen_by_position_on_every_cpu():
    """Documents that meet the same centroids tie exactly; the first ones by position are taken."""
    from workbench.indexes import Postings

    codes = np.array([0] * 1000 + [1] * 500, dtype=np.int64)  # documents 0-999 hold centroid 0
    offsets = np.concatenate([np.arange(1001), 1000 + np.arange(1, 501)])  # 500-1499 hold centroid 1
    postings = Postings(codes, offsets, n_centroids=2)
    similarities = np.array([[0.9, 0.5]], dtype=np.float32)
    assert postings.candidates(np.array([[0, 1]]), similarities, None, limit=10).tolist() == list(range(10))
    assert postings.candidates(np.array([[1, 0]]), similarities, None, limit=3).tolist() == [1000, 1001, 1002]


def test_the_centroid_table_holds_each_query_tokens_similarity_to_every_centroid():
    from workbench.indexes.voyager import centroid_table

    rng = np.random.default_rng(5)
    centroids, query = unit(rng, 300), unit(rng, 30)
    table = centroid_table(query, torch.from_numpy(centroids))
    assert table.shape == (300, 30)
    np.testing.assert_allclose(table, (centroids.astype(np.float64) @ query.T.astype(np.float64)), atol=1e-5)


def test_nearest_in_columns_keeps_each_columns_largest_values_earlier_row_first_on_ties():
    from workbench.indexes.interaction import nearest_in_columns

    rng = np.random.default_rng(9)
    table = rng.integers(0, 6, size=(40, 7)).astype(np.float32)  # many exact ties
    for k in (1, 3, 40):
        expected = np.argsort(-table, axis=0, kind="stable")[:k]  # stable: the earlier row first among equals
        np.testing.assert_array_equal(nearest_in_columns(table, k), expected)
    with pytest.raises(ValueError, match="between 1 and the 40 rows"):
        nearest_in_columns(table, 41)


def test_postings_hold_each_documents_distinct_centroids_and_each_centroids_documents():
    from workbench.indexes import Postings

    rng = np.random.default_rng(4)
    lengths = rng.integers(1, 9, size=30)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    codes = rng.integers(0, 12, size=offsets[-1])
    postings = Postings(codes, offsets, n_centroids=12)
    for document in range(30):
        found = postings.document_centroids[
            postings.document_offsets[document] : postings.document_offsets[document + 1]
        ]
        assert found.tolist() == sorted(set(codes[offsets[document] : offsets[document + 1]].tolist()))
    for centroid in range(12):
        holders = postings.documents[postings.offsets[centroid] : postings.offsets[centroid + 1]]
        assert holders.tolist() == [d for d in range(30) if centroid in codes[offsets[d] : offsets[d + 1]]]
    subset = np.zeros(30, dtype=bool)
    subset[[2, 5]] = True
    touched = postings.touched(np.array([[codes[0]]]), None)
    assert touched.tolist() == [d for d in range(30) if codes[0] in codes[offsets[d] : offsets[d + 1]]]
    assert postings.touched(np.array([[codes[0]]]), subset, at_least=3).tolist() == [2, 5]  # too few: all of it
    expected = [d for d in (2, 5) if d in touched.tolist()] or [2, 5]
    assert postings.touched(np.array([[codes[0]]]), subset, at_least=1).tolist() == expected


def test_centroid_interaction_is_maxsim_with_each_token_replaced_by_its_centroid(tmp_path):
    from workbench.indexes.interaction import centroid_interaction

    rng = np.random.default_rng(5)
    centroids, query = unit(rng, 50), unit(rng, 9)
    lengths = rng.integers(1, 12, size=40)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    codes = rng.integers(0, 50, size=offsets[-1]).astype(np.int32)
    stored = np.lib.format.open_memmap(tmp_path / "codes.npy", mode="w+", dtype=np.int64, shape=codes.shape)
    stored[:] = codes
    documents = rng.permutation(40)[:25]
    expected = [(query @ centroids[codes[offsets[d] : offsets[d + 1]]].T).max(axis=1).sum() for d in documents]
    for kept in (codes, stored):  # the store's codes may be a memory map, of another integer type
        scores = centroid_interaction(centroids @ query.T, kept, offsets, documents)
        assert scores.dtype == np.float32
        np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_searching_the_graph_or_every_centroid_finds_the_same_documents(corpus, tmp_path, monkeypatch):
    """On a few hundred centroids the graph's search is exact too: both lookups must rank alike."""
    from workbench.indexes import voyager

    ids, embeddings, queries = corpus
    index = indexes.Voyager(index_folder=tmp_path, index_name="both", ef_search=512)
    index.add_documents(ids, embeddings)
    by_product = retrieve.ColBERT(index).retrieve(queries, k=10, k_token=4, n_full_scores=20)
    monkeypatch.setattr(voyager, "EXACT_CENTROIDS", 0)
    by_graph = retrieve.ColBERT(index).retrieve(queries, k=10, k_token=4, n_full_scores=20)
    index.close()
    assert retrieve.rankings_agree(by_product, by_graph)["same up to ties"].all()
