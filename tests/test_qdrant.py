"""indexes.Qdrant on both of its in-process engines (qdrant-client's local mode, qdrant-edge): PyLate's
lifecycle, refused input, override safety, retries, an unreachable server, and parity with exact search
on real embeddings (the acceptance test of issue 15)."""

import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from workbench import data, indexes, retrieve
from workbench.indexes import qdrant as qdrant_module
from workbench.scores import colbert_scores, pack

from helpers import SHARED_DATA, require, unit

ENGINES = {
    "local": lambda folder: {"path": folder / "qdrant-local"},
    "edge": lambda folder: {"engine": "edge", "path": folder / "qdrant-edge"},
}


@pytest.fixture(params=sorted(ENGINES))
def where(request, tmp_path):
    """Where an index lives, for each engine: a local-mode folder, or an edge shard folder."""
    return ENGINES[request.param](tmp_path)


@pytest.fixture
def corpus():
    rng = np.random.default_rng(11)
    ids = [f"doc{i}" for i in range(60)]
    embeddings = [unit(rng, int(n), 16) for n in rng.integers(2, 12, size=60)]
    queries = [unit(rng, 6, 16) for _ in range(5)]
    return ids, embeddings, queries


def ranked(results):
    return [[(hit["id"], hit["score"]) for hit in hits] for hits in results]


def assert_same_ranking(got, want):
    for got_hits, want_hits in zip(ranked(got), ranked(want)):
        assert [i for i, _ in got_hits] == [i for i, _ in want_hits]
        assert [s for _, s in got_hits] == pytest.approx([s for _, s in want_hits], rel=1e-5)


def test_lifecycle_add_get_remove_reopen(where, corpus):
    ids, embeddings, queries = corpus
    index = indexes.Qdrant(collection_name="c", override=True, **where)
    assert len(index) == 0 and index.ids == [] and index.dim is None
    assert retrieve.ColBERT(index).retrieve(queries, k=3) == [[] for _ in queries]
    index.add_documents(ids[:40], embeddings[:40])
    index.add_documents(documents_ids=ids[40:], documents_embeddings=embeddings[40:])
    assert len(index) == 60 and sorted(index.ids) == sorted(ids) and index.dim == 16

    results = retrieve.ColBERT(index).retrieve(queries, k=5)
    assert_same_ranking(results, retrieve.exact(queries, embeddings, ids, k=5))
    for stored, original in zip(index.get_documents_embeddings(ids[::7]), embeddings[::7]):
        assert stored.dtype == np.float32 and np.allclose(stored, original, rtol=0, atol=1e-7)
    nested = index.get_documents_embeddings([["doc1", "doc2"], ["doc3"]])
    assert [len(group) for group in nested] == [2, 1] and np.array_equal(nested[1][0], embeddings[3])

    best = [hits[0]["id"] for hits in results]
    index.remove_documents(best)
    remaining = [i for i in ids if i not in best]
    assert len(index) == 60 - len(set(best))
    with pytest.raises(KeyError, match="Unknown document ids"):
        index.get_documents_embeddings(best[:1])
    after = retrieve.ColBERT(index).retrieve(queries, k=5)
    assert not {hit["id"] for hits in after for hit in hits} & set(best)
    assert_same_ranking(after, retrieve.exact(queries, [embeddings[ids.index(i)] for i in remaining], remaining, k=5))
    index.close()

    reopened = indexes.Qdrant(collection_name="c", **where)
    assert len(reopened) == len(remaining) and reopened.dim == 16
    assert retrieve.ColBERT(reopened).retrieve(queries, k=5) == after
    reopened.add_documents(best[:1], [embeddings[ids.index(best[0])]])
    assert len(reopened) == len(remaining) + 1
    reopened.close()


def test_subset_filters_the_results(where, corpus):
    ids, embeddings, queries = corpus
    index = indexes.Qdrant(override=True, **where).add_documents(ids, embeddings)
    subset = ids[10:30:3]
    results = retrieve.ColBERT(index).retrieve(queries, k=4, subset=subset)
    kept = [embeddings[ids.index(i)] for i in subset]
    assert_same_ranking(results, retrieve.exact(queries, kept, subset, k=4))
    assert retrieve.ColBERT(index).retrieve(queries, k=4, subset=[]) == [[] for _ in queries]
    with pytest.raises(KeyError, match="nowhere"):
        retrieve.ColBERT(index).retrieve(queries, k=4, subset=["doc1", "nowhere"])
    index.close()


