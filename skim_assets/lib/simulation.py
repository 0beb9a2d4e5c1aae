"""Biased click simulation (SKIM paper, Algorithm 1) and a missing-at-random sample of equal size.

From a dataset with complete labels: for each query, a pretrained retriever ranks the documents; the top-K (the
exposure window) is what the engine showed, and only relevant (query, document) pairs shown there can become clicks.
Knowledge the retriever never exposes is therefore missing *systematically*, unlike a random sample of the labels
(MAR) of the same size. Which shown relevant documents are clicked is the click model:
- `deterministic` (the paper's Algorithm 1): every one;
- `sigmoid` (its optional variant): each with probability sigmoid(score_scale * score);
- `position` (the position-based model, Joachims et al., 2017): each with its examination probability
  (1 / position) ** eta, so that relevant shown documents go unclicked, as in real logs.
The shown documents are written too, as a log of impressions (query_id, doc_id, position, impressions, clicks):
what a real search log records beside its clicks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import polars as pl

from .formats import IMPRESSIONS_SCHEMA, PAIRS_SCHEMA

ClickModel = Literal["deterministic", "sigmoid", "position"]
CLICK_MODELS = get_args(ClickModel)

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


@dataclass(frozen=True)
class ClickSimulation:
    """How Algorithm 1 turns complete labels into a click log (a dataset's settings: `DatasetSpec.click_simulation`)."""

    exposure_k: int
    click_model: ClickModel = "deterministic"
    score_scale: float = 1.0  # sigmoid: click probability sigmoid(score_scale * score)
    eta: float = 1.0  # position: click probability (1 / position) ** eta
    seed: int = 0

    def __post_init__(self):
        if self.click_model not in CLICK_MODELS:
            raise ValueError(f"click_model must be one of {CLICK_MODELS}, got {self.click_model!r}")

    def examination(self, positions: np.ndarray) -> np.ndarray | None:
        """The true probability that a shown document at each position (1-based) is examined, or None where the
        click model has none by position (sigmoid: it depends on the score)."""
        positions = np.asarray(positions, dtype=np.float64)
        if self.click_model == "position":
            return np.where(positions <= self.exposure_k, positions ** -self.eta, 0.0)
        if self.click_model == "deterministic":
            return np.where(positions <= self.exposure_k, 1.0, 0.0)
        return None

    def click_probability(self, exposed: pl.DataFrame) -> np.ndarray | None:
        """Per exposed relevant pair (score, rank): the probability it is clicked; None = every one is."""
        if self.click_model == "sigmoid":
            return 0.5 * (1.0 + np.tanh(0.5 * self.score_scale * exposed["score"].to_numpy()))  # sigmoid
        if self.click_model == "position":
            return self.examination(exposed["rank"].to_numpy())
        return None


@dataclass(frozen=True)
class SimulatedLog:
    pairs: pl.DataFrame  # PAIRS_SCHEMA: the clicked pairs, weight 1
    impressions: pl.DataFrame  # IMPRESSIONS_SCHEMA: every shown (query, document) at its position, clicked or not


def simulate_click_log(ranked: pl.DataFrame, qrels: pl.DataFrame, simulation: ClickSimulation,
                       source: str = "click") -> SimulatedLog:
    """Algorithm 1 with a click model: the clicked pairs and the impressions they came from.

    `ranked` is (query_id, doc_id, score, rank) with at least `exposure_k` ranks per query. Impressions are logged
    for the queries `qrels` holds (pass one split's labels: a test query's impressions in the train log would tell
    the models which shown documents its user passed over). A random draw is made per exposed relevant pair in
    (query_id, rank) order, seeded, so a click model's log is reproducible.
    """
    exposed = exposed_relevant_pairs(ranked, qrels, simulation.exposure_k)
    probability = simulation.click_probability(exposed)
    if probability is not None:
        rng = np.random.default_rng(simulation.seed)
        exposed = exposed.filter(pl.Series(rng.random(exposed.height) < probability))
    clicked = exposed.select("query_id", "doc_id", pl.lit(1, dtype=pl.Int64).alias("clicks"))
    impressions = (
        ranked.filter(pl.col("rank") <= simulation.exposure_k)
        .join(qrels.select("query_id").unique(), on="query_id", how="semi")
        .join(clicked, on=["query_id", "doc_id"], how="left")
        .select("query_id", "doc_id", pl.col("rank").alias("position"), pl.lit(1).alias("impressions"),
                pl.col("clicks").fill_null(0))
        .sort("query_id", "position")
        .cast(IMPRESSIONS_SCHEMA)
    )
    return SimulatedLog(_as_pairs(exposed, source), impressions)


def simulate_clicks(ranked: pl.DataFrame, qrels: pl.DataFrame, exposure_k: int, source: str = "click",
                    **click_model) -> pl.DataFrame:
    """The clicked pairs of `simulate_click_log` (weight 1, the given `source`); `click_model` holds the other
    fields of `ClickSimulation` (default: the paper's deterministic rule)."""
    return simulate_click_log(ranked, qrels, ClickSimulation(exposure_k, **click_model), source).pairs


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
