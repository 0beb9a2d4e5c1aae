"""Baselines' training-data transforms on toy click matrices with hand-computed expectations."""

import numpy as np
import polars as pl
import pytest

from skim_assets.lib.baselines import click_propensities, gandalf_pairs, ips_pairs, lever_pairs

# q1 clicked A and B, q2 clicked A, q3 clicked C
CLICKS = pl.DataFrame({"query_id": ["q1", "q1", "q2", "q3"], "doc_id": ["A", "B", "A", "C"],
                       "weight": [1.0] * 4, "source": ["click"] * 4})
DOCUMENTS = pl.DataFrame({"doc_id": ["A", "B", "C", "D"], "title": ["alpha", "beta", "gamma", "delta"],
                          "metadata": [""] * 4})


def test_ips_weights_are_inverse_propensities_normalised_to_mean_one():
    propensities = pl.DataFrame({"doc_id": ["A", "B", "C"], "propensity": [0.5, 0.25, 1.0]})
    pairs = ips_pairs(CLICKS, propensities)
    # raw 1/p: A 2, B 4, A 2, C 1 -> mean 2.25
    assert pairs["weight"].to_list() == pytest.approx([2 / 2.25, 4 / 2.25, 2 / 2.25, 1 / 2.25])
    assert set(pairs["source"]) == {"ips"}
    with pytest.raises(ValueError, match="'C'"):
        ips_pairs(CLICKS, propensities.head(2))


def test_rarer_documents_get_lower_propensity():
    p = dict(click_propensities(DOCUMENTS, CLICKS, a=0.55, b=1.5).iter_rows())
    assert p["D"] < p["B"] < p["A"]  # never clicked < clicked once < clicked twice


def test_gandalf_label_points_get_co_occurrence_soft_targets():
    pairs, queries = gandalf_pairs(CLICKS, DOCUMENTS, threshold=0.1)
    points = {(q, d): w for q, d, w, s in pairs.rows() if s == "gandalf"}
    # P(B|A) = 1/2 (A in q1, q2; B only with A in q1), P(A|B) = 1/1
    assert points == {("gandalf:A", "A"): 1.0, ("gandalf:A", "B"): 0.5,
                      ("gandalf:B", "A"): 1.0, ("gandalf:B", "B"): 1.0, ("gandalf:C", "C"): 1.0}
    assert queries.rows() == [("gandalf:A", "alpha", "train"), ("gandalf:B", "beta", "train"),
                              ("gandalf:C", "gamma", "train")]
    assert pairs.filter(pl.col("source") == "click").height == 4
    strict, _ = gandalf_pairs(CLICKS, DOCUMENTS, threshold=0.6)
    assert ("gandalf:A", "B") not in {(q, d) for q, d, _, s in strict.rows() if s == "gandalf"}


def test_lever_imputes_neighbours_above_the_threshold_and_keeps_clicks():
    unit = lambda rows: np.asarray(rows, np.float32) / np.linalg.norm(rows, axis=1, keepdims=True)  # noqa: E731
    queries = unit([[1, 0], [0, 1]])  # q1 east, q2 north
    docs = unit([[1, 0], [1, 1], [-1, 0], [0, 1]])  # A east, B north-east, C west, D north
    pairs = lever_pairs(CLICKS.filter(pl.col("query_id") != "q3"), ["q1", "q2"], queries, ["A", "B", "C", "D"], docs,
                        k=3, threshold=0.8)
    rows = {(q, d): (round(w, 4), s) for q, d, w, s in pairs.rows()}
    # q1: A cos 1 (already a click), B cos .707 -> .8536; q2: D 1.0 new, B .8536, A (already a click)
    assert rows == {("q1", "A"): (1.0, "click"), ("q1", "B"): (1.0, "click"), ("q2", "A"): (1.0, "click"),
                    ("q2", "D"): (1.0, "lever"), ("q2", "B"): (0.8536, "lever")}