def test_bad_input_is_refused_before_anything_is_written(where, corpus):
    ids, embeddings, queries = corpus
    index = indexes.Qdrant(override=True, **where)
    with pytest.raises(ValueError, match="appears twice"):
        index.add_documents(["a", "b", "a"], embeddings[:3])
    with pytest.raises(ValueError, match="dimension 8"):
        index.add_documents(["a", "b"], [embeddings[0], embeddings[1][:, :8]])
    assert len(index) == 0 and index.dim is None  # nothing written, not even the collection
    index.add_documents(ids[:10], embeddings[:10])
    with pytest.raises(ValueError, match="already in the index"):
        index.add_documents(["new", ids[3]], embeddings[:2])
    with pytest.raises(ValueError, match="the index holds 16"):
        index.add_documents(["new"], [np.ones((3, 8), dtype=np.float32)])
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.add_documents(["new"], [np.full((3, 16), np.nan, dtype=np.float32)])
    with pytest.raises(ValueError, match="2 document ids but 1"):
        index.add_documents(["new", "other"], embeddings[:1])
    with pytest.raises(ValueError, match="single string"):
        index.add_documents("new", embeddings[:1])
    with pytest.raises(KeyError, match="missing"):
        index.remove_documents([ids[0], "missing"])
    with pytest.raises(ValueError, match="Duplicate"):
        index.remove_documents([ids[0], ids[0]])
    assert len(index) == 10 and "new" not in index.ids and ids[0] in index.ids

    retriever = retrieve.ColBERT(index)
    with pytest.raises(ValueError, match="has no search setting k_token.*exact, hnsw_ef"):
        retriever.retrieve(queries, k=3, k_token=8)
    with pytest.raises(ValueError, match="exact must be True or False"):
        retriever.retrieve(queries, k=3, exact=1)
    with pytest.raises(ValueError, match="hnsw_ef must be a positive integer"):
        retriever.retrieve(queries, k=3, hnsw_ef=0)
    with pytest.raises(ValueError, match="dimension 8, the index holds 16"):
        retriever.retrieve([np.ones((2, 8), dtype=np.float32)], k=3)
    index.close()
    with pytest.raises(ValueError, match="holds 16-dimensional embeddings, not 32"):
        indexes.Qdrant(embedding_size=32, **where)


def test_hnsw_collections_search_with_their_settings(where, corpus):
    ids, embeddings, queries = corpus
    flat = indexes.Qdrant(collection_name="flat", override=True, embedding_size=16, **where)
    assert flat.dim == 16 and len(flat) == 0  # created before any document
    assert flat.search_settings == {"exact": True, "hnsw_ef": 128} and flat.sweep == ({},)
    flat.close()
    index = indexes.Qdrant(collection_name="graph", override=True, hnsw={"m": 8, "ef_construct": 32}, **where)
    index.add_documents(ids, embeddings)
    assert index.search_settings["exact"] is False and {"hnsw_ef": 32} in index.sweep
    exact = retrieve.exact(queries, embeddings, ids, k=5)
    assert_same_ranking(retrieve.ColBERT(index).retrieve(queries, k=5, exact=True), exact)
    # A collection this small is below the full-scan threshold: the graph search scans every document.
    assert_same_ranking(retrieve.ColBERT(index).retrieve(queries, k=5, hnsw_ef=16), exact)
    index.close()


def native_binary_quantization(where):
    if where.get("engine") == "edge":
        import qdrant_edge

        return qdrant_edge.BinaryQuantizationConfig()
    from qdrant_client import models

    return models.BinaryQuantization(binary=models.BinaryQuantizationConfig())


def test_quantised_on_disk_collections_return_maxsim_scores(where, corpus):
    ids, embeddings, queries = corpus
    truth = dict(zip(ids, colbert_scores(queries[:1], embeddings).numpy()[0]))
    for quantization in ("int8", native_binary_quantization(where)):
        index = indexes.Qdrant(override=True, on_disk=True, quantization=quantization, **where)
        hits = retrieve.ColBERT(index.add_documents(ids, embeddings)).retrieve(queries[:1], k=5, exact=False)[0]
        # the quantised copy picks candidates, the fp32 originals score them
        assert len(hits) == 5 and all(hit["score"] == pytest.approx(truth[hit["id"]], rel=1e-5) for hit in hits)
        index.close()
    with pytest.raises(ValueError, match="quantization must be one of"):
        indexes.Qdrant(quantization="int4", **where)


