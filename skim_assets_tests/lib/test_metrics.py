"""Hand-computed checks of skim_assets.lib.metrics (pyxclib conventions, see the module docstring)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from skim_assets.lib.metrics import evaluate_rankings, jain_propensities, per_query_metrics
from skim_assets.lib.report_tables import metrics_table_markdown

L2 = 1.0 / math.log2(3)  # discount of rank 2 = 0.6309...
L3 = 1.0 / math.log2(4)  # discount of rank 3 = 0.5


def ranked_frame(rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"query_id": pl.String, "doc_id": pl.String, "score": pl.Float64}, orient="row")


def qrels_frame(rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    schema = {"query_id": pl.String, "doc_id": pl.String, "relevance": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


# The toy. Rows deliberately unsorted.
#   q1: ranking d1(hit) d2 d3(hit) d9      relevant {d1, d3}; d9 has relevance 0 -> not relevant
#   q2: ranking d5 d2(hit) d7              relevant {d2}
#   q3: ranking d4(hit) d8                 relevant {d4, d5, d6}; only 2 predictions
RANKED = ranked_frame([
    ("q2", "d7", 0.1), ("q1", "d3", 0.7), ("q1", "d1", 0.9), ("q3", "d8", 0.2), ("q1", "d9", 0.6),
    ("q2", "d5", 0.9), ("q1", "d2", 0.8), ("q3", "d4", 0.3), ("q2", "d2", 0.5),
])
QRELS = qrels_frame([
    ("q1", "d1", 1.0), ("q1", "d3", 2.0), ("q1", "d9", 0.0),
    ("q2", "d2", 1.0),
    ("q3", "d4", 1.0), ("q3", "d5", 1.0), ("q3", "d6", 1.0),
])
# Expected values for ks=(1, 3):
#   P@1    = (1 + 0 + 1) / 3                         = 2/3
#   P@3    = (2/3 + 1/3 + 1/3) / 3                   = 4/9
#   R@1    = (1/2 + 0/1 + 1/3) / 3                   = 5/18
#   R@3    = (2/2 + 1/1 + 1/3) / 3                   = 7/9
#   nDCG@1 = P@1 with binary gains                    = 2/3
#   nDCG@3: q1 DCG = 1 + 1/log2(4) = 1.5, IDCG (min(3,2)=2 hits) = 1 + 1/log2(3)      -> 1.5 / 1.6309 = 0.9197
#           q2 DCG = 1/log2(3) = 0.6309,  IDCG (1 hit) = 1                              -> 0.6309
#           q3 DCG = 1,                   IDCG (3 hits) = 1 + 1/log2(3) + 1/log2(4)     -> 1 / 2.1309 = 0.4693
#           mean = (0.9197 + 0.6309 + 0.4693) / 3 = 0.6733
NDCG3 = (1.5 / (1 + L2) + L2 + 1 / (1 + L2 + L3)) / 3
EXPECTED = {"P@1": 2 / 3, "P@3": 4 / 9, "R@1": 5 / 18, "R@3": 7 / 9, "nDCG@1": 2 / 3, "nDCG@3": NDCG3}


def assert_metrics(got: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_toy_precision_recall_ndcg():
    got = evaluate_rankings(RANKED, QRELS, ks=(1, 3))
    assert_metrics(got, EXPECTED)
    assert got["nDCG@3"] == pytest.approx(0.673309756, abs=1e-8)
    assert got["queries"] == 3
    assert list(got) == ["P@1", "P@3", "R@1", "R@3", "nDCG@1", "nDCG@3", "queries"]
    assert all(type(v) is float for k, v in got.items() if k != "queries")


def test_default_ks_keys():
    got = evaluate_rankings(RANKED, QRELS)
    for k in (1, 5, 10, 25, 100):
        assert {f"P@{k}", f"R@{k}", f"nDCG@{k}"} <= set(got)
    assert not any(key.startswith("PSP") for key in got)


def test_score_ties_are_broken_by_doc_id_descending_as_trec_eval_does():
    # Both docs score 1.0 and "a" comes first in the frame, but "b" > "a" so "b" is at rank 1 (trec_eval's order).
    ranked = ranked_frame([("q", "a", 1.0), ("q", "b", 1.0), ("q", "c", 0.5)])
    only_b = evaluate_rankings(ranked, qrels_frame([("q", "b", 1.0)]), ks=(1,))
    only_a = evaluate_rankings(ranked, qrels_frame([("q", "a", 1.0)]), ks=(1, 2))
    assert only_b["P@1"] == 1.0  # b at rank 1
    assert only_a["P@1"] == 0.0  # a at rank 2
    assert only_a["P@2"] == 0.5
    assert only_a["nDCG@2"] == pytest.approx(L2)  # hit at rank 2: (1/log2 3) / 1


def test_query_without_labels_is_excluded_and_its_predictions_ignored():
    ranked = pl.concat([
        RANKED,
        # q4 has only a relevance-0 qrel -> unlabelled; q6 is absent from qrels. Both would be perfect/zero
        # rows that change every mean if they were counted.
        ranked_frame([("q4", "x", 1.0), ("q4", "y", 0.5), ("q6", "d1", 1.0)]),
    ])
    qrels = pl.concat([QRELS, qrels_frame([("q4", "x", 0.0)])])
    got = evaluate_rankings(ranked, qrels, ks=(1, 3))
    assert got["queries"] == 3
    assert_metrics(got, EXPECTED)


def test_relevance_zero_rows_are_not_relevant():
    # q1's d9 (relevance 0) is at rank 4; with k=5 a relevant d9 would make R@5(q1) count it.
    # P@5 = (2/5 + 1/5 + 1/5) / 3 = 4/15 (not (3/5 + ...) as it would be if d9 counted)
    got = evaluate_rankings(RANKED, QRELS, ks=(5,))
    assert got["P@5"] == pytest.approx(4 / 15)
    per_q = per_query_metrics(RANKED, QRELS, 5).filter(pl.col("query_id") == "q1").row(0, named=True)
    assert per_q["n_relevant"] == 2 and per_q["hits"] == 2


def test_labelled_query_without_predictions_scores_zero():
    qrels = pl.concat([QRELS, qrels_frame([("q5", "d1", 1.0)])])
    got = evaluate_rankings(RANKED, qrels, ks=(1, 3))
    assert got["queries"] == 4
    # each mean is the 3-query sum plus 0, divided by 4
    assert_metrics(got, {key: value * 3 / 4 for key, value in EXPECTED.items()})
    row = per_query_metrics(RANKED, qrels, 3).filter(pl.col("query_id") == "q5").row(0, named=True)
    assert row == {"query_id": "q5", "hits": 0, "n_relevant": 1, "precision": 0.0, "recall": 0.0}


def test_k_larger_than_number_of_predictions():
    # q3 has 2 predictions (1 hit): P@5 = 1/5 (denominator k, as pyxclib), R@5 = 1/3.
    per_q = per_query_metrics(RANKED, QRELS, 5)
    assert per_q.columns == ["query_id", "hits", "n_relevant", "precision", "recall"]
    assert per_q["query_id"].to_list() == ["q1", "q2", "q3"]
    assert per_q["hits"].to_list() == [2, 1, 1]
    assert per_q["n_relevant"].to_list() == [2, 1, 3]
    assert per_q["precision"].to_list() == pytest.approx([2 / 5, 1 / 5, 1 / 5])
    assert per_q["recall"].to_list() == pytest.approx([1.0, 1.0, 1 / 3])
    got = evaluate_rankings(RANKED, QRELS, ks=(5, 100))
    assert got["P@5"] == pytest.approx(4 / 15)  # (2/5 + 1/5 + 1/5) / 3
    assert got["P@100"] == pytest.approx(4 / 300)  # (2 + 1 + 1) / 100 / 3
    assert got["R@100"] == pytest.approx(7 / 9)  # no hits beyond rank 3
    assert got["nDCG@100"] == pytest.approx(NDCG3)  # ideal DCG still uses min(k, n_relevant) hits
    # per_query_metrics and evaluate_rankings agree
    assert per_q["precision"].mean() == pytest.approx(got["P@5"])


def test_duplicate_predictions_keep_the_best_row():
    ranked = ranked_frame([("q", "a", 0.9), ("q", "a", 0.8), ("q", "b", 0.7)])
    got = evaluate_rankings(ranked, qrels_frame([("q", "a", 1.0), ("q", "b", 1.0)]), ks=(2,))
    assert got["P@2"] == 1.0  # a counted once at rank 1, b at rank 2


PROPENSITIES = pl.DataFrame({
    "doc_id": ["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "unused"],
    "propensity": [0.5, 0.25, 0.1, 1.0, 0.2, 0.5, 1.0, 1.0, 0.3],
})  # 1/p: d1 2, d2 4, d3 10, d4 1, d5 5, d6 2, d7 1, d8 1


def test_psp_against_hand_computation():
    got = evaluate_rankings(RANKED, QRELS, ks=(1, 3), propensities=PROPENSITIES)
    # PSP@1: numerators (1/p of top-1 hits): q1 d1 -> 2, q2 miss -> 0, q3 d4 -> 1        sum 3
    #        ideal (largest 1/p among relevant): q1 max(2, 10) = 10, q2 4, q3 max(1, 5, 2) = 5   sum 19
    #        ratio of means: (3/3/1) / (19/3/1) = 3/19
    # PSP@3: numerators: q1 d1 + d3 = 12, q2 d2 = 4, q3 d4 = 1                            sum 17
    #        ideal (3 largest): q1 2 + 10 = 12 (only 2 relevant), q2 4, q3 5 + 2 + 1 = 8    sum 24
    #        -> 17/24
    assert got["PSP@1"] == pytest.approx(3 / 19)
    assert got["PSP@3"] == pytest.approx(17 / 24)
    # not the mean of per-query ratios, (2/10 + 0/4 + 1/5) / 3 = 2/15
    assert got["PSP@1"] != pytest.approx(2 / 15)
    assert_metrics(got, EXPECTED)  # the other metrics do not change
    assert list(got)[-3:] == ["PSP@1", "PSP@3", "queries"]


def test_missing_propensity_raises_naming_the_doc():
    # d3 is relevant for q1
    with pytest.raises(ValueError, match="'d3'"):
        evaluate_rankings(RANKED, QRELS, ks=(1, 3), propensities=PROPENSITIES.filter(pl.col("doc_id") != "d3"))
    # d7 is only predicted (rank 3 of q2), never relevant
    with pytest.raises(ValueError, match="'d7'"):
        evaluate_rankings(RANKED, QRELS, ks=(3,), propensities=PROPENSITIES.filter(pl.col("doc_id") != "d7"))
    # d9 (predicted at rank 4 of q1, relevance 0) has no propensity: fine while only the top 3 count ...
    evaluate_rankings(RANKED, QRELS, ks=(1, 3), propensities=PROPENSITIES)
    # ... but it is predicted within the top 5
    with pytest.raises(ValueError, match="'d9'"):
        evaluate_rankings(RANKED, QRELS, ks=(5,), propensities=PROPENSITIES)
    # predictions for unlabelled queries need no propensity either
    ranked = pl.concat([RANKED, ranked_frame([("q6", "nowhere", 1.0)])])
    evaluate_rankings(ranked, QRELS, ks=(1, 3), propensities=PROPENSITIES)
    bad = PROPENSITIES.with_columns(
        propensity=pl.when(pl.col("doc_id") == "d2").then(0.0).otherwise(pl.col("propensity")))
    with pytest.raises(ValueError, match="'d2'"):
        evaluate_rankings(RANKED, QRELS, ks=(1, 3), propensities=bad)


def test_jain_propensities_hand_computed():
    counts = pl.DataFrame({"doc_id": ["a", "b"], "count": [10, 0]})
    got = jain_propensities(counts, n_train_points=100)
    # C = (ln 100 - 1) * 2.5^0.55 = 3.605170 * 1.655290 = 5.967505
    # a: 1 / (1 + C * (10 + 1.5)^-0.55) = 1 / (1 + 5.967505 * 0.260985) = 1 / 2.557434 = 0.391017
    # b: 1 / (1 + C * 1.5^-0.55)        = 1 / (1 + 5.967505 * 0.800135) = 1 / 5.774811 = 0.173170
    assert got.columns == ["doc_id", "propensity"]
    assert got["doc_id"].to_list() == ["a", "b"]
    assert got["propensity"].to_list() == pytest.approx([0.391017, 0.173170], abs=1e-6)
    # Wikipedia constants, written as in Jain et al.: 1 / (1 + C exp(-A ln(N_l + B)))
    wiki = jain_propensities(counts, n_train_points=100, a=0.5, b=0.4)
    c = (math.log(100) - 1) * 1.4**0.5
    expected = [1 / (1 + c * math.exp(-0.5 * math.log(n + 0.4))) for n in (10, 0)]
    assert wiki["propensity"].to_list() == pytest.approx(expected)
    with pytest.raises(ValueError):
        jain_propensities(pl.DataFrame({"doc_id": ["a"], "count": [-1]}), 100)


def test_empty_qrels():
    empty = qrels_frame([])
    got = evaluate_rankings(RANKED, empty, ks=(1, 3), propensities=PROPENSITIES)
    assert got == {"P@1": 0.0, "P@3": 0.0, "R@1": 0.0, "R@3": 0.0, "nDCG@1": 0.0, "nDCG@3": 0.0,
                   "PSP@1": 0.0, "PSP@3": 0.0, "queries": 0}
    # only relevance-0 labels is the same as no labels; no predictions at all is fine too
    zero = QRELS.with_columns(relevance=pl.lit(0.0))
    assert evaluate_rankings(ranked_frame([]), zero, ks=(1,)) == {"P@1": 0.0, "R@1": 0.0, "nDCG@1": 0.0, "queries": 0}
    assert per_query_metrics(RANKED, empty, 3).height == 0


def test_no_predictions_at_all():
    got = evaluate_rankings(ranked_frame([]), QRELS, ks=(1, 3))
    assert got["queries"] == 3
    assert all(value == 0.0 for key, value in got.items() if key != "queries")


def test_bad_arguments():
    with pytest.raises(ValueError):
        evaluate_rankings(RANKED, QRELS, ks=())
    with pytest.raises(ValueError):
        evaluate_rankings(RANKED, QRELS, ks=(0,))
    with pytest.raises(ValueError, match="relevance"):
        evaluate_rankings(RANKED, QRELS.drop("relevance"))


def test_metrics_table_markdown():
    rows = [
        {"model": "bm25", "test_set": "clean", "P@1": 0.12345, "nDCG@10": 0.5, "queries": 1000},
        {"model": "skim|v2", "test_set": "clean", "P@1": 1.0, "queries": 999},
    ]
    table = metrics_table_markdown(rows, ["model", "test_set", "P@1", "nDCG@10", "queries"])
    assert table.splitlines() == [
        "| model | test_set | P@1 | nDCG@10 | queries |",
        "|---|---|---:|---:|---:|",
        "| bm25 | clean | 12.35 | 50.00 | 1000 |",
        "| skim\\|v2 | clean | 100.00 | n/a | 999 |",
    ]
