"""Impressions as evidence: the shown-not-clicked filter on mapped pairs, position propensities by regression-EM
against the true examination probabilities, position-based IPS weights, and shown-not-clicked negatives."""

import numpy as np
import polars as pl
import pytest

from skim_assets.lib.formats import IMPRESSIONS_SCHEMA, union_impressions
from skim_assets.lib.mapping import (
    UNCLICKED_POSITION,
    MappingSettings,
    annotate_unclicked,
    candidates_to_pairs,
    map_once,
    unclicked_impressions,
)
from skim_assets.lib.propensities import PropensitySettings, position_ips_pairs, propensity_errors, regression_em
from skim_assets.lib.simulation import ClickSimulation, simulate_click_log


def impressions(rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=IMPRESSIONS_SCHEMA, orient="row")


# (query, doc, position, impressions, clicks)
LOG = impressions([("east", "A", 1, 1, 0),  # shown on top, passed over: evidence against (east, A)
                   ("east", "B", 2, 3, 1),  # clicked once: never evidence against
                   ("east", "B", 5, 2, 0),
                   ("north", "A", 30, 1, 0),  # shown too deep to count as examined (cut-off 10)
                   ("north", "B", None, 1, 0)])  # shown at a position the log does not record


def test_unclicked_impressions_are_pairs_never_clicked_at_their_best_position():
    unclicked = unclicked_impressions(LOG)
    assert sorted(unclicked.rows()) == [("east", "A", 1), ("north", "A", 30), ("north", "B", 0)]
    assert sorted(unclicked_impressions(LOG, max_position=10).rows()) == [("east", "A", 1), ("north", "B", 0)]
    assert union_impressions(LOG, LOG.head(1)).filter(pl.col("doc_id") == "A")["impressions"].to_list() == [2, 1]


def test_the_filter_drops_shown_not_clicked_pairs_within_the_examined_positions():
    candidates = pl.DataFrame({"synthetic": [0, 0, 1, 1], "query_id": ["east", "north", "east", "north"],
                               "cosine": [0.9] * 4}, schema={"synthetic": pl.Int64, "query_id": pl.String,
                                                             "cosine": pl.Float32})
    annotated = annotate_unclicked(candidates, ["A", "B"], LOG)
    assert annotated[UNCLICKED_POSITION].to_list() == [1, 30, None, 0]
    pairs = lambda cutoff: sorted(candidates_to_pairs(annotated, ["A", "B"], 0.8, "skim", unclicked_cutoff=cutoff)  # noqa: E731
                                  .select("query_id", "doc_id").rows())
    assert pairs(None) == [("east", "A"), ("east", "B"), ("north", "A"), ("north", "B")]
    assert pairs(10.0) == [("east", "B"), ("north", "A")]  # A on top unclicked, B at an unknown position: dropped
    assert pairs(float("inf")) == [("east", "B")]
    assert MappingSettings().unclicked_cutoff == 1.0
    assert MappingSettings(examined_positions=None).unclicked_cutoff == float("inf")
    assert MappingSettings(drop_shown_not_clicked=False).unclicked_cutoff is None


def test_mapping_with_impressions_reports_what_the_filter_removed():
    vectors = np.array([[1, 0], [0, 1]], dtype=np.float32)
    settings = MappingSettings(k=1, tau=0.8, examined_positions=10)
    pairs, stats = map_once(["A", "B"], vectors, ["east", "north"], vectors, settings, impressions=LOG)
    assert pairs.select("query_id", "doc_id").rows() == [("north", "B")] or pairs.height == 0
    plain, plain_stats = map_once(["A", "B"], vectors, ["east", "north"], vectors, settings)
    assert plain.height - pairs.height == stats["pairs_shown_not_clicked"] >= 1
    assert "pairs_shown_not_clicked" not in plain_stats  # no impressions: nothing read, nothing said


