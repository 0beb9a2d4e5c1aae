"""Click-log drops -> training pairs, aggregated with DuckDB.

Each drop (query text, doc_id, clicks, timestamp) is validated by `importers.read_click_log`; all drops of a
dataset are aggregated per (query text, document). A validated drop is cached under its fingerprint (name, size,
mtime, the document ids it was checked against), so a refresh reads and validates only new or changed files.

Clicks only ever make train pairs: a click-log query whose text equals a known *train* query reuses that query's id
(the smallest id when several train queries share the text, so each click counts once); any other text gets a stable
id derived from its hash and becomes a train query of its own. A click whose text equals a *test* query's is set
aside (counted, never a pair): as a new train query with the test query's text it would teach the models that test
query's labels. Texts are compared after `normalised_text` (surrounding whitespace removed) on both sides.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import duckdb
import polars as pl

from .formats import CLICKS_SCHEMA, IMPRESSIONS_SCHEMA, PAIRS_SCHEMA, QUERIES_SCHEMA, DataError
from .importers import click_log_source, read_click_log
from .storage import file_digest, write_json_atomic, write_parquet_atomic

CLICK_LOG_SUFFIXES = (".parquet", ".csv")
MAX_CLICKS = 2**63 - 1  # the aggregate's clicks are BIGINT


COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")


def _is_drop(path: Path) -> bool:
    return path.suffix.lower() in CLICK_LOG_SUFFIXES and not path.name.startswith(".")


def _utf8_name(path: Path) -> bool:
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes come back from the file system as surrogates
        return False
    return True


def _outside(path: Path, folder: Path) -> bool:
    """Whether a symbolic link resolves outside the dataset's inputs (the drop folder's parent)."""
    return path.is_symlink() and not path.resolve().is_relative_to(folder.resolve().parent)


def click_log_files(folder: str | Path) -> list[Path]:
    """The drops to ingest, by name: `.parquet`/`.csv` files, not hidden, named in UTF-8, and no symbolic link to
    a file outside the dataset's inputs (`check_click_log_folder` says why any other file is left out)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _is_drop(p) and _utf8_name(p) and not _outside(p, folder))


