"""Encoding in several processes (a pool, a device list) and streaming a corpus into an index chunk by chunk."""

import numpy as np
import pytest

from workbench import indexes, models, retrieve

QUERIES = [
    "what do cats eat",
    "how tall is the eiffel tower",
    "who wrote the iliad",
    "boiling point of water at altitude",
    "why is the sky blue",
    "fastest land animal",
    "how do vaccines work",
    "capital of australia",
    "what is a late interaction model",
    "when did the roman empire fall",
    "how many legs does a spider have",
    "what is photosynthesis",
]
DOCUMENTS = {
    f"d{i}": text
    for i, text in enumerate(
        [
            "Cats are obligate carnivores and eat mostly meat.",
            "The Eiffel Tower is 330 metres tall, antennas included.",
            "Homer is traditionally said to have written the Iliad and the Odyssey.",
            "Water boils at a lower temperature at high altitude, because the air pressure is lower.",
            "Rayleigh scattering of sunlight by the molecules of the atmosphere makes the sky look blue.",
            "The cheetah is the fastest land animal.",
            "Vaccines train the immune system to recognise a pathogen without causing the disease.",
            "Canberra is the capital city of Australia.",
            "ColBERT scores a document by the sum over query tokens of their best match among the document's tokens.",
            "The Western Roman Empire fell in 476, when Odoacer deposed Romulus Augustulus.",
            "Spiders have eight legs; insects have six.",
            "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
            "A short one.",
            "Dogs were domesticated from wolves tens of thousands of years ago, long before farming began.",
            "Mount Everest is the highest mountain above sea level.",
            "The Nile and the Amazon are the two longest rivers in the world.",
            "Honey never spoils if it is kept sealed.",
            "Octopuses have three hearts and blue blood.",
            "The speed of light in a vacuum is about 300,000 kilometres per second.",
            "Bananas are berries, botanically speaking, while strawberries are not.",
        ]
    )
}


@pytest.fixture(scope="module")
def pool(minilm_colbert):
    """Two CPU workers, started once: a start costs seconds (each worker imports torch and unpickles the model)."""
    with pytest.MonkeyPatch.context() as patch:
        # Workers read it when they start. Left at the core count, two workers' threads fight over the
        # two cores: encoding gets ~20 times slower.
        patch.setenv("OMP_NUM_THREADS", "1")
        pool = minilm_colbert.start_multi_process_pool(["cpu", "cpu"])
    yield pool
    minilm_colbert.stop_multi_process_pool(pool)


@pytest.fixture
def pool_lifecycle(monkeypatch, pool):
    """The pools a device list starts and stops: each start hands out the running two-worker pool (a start
    costs seconds) and each stop is only noted. Patched on the class: the instance is pickled to the workers."""
    events = []

    def start(self, target_devices=None):
        events.append(("start", target_devices))
        return pool

    monkeypatch.setattr(models.ColBERT, "start_multi_process_pool", start)
    monkeypatch.setattr(models.ColBERT, "stop_multi_process_pool", staticmethod(lambda stopped: events.append("stop")))
    return events


def assert_same_embeddings(actual, expected):
    """Same token counts, and every token's cosine with its single-process twin above 0.9999: processes may
    batch (and so pad) texts differently, which moves the last digits, not the directions."""
    assert [len(a) for a in actual] == [len(e) for e in expected]
    for a, e in zip(actual, expected):
        a, e = np.asarray(a, dtype=np.float64), np.asarray(e, dtype=np.float64)
        cosines = (a * e).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(e, axis=1))
        assert cosines.min() > 0.9999


@pytest.mark.parametrize("is_query", [True, False], ids=["queries", "documents"])
def test_a_pool_of_two_processes_encodes_as_one_does(minilm_colbert, pool, is_query):
    texts = QUERIES if is_query else list(DOCUMENTS.values())
    one = minilm_colbert.encode(texts, is_query=is_query)
    # chunk_size=3: several chunks per worker, so the results must be put back in input order.
    two = minilm_colbert.encode(texts, is_query=is_query, pool=pool, chunk_size=3)
    assert all(isinstance(e, np.ndarray) for e in two)
    assert_same_embeddings(two, one)


def test_a_pool_applies_pool_factor_in_the_workers(minilm_colbert, pool):
    texts = list(DOCUMENTS.values())
    pooled = minilm_colbert.encode(texts, is_query=False, pool=pool, pool_factor=2)
    assert_same_embeddings(pooled, minilm_colbert.encode(texts, is_query=False, pool_factor=2))
    assert sum(map(len, pooled)) < sum(map(len, minilm_colbert.encode(texts, is_query=False)))


def test_a_device_list_starts_one_pool_even_under_the_chunked_progress_bar(minilm_colbert, pool_lifecycle):
    # 12 queries in batches of 2 under a progress bar: still one pool for the whole call.
    two = minilm_colbert.encode(QUERIES, is_query=True, batch_size=2, show_progress_bar=True, device=["cpu", "cpu"])
    assert pool_lifecycle == [("start", ["cpu", "cpu"]), "stop"]
    assert_same_embeddings(two, minilm_colbert.encode(QUERIES, is_query=True))


