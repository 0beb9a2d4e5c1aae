"""Algorithm 1 (exposure-window clicks), the MAR sample and the exposure curve on hand-built rankings."""

import numpy as np
import polars as pl
import pytest

from skim_assets.lib.simulation import (
    ClickSimulation,
    exposure_curve,
    labels_as_pairs,
    missing_at_random_sample,
    simulate_click_log,
    simulate_clicks,
)

# q1 ranks d1, d2, d3, d4; q2 ranks d4, d3, d2, d1
RANKED = pl.DataFrame({
    "query_id": ["q1"] * 4 + ["q2"] * 4,
    "doc_id": ["d1", "d2", "d3", "d4", "d4", "d3", "d2", "d1"],
    "score": [0.9, 0.8, 0.7, 0.6, 0.95, 0.5, 0.4, 0.3],
    "rank": [1, 2, 3, 4, 1, 2, 3, 4],
})
QRELS = pl.DataFrame({"query_id": ["q1", "q1", "q2", "q2", "q2"], "doc_id": ["d2", "d4", "d1", "d3", "d2"],
                      "relevance": [1.0, 1.0, 1.0, 1.0, 0.0]})


def test_only_relevant_pairs_inside_the_exposure_window_survive():
    clicks = simulate_clicks(RANKED, QRELS, exposure_k=2)
    # q1: d2 at rank 2 kept, d4 at rank 4 lost; q2: d3 at rank 2 kept, d1 at rank 4 lost, d2 not relevant
    assert sorted(zip(clicks["query_id"], clicks["doc_id"])) == [("q1", "d2"), ("q2", "d3")]
    assert clicks["weight"].to_list() == [1.0, 1.0]
    assert set(clicks["source"]) == {"click"}


def test_window_of_everything_keeps_every_positive_label():
    clicks = simulate_clicks(RANKED, QRELS, exposure_k=4)
    assert clicks.height == 4  # the relevance-0 row never becomes a click


def test_sigmoid_sampling_is_seeded_and_can_only_remove():
    full = simulate_clicks(RANKED, QRELS, exposure_k=4)
    a = simulate_clicks(RANKED, QRELS, exposure_k=4, click_model="sigmoid", score_scale=1.0, seed=3)
    b = simulate_clicks(RANKED, QRELS, exposure_k=4, click_model="sigmoid", score_scale=1.0, seed=3)
    assert a.equals(b)
    assert a.join(full, on=["query_id", "doc_id"], how="anti").height == 0
    # a huge scale makes sigmoid(score) ~ 1 for positive scores: nothing dropped
    assert simulate_clicks(RANKED, QRELS, exposure_k=4, click_model="sigmoid", score_scale=1e4).height == 4
    # a huge negative scale drops everything
    assert simulate_clicks(RANKED, QRELS, exposure_k=4, click_model="sigmoid", score_scale=-1e4).height == 0


def test_impressions_log_every_shown_document_and_its_click():
    log = simulate_click_log(RANKED, QRELS, ClickSimulation(exposure_k=2))
    assert log.impressions.rows() == [("q1", "d1", 1, 1, 0), ("q1", "d2", 2, 1, 1),
                                      ("q2", "d4", 1, 1, 0), ("q2", "d3", 2, 1, 1)]
    clicked = log.impressions.filter(pl.col("clicks") > 0).select("query_id", "doc_id")
    assert clicked.equals(log.pairs.select("query_id", "doc_id"))
    # only the queries of the labels given are logged: a test query's impressions never reach a train log
    only_q1 = simulate_click_log(RANKED, QRELS.filter(pl.col("query_id") == "q1"), ClickSimulation(exposure_k=2))
    assert set(only_q1.impressions["query_id"]) == {"q1"}


def test_position_based_model_clicks_with_the_examination_probability():
    """(1 / position) ** eta: eta 0 examines everything (the deterministic rule), and over many queries the click
    rate of relevant shown documents at each position matches the examination probability."""
    assert simulate_clicks(RANKED, QRELS, exposure_k=4, click_model="position", eta=0.0).equals(
        simulate_clicks(RANKED, QRELS, exposure_k=4))
    n_queries, k = 4000, 5
    ranked = pl.DataFrame({"query_id": np.repeat([f"q{i}" for i in range(n_queries)], k),
                           "doc_id": [f"d{j}" for _ in range(n_queries) for j in range(k)],
                           "score": np.zeros(n_queries * k), "rank": np.tile(np.arange(1, k + 1), n_queries)})
    every_label = ranked.select("query_id", "doc_id", pl.lit(1.0).alias("relevance"))
    simulation = ClickSimulation(exposure_k=k, click_model="position", eta=1.0, seed=7)
    log = simulate_click_log(ranked, every_label, simulation)
    rate = log.impressions.group_by("position").agg(pl.col("clicks").mean()).sort("position")["clicks"].to_numpy()
    np.testing.assert_allclose(rate, simulation.examination(np.arange(1, k + 1)), atol=0.03)
    assert log.pairs.equals(simulate_click_log(ranked, every_label, simulation).pairs)  # seeded
    assert simulation.examination(np.array([1, 2, 4, 6])).tolist() == [1.0, 0.5, 0.25, 0.0]  # 6 is never shown
    assert ClickSimulation(exposure_k=k, click_model="sigmoid").examination(np.array([1])) is None


def test_unknown_click_model_is_refused():
    with pytest.raises(ValueError, match="click_model must be one of"):
        ClickSimulation(exposure_k=3, click_model="cascade")


def test_mar_sample_has_the_requested_size_and_only_positive_labels():
    sample = missing_at_random_sample(QRELS, 2, seed=1)
    assert sample.height == 2
    positives = set(zip(*QRELS.filter(pl.col("relevance") > 0).select("query_id", "doc_id").to_dict().values()))
    assert set(zip(sample["query_id"], sample["doc_id"])) <= positives
    assert missing_at_random_sample(QRELS, 99).height == 4  # capped by the labels available
    assert sample.equals(missing_at_random_sample(QRELS, 2, seed=1))


def test_exposure_curve_counts_per_k():
    curve = exposure_curve(RANKED, QRELS, ks=[1, 2, 4])
    assert curve["pairs_kept"].to_list() == [0, 2, 4]
    assert curve["fraction_kept"].to_list() == pytest.approx([0.0, 0.5, 1.0])
    assert curve["queries_with_clicks"].to_list() == [0, 2, 2]


def test_labels_as_pairs_drops_non_positive():
    assert labels_as_pairs(QRELS, "oracle").height == 4
