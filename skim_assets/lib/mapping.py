"""Mapping synthetic queries onto real train queries (SKIM step 4).

Each synthetic query of a document is embedded with the dual encoder fine-tuned on the train set; hnswlib finds
its k nearest real train queries; a neighbour with score (1 + cos) / 2 >= tau becomes a new (train query,
document) pair weighted by that score. A pair reached through several synthetic queries keeps its highest score.
Embeddings are cached by text hash, so a rerun (or a refresh with new queries) embeds only new text.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import Field

from .formats import PAIRS_SCHEMA
from .retrieval import exact_topk, hnsw_topk, neighbour_frame, similarity_weight
from .settings import Settings
from .storage import write_json_atomic, write_parquet_atomic

DEFAULT_TAU = 0.8  # the paper's threshold on (1 + cos) / 2; a dataset's spec may set its own
# A pass at position p is evidence against the pair only as far as p was examined: nfcorpus-dev under the
# position-based click model (eta 1) loses half its correct pairs to a cut-off of 10 for no precision, under the
# deterministic one gains 24% -> 62% from every position (RESULTS.md). The top result is examined under both.
DEFAULT_EXAMINED_POSITIONS = 1


class MappingSettings(Settings):
    """hnswlib search and the threshold. `tau` and `seed` left at None take the dataset's (its spec's) values."""

    k: int = Field(default=10, description="Nearest train queries per synthetic query (reference: 10 of 200).")
    tau: float | None = Field(default=None, description="Keep (1 + cos) / 2 >= tau; None = the dataset's tau "
                              f"(default {DEFAULT_TAU}).")
    m: int = Field(default=32, description="hnswlib M.")
    ef_construction: int = Field(default=200, description="hnswlib ef_construction.")
    ef_search: int = Field(default=200, description="hnswlib ef at query time.")
    recall_sample: int = Field(default=1000, description="Synthetic queries checked against exact search "
                               "(the hnsw recall figure).")
    seed: int | None = Field(default=None, description="Seed of the recall sample; None = the dataset's seed.")
    click_neighbour_floor: float | None = Field(
        default=None, description="Keep a mapped (train query, document) pair only when the document's title "
        "sits within this cosine of a document clicked for that query, in the mapping encoder's space (a query "
        "without clicks then gains no pair); None = off, the paper's mapping. A label the clicks missed is usually "
        "a neighbour of one they kept (RESULTS.md measures the floor on nfcorpus-dev).")
    drop_shown_not_clicked: bool = Field(
        default=True, description="Where the click log records impressions, drop a mapped (train query, document) "
        "pair whose document was shown for that query within `examined_positions` and never clicked: the user saw "
        "it and passed, which is evidence against the pair. No effect without impressions.")
    examined_positions: int | None = Field(
        default=DEFAULT_EXAMINED_POSITIONS, ge=1, description="Positions taken as examined for that filter (1 = the "
        "top result only); None = every logged position. A pass says as much as the position's examination "
        "probability (see the propensities of `ips_position_train_pairs`): set it as deep as users of the log look.")

    @property
    def threshold(self) -> float:
        return DEFAULT_TAU if self.tau is None else self.tau

    @property
    def unclicked_cutoff(self) -> float | None:
        """The deepest examined position for the shown-not-clicked filter (inf = every one); None = filter off."""
        if not self.drop_shown_not_clicked:
            return None
        return math.inf if self.examined_positions is None else float(self.examined_positions)


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


_CACHE_BLOCK_ROWS = 131_072  # cached vectors are read in blocks of this many rows (~200 MB at 384 dimensions)


def embed_with_cache(
    texts: list[str], embed: Callable[[list[str]], np.ndarray], cache_path: str | Path | None
) -> tuple[np.ndarray, int]:
    """Embeddings of `texts` (in order) and how many were computed now; the rest come from the cache file.

    The cache is a Parquet table (hash, vector) that belongs to one encoder: callers key its path by the
    encoder's identity so a retrained encoder never reuses stale vectors. Memory stays near the size of the answer:
    the hashes are joined column-wise, the cached vectors are streamed in blocks into the output and new ones are
    appended by a streamed rewrite (at a million texts a dict of row vectors, or the whole cache in memory, cost
    gigabytes).
    """
    if not texts:
        return np.zeros((0, 0), dtype=np.float32), 0
    cache_path = Path(cache_path) if cache_path else None
    wanted = pl.DataFrame({"hash": [text_hash(t) for t in texts]}, schema={"hash": pl.String}).with_row_index("row")
    cached = cache_path is not None and cache_path.exists()
    if cached:
        cache_hashes = pl.read_parquet(cache_path, columns=["hash"]).with_row_index("cache_row")
        wanted = wanted.join(cache_hashes, on="hash", how="left", maintain_order="left")
    else:
        wanted = wanted.with_columns(pl.lit(None, dtype=pl.UInt32).alias("cache_row"))
    missing = wanted.filter(pl.col("cache_row").is_null())
    new_hashes = missing.unique("hash", keep="first", maintain_order=True)
    new_vectors = (np.asarray(embed([texts[i] for i in new_hashes["row"].to_list()]), dtype=np.float32)
                   if len(new_hashes) else None)
    found = wanted.filter(pl.col("cache_row").is_not_null())
    out = None
    if new_vectors is not None:
        out = np.empty((len(texts), new_vectors.shape[1]), dtype=np.float32)
        new_row_of = missing.join(new_hashes.select("hash").with_row_index("new_row"), on="hash", how="left")
        out[new_row_of["row"].to_numpy()] = new_vectors[new_row_of["new_row"].to_numpy()]
    if len(found):
        out = _read_cached_vectors(cache_path, found["cache_row"].to_numpy(), found["row"].to_numpy(),
                                   len(cache_hashes), out, len(texts))
    if new_vectors is not None and cache_path:
        added = pl.DataFrame({"hash": new_hashes["hash"], "vector": new_vectors})
        if cached:
            stored = pl.scan_parquet(cache_path)
            added = added.with_columns(pl.col("vector").cast(stored.collect_schema()["vector"]))
            write_parquet_atomic(pl.concat([stored, added.lazy()]), cache_path)
        else:
            write_parquet_atomic(added, cache_path)
    return out, len(new_hashes)


def _read_cached_vectors(cache_path: Path, cache_rows: np.ndarray, out_rows: np.ndarray, cache_size: int,
                         out: np.ndarray | None, n_texts: int) -> np.ndarray:
    """Copy the cache's rows `cache_rows` into `out[out_rows]`, reading the cache block by block."""
    order = np.argsort(cache_rows, kind="stable")
    cache_rows, out_rows = cache_rows[order].astype(np.int64), out_rows[order]
    vectors = pl.scan_parquet(cache_path).select("vector")
    for offset in range(0, cache_size, _CACHE_BLOCK_ROWS):
        lo, hi = np.searchsorted(cache_rows, [offset, offset + _CACHE_BLOCK_ROWS])
        if lo == hi:
            continue
        block = vectors.slice(offset, _CACHE_BLOCK_ROWS).collect()["vector"].to_numpy()
        if block.ndim != 2:  # a list column rather than a fixed-size array
            block = np.stack(block)
        if out is None:
            out = np.empty((n_texts, block.shape[1]), dtype=np.float32)
        out[out_rows[lo:hi]] = block[cache_rows[lo:hi] - offset]
    return out


