"""lib.quality: grounding, junk, agreement and label repair on hand-made rows with hand-computed answers."""

import polars as pl
import pytest

from skim_assets.lib.quality import (
    held_back_labels,
    judge_queries,
    junk_reason,
    keep_grounded,
    label_repair,
    query_quality,
    set_agreement,
)

DOCUMENTS = pl.DataFrame({
    "doc_id": ["D1", "D2"],
    "title": ["Luxixi 8696", "Kapesa 6523 face cream"],
    "metadata": ["Luxixi 8696: a herbal tea containing lavender. People use it against migraines. Made in Lyon.",
                 "Kapesa 6523: a face cream containing zinc. People use it against insomnia."],
})


@pytest.mark.parametrize("query, reason", [
    ("A: No, it is a", "prefix"),
    ("Text: Quilts of", "prefix"),
    ("1.1.1.2: What is the nature of the sword", "prefix"),
    ("b) herbal tea", "prefix"),
    ("@Kirsten", "code_like"),
    ("3414.1.7", "code_like"),
    ("QQQU", "one_word"),
    ("Euro", "one_word"),
    ("what is the", "no_content"),
    ("tea for migraine", None),
    ("vitamin d3 for kids", None),
])
def test_junk_reasons(query, reason):
    assert junk_reason(query) == reason


def test_query_quality_counts_grounded_junk_and_distinct():
    queries = pl.DataFrame({
        "doc_id": ["D1", "D1", "D1", "D1", "D2", "D2"],
        "query": ["against migraine", "herbal tea containing lavender", "made in lyon", "Vellamo Labs products",
                  "A: No, it is a", "zinc face cream"],
    })
    figures = query_quality(queries, DOCUMENTS)
    # grounded: 'against migraine' (migraine ~ migraines on the first 5 letters), the lavender tea, lyon, zinc cream;
    # 'Vellamo Labs products' is not in D1's text, and the junk row never counts as grounded
    assert figures["grounded_share"] == pytest.approx(4 / 6)
    assert figures["junk_share"] == pytest.approx(1 / 6)
    assert figures["junk_by_reason"]["prefix"] == 1
    assert figures["distinct_queries_per_document"] == pytest.approx(6 / 2)
    assert figures["document_coverage"] == 1.0

    kept, dropped = keep_grounded(judge_queries(queries, DOCUMENTS), queries.columns)
    assert kept["query"].to_list() == ["against migraine", "herbal tea containing lavender", "made in lyon",
                                       "zinc face cream"]
    assert kept.columns == queries.columns
    assert dropped == {"prefix": 1, "code_like": 0, "one_word": 0, "no_content": 0, "ungrounded": 1}


def test_query_quality_of_nothing():
    empty = pl.DataFrame(schema={"doc_id": pl.String, "query": pl.String})
    figures = query_quality(empty, DOCUMENTS)
    assert figures["queries"] == 0 and figures["grounded_share"] == 0.0 and figures["document_coverage"] == 0.0


def test_set_agreement_is_mean_per_document_f1():
    student = pl.DataFrame({"doc_id": ["D1", "D1", "D2"], "query": ["Against  Migraine", "lyon tea", "zinc cream"]})
    teacher = pl.DataFrame({"doc_id": ["D1", "D1", "D2", "D3"],
                            "query": ["against migraine", "herbal tea", "face cream", "other"]})
    result = set_agreement(student, teacher, ["D1", "D2", "D3"])
    # D1: 1 of 2 written, 1 of 2 expected -> F1 0.5; D2: 0; D3: the student wrote nothing -> 0
    assert result["documents"] == 3
    assert result["f1"] == pytest.approx(0.5 / 3)
    assert result["precision"] == pytest.approx(0.5 / 3)


def pairs(rows):
    return pl.DataFrame(rows, schema={"query_id": pl.String, "doc_id": pl.String}, orient="row").with_columns(
        pl.lit(1.0).alias("weight"), pl.lit("x").alias("source"))


def test_label_repair_against_held_back_labels():
    oracle = pairs([("q1", "D1"), ("q1", "D2"), ("q2", "D2"), ("q3", "D3"), ("q3", "D4")])
    clicks = pairs([("q1", "D1")])
    assert held_back_labels(oracle, clicks).height == 4
    # method: repeats a click (ignored), adds q1-D2 and q3-D4 (correct), q2-D1 (wrong) and a non-train query's pair
    added = pairs([("q1", "D1"), ("q1", "D2"), ("q3", "D4"), ("q2", "D1"), ("gandalf:D1", "D2")])
    result = label_repair(added, clicks, oracle)
    assert result["pairs_added"] == 4
    assert result["pairs_judged"] == 3
    assert result["pairs_correct"] == 2
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["held_back_labels"] == 4
    assert result["recall"] == pytest.approx(2 / 4)
    assert result["documents_repaired"] == 2
    assert result["documents_missing_labels"] == 3


def test_label_repair_without_held_back_labels():
    clicks = pairs([("q1", "D1")])
    result = label_repair(pairs([("q1", "D2")]), clicks, clicks)
    assert result["precision"] == 0.0 and result["recall"] == 0.0 and result["held_back_labels"] == 0
