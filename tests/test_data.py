"""BEIR and NanoBEIR loading, with the quirks of real collections."""

import json

import pandas as pd
import pytest

from workbench import data
from workbench.data import Collection, DataFormatError


def write_beir(folder, corpus, queries, qrels_text, split="test"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(row) for row in corpus) + "\n", encoding="utf-8")
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(row) for row in queries) + "\n", encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / f"{split}.tsv").write_text(qrels_text, encoding="utf-8")
    return folder


CORPUS = [
    {"_id": "d1", "title": "Paris", "text": "capital of France"},
    # json.dumps with ensure_ascii=False keeps U+2028 raw in the line, as real MS MARCO files do.
    {"_id": "<dbpedia:Oceanic_Airlines>", "title": "", "text": "first line\u2028second line"},
    {"_id": "d3", "text": "no title key at all"},
]
QUERIES = [{"_id": "q1", "text": "what is the capital of france"}, {"_id": "q2", "text": "airlines"}]


def raw_jsonl(rows):
    return "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n"


def test_beir_folder_without_header_with_u2028_and_titles(tmp_path):
    folder = write_beir(tmp_path / "toy", CORPUS, QUERIES, "q1\td1\t2\nq2\t<dbpedia:Oceanic_Airlines>\t1\nq2\td3\t0\n")
    (folder / "corpus.jsonl").write_text(raw_jsonl(CORPUS), encoding="utf-8")
    collection = data.load_beir(folder)
    assert len(collection.corpus) == 3, "U+2028 must not split a line"
    assert collection.corpus["d1"] == "Paris capital of France"
    assert collection.corpus["<dbpedia:Oceanic_Airlines>"] == "first line\u2028second line"
    assert collection.titles == {"d1": "Paris"}
    assert collection.qrels == {"q1": {"d1": 2}, "q2": {"<dbpedia:Oceanic_Airlines>": 1, "d3": 0}}
    assert repr(collection) == "Collection('toy': 3 documents, 2 queries, 2 judged)"


def test_qrels_header_and_trec_four_columns(tmp_path):
    with_header = write_beir(tmp_path / "a", CORPUS, QUERIES, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t0\n")
    assert data.load_beir(with_header).qrels == {"q1": {"d1": 1}, "q2": {"d3": 0}}
    assert list(data.load_beir(with_header).judged_queries) == ["q1"]
    trec = write_beir(tmp_path / "b", CORPUS, QUERIES, "q1 0 d1 3\nq2 0 d3 1\n")
    assert data.load_beir(trec).qrels == {"q1": {"d1": 3}, "q2": {"d3": 1}}


def test_errors_name_the_file_and_line(tmp_path):
    folder = write_beir(tmp_path / "bad", CORPUS, QUERIES, "q1\td1\t1\nq2\td3\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:2: expected 3 columns"):
        data.load_beir(folder)
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t1\nq2\td3\thigh\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:2: score 'high' is not an integer"):
        data.load_beir(folder)
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "text": broken}\n')
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:2: not valid JSON"):
        data.load_beir(folder)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"id": "d2", "text": "x"}\n')
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:2: a row needs '_id' and 'text'"):
        data.load_beir(folder)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d1", "text": "again"}\n')
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:2: duplicate id 'd1'"):
        data.load_beir(folder)
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n')
    (folder / "queries.jsonl").unlink()
    with pytest.raises(DataFormatError, match=r"queries\.jsonl: file not found"):
        data.load_beir(folder)
    with pytest.raises(DataFormatError, match="no such collection folder"):
        data.load_beir(tmp_path / "missing")


def test_nanobeir_layout_on_disk(tmp_path):
    folder = tmp_path / "NanoToy"
    for part, rows in {
        "corpus": [{"_id": "d1", "text": "alpha"}, {"_id": "d2", "text": "beta"}],
        "queries": [{"_id": "q1", "text": "first letter"}],
        "qrels": [{"query-id": "q1", "corpus-id": "d1"}],  # NanoBEIR qrels carry no score column
    }.items():
        (folder / part).mkdir(parents=True)
        pd.DataFrame(rows).to_parquet(folder / part / "train-00000-of-00001.parquet")
    collection = data.load_nanobeir(folder)
    assert collection.name == "NanoToy"
    assert collection.corpus == {"d1": "alpha", "d2": "beta"}
    assert collection.qrels == {"q1": {"d1": 1}}
    (folder / "qrels" / "train-00000-of-00001.parquet").unlink()
    with pytest.raises(DataFormatError, match="no parquet or jsonl files"):
        data.load_nanobeir(folder)