def test_bad_multi_process_settings_are_refused(minilm_colbert, pool):
    with pytest.raises(ValueError, match="pool or device, not both"):
        minilm_colbert.encode(QUERIES, pool=pool, device="cpu")
    with pytest.raises(ValueError, match="empty list"):
        minilm_colbert.encode(QUERIES, device=[])
    with pytest.raises(TypeError, match="start_multi_process_pool"):
        minilm_colbert.encode(QUERIES, pool=2)
    with pytest.raises(ValueError, match="chunk_size is for several processes"):
        minilm_colbert.encode(QUERIES, chunk_size=4)


def exact_index(folder, name):
    return indexes.Exact(index_folder=folder, index_name=name, override=True, dtype="float32")


@pytest.mark.parametrize("processes", ["one process", "pool"])
def test_streaming_builds_the_index_encoding_everything_at_once_builds(minilm_colbert, pool, tmp_path, processes):
    whole = exact_index(tmp_path, "whole")
    whole.add_documents(
        documents_ids=list(DOCUMENTS),
        documents_embeddings=minilm_colbert.encode(list(DOCUMENTS.values()), is_query=False),
    )
    streamed = retrieve.index_corpus(
        minilm_colbert,
        DOCUMENTS,
        exact_index(tmp_path, "streamed"),
        chunk_size=3,
        batch_size=2,
        pool=pool if processes == "pool" else None,
        show_progress_bar=False,
    )

    assert streamed.ids == whole.ids == list(DOCUMENTS)
    assert_same_embeddings(streamed.get_documents_embeddings(streamed.ids), whole.get_documents_embeddings(whole.ids))
    queries = minilm_colbert.encode(QUERIES, is_query=True)
    streamed_top = retrieve.ColBERT(streamed).retrieve(queries, k=5)
    whole_top = retrieve.ColBERT(whole).retrieve(queries, k=5)
    assert [[hit["id"] for hit in hits] for hits in streamed_top] == [[hit["id"] for hit in hits] for hits in whole_top]
    np.testing.assert_allclose(
        [hit["score"] for hits in streamed_top for hit in hits],
        [hit["score"] for hits in whole_top for hit in hits],
        rtol=1e-4,
    )


def test_streaming_with_a_device_list_starts_one_pool_for_the_whole_corpus(minilm_colbert, tmp_path, pool_lifecycle):
    index = retrieve.index_corpus(
        minilm_colbert, DOCUMENTS, exact_index(tmp_path, "index"), chunk_size=4, device=["cpu", "cpu"]
    )
    assert pool_lifecycle == [("start", ["cpu", "cpu"]), "stop"]
    assert index.ids == list(DOCUMENTS)
    assert_same_embeddings(
        index.get_documents_embeddings(index.ids), minilm_colbert.encode(list(DOCUMENTS.values()), is_query=False)
    )


def test_a_generator_is_read_one_chunk_at_a_time(minilm_colbert):
    pulled = 0

    def corpus():
        nonlocal pulled
        for pair in DOCUMENTS.items():
            pulled += 1
            yield pair

    class Recorder:
        """Any object with add_documents is an index here; this one notes how much had been read at each call."""

        def __init__(self):
            self.calls = []

        def add_documents(self, documents_ids, documents_embeddings, show_progress_bar=True):
            self.calls.append((pulled, len(documents_ids), len(documents_embeddings), show_progress_bar))

    recorder = retrieve.index_corpus(minilm_colbert, corpus(), Recorder(), chunk_size=6, show_progress_bar=False)
    # Each call came after its own chunk was read and before the next one was; the index's own bar stays off.
    assert recorder.calls == [(6, 6, 6, False), (12, 6, 6, False), (18, 6, 6, False), (20, 2, 2, False)]


@pytest.mark.parametrize(
    "documents, chunk_size, error, message",
    [
        ([("a", "one text"), ("b", "another"), ("a", "the same id again")], 10, ValueError, "'a' appears twice"),
        ([("a", "one text"), ("b", 3)], 10, TypeError, "'b' has a int text"),
        ([("a", "one text"), ("b", "   ")], 10, ValueError, "'b' has an empty text"),
        ([("a", "one text"), (None, "no id")], 10, ValueError, "str or int"),
        (["texts without ids"], 10, TypeError, r"\(id, text\) pairs"),
        ("one string", 10, TypeError, "not a string"),
        ({"a": "one text"}, 0, ValueError, "chunk_size must be a positive integer"),
    ],
    ids=["duplicate id", "non-str text", "empty text", "None id", "no ids", "a string", "chunk_size 0"],
)
def test_bad_input_is_refused_before_writing(minilm_colbert, tmp_path, documents, chunk_size, error, message):
    index = exact_index(tmp_path, "index")
    with pytest.raises(error, match=message):
        retrieve.index_corpus(minilm_colbert, documents, index, chunk_size=chunk_size, show_progress_bar=False)
    assert len(index) == 0


def test_a_duplicate_in_a_later_chunk_says_what_is_already_in_the_index(minilm_colbert, tmp_path):
    index = exact_index(tmp_path, "index")
    pairs = [*DOCUMENTS.items(), ("d1", "d1 again")]
    with pytest.raises(ValueError, match="'d1' appears twice.*the 18 before it are in the index"):
        retrieve.index_corpus(minilm_colbert, iter(pairs), index, chunk_size=6, show_progress_bar=False)
    assert index.ids == list(DOCUMENTS)[:18]