def check_click_log_folder(folder: str | Path) -> list[str]:
    """Refuse what looks like a drop but cannot be ingested as one (a DataError naming the file); return the names
    of the other files that are not drops (left out, for a warning)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    ignored = []
    for path in sorted(folder.iterdir(), key=lambda p: os.fsencode(p.name)):
        if not _utf8_name(path):
            shown = os.fsencode(path.name).decode("utf-8", "backslashreplace")
            raise DataError(folder / shown, "the file name is not UTF-8; rename the drop")
        if _is_drop(path) and _outside(path, folder):
            raise DataError(path, f"a symbolic link to {path.resolve()}, outside the dataset's inputs; copy the "
                            "drop into the folder instead")
        if path.name.lower().endswith(tuple(s + c for s in CLICK_LOG_SUFFIXES for c in COMPRESSED_SUFFIXES)):
            raise DataError(path, "compressed drops are not read; decompress it in place (e.g. `gunzip`)")
        if not _is_drop(path) and not path.name.startswith("."):
            ignored.append(path.name)
    return ignored


def normalised_text(column: str) -> pl.Expr:
    """The form in which click-log and dataset query texts are compared (and click texts are stored)."""
    return pl.col(column).str.strip_chars()


def query_id_for_text(text: str) -> str:
    return "click-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class DropReport:
    files: int  # drops aggregated
    files_read: int  # read and validated in this call
    files_reused: int  # taken from the per-file cache
    rows_read: int  # rows read and validated in this call
    rows_per_file: tuple[int, ...] = ()  # rows of each drop, in file order (to name the file of a concatenated row)


def drop_fingerprint(path: Path, doc_ids_digest: str) -> str:
    """Name, content and the document ids a drop was checked against: a drop corrected in place is read again even
    when its size and mtime are unchanged (hashing costs about a second per GB, far less than validating)."""
    return hashlib.sha1(f"{path.name}:{doc_ids_digest}:{file_digest(path)}".encode()).hexdigest()


def read_click_drops(files: list[Path], doc_ids: pl.Series, cache_dir: str | Path | None = None
                     ) -> tuple[pl.DataFrame, DropReport]:
    """Every drop validated (CLICKS_SCHEMA rows, in file order); drops whose fingerprint is in `cache_dir` are not
    read again. The cache is written only after every file validated, and entries of vanished files are pruned."""
    digest = hashlib.sha1("\n".join(sorted(doc_ids.cast(pl.String).to_list())).encode()).hexdigest()
    cache_dir = Path(cache_dir) if cache_dir else None
    manifest_path = cache_dir / "manifest.json" if cache_dir else None
    manifest = json.loads(manifest_path.read_text()) if manifest_path and manifest_path.exists() else {}
    fingerprints = {path.name: drop_fingerprint(path, digest) for path in files}
    drops, fresh, rows_read = [], {}, 0
    for path in files:
        fingerprint = fingerprints[path.name]
        cached = cache_dir / f"{fingerprint}.parquet" if cache_dir else None
        if cached is not None and manifest.get(path.name) == fingerprint and cached.exists():
            cached_drop = pl.read_parquet(cached)  # a drop cached before impressions were read has no such columns
            drops.append(cached_drop.with_columns(pl.lit(None, pl.Int64).alias(c) for c in CLICKS_SCHEMA
                                                  if c not in cached_drop.columns).select(list(CLICKS_SCHEMA)))
            continue
        drop = read_click_log(path, known_doc_ids=doc_ids)
        rows_read += drop.height
        fresh[path.name] = (fingerprint, drop)
        drops.append(drop)
    if cache_dir is not None:
        for fingerprint, drop in fresh.values():
            write_parquet_atomic(drop, cache_dir / f"{fingerprint}.parquet")
        write_json_atomic(fingerprints, manifest_path)
        for stale in set(cache_dir.glob("*.parquet")) - {cache_dir / f"{f}.parquet" for f in fingerprints.values()}:
            stale.unlink()
    report = DropReport(files=len(files), files_read=len(fresh), files_reused=len(files) - len(fresh),
                        rows_read=rows_read, rows_per_file=tuple(drop.height for drop in drops))
    return (pl.concat(drops) if drops else pl.DataFrame(schema=CLICKS_SCHEMA)), report


def _raise_overflow(index: int, clicks: pl.DataFrame, files: list[Path], report: DropReport) -> None:
    """DataError naming the file and row where a (query, doc) click total passes MAX_CLICKS."""
    row = clicks.row(index, named=True)
    for path, height in zip(files, report.rows_per_file):
        if index < height:
            raise DataError(path, f"clicks of (query {row['query']!r}, doc {row['doc_id']!r}) add up past "
                            f"{MAX_CLICKS} here (over all drops)", row=click_log_source(path).row(index),
                            field="clicks")
        index -= height
    raise AssertionError("row index beyond the drops")


class ClickTotals(NamedTuple):
    aggregate: pl.DataFrame  # per (query text, doc_id) clicked: clicks, first_seen, last_seen
    shown: pl.DataFrame  # per (query text, doc_id, position) with impressions: impressions, clicks


def _click_totals(clicks: pl.DataFrame, files: list[Path], report: DropReport) -> ClickTotals:
    """The drops' rows (`clicks`, query texts normalised) summed with DuckDB; a total past BIGINT is a DataError
    naming the file and row where it overflows."""
    with duckdb.connect() as con:
        con.register("clicks", clicks.with_row_index("row_index").to_arrow())
        try:
            aggregate = con.sql(
                """
                SELECT query, doc_id, sum(clicks)::BIGINT AS clicks,
                       min(timestamp) AS first_seen, max(timestamp) AS last_seen
                FROM clicks WHERE clicks > 0 GROUP BY 1, 2 ORDER BY 1, 2
                """
            ).pl()
            shown = con.sql(  # shown-not-clicked rows count here, not as pairs
                """
                SELECT query, doc_id, position, sum(impressions)::BIGINT AS impressions, sum(clicks)::BIGINT AS clicks
                FROM clicks WHERE impressions IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
                """
            ).pl()
        except (duckdb.ConversionException, duckdb.OutOfRangeException):  # a total past BIGINT: find where
            overflow = con.sql(
                f"""
                SELECT row_index FROM (
                    SELECT row_index,
                           sum(clicks::HUGEINT) OVER (PARTITION BY query, doc_id ORDER BY row_index) AS total,
                           sum(impressions::HUGEINT) OVER (PARTITION BY query, doc_id, position ORDER BY row_index)
                               AS shown
                    FROM clicks)
                WHERE total > {MAX_CLICKS} OR shown > {MAX_CLICKS} ORDER BY row_index LIMIT 1
                """
            ).fetchall()
            if not overflow:
                raise
            _raise_overflow(int(overflow[0][0]), clicks, files, report)
    return ClickTotals(aggregate, shown)


@dataclass
class ClickLogIngest:
    pairs: pl.DataFrame  # PAIRS_SCHEMA, source "click_log"
    new_queries: pl.DataFrame  # QUERIES_SCHEMA: texts seen only in click logs, as train queries
    aggregate: pl.DataFrame  # per (query text, doc_id): clicks, first_seen, last_seen (pairs' rows only)
    report: DropReport
    # IMPRESSIONS_SCHEMA: the drops' impressions per (query, doc, position)
    impressions: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=IMPRESSIONS_SCHEMA))
    test_text_pairs: int = 0  # (query text, document) pairs set aside: the text is a test query's
    test_text_clicks: int = 0  # their clicks


def aggregate_click_logs(
    files: list[Path], documents: pl.DataFrame, queries: pl.DataFrame, cache_dir: str | Path | None = None
) -> ClickLogIngest:
    """Click-log drops aggregated per (query text, document) into train pairs.

    Every file is validated before anything is aggregated, so one bad file fails the whole ingest.
    """
    clicks, report = read_click_drops(files, documents["doc_id"], cache_dir)
    clicks = clicks.with_columns(normalised_text("query"))
    known = (  # train queries only, one id per text
        queries.filter(pl.col("split") == "train").select("query_id", normalised_text("text").alias("query"))
        .sort("query_id").unique("query", keep="first", maintain_order=True)
    )
    test_texts = queries.filter(pl.col("split") == "test").select(normalised_text("text").alias("query")).unique()
    aggregate, shown = _click_totals(clicks, files, report)
    set_aside = aggregate.join(test_texts, on="query", how="semi")
    aggregate = aggregate.join(test_texts, on="query", how="anti")
    shown = shown.join(test_texts, on="query", how="anti")
    leaked = {"test_text_pairs": set_aside.height,
              "test_text_clicks": int(set_aside["clicks"].sum()) if set_aside.height else 0}
    texts = pl.concat([aggregate.select("query"), shown.select("query")]).unique(maintain_order=True)
    if texts.height == 0:
        return ClickLogIngest(pl.DataFrame(schema=PAIRS_SCHEMA), pl.DataFrame(schema=QUERIES_SCHEMA), aggregate,
                              report, **leaked)
    ids = texts.join(known, on="query", how="left").with_columns(
        pl.coalesce("query_id", pl.col("query").map_elements(query_id_for_text, return_dtype=pl.String))
        .alias("query_id")
    )
    aggregate = aggregate.join(ids, on="query", how="left")
    new_queries = (  # every text a user typed, clicked or only shown
        ids.filter(~pl.col("query_id").is_in(queries["query_id"].implode()))
        .select("query_id", pl.col("query").alias("text"), pl.lit("train").alias("split"))
        .unique("query_id", keep="first", maintain_order=True)
        .cast(QUERIES_SCHEMA)
    )
    pairs = aggregate.select("query_id", "doc_id", pl.lit(1.0).alias("weight"), pl.lit("click_log").alias("source"))
    impressions = shown.join(ids, on="query", how="left").select(list(IMPRESSIONS_SCHEMA)).cast(IMPRESSIONS_SCHEMA)
    return ClickLogIngest(pairs.cast(PAIRS_SCHEMA), new_queries, aggregate, report, impressions, **leaked)