def test_nanobeir_names_map_to_the_thirteen_hub_ids():
    assert len(data.NANOBEIR_DATASETS) == 13
    assert data.nanobeir_hub_id("scifact") == "zeta-alpha-ai/NanoSciFact"
    assert data.nanobeir_hub_id("NanoClimateFEVER") == "zeta-alpha-ai/NanoClimateFEVER"
    assert data.nanobeir_hub_id("zeta-alpha-ai/NanoTouche2020") == "zeta-alpha-ai/NanoTouche2020"
    with pytest.raises(ValueError, match="neither a folder nor a NanoBEIR dataset"):
        data.nanobeir_hub_id("NanoUnknown")


def test_the_shared_collections_load_with_their_documented_counts(shared_data):
    # Counts from ../shared/README.md: 5,000 documents, 50 queries, 43 / 40 queries with a positive judgement.
    msmarco = data.load_nanobeir(shared_data / "msmarco-dl19-5k")
    dbpedia = data.load_beir(shared_data / "dbpedia-entity-5k")
    assert (len(msmarco.corpus), len(msmarco.queries), len(msmarco.judged_queries)) == (5000, 50, 43)
    assert (len(dbpedia.corpus), len(dbpedia.queries), len(dbpedia.judged_queries)) == (5000, 50, 40)
    assert "<dbpedia:Oceanic_Airlines>" in {d for judged in dbpedia.qrels.values() for d in judged} | set(
        dbpedia.corpus
    )


def test_save_beir_round_trips(tmp_path):
    folder = write_beir(tmp_path / "toy", CORPUS, QUERIES, "q1\td1\t2\nq2\td3\t0\n")
    (folder / "corpus.jsonl").write_text(raw_jsonl(CORPUS), encoding="utf-8")
    original = data.load_beir(folder)
    copy = data.load_beir(data.save_beir(original, tmp_path / "copy"), name="toy")
    assert (copy.corpus, copy.titles, copy.queries, copy.qrels) == (
        original.corpus,
        original.titles,
        original.queries,
        original.qrels,
    )


def test_statistics_count_what_the_metrics_will_see():
    collection = Collection(
        "c",
        {"a": "one two", "b": "three four five six"},
        {"q": "x y z", "r": "w"},
        {"q": {"a": 1, "b": 2}, "r": {"a": 0}},
    )
    row = data.statistics([collection]).loc["c"]
    assert (row["documents"], row["queries"], row["judged queries"]) == (2, 2, 1)
    assert row["relevant per query"] == 2 and row["words per query"] == 2 and row["words per document"] == 3


def test_judged_queries_without_text_are_counted_warned_about_and_not_evaluated(tmp_path):
    # As a public BEIR subset: the qrels judge q1, q2 and six queries whose text the subset left out.
    qrels = "q1\td1\t1\nq2\td3\t1\n" + "".join(f"gone{i}\td1\t1\n" for i in range(6)) + "zero\td1\t0\n"
    folder = write_beir(tmp_path / "subset", CORPUS, QUERIES, qrels)
    with pytest.warns(UserWarning, match=r"subset: 6 judged queries have no text .* left out of the metrics"):
        collection = data.load_beir(folder)
    assert sorted(collection.judged_without_text) == [f"gone{i}" for i in range(6)]  # "zero" has no positive
    assert collection.judged_qrels == {"q1": {"d1": 1}, "q2": {"d3": 1}}
    assert repr(collection) == "Collection('subset': 3 documents, 2 queries, 2 judged, 6 judged without text)"
    assert data.statistics([collection]).loc["subset", "judged without text"] == 6