def candidates_schema(target: str = "query_id") -> dict:
    """Candidates of a mapping: (synthetic row, target id, cosine). The target is a train query (`query_id`) when
    the synthetic texts are queries written for documents, a document (`doc_id`) when they are documents written
    for queries (the `documents_for_queries` direction)."""
    return {"synthetic": pl.Int64, target: pl.String, "cosine": pl.Float32}


def _target(candidates: pl.DataFrame) -> str:
    return "query_id" if "query_id" in candidates.columns else "doc_id"


def mapping_candidates(synthetic_vectors: np.ndarray, target_ids: list[str], target_vectors: np.ndarray,
                       settings: MappingSettings, target: str = "query_id") -> tuple[pl.DataFrame, float | None]:
    """Each synthetic text's k nearest targets by hnswlib (synthetic row, target id, cosine), and the search's
    recall@k against exact search on a sample."""
    if len(synthetic_vectors) == 0 or len(target_ids) == 0:
        return pl.DataFrame(schema=candidates_schema(target)), None
    k = min(settings.k, len(target_ids))
    neighbours, cosines = hnsw_topk(synthetic_vectors, target_vectors, k, m=settings.m,
                                    ef_construction=settings.ef_construction, ef_search=settings.ef_search,
                                    seed=settings.seed or 0)
    candidates = neighbour_frame(np.arange(len(synthetic_vectors)), target_ids, neighbours, cosines,
                                 "synthetic", target)
    return (candidates.cast(candidates_schema(target)),
            hnsw_recall(synthetic_vectors, target_vectors, neighbours, k, settings))


