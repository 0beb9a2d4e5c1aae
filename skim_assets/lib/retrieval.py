"""Top-k retrieval over unit-norm embeddings: exact blocked inner products, or an hnswlib index."""

from __future__ import annotations

import numpy as np
import polars as pl


def topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of each row's k largest scores, best first, ties broken by the lower index."""
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)  # last key is primary: score desc, then index asc
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def exact_topk(queries: np.ndarray, items: np.ndarray, k: int, block_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine scores of each query's k best items (unit-norm inputs), best first.

    Ties are broken by the lower item index, so results are deterministic. Blocks bound memory at
    block_size x n_items floats.
    """
    return blocked_topk(queries, lambda block: block @ items.T, items.shape[0], k, block_size)


def blocked_topk(queries: np.ndarray, score_block, n_items: int, k: int, block_size: int = 4096):
    """Top-k over `score_block(query_block) -> [block, n_items]` scores, one block of queries at a time."""
    k = min(k, n_items)
    indices = np.zeros((queries.shape[0], k), dtype=np.int64)
    scores = np.zeros((queries.shape[0], k), dtype=np.float32)
    for start in range(0, queries.shape[0], block_size):
        block_indices, block_scores = topk_rows(score_block(queries[start : start + block_size]), k)
        indices[start : start + block_size] = block_indices
        scores[start : start + block_size] = block_scores
    return indices, scores


def hnsw_topk(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    m: int = 32,
    ef_construction: int = 200,
    ef_search: int = 200,
    seed: int = 0,
    num_threads: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k by cosine with hnswlib; returns (indices, cosine scores), best first."""
    import hnswlib

    k = min(k, items.shape[0])
    index = hnswlib.Index(space="ip", dim=items.shape[1])
    index.init_index(max_elements=max(items.shape[0], 1), ef_construction=ef_construction, M=m, random_seed=seed)
    index.add_items(items, np.arange(items.shape[0]), num_threads=num_threads)
    index.set_ef(max(ef_search, k))
    labels, distances = index.knn_query(queries, k=k, num_threads=num_threads)
    return labels.astype(np.int64), (1.0 - distances).astype(np.float32)  # ip distance = 1 - dot


def topk_frame(
    query_ids: list[str] | pl.Series, doc_ids: list[str] | pl.Series, indices: np.ndarray, scores: np.ndarray
) -> pl.DataFrame:
    """Long frame (query_id, doc_id, score, rank) from top-k index/score matrices (rank 1 = best)."""
    n, k = indices.shape
    doc_ids = np.asarray(pl.Series(doc_ids).to_list(), dtype=object)
    return pl.DataFrame(
        {
            "query_id": np.repeat(np.asarray(pl.Series(query_ids).to_list(), dtype=object), k).tolist(),
            "doc_id": doc_ids[indices.reshape(-1)].tolist(),
            "score": scores.reshape(-1).astype(np.float64),
            "rank": np.tile(np.arange(1, k + 1), n).astype(np.int32),
        },
        schema={"query_id": pl.String, "doc_id": pl.String, "score": pl.Float64, "rank": pl.Int32},
    )