def _ranked_world(n_queries=1500, n_docs=200, k=30, seed=0):
    """Queries whose documents are relevant with a probability rising with their score; the top k is shown."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_queries, n_docs))
    relevant = rng.random((n_queries, n_docs)) < 1 / (1 + np.exp(-(2.5 * scores - 4)))
    order = np.argsort(-scores, axis=1)[:, :k]
    q, d = np.repeat(np.arange(n_queries), k), order.ravel()
    ranked = pl.DataFrame({"query_id": [f"q{i}" for i in q], "doc_id": [f"d{j}" for j in d],
                           "score": scores[q, d], "rank": np.tile(np.arange(1, k + 1), n_queries)})
    qi, di = np.nonzero(relevant)
    qrels = pl.DataFrame({"query_id": [f"q{i}" for i in qi], "doc_id": [f"d{j}" for j in di], "relevance": 1.0})
    return ranked, qrels


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_regression_em_recovers_examination_better_than_click_rates(eta):
    """Click rates per position fall with relevance as well as examination; regression-EM separates the two."""
    ranked, qrels = _ranked_world()
    simulation = ClickSimulation(exposure_k=30, click_model="position", eta=eta, seed=1)
    log = simulate_click_log(ranked, qrels, simulation)
    score = log.impressions.join(ranked.select("query_id", "doc_id", "score"), on=["query_id", "doc_id"],
                                 how="left", maintain_order="left")["score"].to_numpy()
    estimate = regression_em(log.impressions, np.column_stack([score, score ** 2]), PropensitySettings())
    table = propensity_errors(estimate.table, simulation.examination(estimate.table["position"].to_numpy()))
    top = table.filter(pl.col("position") <= 10)
    assert top["error"].mean() < 0.6 * top["click_rate_error"].mean()
    assert top["error"].max() < 0.1
    assert table["propensity"][0] == 1.0 and table["true_propensity"][0] == 1.0


def test_position_ips_weights_clicks_by_inverse_propensity():
    log = impressions([("q1", "a", 1, 1, 1), ("q1", "b", 2, 1, 1), ("q2", "a", 2, 1, 1), ("q2", "b", 1, 1, 0)])
    clicks = pl.DataFrame({"query_id": ["q1", "q1", "q2", "q3"], "doc_id": ["a", "b", "a", "c"],
                           "weight": [1.0] * 4, "source": ["click"] * 4})
    features = np.zeros((log.height, 1))
    estimate = regression_em(log, features, PropensitySettings(iterations=1, min_impressions=1))
    estimate.table = estimate.table.with_columns(pl.Series("propensity", [1.0, 0.25]))  # a known estimate
    pairs = position_ips_pairs(clicks, log, estimate)
    weight = dict(zip(zip(pairs["query_id"], pairs["doc_id"]), pairs["weight"]))
    assert weight[("q1", "b")] == pytest.approx(4 * weight[("q1", "a")])
    assert weight[("q3", "c")] == pytest.approx(3 * weight[("q1", "a")])  # no position: the mean inverse (1+4+4)/3
    assert pairs["weight"].mean() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no impression records a position"):
        regression_em(log.with_columns(pl.lit(None, pl.Int64).alias("position")), features)


def test_shown_not_clicked_negatives_push_a_passed_over_document_away():
    """One pair per batch has no in-batch negative, so without shown negatives nothing is learnt; with them the
    document the user passed over falls below the clicked one."""
    from skim_assets.lib.dual_encoder import DualEncoderConfig, train_dual_encoder
    from skim_assets.lib.encoders import TextEncoder

    documents = pl.DataFrame({"doc_id": ["a", "b"], "title": ["Zorvex 1142", "Quillan 4210"]})
    queries = pl.DataFrame({"query_id": ["q"], "text": ["remedy for migraine"]})
    pairs = pl.DataFrame({"query_id": ["q"], "doc_id": ["a"], "weight": [1.0]})
    passed_over = pl.DataFrame({"query_id": ["q", "q"], "doc_id": ["b", "a"]})  # a clicked pair is never a negative

    def margin(shown_negatives: int) -> float:
        encoder = TextEncoder(device="cpu")
        config = DualEncoderConfig(epochs=8, batch_size=1, learning_rate=2e-4, warmup_fraction=0.0,
                                   hard_negatives=0, shown_negatives=shown_negatives, log_every_s=0.0)
        train_dual_encoder(encoder, pairs, queries, documents, config, progress=lambda _: None,
                           shown_not_clicked=passed_over)
        scores = encoder.encode(["remedy for migraine"]) @ encoder.encode(["Zorvex 1142", "Quillan 4210"]).T
        return float(scores[0, 0] - scores[0, 1])

    untouched = margin(0)
    assert margin(1) > untouched + 0.1