def foreign_collection(where) -> None:
    """A collection at ``where`` that Qdrant's own API made, not the workbench."""
    if where.get("engine") == "edge":
        import qdrant_edge as q

        vectors = q.EdgeVectorParams(size=4, distance=q.Distance.Cosine)
        q.EdgeShard.create(str(where["path"] / "theirs"), q.EdgeConfig(vectors={"": vectors})).close()
        return
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(where["path"]))
    client.create_collection("theirs", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    client.upsert("theirs", [models.PointStruct(id=1, vector=[1.0, 0.0, 0.0, 0.0])])
    client.close()


def foreign_collection_survives(where) -> bool:
    if where.get("engine") == "edge":
        return (where["path"] / "theirs" / "edge_config.json").exists()
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(where["path"]))
    try:
        return client.collection_exists("theirs") and client.count("theirs").count == 1
    finally:
        client.close()


def test_override_replaces_only_a_collection_the_workbench_made(where, corpus):
    ids, embeddings, _ = corpus
    foreign_collection(where)
    for override in (True, False):
        with pytest.raises(indexes.IndexCorruptError, match="'theirs' .* not made by the workbench"):
            indexes.Qdrant(collection_name="theirs", override=override, **where)
    assert foreign_collection_survives(where)

    indexes.Qdrant(collection_name="ours", override=True, **where).add_documents(ids, embeddings).close()
    reopened = indexes.Qdrant(collection_name="ours", **where)
    assert len(reopened) == 60
    reopened.close()
    replaced = indexes.Qdrant(collection_name="ours", override=True, **where)
    assert len(replaced) == 0 and replaced.dim is None
    replaced.add_documents(ids[:2], [np.ones((2, 8), dtype=np.float32) / np.sqrt(8)] * 2)  # a new dimension
    assert replaced.dim == 8
    replaced.close()
    assert foreign_collection_survives(where)


def test_an_unreachable_server_fails_fast_naming_its_url():
    started = time.perf_counter()
    with pytest.raises(ConnectionError, match="Cannot reach Qdrant at http://127.0.0.1:9 .*Connection refused"):
        indexes.Qdrant(url="http://127.0.0.1:9", check_compatibility=False)
    assert time.perf_counter() - started < 5  # no retries before the first answer


def test_transient_errors_are_retried_with_backoff_and_bad_requests_are_not(monkeypatch, corpus):
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    ids, embeddings, _ = corpus
    index = indexes.Qdrant(retries=2).add_documents(ids[:5], embeddings[:5])  # local mode in memory
    client, real_count = index._engine.client, index._engine.client.count
    delays, failures = [], []
    monkeypatch.setattr(qdrant_module.time, "sleep", delays.append)

    def flaky(*args, **kwargs):
        if failures:
            raise failures.pop()
        return real_count(*args, **kwargs)

    monkeypatch.setattr(client, "count", flaky)
    failures[:] = [ResponseHandlingException(httpx.ConnectError("refused")), UnexpectedResponse(503, "", b"", {})]
    assert len(index) == 5 and delays == [0.5, 1.0]
    timeout = ResponseHandlingException(httpx.ReadTimeout("slow"))
    failures[:] = [UnexpectedResponse(400, "Bad Request", b"wrong", {}), timeout]
    with pytest.raises(UnexpectedResponse):  # the timeout is retried, the bad request raises at once
        len(index)
    assert delays == [0.5, 1.0, 0.5]
    failures[:] = [timeout] * 3
    with pytest.raises(ConnectionError, match="Qdrant at :memory: failed count 3 times: ReadTimeout: slow"):
        len(index)