def best_candidates(candidates: pl.DataFrame, k: int) -> pl.DataFrame:
    """Per synthetic text, its k best candidates (cosine descending, then target id): merges searches."""
    target = _target(candidates)
    return (
        candidates.unique(["synthetic", target])
        .sort(["synthetic", "cosine", target], descending=[False, True, False])
        .group_by("synthetic", maintain_order=True).head(k)
    )


def _with_pair_ids(candidates: pl.DataFrame, synthetic_source_ids: list[str]) -> pl.DataFrame:
    """Candidates with both sides of their pair: a synthetic text's source (the document, or in the
    documents_for_queries direction the query, it was written for) is the other side of its candidates' pairs."""
    source_column = "doc_id" if _target(candidates) == "query_id" else "query_id"
    source_of = pl.Series(source_column, synthetic_source_ids, dtype=pl.String)
    return candidates.with_columns(source_of.gather(candidates["synthetic"]).alias(source_column))


NEIGHBOUR_COSINE = "click_neighbour_cosine"


@dataclass(frozen=True)
class ClickNeighbours:
    """The evidence `MappingSettings.click_neighbour_floor` reads: each train query's clicked documents, and every
    document's vector (unit norm, rows in `doc_ids` order) in the mapping encoder's space."""

    clicks: pl.DataFrame
    doc_ids: list[str]
    doc_vectors: np.ndarray

    def annotate(self, candidates: pl.DataFrame, synthetic_source_ids: list[str]) -> pl.DataFrame:
        """`candidates` plus column `click_neighbour_cosine`: the highest cosine between each candidate pair's
        document and a document clicked for its query; null when the query has no click."""
        pairs = _with_pair_ids(candidates, synthetic_source_ids)
        row_of = {d: i for i, d in enumerate(self.doc_ids)}
        unknown = set(pairs["doc_id"].to_list()) - row_of.keys()
        if unknown:
            raise ValueError(f"mapped pairs name documents without a vector: {sorted(unknown)[:5]}")
        clicked: dict[str, list[int]] = {}
        for query_id, doc_id in (self.clicks.select("query_id", "doc_id").unique().sort("query_id", "doc_id")
                                 .iter_rows()):
            if doc_id in row_of:
                clicked.setdefault(query_id, []).append(row_of[doc_id])
        cosine = np.full(pairs.height, np.nan, dtype=np.float32)
        for query_id, pair_rows, pair_docs in (pairs.with_row_index("row").group_by("query_id").agg("row", "doc_id")
                                               .iter_rows()):
            if query_id in clicked:
                block = self.doc_vectors[[row_of[d] for d in pair_docs]] @ self.doc_vectors[clicked[query_id]].T
                cosine[pair_rows] = block.max(axis=1)
        return candidates.with_columns(pl.Series(NEIGHBOUR_COSINE, cosine).fill_nan(None))


