"""The reverse direction (documents written for queries from query metadata): the dataset setting, the sources
the models write for, the mapping onto real documents, and the demo world whose knowledge only queries carry."""

import json

import numpy as np
import polars as pl
import pytest

from skim_assets.lib.datasets import DatasetSpec, import_tables, read_spec
from skim_assets.lib.demo import CATEGORY_TITLES, DemoWorldConfig, generate_demo_world, write_demo_dataset
from skim_assets.lib.demonstrations import generation_sources, teacher_reference_texts
from skim_assets.lib.formats import DOCUMENTS_FOR_QUERIES, QUERIES_FOR_DOCUMENTS, DataError
from skim_assets.lib.mapping import MappingSettings, map_incrementally
from skim_assets.lib.quality import label_repair
from skim_assets_tests.lib.test_mapping import TRAIN, TRAIN_IDS, _unit


def test_direction_follows_the_prompt_style_unless_set():
    assert DatasetSpec().direction == QUERIES_FOR_DOCUMENTS
    assert DatasetSpec(prompt_style="wiki-categories").direction == DOCUMENTS_FOR_QUERIES
    assert (DatasetSpec(prompt_style="wiki-categories", generate=QUERIES_FOR_DOCUMENTS).direction
            == QUERIES_FOR_DOCUMENTS)


def test_spec_refuses_an_unknown_direction_and_a_query_field_outside_beir(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"generate": "both_ways"}))
    with pytest.raises(DataError, match="generate must be one of") as error:
        read_spec(tmp_path)
    assert error.value.field == "generate"
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "xc-raw", "query_metadata_field": "content"}))
    with pytest.raises(DataError, match="for BEIR folders"):
        read_spec(tmp_path)


DOCUMENTS = pl.DataFrame({"doc_id": ["C1", "C2", "C3"], "title": ["migraine remedies", "made in Lyon", "herbal tea"],
                          "metadata": ["", "", ""]})
QUERIES = pl.DataFrame({"query_id": ["q1", "q2", "q3", "q4"],
                        "text": ["Orvana 4471 herbal tea", "Luxixi 8696", "Orvana 4471 reviews", "Kapesa 6523"],
                        "split": ["train", "train", "test", "train"],
                        "metadata": ["Orvana: a herbal tea against migraine, Lyon.", "Luxixi: made in Lyon.",
                                     "Orvana: a herbal tea against migraine, Lyon.", ""]})
CLICKS = pl.DataFrame({"query_id": ["q1"], "doc_id": ["C3"], "weight": [1.0], "source": ["clicks"]})


def test_reverse_sources_are_the_train_queries_with_metadata_and_know_their_clicked_documents():
    sources, known = generation_sources(DOCUMENTS_FOR_QUERIES, DOCUMENTS, QUERIES, CLICKS)
    # the test query q3 is never a source (its labels are held back), nor q4 (no metadata)
    assert sources.rows() == [("q1", "Orvana 4471 herbal tea", "Orvana: a herbal tea against migraine, Lyon."),
                              ("q2", "Luxixi 8696", "Luxixi: made in Lyon.")]
    assert known == {"q1": ["herbal tea"]}
    assert teacher_reference_texts(DOCUMENTS_FOR_QUERIES, DOCUMENTS, QUERIES) == DOCUMENTS["title"].to_list()
    # the forward direction: the documents, and their clicked queries
    forward, known_queries = generation_sources(QUERIES_FOR_DOCUMENTS, DOCUMENTS, QUERIES, CLICKS)
    assert forward.equals(DOCUMENTS) and known_queries == {"C3": ["Orvana 4471 herbal tea"]}
    with pytest.raises(ValueError, match="needs query metadata"):
        generation_sources(DOCUMENTS_FOR_QUERIES, DOCUMENTS, QUERIES.drop("metadata"), CLICKS)


def test_synthetic_documents_map_onto_real_documents_as_pairs_of_their_query(tmp_path):
    # documents on the unit circle; q1's synthetic document points east (C-east), q2's between north and west
    synthetic = _unit([[1, 0], [-0.2, 1]])
    settings = MappingSettings(k=2, tau=0.8)
    pairs, candidates, stats = map_incrementally(["q1", "q2"], synthetic, TRAIN_IDS, TRAIN, settings, "skim",
                                                 tmp_path, "v1", target="doc_id")
    assert candidates.columns == ["synthetic", "doc_id", "cosine"]
    assert pairs.select("query_id", "doc_id").rows() == [("q1", "east"), ("q2", "north")]
    assert stats["targets_searched"] == 3
    # the same state folder for the forward direction is a different mapping: a full search, not a reuse
    _, forward, again = map_incrementally(["A", "B"], synthetic, TRAIN_IDS, TRAIN, settings, "skim", tmp_path, "v1")
    assert forward.columns == ["synthetic", "query_id", "cosine"] and again["incremental"] is False