def test_the_indexes_package_imports_without_qdrant_and_says_how_to_install_it():
    code = (
        "import sys; sys.modules['qdrant_client'] = sys.modules['qdrant_edge'] = None\n"
        "from workbench import indexes\n"
        "try:\n    indexes.Qdrant()\nexcept ImportError as error:\n    print(error)\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'needs qdrant-client: pip install "workbench[qdrant]"' in output


# -- parity with exact search on real embeddings (issue 15's acceptance test) ----------------------------


def rounding_bound(n_query_tokens: int, dim: int) -> float:
    """How far float32 rounding can move a MaxSim score of unit vectors: Higham's bound ``n·u`` for each
    ``dim``-term dot product, then for the sum of ``n_query_tokens`` maxima, each at most 1 in size."""
    u = np.finfo(np.float32).eps / 2
    return float(n_query_tokens * (dim + n_query_tokens) * u)


PARITY_DOCUMENTS = 600  # msmarco-dl19-5k's first passages: encoding all 5,000 takes minutes on a CPU


@pytest.fixture(scope="module")
def msmarco(tmp_path_factory, answerai):
    """answerai-colbert-small-v1 embeddings of msmarco-dl19-5k's queries and first passages, and Exact's top 10."""
    collection = data.load_beir(require(SHARED_DATA / "msmarco-dl19-5k"))
    document_ids = list(collection.corpus)[:PARITY_DOCUMENTS]
    queries = pack(answerai.encode(list(collection.queries.values()), is_query=True, batch_size=32))
    documents = pack(answerai.encode([collection.corpus[d] for d in document_ids], is_query=False, batch_size=32))
    exact = indexes.Exact(index_folder=tmp_path_factory.mktemp("exact"), index_name="i", dtype="float32")
    exact.add_documents(document_ids, [documents[i] for i in range(len(documents))])
    reference = retrieve.ColBERT(exact).retrieve(queries, k=10)
    exact.close()
    scores = colbert_scores(queries, documents).numpy()  # every document's exact score, to judge ties
    return queries, document_ids, documents, reference, scores


# Local mode in memory: on disk, qdrant-client commits every point to SQLite on its own (minutes for 5,000).
PARITY = {"local": lambda folder: {"location": ":memory:"}, "edge": ENGINES["edge"]}


@pytest.mark.parametrize("engine", sorted(PARITY))
def test_top_10_on_msmarco_equals_exact_search_up_to_ties(engine, msmarco, tmp_path):
    queries, document_ids, documents, reference, scores = msmarco
    index = indexes.Qdrant(collection_name="msmarco", override=True, hnsw=False, **PARITY[engine](tmp_path))
    index.add_documents(document_ids, [documents[i] for i in range(len(documents))], show_progress_bar=False)
    results = retrieve.ColBERT(index).retrieve(queries, k=10)
    index.close()

    column = {identifier: position for position, identifier in enumerate(document_ids)}
    identical = 0
    for q, (hits, want) in enumerate(zip(results, reference)):
        tolerance = 2 * rounding_bound(len(queries[q]), queries.dim)  # two computations of each score
        assert len(hits) == 10
        for hit, expected in zip(hits, want):
            true_score = scores[q, column[hit["id"]]]
            assert hit["score"] == pytest.approx(true_score, rel=0, abs=tolerance)
            # the same document, or one whose exact score ties with it (their order is the engine's choice)
            assert hit["id"] == expected["id"] or abs(true_score - expected["score"]) <= tolerance, (q, hit, expected)
            identical += hit["id"] == expected["id"]
    assert identical >= 0.9 * 10 * len(queries)  # ties are rare: the comparison is not vacuous


def test_rankings_agree_tells_ties_from_reordering():
    reference = [[{"id": "a", "score": 3.0}, {"id": "b", "score": 2.0}, {"id": "c", "score": 2.0}]]
    tied = [[{"id": "a", "score": 3.0}, {"id": "c", "score": 2.0}, {"id": "b", "score": 2.0}]]
    moved = [[{"id": "b", "score": 2.0}, {"id": "a", "score": 3.0}, {"id": "c", "score": 2.0}]]
    # b and c 1e-4 apart at 20: top_k ties them (16 mantissa bits) and orders them by position
    near = [[{"id": "a", "score": 30.0}, {"id": "b", "score": 20.0001}, {"id": "c", "score": 20.0}]]
    near_swapped = [[{"id": "a", "score": 30.0}, {"id": "c", "score": 19.9998}, {"id": "b", "score": 20.0001}]]
    agreement = retrieve.rankings_agree(tied + moved + reference + near_swapped, reference * 3 + near)
    assert agreement["same order"].tolist() == [False, False, True, False]
    assert agreement["same up to ties"].tolist() == [True, False, True, True]
    # between the two scores of one document: c's 19.9998 against 20.0
    assert agreement["largest score difference"].tolist() == pytest.approx([0.0, 0.0, 0.0, 2e-4])
    far = [[{"id": "a", "score": 30.0}, {"id": "c", "score": 20.0}, {"id": "b", "score": 19.99}]]
    assert not retrieve.rankings_agree(far, near)["same up to ties"].all(), "0.01 apart at 20 is an order"
    with pytest.raises(ValueError, match="2 result lists against 1"):
        retrieve.rankings_agree(tied * 2, reference)