def test_a_byte_order_mark_is_not_part_of_the_first_id(tmp_path):
    folder = write_beir(tmp_path / "bom", CORPUS, QUERIES, "\ufeffq1\td1\t1\nq2\td3\t1\n")  # no header
    assert data.load_beir(folder).qrels == {"q1": {"d1": 1}, "q2": {"d3": 1}}
    (folder / "queries.jsonl").write_text("\ufeff" + raw_jsonl(QUERIES), encoding="utf-8")
    (folder / "corpus.jsonl").write_text("\ufeff" + raw_jsonl(CORPUS), encoding="utf-8")
    collection = data.load_beir(folder)
    assert list(collection.queries) == ["q1", "q2"] and list(collection.corpus)[0] == "d1"


def test_only_a_header_word_makes_the_first_qrels_line_a_header(tmp_path):
    folder = write_beir(tmp_path / "h", CORPUS, QUERIES, "q1\td1\thigh\nq2\td3\t1\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:1: score 'high' is not an integer"):
        data.load_beir(folder)
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t1\nq2\td3\tinf\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"test\.tsv:2: score 'inf' is not an integer"):
        data.load_beir(folder)
    (folder / "qrels" / "test.tsv").write_text("qid\tdocid\tScore\nq1\td1\t1\n", encoding="utf-8")
    assert data.load_beir(folder).qrels == {"q1": {"d1": 1}}


@pytest.mark.parametrize(
    "row, message",
    [
        ({"_id": None, "text": "x"}, r"corpus\.jsonl:2: '_id' must be a string or an integer, got None"),
        ({"_id": "d2", "text": ["a", "b"]}, r"corpus\.jsonl:2: 'text' must be a string, got list"),
        ({"_id": "d2", "title": 3, "text": "x"}, r"corpus\.jsonl:2: 'title' must be a string"),
    ],
)
def test_ids_and_texts_of_the_wrong_type_are_refused(tmp_path, row, message):
    folder = write_beir(tmp_path / "types", [CORPUS[0], row], QUERIES, "q1\td1\t1\n")
    with pytest.raises(DataFormatError, match=message):
        data.load_beir(folder)


def test_integer_ids_are_kept_and_parquet_nulls_are_empty_texts(tmp_path):
    folder = tmp_path / "NanoNulls"
    for part, rows in {
        "corpus": [{"_id": "d1", "text": "alpha"}, {"_id": "d2", "text": None}],
        "queries": [{"_id": 7, "text": "first letter"}],
        "qrels": [{"query-id": 7, "corpus-id": "d1"}],
    }.items():
        (folder / part).mkdir(parents=True)
        pd.DataFrame(rows).to_parquet(folder / part / "train.parquet")
    collection = data.load_nanobeir(folder)
    assert collection.corpus == {"d1": "alpha"}, "a null text is empty, not the text 'nan'"
    assert collection.queries == {"7": "first letter"} and collection.qrels == {"7": {"d1": 1}}


