"""Biased click simulation (SKIM paper, Algorithm 1) and a missing-at-random sample of equal size.

From a dataset with complete labels: for each query, a pretrained retriever ranks the documents; only relevant
(query, document) pairs inside its top-K (the exposure window) survive as clicks, optionally each with probability
sigmoid(score_scale * score). Knowledge the retriever never exposes is therefore missing *systematically*, unlike a
random sample of the labels (MAR) of the same size.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .formats import PAIRS_SCHEMA

DEFAULT_EXPOSURE_KS = (1, 5, 10, 25, 50, 100)


def _positive(qrels: pl.DataFrame) -> pl.DataFrame:
    return qrels.filter(pl.col("relevance") > 0).select("query_id", "doc_id")


def exposed_relevant_pairs(ranked: pl.DataFrame, qrels: pl.DataFrame, exposure_k: int) -> pl.DataFrame:
    """Relevant pairs ranked within the top `exposure_k`: query_id, doc_id, score, rank."""
    return (
        ranked.filter(pl.col("rank") <= exposure_k)
        .join(_positive(qrels), on=["query_id", "doc_id"], how="inner")
        .sort("query_id", "rank")
    )


def simulate_clicks(
    ranked: pl.DataFrame,
    qrels: pl.DataFrame,
    exposure_k: int,
    sigmoid_sampling: bool = False,
    score_scale: float = 1.0,
    seed: int = 0,
    source: str = "click",
) -> pl.DataFrame:
    """Algorithm 1: keep relevant pairs in the retriever's top-`exposure_k` (optionally with prob. sigmoid(score)).

    `ranked` is (query_id, doc_id, score, rank) with at least `exposure_k` ranks per query. Returns pairs with
    weight 1 and the given `source`.
    """
    exposed = exposed_relevant_pairs(ranked, qrels, exposure_k)
    if sigmoid_sampling:
        rng = np.random.default_rng(seed)
        keep_probability = 0.5 * (1.0 + np.tanh(0.5 * score_scale * exposed["score"].to_numpy()))  # sigmoid
        exposed = exposed.filter(pl.Series(rng.random(exposed.height) < keep_probability))
    return _as_pairs(exposed, source)


def missing_at_random_sample(qrels: pl.DataFrame, n_pairs: int, seed: int = 0, source: str = "mar") -> pl.DataFrame:
    """A uniform random sample of `n_pairs` relevant pairs: the same label budget as the clicks, unbiased."""
    positive = _positive(qrels).sort("query_id", "doc_id")
    n_pairs = min(n_pairs, positive.height)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(positive.height, size=n_pairs, replace=False))
    return _as_pairs(positive[chosen], source)


def exposure_curve(ranked: pl.DataFrame, qrels: pl.DataFrame, ks=DEFAULT_EXPOSURE_KS) -> pl.DataFrame:
    """For each exposure window K: relevant pairs kept, the fraction of all relevant pairs, and queries with any."""
    positive = _positive(qrels)
    total = max(positive.height, 1)
    rows = []
    for k in ks:
        exposed = exposed_relevant_pairs(ranked, qrels, k)
        rows.append({"exposure_k": k, "pairs_kept": exposed.height, "fraction_kept": exposed.height / total,
                     "queries_with_clicks": exposed["query_id"].n_unique()})
    return pl.DataFrame(rows)


def labels_as_pairs(qrels: pl.DataFrame, source: str) -> pl.DataFrame:
    """All relevant labels as weight-1 training pairs (the oracle's training data)."""
    return _as_pairs(_positive(qrels), source)


def _as_pairs(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    return frame.select(
        pl.col("query_id"), pl.col("doc_id"), pl.lit(1.0).alias("weight"), pl.lit(source).alias("source")
    ).cast(PAIRS_SCHEMA)
