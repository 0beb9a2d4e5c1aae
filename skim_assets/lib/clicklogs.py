"""Click-log drops -> training pairs, aggregated with DuckDB.

Each drop (query text, doc_id, clicks, timestamp) is validated by `importers.read_click_log`; all drops of a
dataset are aggregated per (query text, document). A click-log query whose text equals a known query reuses that
query's id; any other text gets a stable id derived from its hash, so reruns give the same ids.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import polars as pl

from .formats import CLICKS_SCHEMA, PAIRS_SCHEMA, QUERIES_SCHEMA
from .importers import read_click_log

CLICK_LOG_SUFFIXES = (".parquet", ".csv")


def click_log_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in CLICK_LOG_SUFFIXES and not p.name.startswith("."))


def query_id_for_text(text: str) -> str:
    return "click-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def aggregate_click_logs(
    files: list[Path], documents: pl.DataFrame, queries: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(pairs, new train queries, per-(query, doc) aggregate with clicks and first/last timestamps).

    Every file is validated before anything is aggregated, so one bad file fails the whole ingest.
    """
    drops = [read_click_log(f, known_doc_ids=documents["doc_id"]) for f in files]
    clicks = pl.concat(drops) if drops else pl.DataFrame(schema=CLICKS_SCHEMA)
    known = queries.select("query_id", pl.col("text").alias("query"))
    with duckdb.connect() as con:
        con.register("clicks", clicks.to_arrow())
        aggregate = con.sql(
            """
            SELECT trim(query) AS query, doc_id, sum(clicks)::BIGINT AS clicks,
                   min(timestamp) AS first_seen, max(timestamp) AS last_seen
            FROM clicks GROUP BY 1, 2 ORDER BY 1, 2
            """
        ).pl()
    if aggregate.height == 0:
        return pl.DataFrame(schema=PAIRS_SCHEMA), pl.DataFrame(schema=QUERIES_SCHEMA), aggregate
    aggregate = aggregate.join(known, on="query", how="left").with_columns(
        pl.coalesce("query_id", pl.col("query").map_elements(query_id_for_text, return_dtype=pl.String))
        .alias("query_id")
    )
    new_queries = (
        aggregate.filter(~pl.col("query_id").is_in(queries["query_id"].implode()))
        .select("query_id", pl.col("query").alias("text"), pl.lit("train").alias("split"))
        .unique("query_id", keep="first", maintain_order=True)
        .cast(QUERIES_SCHEMA)
    )
    pairs = aggregate.select("query_id", "doc_id", pl.lit(1.0).alias("weight"), pl.lit("click_log").alias("source"))
    return pairs.cast(PAIRS_SCHEMA), new_queries, aggregate