@pytest.mark.parametrize("bad_id", ["q\t1", "q\n1", "q1\r"])
def test_save_beir_refuses_ids_the_tsv_cannot_hold_before_writing(tmp_path, bad_id):
    for qrels in ({bad_id: {"a": 1}}, {"q": {bad_id: 1}}):
        collection = Collection("c", {"a": "alpha", bad_id: "beta"}, {"q": "x", bad_id: "y"}, qrels)
        with pytest.raises(ValueError, match="tab, newline or carriage return"):
            data.save_beir(collection, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_relevant_documents_ids_and_texts_in_corpus_order():
    # Insertion order b, a, c: not sorted, so a sort anywhere would show.
    collection = Collection(
        "c",
        {"b": "beta", "a": "alpha", "c": "gamma"},
        {"q": "x", "zero": "y"},
        {"q": {"a": 2, "b": 0, "c": 1}, "zero": {"a": 0}},
    )
    assert collection.relevant("q") == {"a": 2, "c": 1}, "grade 0 is judged non-relevant"
    assert collection.relevant("zero") == {} and collection.relevant("unjudged") == {}
    assert list(collection.judged_queries) == ["q"]
    assert data.is_relevant(1) and not data.is_relevant(0)
    assert collection.document_ids() == ["b", "a", "c"]
    assert collection.texts() == ["beta", "alpha", "gamma"]
    assert collection.texts(["c", "b"]) == ["gamma", "beta"]
    assert dict(zip(collection.document_ids(), collection.texts())) == collection.corpus


def write_nanobeir_jsonl(folder, corpus, queries, qrels):
    for part, rows in {"corpus": corpus, "queries": queries, "qrels": qrels}.items():
        (folder / part).mkdir(parents=True)
        (folder / part / "train.jsonl").write_text(raw_jsonl(rows), encoding="utf-8")
    return folder


def test_load_reads_a_beir_folder_and_a_nanobeir_folder(tmp_path):
    beir = write_beir(tmp_path / "beir", CORPUS, QUERIES, "q1\td1\t2\n", split="dev")
    (beir / "qrels" / "test.tsv").write_text("q2\td3\t1\n", encoding="utf-8")
    assert data.load(beir).qrels == {"q2": {"d3": 1}}
    collection = data.load(beir, split="dev", name="renamed")
    assert collection.qrels == {"q1": {"d1": 2}} and collection.name == "renamed"
    assert collection.titles == {"d1": "Paris"}, "read by the BEIR reader: titles joined from corpus.jsonl"

    nano = write_nanobeir_jsonl(
        tmp_path / "NanoJsonl",
        [{"_id": "d1", "text": "alpha"}, {"_id": "d2", "text": "beta"}],
        [{"_id": "q1", "text": "first"}],
        [{"query-id": "q1", "corpus-id": "d2"}],
    )
    collection = data.load(nano)
    assert (collection.name, collection.corpus, collection.qrels) == (
        "NanoJsonl",
        {"d1": "alpha", "d2": "beta"},
        {"q1": {"d2": 1}},
    )
    # Both layouts in one folder: BEIR comes first in READERS, so corpus.jsonl wins over corpus/.
    (nano / "corpus.jsonl").write_text(raw_jsonl(CORPUS), encoding="utf-8")
    (nano / "queries.jsonl").write_text(raw_jsonl(QUERIES), encoding="utf-8")
    (nano / "qrels" / "test.tsv").write_text("q1\td1\t1\n", encoding="utf-8")
    assert data.load(nano).qrels == {"q1": {"d1": 1}}


def test_load_tries_readers_in_order_and_a_new_format_is_one_entry(tmp_path, monkeypatch):
    toy = data.Format(
        "toy",
        lambda source: str(source).endswith(".toy"),
        lambda source, split: Collection("toy", {"d": "text"}, {"q": "query"}, {"q": {"d": 1}}),
    )
    monkeypatch.setattr(data, "READERS", (toy, *data.READERS))
    assert data.load(tmp_path / "any.toy").corpus == {"d": "text"}
    assert data.load(tmp_path / "any.toy", name="named").name == "named"
    with pytest.raises(DataFormatError, match=r"tried, in order: toy; BEIR folder"):
        data.load(tmp_path / "other")


def test_load_refuses_what_no_reader_recognises_naming_the_formats(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DataFormatError,
        match=r"empty: not a collection format .*BEIR folder.*NanoBEIR folder.*"
        r"NanoBEIR name or hub id \(one of .*scifact",
    ):
        data.load(tmp_path / "empty")
    # A folder named like a NanoBEIR dataset is a folder: it must not fall through to the hub.
    (tmp_path / "scifact").mkdir()
    with pytest.raises(DataFormatError, match="tried, in order"):
        data.load(tmp_path / "scifact")
    with pytest.raises(DataFormatError, match=r"NanoUnknown \(no such file or folder\): not a collection format"):
        data.load("NanoUnknown")
    with pytest.raises(ValueError, match="tried, in order"):  # load_nanobeir raised ValueError there before
        data.load_nanobeir("NanoUnknown")
    # Detection alone reads nothing, so a hub name is recognised offline.
    assert [reader.detects("NanoSciFact") for reader in data.READERS] == [False, False, True]