UNCLICKED_POSITION = "unclicked_position"


def unclicked_impressions(impressions: pl.DataFrame, max_position: float | None = None) -> pl.DataFrame:
    """(query_id, doc_id, unclicked_position): the pairs an impression log shows and never clicked, at the best
    position they were shown (0 = shown at a position the log does not record); with `max_position`, only those
    shown at or above it."""
    unclicked = (impressions.group_by("query_id", "doc_id", maintain_order=True)
                 .agg(pl.col("clicks").sum(), pl.col("position").fill_null(0).min().alias(UNCLICKED_POSITION))
                 .filter(pl.col("clicks") == 0).drop("clicks"))
    return unclicked if max_position is None else unclicked.filter(pl.col(UNCLICKED_POSITION) <= max_position)


def annotate_unclicked(candidates: pl.DataFrame, synthetic_source_ids: list[str],
                       impressions: pl.DataFrame) -> pl.DataFrame:
    """`candidates` plus column `unclicked_position`: where the candidate pair's document was shown for its query
    and never clicked (`unclicked_impressions`); null when it was never shown, or was clicked."""
    pairs = _with_pair_ids(candidates, synthetic_source_ids).with_row_index("_row")
    position = pairs.join(unclicked_impressions(impressions), on=["query_id", "doc_id"], how="left").sort("_row")
    return candidates.with_columns(position[UNCLICKED_POSITION].cast(pl.Int64))


def candidates_to_pairs(candidates: pl.DataFrame, synthetic_source_ids: list[str], tau: float,
                        source: str, neighbour_floor: float | None = None,
                        unclicked_cutoff: float | None = None) -> pl.DataFrame:
    """New pairs (query_id, doc_id, weight, source): candidates with (1 + cos) / 2 >= tau (and, with
    `neighbour_floor`, a click-neighbour cosine >= it: see `ClickNeighbours.annotate`; with `unclicked_cutoff`,
    not shown-and-unclicked at a position <= it: see `annotate_unclicked`), one row per pair with its highest
    weight."""
    kept = _with_pair_ids(candidates, synthetic_source_ids)
    if neighbour_floor is not None:
        if NEIGHBOUR_COSINE not in kept.columns:
            raise ValueError(f"a click-neighbour floor needs candidates annotated with {NEIGHBOUR_COSINE!r} "
                             "(ClickNeighbours.annotate)")
        kept = kept.filter(pl.col(NEIGHBOUR_COSINE) >= neighbour_floor)
    if unclicked_cutoff is not None and UNCLICKED_POSITION in kept.columns:  # no column: no impressions to read
        kept = kept.filter(pl.col(UNCLICKED_POSITION).is_null() | (pl.col(UNCLICKED_POSITION) > unclicked_cutoff))
    return (
        kept.select("query_id", "doc_id", similarity_weight(pl.col("cosine")))
        .filter(pl.col("weight") >= tau)
        .group_by("query_id", "doc_id").agg(pl.col("weight").max())
        .with_columns(pl.lit(source).alias("source"))
        .sort("doc_id", "query_id")
        .cast(PAIRS_SCHEMA)
    )


def mapping_stats(candidates: pl.DataFrame, pairs: pl.DataFrame, recall: float | None,
                  settings: MappingSettings, synthetic_source_ids: list[str]) -> dict:
    floored = {}  # what each filter removed, to read beside the pairs it kept
    if settings.click_neighbour_floor is not None:
        unfloored = candidates_to_pairs(candidates, synthetic_source_ids, settings.threshold, "",
                                        unclicked_cutoff=settings.unclicked_cutoff)
        floored["pairs_below_neighbour_floor"] = unfloored.height - pairs.height
    if settings.unclicked_cutoff is not None and UNCLICKED_POSITION in candidates.columns:
        unfiltered = candidates_to_pairs(candidates, synthetic_source_ids, settings.threshold, "",
                                         settings.click_neighbour_floor)
        floored["pairs_shown_not_clicked"] = unfiltered.height - pairs.height
    best = candidates.group_by("synthetic").agg(pl.col("cosine").max()).sort("synthetic")["cosine"].to_numpy()
    return {
        "candidates": candidates.height,
        "pairs": pairs.height,
        "scores": ((1.0 + best.astype(np.float64)) / 2.0).tolist(),  # best neighbour score of each synthetic query
        "hnsw_recall": recall,
        **floored,
    }


