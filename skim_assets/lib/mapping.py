"""Mapping synthetic queries onto real train queries (SKIM step 4).

Each synthetic query of a document is embedded with the dual encoder fine-tuned on the train set; hnswlib finds
its k nearest real train queries; a neighbour with score (1 + cos) / 2 >= tau becomes a new (train query,
document) pair weighted by that score. A pair reached through several synthetic queries keeps its highest score.
Embeddings are cached by text hash, so a rerun (or a refresh with new queries) embeds only new text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from .formats import PAIRS_SCHEMA
from .retrieval import exact_topk, hnsw_topk
from .storage import write_parquet_atomic


@dataclass
class MappingSettings:
    k: int = 10  # neighbours per synthetic query (reference: 10 of 200 candidates)
    tau: float = 0.8  # keep (1 + cos) / 2 >= tau
    m: int = 32  # hnswlib M
    ef_construction: int = 200
    ef_search: int = 200
    recall_sample: int = 1000  # synthetic queries checked against exact search
    seed: int = 0


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def embed_with_cache(
    texts: list[str], embed: Callable[[list[str]], np.ndarray], cache_path: str | Path | None
) -> tuple[np.ndarray, int]:
    """Embeddings of `texts` (in order) and how many were computed now; the rest come from the cache file.

    The cache is a Parquet table (hash, vector) that belongs to one encoder: callers key its path by the
    encoder's identity so a retrained encoder never reuses stale vectors.
    """
    hashes = [text_hash(t) for t in texts]
    cached: dict[str, np.ndarray] = {}
    cache_path = Path(cache_path) if cache_path else None
    if cache_path and cache_path.exists():
        table = pl.read_parquet(cache_path)
        cached = dict(zip(table["hash"].to_list(), table["vector"].to_numpy()))
    missing = list(dict.fromkeys(h for h in hashes if h not in cached))
    if missing:
        text_of = dict(zip(hashes, texts))
        vectors = embed([text_of[h] for h in missing])
        cached.update(zip(missing, vectors))
        if cache_path:
            write_parquet_atomic(
                pl.DataFrame({"hash": list(cached), "vector": np.stack(list(cached.values())).astype(np.float32)}),
                cache_path,
            )
    if not texts:
        return np.zeros((0, 0), dtype=np.float32), 0
    return np.stack([cached[h] for h in hashes]).astype(np.float32), len(missing)


def map_to_train_queries(
    synthetic_doc_ids: list[str],
    synthetic_vectors: np.ndarray,
    train_query_ids: list[str],
    train_vectors: np.ndarray,
    settings: MappingSettings = MappingSettings(),
    source: str = "skim",
) -> tuple[pl.DataFrame, dict]:
    """New weighted pairs (query_id, doc_id, weight, source) and statistics (scores, hnsw recall)."""
    if len(synthetic_doc_ids) == 0 or len(train_query_ids) == 0:
        return pl.DataFrame(schema=PAIRS_SCHEMA), {"candidates": 0, "pairs": 0, "hnsw_recall": None, "scores": []}
    k = min(settings.k, len(train_query_ids))
    neighbours, cosines = hnsw_topk(synthetic_vectors, train_vectors, k, m=settings.m,
                                    ef_construction=settings.ef_construction, ef_search=settings.ef_search,
                                    seed=settings.seed)
    scores = (1.0 + cosines) / 2.0
    candidates = pl.DataFrame({
        "query_id": np.asarray(train_query_ids, dtype=object)[neighbours.reshape(-1)].tolist(),
        "doc_id": np.repeat(np.asarray(synthetic_doc_ids, dtype=object), k).tolist(),
        "weight": scores.reshape(-1).astype(np.float64),
    })
    pairs = (
        candidates.filter(pl.col("weight") >= settings.tau)
        .group_by("query_id", "doc_id").agg(pl.col("weight").max())
        .with_columns(pl.lit(source).alias("source"))
        .sort("doc_id", "query_id")
        .cast(PAIRS_SCHEMA)
    )
    stats = {
        "candidates": candidates.height,
        "pairs": pairs.height,
        "scores": scores[:, 0].tolist(),  # best neighbour score of each synthetic query
        "hnsw_recall": hnsw_recall(synthetic_vectors, train_vectors, neighbours, k, settings),
    }
    return pairs, stats


def hnsw_recall(queries: np.ndarray, items: np.ndarray, approx: np.ndarray, k: int, settings: MappingSettings) -> float:
    """recall@k of the hnswlib neighbours against exact search on a sample of the queries."""
    rng = np.random.default_rng(settings.seed)
    sample = rng.choice(len(queries), size=min(settings.recall_sample, len(queries)), replace=False)
    exact, _ = exact_topk(queries[sample], items, k)
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx[sample], exact)]))
