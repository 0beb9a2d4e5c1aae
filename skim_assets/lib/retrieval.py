"""Top-k retrieval over unit-norm embeddings: exact blocked inner products, or an hnswlib index."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import Field

from .formats import DOCUMENTS_FOR_QUERIES
from .settings import Settings

log = logging.getLogger(__name__)


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
    return pl.DataFrame(
        [
            pl.Series("query_id", query_ids, dtype=pl.String).gather(np.repeat(np.arange(n), k)),
            pl.Series("doc_id", doc_ids, dtype=pl.String).gather(indices.reshape(-1)),
            pl.Series("score", scores.reshape(-1).astype(np.float64)),
            pl.Series("rank", np.tile(np.arange(1, k + 1, dtype=np.int32), n)),
        ]
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


class SearchSettings(Settings):
    """How documents are searched wherever a step ranks every document for many queries (Algorithm 1's exposure
    ranking, evaluation, LEVER's teacher, the one-vs-all head's first shortlist)."""

    exact_max_documents: int = Field(default=200_000, description="Up to this many documents, exact blocked inner "
                                     "products (deterministic, ties by lower index); above it an hnswlib index, "
                                     "built once per vector set and reused by every step that searches it.")
    hnsw_m: int = Field(default=16, description="hnswlib M (graph degree) of the document index.")
    hnsw_ef_construction: int = Field(default=100, description="hnswlib ef_construction of the document index.")
    hnsw_ef_search: int = Field(default=200, description="hnswlib ef at query time (raised to k when k is larger).")
    seed: int = Field(default=0, description="hnswlib's random seed.")


class DocumentIndex:
    """Top-k search over one set of unit-norm document vectors: exact blocked inner products up to
    `settings.exact_max_documents`, else an hnswlib index saved in `folder` (when given) so the next step that
    searches the same vectors loads it instead of building it again (a 1M-document build takes minutes)."""

    INDEX_FILE = "hnsw.bin"

    def __init__(self, doc_vectors: np.ndarray, settings: SearchSettings | None = None, folder: Path | None = None):
        self.vectors = doc_vectors
        self.settings = settings or SearchSettings()
        self.folder = Path(folder) if folder else None
        self._index = None

    @property
    def exact(self) -> bool:
        return self.vectors.shape[0] <= self.settings.exact_max_documents

    @property
    def method(self) -> str:
        """What the search is, for a step's metadata."""
        if self.exact:
            return f"exact (blocked inner products over {self.vectors.shape[0]} documents)"
        s = self.settings
        return (f"hnswlib (M {s.hnsw_m}, ef_construction {s.hnsw_ef_construction}, ef {s.hnsw_ef_search}) over "
                f"{self.vectors.shape[0]} documents")

    def _hnsw(self):
        if self._index is not None:
            return self._index
        import hnswlib

        s = self.settings
        path = self.folder / self.INDEX_FILE if self.folder else None
        if path is not None and path.exists():
            index = hnswlib.Index(space="ip", dim=self.vectors.shape[1])
            index.load_index(str(path), max_elements=self.vectors.shape[0])
            if index.get_current_count() == self.vectors.shape[0]:
                self._index = index
                return index
        started = time.monotonic()
        index = build_hnsw_index(self.vectors, m=s.hnsw_m, ef_construction=s.hnsw_ef_construction, seed=s.seed)
        log.info(f"hnsw index over {self.vectors.shape[0]} documents built in {time.monotonic() - started:.0f}s")
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            index.save_index(str(tmp))
            os.replace(tmp, path)
        self._index = index
        return index

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, cosine scores) of each query's k best documents, best first."""
        if self.exact:
            return exact_topk(query_vectors, self.vectors, k)
        return hnsw_search(self._hnsw(), query_vectors, k, ef_search=self.settings.hnsw_ef_search)


def vectors_fingerprint(vectors: np.ndarray) -> str:
    """Identity of a vector set (shape and a strided sample of its bytes): names the folder of its saved index."""
    sample = np.ascontiguousarray(vectors[:: max(1, vectors.shape[0] // 4096)])
    return hashlib.sha1(f"{vectors.shape}".encode() + sample.tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class RetrievalInput:
    """What a retriever reads: the queries' and documents' texts and their token caps."""

    queries: pl.DataFrame
    documents: pl.DataFrame
    query_max_length: int
    doc_max_length: int


def retrieval_input(direction: str, metadata_input: bool, queries: pl.DataFrame, documents: pl.DataFrame,
                    encoder) -> RetrievalInput:
    """The short texts (query text, document title) under the encoder's token caps (`encoder`: its settings, e.g.
    the encoder resource), or for metadata-augmented retrieval (`metadata_input`) the side that holds the
    dataset's metadata with it: documents for queries_for_documents, queries for documents_for_queries
    (`with_metadata`), under the encoder's longer token cap."""
    if not metadata_input:
        return RetrievalInput(queries, documents, encoder.query_max_length, encoder.doc_max_length)
    side = "queries" if direction == DOCUMENTS_FOR_QUERIES else "documents"
    queries, documents = with_metadata(queries, documents, side)
    long = encoder.metadata_max_length
    return RetrievalInput(queries, documents, long if side == "queries" else encoder.query_max_length,
                          long if side == "documents" else encoder.doc_max_length)