def map_once(
    synthetic_source_ids: list[str],
    synthetic_vectors: np.ndarray,
    target_ids: list[str],
    target_vectors: np.ndarray,
    settings: MappingSettings = MappingSettings(),
    source: str = "skim",
    neighbours: ClickNeighbours | None = None,
    impressions: pl.DataFrame | None = None,
    target: str = "query_id",
) -> tuple[pl.DataFrame, dict]:
    """One search of every target, no state kept (what the student-size sweep maps each student with): new
    weighted pairs (query_id, doc_id, weight, source) and statistics (scores, hnsw recall). `neighbours` is needed
    when `settings.click_neighbour_floor` is set; `impressions` (the click log's) feed the shown-not-clicked
    filter."""
    candidates, recall = mapping_candidates(synthetic_vectors, target_ids, target_vectors, settings, target)
    candidates = annotate_evidence(candidates, synthetic_source_ids, neighbours, impressions)
    pairs = candidates_to_pairs(candidates, synthetic_source_ids, settings.threshold, source,
                                settings.click_neighbour_floor, settings.unclicked_cutoff)
    return pairs, mapping_stats(candidates, pairs, recall, settings, synthetic_source_ids)


def map_incrementally(
    synthetic_source_ids: list[str],
    synthetic_vectors: np.ndarray,
    target_ids: list[str],
    target_vectors: np.ndarray,
    settings: MappingSettings,
    source: str,
    state_dir: str | Path,
    identity: str,
    target: str = "query_id",
    neighbours: ClickNeighbours | None = None,
    impressions: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """`map_once` that searches only targets not searched before: (pairs, every synthetic text's k
    best candidates so far, stats).

    The targets are train queries (`target="query_id"`; `synthetic_source_ids` are the documents the synthetic
    queries were written for) or, in the documents_for_queries direction, documents (`target="doc_id"`; the
    sources are the queries the synthetic documents were written for).
    `state_dir` keeps every synthetic text's k best candidates so far and the targets already searched, under
    `identity` (the synthetic texts, the encoder and the index settings: anything else that changes means a full
    search). New targets (e.g. a click refresh's train queries) get an index of their own; each synthetic text's
    candidates are its k best of the old and the new, which is what a full search over all targets finds.
    Stats add `targets_searched` (targets searched now) and `incremental`. With `neighbours`, the returned
    candidates carry their click-neighbour cosine (and `settings.click_neighbour_floor` filters on it); with
    `impressions`, their shown-not-clicked position (`settings.unclicked_cutoff` filters on it).
    """
    state_dir = Path(state_dir)
    identity = hashlib.sha1(json.dumps([identity, target, settings.k, settings.m, settings.ef_construction,
                                        settings.ef_search, settings.seed or 0]).encode()).hexdigest()
    state_path, candidates_path, searched_path = (state_dir / "state.json", state_dir / "candidates.parquet",
                                                  state_dir / "searched.parquet")
    previous = None
    if state_path.exists() and candidates_path.exists() and searched_path.exists():
        if json.loads(state_path.read_text()).get("identity") == identity:
            searched = set(pl.read_parquet(searched_path)["id"].to_list())
            if searched <= set(target_ids):  # a vanished target means its pairs must go: full search
                previous = (pl.read_parquet(candidates_path), searched)
    if previous is None:
        new_rows = list(range(len(target_ids)))
        old_candidates = pl.DataFrame(schema=candidates_schema(target))
    else:
        old_candidates, searched = previous
        new_rows = [i for i, t in enumerate(target_ids) if t not in searched]
    new_candidates, recall = mapping_candidates(
        synthetic_vectors, [target_ids[i] for i in new_rows],
        target_vectors[new_rows] if new_rows else target_vectors[:0], settings, target)
    candidates = best_candidates(pl.concat([old_candidates, new_candidates]), settings.k)
    # the state is written last: a crash before it leaves the previous state, which is still consistent
    write_parquet_atomic(candidates, candidates_path)
    write_parquet_atomic(pl.DataFrame({"id": list(target_ids)}, schema={"id": pl.String}), searched_path)
    write_json_atomic({"identity": identity, "targets": len(target_ids)}, state_path)
    # annotated after the state is kept: the clicks and impressions they read change on every refresh
    candidates = annotate_evidence(candidates, synthetic_source_ids, neighbours, impressions)
    pairs = candidates_to_pairs(candidates, synthetic_source_ids, settings.threshold, source,
                                settings.click_neighbour_floor, settings.unclicked_cutoff)
    return pairs, candidates, mapping_stats(candidates, pairs, recall, settings, synthetic_source_ids) | {
        "targets_searched": len(new_rows), "incremental": previous is not None}


def annotate_evidence(candidates: pl.DataFrame, synthetic_source_ids: list[str], neighbours: ClickNeighbours | None,
                      impressions: pl.DataFrame | None) -> pl.DataFrame:
    """Candidates with what the click log says of each pair: the click-neighbour cosine (with `neighbours`) and
    the shown-not-clicked position (with `impressions` that hold any row)."""
    if neighbours is not None:
        candidates = neighbours.annotate(candidates, synthetic_source_ids)
    if impressions is not None and impressions.height:
        candidates = annotate_unclicked(candidates, synthetic_source_ids, impressions)
    return candidates


def hnsw_recall(queries: np.ndarray, items: np.ndarray, approx: np.ndarray, k: int, settings: MappingSettings) -> float:
    """recall@k of the hnswlib neighbours against exact search on a sample of the queries."""
    rng = np.random.default_rng(settings.seed or 0)
    sample = rng.choice(len(queries), size=min(settings.recall_sample, len(queries)), replace=False)
    exact, _ = exact_topk(queries[sample], items, k)
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx[sample], exact)]))


