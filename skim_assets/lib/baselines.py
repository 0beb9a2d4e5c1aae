"""Training-data transforms of the baselines SKIM is compared with (paper, Table 1).

Each takes the click pairs (and what it needs) and returns new training pairs (query_id, doc_id, weight, source);
Gandalf also returns the extra training points it creates.

- IPS (Jain et al., 2016): each click pair re-weighted by 1 / propensity of its document, normalised to mean 1.
- LEVER (Buvanesh et al., 2024): a siamese teacher (the dual encoder trained on the clicks) imputes soft labels:
  documents among a query's hnswlib neighbours with (1 + cos) / 2 >= threshold, weighted by that score.
- Gandalf (Kharbanda et al., 2024): every label's text becomes an extra training point whose soft targets are
  the labels co-occurring with it in the clicks, P(l' | l) = |queries with l and l'| / |queries with l|, kept
  when >= threshold (0.1), the label itself with weight 1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from .formats import PAIRS_SCHEMA, QUERIES_SCHEMA, union_pairs
from .retrieval import hnsw_topk, neighbour_frame, similarity_weight

GANDALF_PREFIX = "gandalf:"


def ips_pairs(clicks: pl.DataFrame, propensities: pl.DataFrame, max_weight: float = 50.0) -> pl.DataFrame:
    """Click pairs weighted by 1/propensity(doc), clipped at `max_weight` and rescaled to mean weight 1."""
    weighted = clicks.join(propensities.select("doc_id", "propensity"), on="doc_id", how="left")
    if weighted["propensity"].null_count():
        missing = weighted.filter(pl.col("propensity").is_null())["doc_id"][0]
        raise ValueError(f"no propensity for doc_id {missing!r}")
    inverse = (1.0 / weighted["propensity"]).clip(upper_bound=max_weight)
    return weighted.select(
        "query_id", "doc_id", (inverse / inverse.mean()).alias("weight"), pl.lit("ips").alias("source")
    ).cast(PAIRS_SCHEMA)


def lever_pairs(
    clicks: pl.DataFrame,
    query_ids: list[str],
    query_vectors: np.ndarray,
    doc_ids: list[str],
    doc_vectors: np.ndarray,
    k: int = 10,
    threshold: float = 0.8,
    seed: int = 0,
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None,
) -> pl.DataFrame:
    """Clicks plus soft labels imputed by a siamese teacher (query -> document neighbours scoring >= threshold).
    `search(query_vectors, k)` over `doc_vectors` (e.g. a saved index, `retrieval.DocumentIndex.search`); default:
    an hnswlib index built here."""
    k = min(k, len(doc_ids))
    neighbours, cosines = (search(query_vectors, k) if search is not None
                           else hnsw_topk(query_vectors, doc_vectors, k, seed=seed))
    imputed = (
        neighbour_frame(query_ids, doc_ids, neighbours, cosines, "query_id", "doc_id")
        .select("query_id", "doc_id", similarity_weight(pl.col("cosine")), pl.lit("lever").alias("source"))
        .filter(pl.col("weight") >= threshold)
    )
    return union_pairs(clicks, imputed)


def gandalf_pairs(clicks: pl.DataFrame, documents: pl.DataFrame,
                  threshold: float = 0.1) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(clicks + label-text training points with co-occurrence soft targets, the new points' query rows)."""
    positive = clicks.select("query_id", "doc_id").unique()
    label_counts = positive.group_by("doc_id").len("n_label")
    co = (
        positive.join(positive, on="query_id", suffix="_other")
        .group_by("doc_id", "doc_id_other").len("n_both")
        .join(label_counts, on="doc_id")
        .with_columns((pl.col("n_both") / pl.col("n_label")).alias("weight"))
        .filter((pl.col("weight") >= threshold) | (pl.col("doc_id") == pl.col("doc_id_other")))
    )
    points = co.select(
        (pl.lit(GANDALF_PREFIX) + pl.col("doc_id")).alias("query_id"),
        pl.col("doc_id_other").alias("doc_id"),
        pl.when(pl.col("doc_id") == pl.col("doc_id_other")).then(1.0).otherwise(pl.col("weight")).alias("weight"),
        pl.lit("gandalf").alias("source"),
    ).sort("query_id", "doc_id").cast(PAIRS_SCHEMA)
    new_queries = (
        label_counts.join(documents.select("doc_id", "title"), on="doc_id")
        .select((pl.lit(GANDALF_PREFIX) + pl.col("doc_id")).alias("query_id"), pl.col("title").alias("text"),
                pl.lit("train").alias("split"))
        .sort("query_id").cast(QUERIES_SCHEMA)
    )
    return pl.concat([clicks.cast(PAIRS_SCHEMA), points]), new_queries


def click_propensities(documents: pl.DataFrame, clicks: pl.DataFrame, a: float, b: float) -> pl.DataFrame:
    """Jain et al. propensities of every document from its click frequency (doc_id, propensity)."""
    from .metrics import jain_propensities

    counts = (documents.select("doc_id").join(clicks.group_by("doc_id").len("count"), on="doc_id", how="left")
              .fill_null(0))
    return jain_propensities(counts, n_train_points=max(clicks["query_id"].n_unique(), 2), a=a, b=b)
