"""Top-k retrieval over unit-norm embeddings: exact blocked inner products, or an hnswlib index."""

from __future__ import annotations

import numpy as np
import polars as pl


# Score blocks are capped at this many entries (256 MiB of float32), whatever block_size asks for: 4096 queries
# against 1M items would otherwise be a 16 GiB block.
MAX_BLOCK_ENTRIES = 2**26


def topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of each row's k largest scores, best first, ties broken by the lower index.

    Selection is torch.topk (multi-threaded, no full-width index array: several times faster than
    np.argpartition on wide rows); a row whose k-th value ties with unselected entries is redone exactly, so
    the lower index wins at the boundary too.
    """
    n = scores.shape[1]
    k = min(k, n)
    if k < n and k > 0 and scores.shape[0] > 0:
        import torch

        values, part = torch.topk(torch.from_numpy(np.ascontiguousarray(scores)), k, dim=1, sorted=False)
        part = part.numpy()
        kth = values.min(dim=1).values.numpy()
        for row in np.flatnonzero(np.count_nonzero(scores >= kth[:, None], axis=1) > k):
            above = np.flatnonzero(scores[row] > kth[row])
            tied = np.flatnonzero(scores[row] == kth[row])[: k - len(above)]
            part[row] = np.concatenate([above, tied])
    else:
        part = np.tile(np.arange(k), (scores.shape[0], 1))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)  # last key is primary: score desc, then index asc
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def exact_topk(queries: np.ndarray, items: np.ndarray, k: int, block_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine scores of each query's k best items (unit-norm inputs), best first.

    Ties are broken by the lower item index, so results are deterministic. Blocks bound memory at
    block_size x n_items floats (and at MAX_BLOCK_ENTRIES).
    """
    return blocked_topk(queries, lambda block: block @ items.T, items.shape[0], k, block_size)


def blocked_topk(queries: np.ndarray, score_block, n_items: int, k: int, block_size: int = 4096):
    """Top-k over `score_block(query_block) -> [block, n_items]` scores, one block of queries at a time."""
    k = min(k, n_items)
    block_size = max(1, min(block_size, MAX_BLOCK_ENTRIES // max(n_items, 1)))
    indices = np.zeros((queries.shape[0], k), dtype=np.int64)
    scores = np.zeros((queries.shape[0], k), dtype=np.float32)
    for start in range(0, queries.shape[0], block_size):
        block_indices, block_scores = topk_rows(score_block(queries[start : start + block_size]), k)
        indices[start : start + block_size] = block_indices
        scores[start : start + block_size] = block_scores
    return indices, scores


def build_hnsw_index(items: np.ndarray, m: int = 32, ef_construction: int = 200, seed: int = 0,
                     num_threads: int = -1):
    """An hnswlib inner-product index over `items` (unit-norm rows), labelled by row number."""
    import hnswlib

    index = hnswlib.Index(space="ip", dim=items.shape[1])
    index.init_index(max_elements=max(items.shape[0], 1), ef_construction=ef_construction, M=m, random_seed=seed)
    index.add_items(items, np.arange(items.shape[0]), num_threads=num_threads)
    return index


def hnsw_search(index, queries: np.ndarray, k: int, ef_search: int = 200,
                num_threads: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k of `queries` in an index from `build_hnsw_index`: (indices, cosine scores), best first."""
    k = min(k, index.get_current_count())
    index.set_ef(max(ef_search, k))
    labels, distances = index.knn_query(queries, k=k, num_threads=num_threads)
    return labels.astype(np.int64), (1.0 - distances).astype(np.float32)  # ip distance = 1 - dot


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
    index = build_hnsw_index(items, m=m, ef_construction=ef_construction, seed=seed, num_threads=num_threads)
    return hnsw_search(index, queries, k, ef_search=ef_search, num_threads=num_threads)


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


def neighbour_frame(row_ids, item_ids, indices: np.ndarray, cosines: np.ndarray, row_column: str,
                    item_column: str) -> pl.DataFrame:
    """Long frame (row_column, item_column, cosine) of a neighbour matrix: one row per (row, neighbour)."""
    n, k = indices.shape
    rows = pl.Series(row_column, row_ids)
    items = pl.Series(item_column, item_ids)
    return pl.DataFrame([
        rows.gather(np.repeat(np.arange(n), k)),
        items.gather(indices.reshape(-1)),
        pl.Series("cosine", cosines.reshape(-1).astype(np.float32)),
    ])


def similarity_weight(cosine: pl.Expr) -> pl.Expr:
    """The paper's pair weight (1 + cos) / 2, in [0, 1]."""
    return ((1.0 + cosine.cast(pl.Float64)) / 2.0).alias("weight")


def with_metadata(queries: pl.DataFrame, documents: pl.DataFrame, metadata_side: str,
                  max_words: int = 64) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Retrieval input that reads the metadata beside the short text (metadata-augmented retrieval, the paper's
    Table 4): each document's `title` followed by its metadata (`metadata_side="documents"`), or each query's
    `text` followed by its metadata (`"queries"`; queries without any keep their text). At most `max_words` words
    of metadata; the other side is unchanged."""
    def joined(short: str) -> pl.Expr:
        metadata = (pl.col("metadata").fill_null("").str.replace_all(r"\s+", " ").str.strip_chars()
                    .str.split(" ").list.head(max_words).list.join(" "))
        return (pl.when(metadata != "").then(pl.concat_str([pl.col(short), pl.lit(" | "), metadata]))
                .otherwise(pl.col(short)).alias(short))

    if metadata_side == "documents":
        return queries, documents.with_columns(joined("title"))
    if metadata_side != "queries":
        raise ValueError(f"metadata_side must be 'documents' or 'queries', got {metadata_side!r}")
    if "metadata" not in queries.columns:
        return queries, documents
    return queries.with_columns(joined("text")), documents