def repair_by_neighbour_rank(candidates: pl.DataFrame, synthetic_source_ids: list[str], tau: float,
                             clicks: pl.DataFrame, oracle: pl.DataFrame) -> pl.DataFrame:
    """Label repair of the candidates that pass `tau`, by their rank among their synthetic text's neighbours
    (1 = nearest): (neighbour_rank, candidates, beyond_clicks, correct, precision). The paper keeps every one of
    the k neighbours above tau; where near-miss targets are dense (a large catalogue of look-alike names), the
    nearest one may stay right while the others turn wrong, which this table shows."""
    ranked = _with_pair_ids(candidates, synthetic_source_ids).with_columns(
        pl.col("cosine").rank("ordinal", descending=True).over("synthetic").cast(pl.Int64).alias("neighbour_rank"))
    kept = ranked.filter(((1.0 + pl.col("cosine").cast(pl.Float64)) / 2.0) >= tau)
    beyond = kept.join(clicks.select("query_id", "doc_id").unique(), on=["query_id", "doc_id"], how="anti")
    judged = beyond.join(oracle.select("query_id", "doc_id").unique().with_columns(pl.lit(True).alias("correct")),
                         on=["query_id", "doc_id"], how="left").with_columns(pl.col("correct").fill_null(False))
    return (kept.group_by("neighbour_rank").len("candidates")
            .join(judged.group_by("neighbour_rank").agg(pl.len().alias("beyond_clicks"),
                                                        pl.col("correct").sum().cast(pl.Int64).alias("correct")),
                  on="neighbour_rank", how="left")
            .fill_null(0)
            .with_columns((pl.col("correct") / pl.col("beyond_clicks").clip(lower_bound=1)).alias("precision"))
            .sort("neighbour_rank"))