def test_categories_world_states_every_missing_category_only_in_the_query_metadata(tmp_path):
    world = generate_demo_world(DemoWorldConfig(n_documents=40, world="categories"))
    docs = {d["_id"]: d for d in world["documents"]}
    queries = {q["_id"]: q for q in world["queries"]}
    hidden = 0
    for split in ("train", "test"):
        for query_id, doc_id in world["qrels"][split]:
            query, category = queries[query_id], docs[doc_id]
            assert query["split"] == split and category["text"] == ""  # documents carry no metadata
            value = _value_of(category["title"])
            assert value.lower() in query["description"].lower()  # the description states every category...
            if value.lower() not in query["text"].lower():  # ...the query text only its visible category
                hidden += 1
    assert hidden > 0.7 * sum(len(rows) for rows in world["qrels"].values())
    # every product is asked about once per split; the products world is unchanged by the variant's existence
    assert sorted(q["split"] for q in world["queries"]).count("test") == 40
    assert generate_demo_world(DemoWorldConfig(n_documents=40))["documents"][0]["_id"] == "D00000"

    folder = tmp_path / "demo-categories"
    write_demo_dataset(folder, DemoWorldConfig(n_documents=40, world="categories"))
    spec = read_spec(folder)
    assert spec.direction == DOCUMENTS_FOR_QUERIES and spec.query_metadata_field == "description"
    tables = import_tables(folder)
    assert tables.queries["metadata"].str.len_chars().min() > 0
    assert tables.documents["title"].n_unique() == tables.documents.height


def _value_of(title: str) -> str:
    for template in CATEGORY_TITLES.values():
        prefix, _, suffix = template.partition("{v}")
        if title.startswith(prefix) and title.endswith(suffix) and (prefix or suffix):
            return title[len(prefix): len(title) - len(suffix)]
    return title


def test_label_repair_counts_reverse_pairs_against_the_held_back_labels():
    oracle = pl.DataFrame({"query_id": ["q1", "q1", "q2"], "doc_id": ["C1", "C3", "C2"], "weight": [1.0] * 3,
                           "source": ["labels"] * 3})
    added = pl.DataFrame({"query_id": ["q1", "q2"], "doc_id": ["C1", "C3"], "weight": [0.9, 0.9],
                          "source": ["skim"] * 2})
    figures = label_repair(added, CLICKS, oracle)
    assert figures["pairs_correct"] == 1 and figures["precision"] == pytest.approx(0.5)
    assert figures["recall"] == pytest.approx(0.5) and np.isfinite(figures["precision"])


def test_metadata_augmented_input_extends_the_side_that_holds_the_metadata():
    from skim_assets.lib.retrieval import retrieval_input, with_metadata
    from skim_assets.resources import EncoderResource

    products = DOCUMENTS.with_columns(metadata=pl.Series(["A remedy   for\nmigraine.", "", "Tea from Lyon."]))
    queries, documents = with_metadata(QUERIES, products, "documents", max_words=3)
    assert queries.equals(QUERIES)
    assert documents["title"].to_list() == ["migraine remedies | A remedy for", "made in Lyon",
                                            "herbal tea | Tea from Lyon."]
    queries, documents = with_metadata(QUERIES, DOCUMENTS, "queries")
    assert documents.equals(DOCUMENTS)
    assert queries["text"].to_list()[1] == "Luxixi 8696 | Luxixi: made in Lyon." and queries["text"][3] == "Kapesa 6523"
    with pytest.raises(ValueError, match="metadata_side"):
        with_metadata(QUERIES, DOCUMENTS, "labels")

    encoder = EncoderResource(query_max_length=32, doc_max_length=24, metadata_max_length=96)
    plain = retrieval_input(QUERIES_FOR_DOCUMENTS, False, QUERIES, products, encoder)
    assert plain.documents.equals(products) and (plain.query_max_length, plain.doc_max_length) == (32, 24)
    forward = retrieval_input(QUERIES_FOR_DOCUMENTS, True, QUERIES, products, encoder)
    assert forward.documents["title"][0].startswith("migraine remedies | ") and forward.doc_max_length == 96
    reverse = retrieval_input(DOCUMENTS_FOR_QUERIES, True, QUERIES, DOCUMENTS, encoder)
    assert reverse.queries["text"][0].endswith("| Orvana: a herbal tea against migraine, Lyon.")
    assert (reverse.query_max_length, reverse.doc_max_length) == (96, 24)
