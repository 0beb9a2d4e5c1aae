"""Atomic writes keep the previous artifact on failure; the DuckDB catalogue exposes every table with SQL."""

import duckdb
import polars as pl
import pytest

from skim_assets.lib.catalogue import refresh_catalogue
from skim_assets.lib.clicklogs import aggregate_click_logs, query_id_for_text
from skim_assets.lib.formats import DataError
from skim_assets.lib.storage import atomic_directory, write_parquet_atomic


def test_failed_directory_write_keeps_the_previous_one(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed")
    assert (target / "weights").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_directory_rewrite_replaces_the_whole_folder(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        (tmp / "old-file").write_text("x")
    with atomic_directory(target) as tmp:
        (tmp / "new-file").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["new-file"]


def test_parquet_write_is_all_or_nothing(tmp_path):
    path = write_parquet_atomic(pl.DataFrame({"a": [1]}), tmp_path / "t" / "data.parquet")
    with pytest.raises(Exception):
        write_parquet_atomic(pl.DataFrame({"a": [object()]}, strict=False), path)
    assert pl.read_parquet(path)["a"].to_list() == [1]
    assert [p.name for p in path.parent.iterdir()] == ["data.parquet"]


def test_catalogue_has_one_view_per_table_across_datasets(tmp_path):
    write_parquet_atomic(pl.DataFrame({"x": [1, 2]}), tmp_path / "documents" / "a" / "data.parquet")
    write_parquet_atomic(pl.DataFrame({"x": [3]}), tmp_path / "documents" / "b" / "data.parquet")
    write_parquet_atomic(pl.DataFrame({"y": [1]}), tmp_path / "click_log_pairs" / "a" / "aggregate.parquet")
    write_parquet_atomic(pl.DataFrame({"z": [1]}), tmp_path / "inputs" / "a" / "raw.parquet")  # inputs: not catalogued
    views = refresh_catalogue(tmp_path)
    assert views == ["click_log_pairs__aggregate", "documents"]
    with duckdb.connect(str(tmp_path / "skim.duckdb")) as con:
        rows = con.execute("SELECT dataset, sum(x) FROM documents GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [("a", 3), ("b", 3)]


DOCS = pl.DataFrame({"doc_id": ["d1", "d2"], "title": ["t1", "t2"], "metadata": ["", ""]})
QUERIES = pl.DataFrame({"query_id": ["q1"], "text": ["known query"], "split": ["train"]})


def _drop(path, rows):
    pl.DataFrame(rows, schema=["query", "doc_id", "clicks", "timestamp"], orient="row").write_csv(path)
    return path


def test_click_logs_aggregate_across_drops_and_reuse_known_query_ids(tmp_path):
    a = _drop(tmp_path / "a.csv", [("known query", "d1", 2, "2026-01-01T00:00:00"),
                                   ("new query", "d2", 1, "2026-01-02T00:00:00")])
    b = _drop(tmp_path / "b.csv", [("  new query ", "d2", 4, "2026-01-03T00:00:00")])
    ingest = aggregate_click_logs([a, b], DOCS, QUERIES)
    pairs, new_queries, aggregate = ingest.pairs, ingest.new_queries, ingest.aggregate
    assert sorted(pairs["query_id"]) == sorted(["q1", query_id_for_text("new query")])
    assert new_queries.rows() == [(query_id_for_text("new query"), "new query", "train")]
    new = aggregate.filter(pl.col("query") == "new query").row(0, named=True)
    assert (new["clicks"] == 5 and str(new["first_seen"]).startswith("2026-01-02")
            and str(new["last_seen"]).startswith("2026-01-03"))


def test_one_bad_drop_fails_the_whole_ingest(tmp_path):
    good = _drop(tmp_path / "a.csv", [("known query", "d1", 2, "2026-01-01T00:00:00")])
    bad = _drop(tmp_path / "b.csv", [("", "d1", 1, "2026-01-01T00:00:00")])
    with pytest.raises(DataError, match=r"b\.csv.*row 2.*query"):
        aggregate_click_logs([good, bad], DOCS, QUERIES)


def test_no_drops_means_no_pairs():
    ingest = aggregate_click_logs([], DOCS, QUERIES)
    assert ingest.pairs.height == ingest.new_queries.height == ingest.aggregate.height == 0


def test_click_drops_are_validated_once_and_a_refresh_reads_only_new_files(tmp_path):
    cache = tmp_path / "cache"
    a = _drop(tmp_path / "a.csv", [("known query", "d1", 2, "2026-01-01T00:00:00")])
    first = aggregate_click_logs([a], DOCS, QUERIES, cache_dir=cache)
    assert (first.report.files_read, first.report.files_reused, first.report.rows_read) == (1, 0, 1)

    b = _drop(tmp_path / "b.csv", [("new query", "d2", 1, "2026-01-02T00:00:00"),
                                   ("new query", "d2", 3, "2026-01-03T00:00:00")])
    refreshed = aggregate_click_logs([a, b], DOCS, QUERIES, cache_dir=cache)
    assert (refreshed.report.files_read, refreshed.report.files_reused, refreshed.report.rows_read) == (1, 1, 2)
    full = aggregate_click_logs([a, b], DOCS, QUERIES)  # no cache: everything read again
    assert full.report.rows_read == 3
    for table in ["pairs", "new_queries", "aggregate"]:
        assert getattr(refreshed, table).equals(getattr(full, table))

    # a rewritten drop is read again; a deleted drop leaves the aggregate and the cache
    _drop(a, [("known query", "d1", 7, "2026-01-01T00:00:00")])
    import os
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 1_000_000))
    changed = aggregate_click_logs([a, b], DOCS, QUERIES, cache_dir=cache)
    assert (changed.report.files_read == 1
            and changed.aggregate.filter(pl.col("query") == "known query")["clicks"].item() == 7)
    pruned = aggregate_click_logs([b], DOCS, QUERIES, cache_dir=cache)
    assert pruned.report.files_reused == 1 and len(list(cache.glob("*.parquet"))) == 1
    # a bad new drop fails the ingest and leaves the cache as it was
    bad = _drop(tmp_path / "c.csv", [("q", "UNKNOWN", 1, "2026-01-01T00:00:00")])
    with pytest.raises(DataError, match=r"c\.csv.*row 2.*doc_id"):
        aggregate_click_logs([b, bad], DOCS, QUERIES, cache_dir=cache)
    assert len(list(cache.glob("*.parquet"))) == 1
